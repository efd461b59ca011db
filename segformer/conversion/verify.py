"""Verifying a conversion: building / loading the models of both frameworks and comparing their outputs
on seeded inputs (:func:`verify_state`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..common.model.config import SegformerConfig
from ..common.model.weights import TASK_CLASSES, canonical_task
from .report import DEFAULT_SIZES, DEFAULT_TOLERANCE, Check


def _framework_available(framework: str) -> bool:
    import importlib.util

    return importlib.util.find_spec("torch" if framework == "pt" else "tensorflow") is not None


def _model_class(framework: str, task: str):
    classes = TASK_CLASSES[canonical_task(task)]
    if framework == "pt":
        from .. import pt as package

        name = classes.pt_class
    else:
        from .. import tf as package

        name = classes.tf_class
    cls = getattr(package, name, None)
    if cls is None:
        raise ImportError(f"segformer.{framework} has no {name}; this installation lacks the {framework} models")
    return cls


def build_model(framework: str, task: str, config: SegformerConfig, state: Mapping[str, np.ndarray]):
    """A model of ``framework`` with ``state`` (canonical names, PyTorch layout) loaded, in eval mode."""
    cls = _model_class(framework, task)
    model = cls(config)
    if framework == "tf":
        _build_tf(model, config)
    model.load_state_dict_numpy(dict(state))
    if framework == "pt":
        model.eval()
    return model


def _build_tf(model: Any, config: SegformerConfig) -> None:
    """Create the Keras variables (the models build themselves on a dummy input of a valid size)."""
    if not model.built:
        model.build()


def load_model(framework: str, task: str, folder: Path):
    cls = _model_class(framework, task)
    return cls.from_pretrained(folder)


def run_model(framework: str, model: Any, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs as numpy: ``logits`` (task models), ``hidden_states_{i}`` (every stage), ``last_hidden_state``."""
    if framework == "pt":
        import torch

        with torch.no_grad():
            out = model(torch.from_numpy(pixel_values), output_hidden_states=True, return_dict=True)
        to_numpy = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
    else:
        out = model(pixel_values, output_hidden_states=True, return_dict=True, training=False)
        to_numpy = lambda t: np.asarray(t, dtype=np.float32)  # noqa: E731
    result: dict[str, np.ndarray] = {}
    if getattr(out, "logits", None) is not None:
        result["logits"] = to_numpy(out.logits)
    hidden = getattr(out, "hidden_states", None) or ()
    for i, h in enumerate(hidden):
        result[f"hidden_states_{i}"] = to_numpy(h)
    if getattr(out, "last_hidden_state", None) is not None:
        result["last_hidden_state"] = to_numpy(out.last_hidden_state)
    elif hidden:
        result["last_hidden_state"] = result[f"hidden_states_{len(hidden) - 1}"]
    return result


def verification_inputs(
    config: SegformerConfig, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES, seed: int = 0, batch: int = 1
) -> list[np.ndarray]:
    """Seeded standard-normal NCHW inputs, one per size (a size too small for the model is doubled)."""
    rng = np.random.default_rng(seed)
    inputs = []
    for height, width in sizes:
        while True:
            try:
                config.check_input_size(height, width)
                break
            except ValueError:
                height, width = height * 2, width * 2
        inputs.append(rng.standard_normal((batch, config.num_channels, height, width)).astype(np.float32))
    return inputs


def _compare(name: str, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], tolerance: float) -> list[Check]:
    checks = []
    for key in a:
        if key not in b:
            continue
        if a[key].shape != b[key].shape:
            checks.append(Check(f"{name} {key} shape {a[key].shape} vs {b[key].shape}", float("inf"), tolerance))
            continue
        diff = float(np.max(np.abs(a[key].astype(np.float64) - b[key].astype(np.float64)))) if a[key].size else 0.0
        checks.append(Check(f"{name} {key}", diff, tolerance))
    return checks


def verify_state(
    config: SegformerConfig,
    task: str,
    reference: tuple[str, Any],
    candidate: tuple[str, Any],
    inputs: Sequence[np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
    outputs: list[dict[str, dict[str, np.ndarray]]] | None = None,
) -> list[Check]:
    """Run two models (``(framework, model)``) on ``inputs``; one :class:`Check` per output and input.

    With ``outputs`` (a list), each input's ``{framework: {output name: array}}`` is appended to it.
    """
    checks: list[Check] = []
    for x in inputs:
        label = f"{x.shape[2]}x{x.shape[3]}" + (f" batch {x.shape[0]}" if x.shape[0] != 1 else "")
        ref = run_model(reference[0], reference[1], x)
        got = run_model(candidate[0], candidate[1], x)
        checks += _compare(label, ref, got, tolerance)
        if outputs is not None:
            outputs.append({reference[0]: ref, candidate[0]: got})
    return checks
