"""The framework-agnostic half of ``from_pretrained`` / ``save_pretrained``.

Both frameworks go through here: locate the config and weights, read any supported file into the
canonical names in PyTorch layout (numpy), match them with the canonical table, and report. The
framework code only copies numpy arrays into its variables (TF: after :func:`weights.to_tf_layout`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .checkpoint import (
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    CheckpointError,
    LoadReport,
    detect_format,
    find_weights_file,
    load_state_dict,
    match_state_dict,
    read_h5_counters,
    read_tf_h5,
    save_safetensors,
    write_tf_h5,
)
from .config import CONFIG_NAME, SegformerConfig
from .weights import ParamSpec, hf_tf_model_name, parameter_table, to_pt_layout, to_tf_layout

__all__ = [
    "resolve_pretrained",
    "read_canonical_state",
    "prepare_state",
    "save_pretrained_state",
]


def resolve_pretrained(
    path: str | os.PathLike, prefer: tuple[str, ...] = ("safetensors", "torch", "h5")
) -> tuple[Path | None, Path]:
    """``(config_json_or_None, weights_file)`` for a folder, a weights file, or a Hub model id."""
    path = Path(path)
    if path.is_file():
        config = path.parent / CONFIG_NAME
        return (config if config.is_file() else None), path
    if not path.is_dir():
        from .hub import resolve_model_dir

        path = resolve_model_dir(str(path))
    config = path / CONFIG_NAME
    return (config if config.is_file() else None), find_weights_file(path, prefer)


def read_canonical_state(weights: str | os.PathLike, specs: list[ParamSpec]) -> dict[str, np.ndarray]:
    """Read any supported weights file into ``{name: array}`` in PyTorch layout.

    safetensors / ``.bin`` / sharded index keep their (PyTorch) names. A Hugging Face ``tf_model.h5``
    is mapped onto ``specs`` by TF path (every task's TF paths share the ``segformer/encoder/...``
    spelling); TF entries that match no spec are kept under their TF path so they show up as unexpected.
    """
    weights = Path(weights)
    kind = detect_format(weights)
    if kind in ("safetensors", "torch", "index"):
        state = load_state_dict(weights)
        if "state_dict" in state and isinstance(state["state_dict"], dict):
            raise CheckpointError(
                f"{weights}: this is an mmcv/original checkpoint ({{'state_dict': ...}}); convert it with "
                "`segformer convert` (segformer.convert) first"
            )
        return state
    if kind == "h5":
        _, tensors = read_tf_h5(weights)
        state: dict[str, np.ndarray] = dict(read_h5_counters(weights))  # segformer-written files carry them
        by_tf = {s.tf_name: s for s in specs}
        for tf_name, array in tensors.items():
            spec = by_tf.get(tf_name)
            if spec is None:
                state[tf_name] = array  # reported as unexpected
            elif tuple(array.shape) == spec.tf_shape:
                state[spec.name] = to_pt_layout(spec, array)
            else:  # same tensor, other size (e.g. a new head): keep the name so it is reported as mismatched
                state[spec.name] = array.transpose(tuple(reversed(range(array.ndim)))) if spec.kind == "linear" else (
                    array.transpose(3, 2, 0, 1) if array.ndim == 4 else array
                )
        return state
    if kind == "keras":
        raise CheckpointError(
            f"{weights}: a .keras archive; load it with keras.models.load_model or convert it with `segformer convert`"
        )
    raise CheckpointError(f"{weights}: unsupported checkpoint kind {kind!r}")


def prepare_state(
    path: str | os.PathLike,
    task: str,
    config: SegformerConfig | None = None,
    prefer: tuple[str, ...] = ("safetensors", "torch", "h5"),
    ignore_mismatched_sizes: bool = False,
    **config_overrides: Any,
) -> tuple[SegformerConfig, dict[str, np.ndarray], LoadReport]:
    """Everything ``from_pretrained`` needs: ``(config, tensors to load (PT layout), report)``.

    Raises ``ValueError`` for NaN / Inf tensors and for shape mismatches (unless ignored).
    """
    config_path, weights = resolve_pretrained(path, prefer)
    if config is None:
        if config_path is None:
            raise FileNotFoundError(f"no {CONFIG_NAME} next to {weights}; pass config=SegformerConfig(...)")
        config = SegformerConfig.from_json_file(config_path, **config_overrides)
    elif config_overrides:
        config = config.copy(**config_overrides)
    specs = parameter_table(config, task)
    state = read_canonical_state(weights, specs)
    tensors, report = match_state_dict(state, specs, ignore_mismatched_sizes=ignore_mismatched_sizes)
    if report.nonfinite_keys:
        raise ValueError(f"{weights}: tensors with NaN or Inf values: {report.nonfinite_keys}")
    noisy = [k for k in report.missing_keys if not k.endswith("num_batches_tracked")]
    if noisy or report.unexpected_keys or report.mismatched_keys:
        warnings.warn(f"loading {weights} into a {task} model:\n{report.summary()}", stacklevel=3)
    return config, tensors, report


def save_pretrained_state(
    save_directory: str | os.PathLike,
    config: SegformerConfig,
    state: Mapping[str, np.ndarray],
    task: str,
    framework: str,
    architecture: str,
) -> Path:
    """Write ``config.json`` plus ``model.safetensors`` (``framework="pt"``) or ``tf_model.h5`` (``"tf"``).

    ``state`` is canonical names in PyTorch layout. Every file is written atomically.
    """
    if framework not in ("pt", "tf"):
        raise ValueError(f"framework must be 'pt' or 'tf', got {framework!r}")
    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_directory {directory} exists and is not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    config = config.copy(architectures=[architecture])
    specs = parameter_table(config, task)
    missing = [s.name for s in specs if s.name not in state]
    if missing:
        raise ValueError(f"cannot save: the model state lacks {missing}")
    if framework == "pt":
        save_safetensors({s.name: np.asarray(state[s.name]) for s in specs}, directory / SAFE_WEIGHTS_NAME)
    else:
        tensors = {s.tf_name: to_tf_layout(s, state[s.name]) for s in specs if s.kind != "counter"}
        counters = {s.name: int(np.asarray(state[s.name])) for s in specs if s.kind == "counter"}
        write_tf_h5(directory / TF_WEIGHTS_NAME, hf_tf_model_name(task), tensors, counters=counters)
    config.save_pretrained(directory)
    return directory
