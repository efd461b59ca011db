"""Matching a state dict with the canonical parameter table: :func:`match_state_dict` and its :class:`LoadReport`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..model.weights import BASE_MODEL_PREFIX, ParamSpec

__all__ = ["LoadReport", "match_state_dict"]


@dataclass
class LoadReport:
    """What happened when a state dict met a model: names of missing, unexpected and mismatched tensors."""

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    nonfinite_keys: list[str] = field(default_factory=list)
    added_prefix: str = ""
    removed_prefix: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys or self.nonfinite_keys)

    @property
    def untrained_head_keys(self) -> list[str]:
        """The decode-head tensors the checkpoint lacks (its head would be random): missing ``decode_head.*``
        names other than BatchNorm's ``num_batches_tracked`` counter, which Keras-written files have no
        variable for."""
        return [k for k in self.missing_keys if k.startswith("decode_head.") and not k.endswith("num_batches_tracked")]

    def summary(self) -> str:
        lines = []
        if self.missing_keys:
            lines.append(f"missing ({len(self.missing_keys)}): {', '.join(self.missing_keys)}")
        if self.unexpected_keys:
            lines.append(f"unexpected ({len(self.unexpected_keys)}): {', '.join(self.unexpected_keys)}")
        if self.mismatched_keys:
            lines.append(
                f"mismatched ({len(self.mismatched_keys)}), newly initialized because the shapes did not match: "
                + ", ".join(f"{k} checkpoint {a} vs model {b}" for k, a, b in self.mismatched_keys)
            )
        if self.nonfinite_keys:
            lines.append(f"NaN/Inf values ({len(self.nonfinite_keys)}): {', '.join(self.nonfinite_keys)}")
        return "\n".join(lines) if lines else "all tensors matched"

    def __getitem__(self, key: str):
        """transformers' ``output_loading_info=True`` dict: ``missing_keys``, ``unexpected_keys``, ``mismatched_keys``
        (the names, sorted, as transformers lists them; the attribute also holds both shapes) and ``error_msgs``."""
        if key == "mismatched_keys":
            return sorted(name for name, _, _ in self.mismatched_keys)
        if key == "error_msgs":
            return []
        return getattr(self, key)


_ATTENTION_KEY = re.compile(r"(?:^|\.)encoder\.block\.(\d+)\.\d+\.attention\.self\.(query|sr)\.weight$")


def check_sr_ratios(state: Mapping[str, np.ndarray], sr_ratios: list[int], source: object) -> None:
    """Refuse weights whose sequence-reduction convolutions disagree with the config's ``sr_ratios``, naming the
    ratios the weights were trained with. A stage's ratio is its ``sr`` conv's kernel (no ``sr`` conv: 1); a
    mismatch would otherwise load with the reduction re-initialized or silently dropped."""
    found: dict[int, int] = {}
    for name, array in state.items():
        match = _ATTENTION_KEY.search(name)
        if match is None:
            continue
        stage = int(match.group(1))
        if match.group(2) == "sr" and np.ndim(array) == 4:
            found[stage] = int(np.shape(array)[-1])
        else:
            found.setdefault(stage, 1)
    wrong = [i for i, ratio in sorted(found.items()) if i < len(sr_ratios) and sr_ratios[i] != ratio]
    if wrong:
        from_weights = [found.get(i, sr_ratios[i]) for i in range(len(sr_ratios))]
        raise ValueError(
            f"{source}: the config's sr_ratios {list(sr_ratios)} do not match the weights, whose sequence-reduction "
            f"convolutions give sr_ratios {from_weights} (stage(s) {wrong} differ); fix sr_ratios in config.json"
        )


def match_state_dict(
    state: Mapping[str, np.ndarray],
    specs: list[ParamSpec],
    ignore_mismatched_sizes: bool = False,
) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Map ``state`` (PT layout, canonical names) onto ``specs``.

    Handles the ``segformer.`` base-model prefix both ways (a base checkpoint into a task model, a task
    checkpoint into a base model), checks shapes and dtypes, and returns ``(tensors_to_load, report)``.
    A shape mismatch is an error unless ``ignore_mismatched_sizes`` (then that tensor keeps its init and
    is listed in ``report.mismatched_keys``). Float tensors are cast to float32; integer / bool tensors
    for a float parameter are an error; NaN / Inf values are listed in ``report.nonfinite_keys``.
    """
    expected = {s.name: s for s in specs}
    report = LoadReport()
    state = dict(state)
    prefix = BASE_MODEL_PREFIX
    model_has_prefix = any(n.startswith(prefix) for n in expected)
    ckpt_has_prefix = any(k.startswith(prefix) for k in state)
    if model_has_prefix and not ckpt_has_prefix and any(k.startswith("encoder.") for k in state):
        state = {(prefix + k if k.startswith("encoder.") else k): v for k, v in state.items()}
        report.added_prefix = prefix
    elif not model_has_prefix and ckpt_has_prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
        report.removed_prefix = prefix
    to_load: dict[str, np.ndarray] = {}
    for name, spec in expected.items():
        if name not in state:
            report.missing_keys.append(name)
            continue
        array = np.asarray(state[name])
        if tuple(array.shape) != spec.shape:
            if not ignore_mismatched_sizes:
                raise ValueError(
                    f"tensor {name!r} has shape {tuple(array.shape)} in the checkpoint but {spec.shape} in the model; "
                    "pass ignore_mismatched_sizes=True to re-initialize it (e.g. a new classifier head)"
                )
            report.mismatched_keys.append((name, tuple(array.shape), spec.shape))
            continue
        if spec.kind == "counter":
            if array.dtype.kind not in "iu":
                raise ValueError(f"tensor {name!r} must be an integer counter, got dtype {array.dtype}")
            to_load[name] = array.astype(np.int64)
            continue
        if array.dtype.kind != "f":
            raise ValueError(f"tensor {name!r} must be floating point, got dtype {array.dtype}")
        array = array.astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            report.nonfinite_keys.append(name)
        to_load[name] = array
    report.unexpected_keys = sorted(set(state) - set(expected))
    return to_load, report
