"""Drop-in for transformers: torch.export of the default return_dict=True outputs (output classes registered as
torch pytree nodes, as transformers does), strict and non-strict, and torch.compile of the plain model."""

from __future__ import annotations

import numpy as np
import pytest

from randomize import random_state, tiny_config

torch = pytest.importorskip("torch")
from segformer.pt import SegformerForImageClassification, SegformerForSemanticSegmentation, SegformerModel  # noqa: E402

CLASSES = {
    "base": (SegformerModel, "last_hidden_state"),
    "image_classification": (SegformerForImageClassification, "logits"),
    "semantic_segmentation": (SegformerForSemanticSegmentation, "logits"),
}
TOL = 1e-5


def _model(task: str):
    cls, key = CLASSES[task]
    model = cls(tiny_config())
    model.load_state_dict_numpy(random_state(model.config, task, seed=5))
    return model.eval(), key


def _check_export(task: str, strict: bool) -> None:
    model, key = _model(task)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    program = torch.export.export(model, args=(), kwargs={"pixel_values": x}, strict=strict)
    with torch.no_grad():
        got = program.module()(pixel_values=x)
        expected = model(pixel_values=x)
    assert type(got) is type(expected)
    assert list(got.keys()) == list(expected.keys())
    diff = float((got[key] - expected[key]).abs().max())
    print(f"torch.export(strict={strict}) {task}: max|diff| {diff:.2e}")
    assert diff < TOL


@pytest.mark.parametrize("task", sorted(CLASSES))
def test_torch_export_return_dict_non_strict(task):
    _check_export(task, strict=False)


@pytest.mark.parametrize("task", ["base", pytest.param("image_classification", marks=pytest.mark.slow),
                                  pytest.param("semantic_segmentation", marks=pytest.mark.slow)])
def test_torch_export_return_dict_strict(task):
    _check_export(task, strict=True)


def test_output_pytree_round_trip_keeps_the_fields():
    from torch.utils import _pytree as pytree

    from segformer.common.model.outputs import SemanticSegmenterOutput

    out = SemanticSegmenterOutput(logits=torch.ones(1, 2), hidden_states=(torch.zeros(1), torch.ones(2)))
    leaves, spec = pytree.tree_flatten(out)
    assert len(leaves) == 3
    rebuilt = pytree.tree_unflatten([leaf + 1 for leaf in leaves], spec)
    assert type(rebuilt) is SemanticSegmenterOutput and rebuilt.loss is None
    assert torch.equal(rebuilt.logits, torch.full((1, 2), 2.0)) and torch.equal(rebuilt.hidden_states[1], torch.full((2,), 2.0))


def test_torch_compile_of_the_model_returns_the_output_object():
    model, key = _model("semantic_segmentation")
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        got = compiled(x)
        expected = model(x)
    assert type(got) is type(expected)
    diff = float((got[key] - expected[key]).abs().max())
    print(f"torch.compile(aot_eager) vs eager: max|diff| {diff:.2e}")
    assert diff < TOL
