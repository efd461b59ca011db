"""Conversion report types and constants: :class:`Check`, :class:`ConversionReport`, the errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common.model.config import SegformerConfig
from .original import ASSUMED_PREFIX


FRAMEWORKS = ("pt", "tf")
MMSEG_TARGET = "mmseg"  # an mmsegmentation 1.x checkpoint file (``--to mmseg``)
TARGETS = FRAMEWORKS + (MMSEG_TARGET,)
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (65, 97))
DEFAULT_TOLERANCE = 1e-4
PREPROCESSOR_NAME = "preprocessor_config.json"

class ConversionError(ValueError):
    """The source cannot be converted as asked (left-over / missing tensors, bad options, wrong shapes)."""


class VerificationError(ConversionError):
    """The converted model does not reproduce the source within the tolerance; nothing was written."""

    def __init__(self, message: str, report: "ConversionReport") -> None:
        super().__init__(message)
        self.report = report


# ------------------------------------------------------------------------------------------ report
@dataclass
class Check:
    """One named comparison: ``max |a - b|`` against a tolerance (0 for the bit-exact checks)."""

    name: str
    max_abs_diff: float
    tolerance: float
    kind: str = "outputs"  # "outputs" (model outputs compared) or "tensors" (written tensors read back)

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance


@dataclass
class ConversionReport:
    """What :func:`convert` did: source kind, task, config, every check's max |diff|, files written."""

    source: str
    source_kind: str
    to: str
    task: str
    config: SegformerConfig
    destination: str | None = None
    reference_framework: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    checks: list[Check] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)
    written: bool = False
    seconds: float = 0.0
    outputs: list[dict[str, dict[str, np.ndarray]]] = field(default_factory=list, repr=False)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def max_abs_diff(self) -> float:
        """The largest max |diff| over the model-output checks (0.0 when there are none)."""
        values = [c.max_abs_diff for c in self.checks if c.kind == "outputs"]
        return max(values) if values else 0.0

    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def table(self) -> str:
        width = max([len(c.name) for c in self.checks] + [5])
        lines = [f"{'check':<{width}}  {'max |diff|':>11}  {'tolerance':>9}  result"]
        for check in self.checks:
            lines.append(
                f"{check.name:<{width}}  {check.max_abs_diff:>11.3e}  {check.tolerance:>9.1e}  "
                f"{'ok' if check.passed else 'FAILED'}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        assumed = [note for note in self.notes if note.startswith(ASSUMED_PREFIX)]
        head = [f"{ASSUMED_PREFIX}(not verifiable from the tensors): {note[len(ASSUMED_PREFIX):]}" for note in assumed] + [
            f"source: {self.source} ({self.source_kind})",
            f"task: {self.task}; destination framework: {self.to}"
            + (f"; compared against: {self.reference_framework}" if self.reference_framework else ""),
            f"architecture: depths {self.config.depths}, hidden sizes {self.config.hidden_sizes}, heads "
            f"{self.config.num_attention_heads}, decode head {self.config.decode_head_type}, {self.config.num_labels} labels, LayerNorm eps "
            f"{self.config.layer_norm_eps:g} / {self.config.patch_layer_norm_eps:g}",
        ]
        head += [f"note: {note}" for note in self.notes if note not in assumed]
        if self.dropped_keys:
            head.append(f"dropped (unused by the model): {', '.join(self.dropped_keys)}")
        head.append(self.table())
        if self.written:
            head.append(f"wrote {self.destination}: {', '.join(Path(f).name for f in self.files)}")
        else:
            head.append("nothing written")
        return "\n".join(head)
