"""Conversion report types and constants: :class:`Check`, :class:`ConversionReport`, the errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common.model.config import SegformerConfig
from .original import ASSUMED_PREFIX


FRAMEWORKS = ("pt", "tf")
KERAS_HUB = "keras-hub"
MMSEG_TARGET = "mmseg"  # an mmsegmentation 1.x checkpoint file (``--to mmseg``)
# what convert writes: a Hugging Face-layout folder, a keras-hub preset or an mmsegmentation checkpoint
TARGETS = FRAMEWORKS + (KERAS_HUB, MMSEG_TARGET)
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (65, 97))
KERAS_HUB_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (96, 96))  # keras-hub takes square inputs only
DEFAULT_TOLERANCE = 1e-4
PREPROCESSOR_NAME = "preprocessor_config.json"

# Every source `segformer convert` reads (detected from the content), with one example each: the one list that
# `convert --help`, `segformer info` and the README show.
SOURCE_FORMATS: tuple[tuple[str, str], ...] = (
    ("Hugging Face folder (config.json + model.safetensors / pytorch_model.bin / sharded index / tf_model.h5)",
     "segformer convert segformer-b0-finetuned-ade-512-512/ b0-tf/ --to tf"),
    ("bare weights file of either framework (config.json beside it, or the architecture read off the tensors)",
     "segformer convert model.safetensors b0-tf/ --to tf"),
    ("our Keras .keras archive", "segformer convert model.keras b0-pt/ --to pt"),
    ("original NVlabs .pth (mmcv state_dict + meta, backbone.patch_embed1.*)",
     "segformer convert segformer.b0.512x512.ade.160k.pth b0-pt/ --to pt"),
    ("encoder-only ImageNet mit_b*.pth (--num-heads where the widths match no variant)",
     "segformer convert mit_b0.pth mit-b0-pt/ --to pt"),
    ("mmsegmentation 1.x / 0.x mit.py .pth (backbone.layers.*, decode_head.convs.*; meta, module. prefixes or bare)",
     "segformer convert segformer_mit-b0_8xb2-160k_ade20k-512x512.pth b0-tf/ --to tf"),
    ("keras-hub SegFormerImageSegmenter preset folder (config.json + model.weights.h5 + task.json)",
     "segformer convert segformer_b0_ade20k_512/ b0-pt/ --to pt"),
)
# What `--to` writes, with one example each.
TARGET_FORMATS: tuple[tuple[str, str], ...] = (
    ("pt: Hugging Face folder with model.safetensors", "segformer convert b0-tf/ b0-pt/ --to pt"),
    ("tf: Hugging Face folder with tf_model.h5", "segformer convert b0-pt/ b0-tf/ --to tf"),
    ("keras-hub: SegFormerImageSegmenter preset (what it cannot represent is named in the report)",
     "segformer convert b0-pt/ b0-keras-hub/ --to keras-hub --image-size 512"),
    ("mmseg: mmsegmentation 1.x checkpoint file (decode head type mmseg, LayerNorm eps 1e-6; else refused naming why)",
     "segformer convert b0-mmseg-pt/ b0-mmseg.pth --to mmseg"),
)


def formats_text() -> str:
    """The sources and targets of ``segformer convert`` with one example each, as lines of text."""
    lines = ["sources (detected from the content):"]
    lines += [f"  {what}:\n    {example}" for what, example in SOURCE_FORMATS]
    lines.append("targets (--to):")
    lines += [f"  {what}:\n    {example}" for what, example in TARGET_FORMATS]
    return "\n".join(lines)

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
    # "outputs" (model outputs compared), "tensors" (written tensors read back) or "measured" (a difference the
    # target format imposes, reported, never a failure unless it is not finite)
    kind: str = "outputs"

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
            result = "ok" if check.passed else "FAILED"
            if check.kind == "measured" and check.passed:
                result = "measured"
            lines.append(f"{check.name:<{width}}  {check.max_abs_diff:>11.3e}  {check.tolerance:>9.1e}  {result}")
        return "\n".join(lines)

    def __str__(self) -> str:
        assumed = [note for note in self.notes if note.startswith(ASSUMED_PREFIX)]
        head = [f"{ASSUMED_PREFIX}(not verifiable from the tensors): {note[len(ASSUMED_PREFIX):]}" for note in assumed] + [
            f"source: {self.source} ({self.source_kind})",
            f"task: {self.task}; destination framework: {self.to}"
            + (f"; compared against: {self.reference_framework}" if self.reference_framework else ""),
            f"architecture: depths {self.config.depths}, hidden sizes {self.config.hidden_sizes}, heads "
            f"{self.config.num_attention_heads}, decode head {self.config.decode_head_type}, {self.config.num_labels} "
            f"labels, LayerNorm eps {self.config.layer_norm_eps:g} / {self.config.patch_layer_norm_eps:g} / stage "
            f"{self.config.stage_layer_norm_eps:g}, activation {self.config.hidden_act}",
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
