"""The canonical parameter table against the references and the PyTorch model (no forward pass)."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from conftest import SHARED
from segformer import SegformerConfig
from segformer.common.model.weights import TASKS, count_parameters, parameter_table, to_pt_layout, to_tf_layout

VARIANTS = ["b0", "b1", "b2", "b3", "b4", "b5"]

# published parameter counts of the reference implementation: params seg (150), seg (19), encoder, MiT cls (1000), state_dict keys (seg)
COUNTS = {
    "b0": (3_752_694, 3_719_027, 3_319_392, 3_576_392, 208),
    "b1": (13_715_798, 13_682_131, 13_151_424, 13_664_424, 208),
    "b2": (27_461_974, 27_361_235, 24_196_288, 24_709_288, 380),
    "b3": (47_337_814, 47_237_075, 44_072_128, 44_585_128, 644),
    "b4": (64_108_374, 64_007_635, 60_842_688, 61_355_688, 930),
    "b5": (84_708_694, 84_607_955, 81_443_008, 81_956_008, 1172),
}

REFERENCE = SHARED / "reference"


def _read_reference(name: str) -> list[tuple[str, tuple]]:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    return [(row[0], ast.literal_eval(row[1])) for row in rows]


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_match_the_reference(variant):
    seg150, seg19, encoder, cls1000, keys = COUNTS[variant]
    assert count_parameters(SegformerConfig.from_variant(variant, num_labels=150), "seg") == seg150
    assert count_parameters(SegformerConfig.from_variant(variant, num_labels=19), "seg") == seg19
    assert count_parameters(SegformerConfig.from_variant(variant), "base") == encoder
    assert count_parameters(SegformerConfig.from_variant(variant, num_labels=1000), "cls") == cls1000
    assert len(parameter_table(SegformerConfig.from_variant(variant), "seg")) == keys


def test_b0_table_equals_hugging_face_state_dict_and_tf_names():
    table = parameter_table(SegformerConfig.from_variant("b0", num_labels=150), "semantic_segmentation")
    reference = _read_reference("hf_pt_b0_ade_state_dict_keys.txt")
    assert [(s.name, s.shape) for s in table] == reference  # same keys, shapes and order
    tf_reference = {name.split("/", 1)[1].removesuffix(":0"): shape for name, shape in _read_reference("hf_tf_b0_ade_weight_names.txt")}
    ours = {s.tf_name: s.tf_shape for s in table if s.kind != "counter"}  # HF's TF model has no BN counter
    assert ours == tf_reference


@pytest.mark.parametrize("variant", VARIANTS + ["b0-mmseg", "b2-mmseg"])
@pytest.mark.parametrize("task", TASKS)
def test_table_equals_pytorch_state_dict(variant, task):
    torch = pytest.importorskip("torch")
    from segformer.pt import SegformerForImageClassification, SegformerForSemanticSegmentation, SegformerModel

    cls = {"base": SegformerModel, "semantic_segmentation": SegformerForSemanticSegmentation,
           "image_classification": SegformerForImageClassification}[task]
    name, _, head = variant.partition("-")
    config = SegformerConfig.from_variant(name, num_labels=19, decode_head_type=head or "mlp")
    with torch.device("meta"):  # no memory, no init cost: names and shapes only
        model = cls(config)
    state = model.state_dict()
    table = parameter_table(config, task)
    assert [s.name for s in table] == list(state)
    assert all(tuple(state[s.name].shape) == s.shape for s in table)
    trainable = {name for name, _ in model.named_parameters()}
    assert {s.name for s in table if s.trainable} == trainable


def test_layout_transforms_are_exact_inverses(rng):
    config = SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 16, 16], num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16)
    for spec in parameter_table(config, "seg"):
        array = rng.normal(size=spec.shape).astype(np.float32)
        tf = to_tf_layout(spec, array)
        assert tf.shape == spec.tf_shape
        np.testing.assert_array_equal(to_pt_layout(spec, tf), array)
    conv = next(s for s in parameter_table(config, "seg") if s.name.endswith("patch_embeddings.0.proj.weight"))
    array = rng.normal(size=conv.shape)
    assert to_tf_layout(conv, array)[1, 2, 0, 5] == array[5, 0, 1, 2]  # (O, I, kh, kw) -> (kh, kw, I, O)
    with pytest.raises(ValueError, match="expected PyTorch shape"):
        to_tf_layout(conv, array[:1])


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match=r"valid tasks: \['base', 'semantic_segmentation', 'image_classification'\]"):
        parameter_table(SegformerConfig(), "detection")


def test_mmseg_head_table_lists_stage_batch_norms_and_no_stage_bias():
    """mmseg's head: each stage's 1x1 conv has no bias and a BatchNorm (mmseg ``convs.{i}.conv`` / ``.bn``); the
    rest of the head has the all-MLP head's names and shapes."""
    mlp = {s.name: s for s in parameter_table(SegformerConfig(num_labels=5), "seg")}
    mmseg = {s.name: s for s in parameter_table(SegformerConfig(num_labels=5, decode_head_type="mmseg"), "seg")}
    added = sorted(set(mmseg) - set(mlp))
    removed = sorted(set(mlp) - set(mmseg))
    assert removed == [f"decode_head.linear_c.{i}.proj.bias" for i in range(4)]
    leaves = ["num_batches_tracked", "bias", "running_mean", "running_var", "weight"]
    assert added == sorted(f"decode_head.linear_c.{i}.batch_norm.{leaf}" for i in range(4) for leaf in leaves)
    assert mmseg["decode_head.linear_c.2.batch_norm.running_var"].shape == (256,)
    assert mmseg["decode_head.linear_c.2.batch_norm.running_var"].tf_name == "decode_head/linear_c.2/batch_norm/moving_variance"
    assert all(mmseg[n].shape == mlp[n].shape for n in set(mmseg) & set(mlp))
