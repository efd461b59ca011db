"""Convert a SegFormer checkpoint to a Hugging Face-layout folder for PyTorch or TensorFlow, with proof.

:func:`convert` is ``segformer convert`` and ``segformer.convert``. The steps, in order:

1. **Read** the source (its kind detected from the content, not the name): a Hugging Face-layout folder or
   weights file (``model.safetensors``, ``pytorch_model.bin``, sharded index, ``tf_model.h5``), our
   ``.keras`` archive, or an original NVlabs / mmsegmentation ``.pth`` (mmcv or encoder-only ``mit_b*``).
   Nothing in the source is ever written to.
2. **Map** every tensor onto the canonical table (numpy, PyTorch layout): original keys through
   :mod:`segformer.conversion.original`, TF names through :mod:`segformer.common.weights`. The task (base
   model / semantic segmentation / image classification) is read off the tensor names. Every source
   tensor must be consumed and every model tensor present, else :class:`ConversionError` lists the names.
3. **Write** ``config.json`` + ``model.safetensors`` (``to="pt"``) or ``tf_model.h5`` (``to="tf"``) into a
   temporary folder ``.DST.PID.RANDOM.tmp`` next to the destination (BatchNorm running statistics included in
   both directions; ``num_batches_tracked``, which Keras has no variable for, rides along in an h5
   attribute so PT -> TF -> PT is bit-exact on every tensor).
4. **Verify** before the folder is renamed into place: the written tensors are read back and compared
   bit for bit with the mapped ones; the destination framework's model is loaded *from the written folder*
   and run, next to the other framework's model built from the mapped source tensors, on seeded inputs of
   two sizes (64x64 and an odd 65x97 by default); logits and every stage's hidden state are compared.
   Above ``tolerance`` (default 1e-4) nothing is written and :class:`VerificationError` carries the report.
5. **Rename** the temporary folder onto the destination (an existing destination only with
   ``overwrite=True``).

For a PT <-> TF conversion the two models compared are the source framework's (with the source tensors)
and the destination framework's (from the written files). For an original checkpoint they are our PT and
TF builds of the mapped tensors; agreement with the original code's own outputs is proven by the tests
(``tests/test_conversion_original.py`` against the fixtures the original code wrote).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..common.atomic import current_umask, replace_folder, temp_folder_for
from ..common.checkpoint import (
    PT_WEIGHTS_INDEX_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    CheckpointError,
    check_keras_version,
    detect_format,
    load_state_dict,
    COUNTERS_ATTR,
    match_state_dict,
    read_h5_counters,
    read_tf_h5,
)
from ..common.config import CONFIG_NAME, HF_LAYER_NORM_EPS, SegformerConfig
from ..common.deps import MissingDependencyError, missing_message, require
from ..common.pretrained import read_canonical_state, save_pretrained_state
from ..common.weights import canonical_task, parameter_table
from .original import (
    ASSUMED_PREFIX,
    OriginalCheckpoint,
    infer_original_config,
    is_original_state,
    labels_from_meta,
    map_original_state,
    original_from_object,
    read_torch_object,
)

__all__ = [
    "FRAMEWORKS",
    "DEFAULT_SIZES",
    "DEFAULT_TOLERANCE",
    "COUNTERS_ATTR",
    "Check",
    "ConversionReport",
    "ConversionError",
    "VerificationError",
    "SourceCheckpoint",
    "convert",
    "read_source",
    "detect_task",
    "apply_labels",
    "write_folder",
    "read_folder_state",
    "verify_state",
    "verification_inputs",
    "run_model",
    "build_model",
]

FRAMEWORKS = ("pt", "tf")
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (65, 97))
DEFAULT_TOLERANCE = 1e-4
PREPROCESSOR_NAME = "preprocessor_config.json"

_PT_CLASSES = {
    "base": "SegformerModel",
    "semantic_segmentation": "SegformerForSemanticSegmentation",
    "image_classification": "SegformerForImageClassification",
}


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
            f"{self.config.num_attention_heads}, {self.config.num_labels} labels, LayerNorm eps "
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


# ------------------------------------------------------------------------------------------ source
@dataclass
class SourceCheckpoint:
    """A source read onto the canonical table: config, task, tensors (PyTorch layout), provenance."""

    path: Path
    kind: str  # "hf-pt", "hf-tf", "keras", "original-mmseg", "original-encoder"
    framework: str | None  # "pt" / "tf" for Hugging Face / Keras sources, None for original checkpoints
    task: str
    config: SegformerConfig
    state: dict[str, np.ndarray]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def detect_task(names: Sequence[str]) -> str:
    """The task a set of canonical (PyTorch) or TF tensor names belongs to.

    ``decode_head.*`` -> semantic segmentation; a top-level ``classifier`` -> image classification;
    otherwise the base model.
    """
    names = list(names)
    if any(n.startswith(("decode_head.", "decode_head/")) for n in names):
        return "semantic_segmentation"
    if any(n.startswith(("classifier.", "classifier/")) for n in names):
        return "image_classification"
    return "base"


def _weights_in_folder(folder: Path, to: str, source_framework: str | None) -> Path:
    pt_names = [SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME]
    pt_files = [folder / n for n in pt_names if (folder / n).is_file()]
    tf_files = [folder / TF_WEIGHTS_NAME] if (folder / TF_WEIGHTS_NAME).is_file() else []
    keras_files = sorted(folder.glob("*.keras"))
    if source_framework == "pt":
        order = [pt_files]
    elif source_framework == "tf":
        order = [tf_files, keras_files]
    elif to == "tf":  # a folder with both: convert from the other framework's file
        order = [pt_files, tf_files, keras_files]
    else:
        order = [tf_files, keras_files, pt_files]
    for files in order:
        if files:
            return files[0]
    wanted = {"pt": pt_names, "tf": [TF_WEIGHTS_NAME, "*.keras"], None: pt_names + [TF_WEIGHTS_NAME, "*.keras"]}
    raise FileNotFoundError(
        f"source folder {folder}: no weights file"
        + (f" for --from {source_framework}" if source_framework else "")
        + f"; looked for {wanted[source_framework]}"
    )


def _strip_base_prefix(state: dict[str, np.ndarray], task: str) -> dict[str, np.ndarray]:
    if task == "base" and any(k.startswith("segformer.") for k in state):
        return {k.removeprefix("segformer."): v for k, v in state.items()}
    return state


def _check_against_table(
    state: Mapping[str, np.ndarray], config: SegformerConfig, task: str, source: Path, fill_counters: bool
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Match ``state`` with the canonical table; every tensor consumed, none missing, shapes equal."""
    specs = parameter_table(config, task)
    try:
        tensors, report = match_state_dict(state, specs)
    except ValueError as err:  # shape mismatch / wrong dtype
        raise ConversionError(f"{source}: {err} (config: depths {config.depths}, hidden sizes {config.hidden_sizes})") from None
    notes: list[str] = []
    counters = [k for k in report.missing_keys if k.endswith("num_batches_tracked")]
    missing = [k for k in report.missing_keys if k not in counters]
    if counters and fill_counters:
        for name in counters:
            tensors[name] = np.array(0, dtype=np.int64)
        notes.append(f"{', '.join(counters)}: not stored in the source (Keras has no such variable); set to 0")
    elif counters:
        missing += counters
    problems = []
    if missing:
        problems.append(f"missing from the source ({len(missing)}): {', '.join(missing)}")
    if report.unexpected_keys:
        problems.append(f"left over in the source ({len(report.unexpected_keys)}): {', '.join(report.unexpected_keys)}")
    if report.nonfinite_keys:
        problems.append(f"NaN / Inf values in: {', '.join(report.nonfinite_keys)}")
    if problems:
        raise ConversionError(
            f"{source} does not match a {task} model with depths {config.depths}, hidden sizes "
            f"{config.hidden_sizes}:\n" + "\n".join(problems)
        )
    return tensors, notes


def _config_beside(weights: Path, config_path: Path | None) -> SegformerConfig | None:
    path = config_path if config_path is not None else weights.parent / CONFIG_NAME
    if path.is_file():
        return SegformerConfig.from_json_file(path)
    return None


def _read_keras(path: Path) -> tuple[SegformerConfig, str, dict[str, np.ndarray]]:
    """Config, task and canonical tensors of one of our ``.keras`` archives (loaded in Keras safe mode)."""
    keras = require("keras", f"reading {os.fspath(path)!r} (a .keras archive)")
    from .. import tf as segformer_tf  # noqa: F401  (registers the serializable classes)

    check_keras_version(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types for foreign / damaged archives
        raise CheckpointError(f"{path}: not a SegFormer .keras archive that loads in safe mode ({type(err).__name__})") from None
    task = getattr(model, "_task", None)
    if task is None or not hasattr(model, "state_dict_numpy"):
        raise CheckpointError(f"{path}: the .keras archive holds a {type(model).__name__}, not a SegFormer model")
    return model.config, canonical_task(task), model.state_dict_numpy()


def read_source(
    src: str | os.PathLike,
    to: str = "pt",
    num_heads: Sequence[int] | None = None,
    source_framework: str | None = None,
    config_path: str | os.PathLike | None = None,
    progress: Any = None,
) -> SourceCheckpoint:
    """Read ``src`` (folder or file, kind detected from the content) onto the canonical table.

    ``num_heads`` is only for sources without a ``config.json`` (original checkpoints, bare weights
    files); ``source_framework`` (``"pt"`` / ``"tf"``) picks the weights of a folder that has both.
    """
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"source {os.fspath(src)!r} does not exist")
    if source_framework not in (None, "pt", "tf"):
        raise ValueError(f"source_framework must be 'pt', 'tf' or None, got {source_framework!r}")
    weights = _weights_in_folder(path, to, source_framework) if path.is_dir() else path
    explicit_config = Path(config_path) if config_path is not None else None
    kind = detect_format(weights)
    notes: list[str] = []

    if kind == "keras":
        config, task, state = _read_keras(weights)
        if num_heads is not None:
            raise ConversionError(f"--num-heads: {weights} carries its own config; head counts cannot be changed")
        tensors, extra = _check_against_table(state, config, task, weights, fill_counters=True)
        return SourceCheckpoint(weights, "keras", "tf", task, config, tensors, [weights], notes + extra)

    if kind == "torch":
        obj = read_torch_object(weights)
        if isinstance(obj, Mapping) and is_original_state(obj):
            return _from_original(original_from_object(obj, weights), num_heads, progress)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{weights}: expected a dict of tensors, got {type(obj).__name__}")
        state = dict(obj)
    elif kind in ("safetensors", "index"):
        state = load_state_dict(weights)
    elif kind == "h5":
        state = {}
    else:
        raise CheckpointError(f"{weights}: a {kind} file is not a SegFormer checkpoint")

    config = _config_beside(weights, explicit_config)
    if kind == "h5":
        model_name, tf_tensors = read_tf_h5(weights)
        task = detect_task(list(tf_tensors))
        if config is None:
            raise FileNotFoundError(
                f"{weights}: a tf_model.h5 needs its config.json beside it (or config_path=...): the TF names "
                "alone do not give the layouts"
            )
        if num_heads is not None:
            raise ConversionError(f"--num-heads: {weights} has a config.json; its num_attention_heads is used")
        specs = parameter_table(config, task)
        state = read_canonical_state(weights, specs)
        state.update(read_h5_counters(weights))
        tensors, extra = _check_against_table(state, config, task, weights, fill_counters=True)
        notes += extra
        return SourceCheckpoint(weights, "hf-tf", "tf", task, config, tensors, [weights], notes)

    not_arrays = sorted(k for k, v in state.items() if not isinstance(v, np.ndarray))
    if not_arrays:
        raise CheckpointError(f"{weights}: entries that are not tensors: {not_arrays[:10]}")
    task = detect_task(list(state))
    state = _strip_base_prefix(state, task)
    if config is None:
        config, inferred = infer_original_config(state, task, num_heads=num_heads, source=str(weights))
        config = config.copy(layer_norm_eps=HF_LAYER_NORM_EPS, patch_layer_norm_eps=HF_LAYER_NORM_EPS)
        notes += [f"no {CONFIG_NAME} beside {weights.name}: architecture read off the tensors"] + inferred
        notes.append("LayerNorm eps 1e-5 everywhere (Hugging Face numerics, as for any HF-layout weights file)")
    elif num_heads is not None:
        raise ConversionError(f"--num-heads: {weights} has a {CONFIG_NAME}; its num_attention_heads is used")
    tensors, extra = _check_against_table(state, config, task, weights, fill_counters=False)
    return SourceCheckpoint(weights, "hf-pt", "pt", task, config, tensors, [weights], notes + extra)


def _from_original(original: OriginalCheckpoint, num_heads: Sequence[int] | None, progress: Any) -> SourceCheckpoint:
    task, state, dropped = map_original_state(original, progress=progress)
    config, notes = infer_original_config(
        state, task, num_heads=list(num_heads) if num_heads is not None else None, meta=original.meta, source=str(original.path)
    )
    id2label = labels_from_meta(original.meta, config.num_labels) if task != "base" else None
    if id2label is not None:
        config = config.copy(id2label={str(k): v for k, v in id2label.items()}, label2id=None)
        notes.append(f"labels from the checkpoint's meta CLASSES ({config.num_labels} names)")
    notes.append("LayerNorm eps 1e-6 (block and stage norms) / 1e-5 (patch-embedding and sr norms): the original's")
    tensors, extra = _check_against_table(state, config, task, original.path, fill_counters=False)
    kind = "original-mmseg" if original.layout == "mmseg" else "original-encoder"
    return SourceCheckpoint(
        original.path, kind, None, task, config, tensors, [original.path], notes + extra, dropped, original.meta
    )


# ------------------------------------------------------------------------------------------ labels
def apply_labels(
    config: SegformerConfig,
    task: str,
    num_labels: int | None = None,
    labels: str | os.PathLike | None = None,
    id2label: Mapping[int, str] | None = None,
) -> tuple[SegformerConfig, list[str]]:
    """Set the label names. ``num_labels`` must equal the classifier's size (converting cannot resize it)."""
    notes: list[str] = []
    if labels is not None and id2label is not None:
        raise ValueError("pass either labels= (a label set name or JSON file) or id2label=, not both")
    if labels is not None:
        from ..common.labels import load_id2label

        id2label = load_id2label(labels)
        notes.append(f"labels from {os.fspath(labels)}")
    if id2label is not None:
        id2label = {int(k): str(v) for k, v in dict(id2label).items()}
    wanted = num_labels if num_labels is not None else (len(id2label) if id2label is not None else None)
    if num_labels is not None and id2label is not None and len(id2label) != num_labels:
        raise ValueError(f"--num-labels {num_labels} but the label names give {len(id2label)} classes")
    if wanted is None:
        return config, notes
    if task != "base" and wanted != config.num_labels:
        raise ConversionError(
            f"the checkpoint's classifier has {config.num_labels} classes but {wanted} were asked for "
            "(--num-labels / --labels); conversion keeps the head: fine-tune to change the label set"
        )
    if id2label is None:
        return config.copy(num_labels=wanted, id2label=None, label2id=None), notes
    if sorted(id2label) != list(range(wanted)):
        raise ValueError(f"label ids must be 0..{wanted - 1}, got {sorted(id2label)[:10]}...")
    return config.copy(num_labels=wanted, id2label={str(k): v for k, v in id2label.items()}, label2id=None), notes


# ------------------------------------------------------------------------------------- frameworks
def _framework_available(framework: str) -> bool:
    import importlib.util

    return importlib.util.find_spec("torch" if framework == "pt" else "tensorflow") is not None


def _model_class(framework: str, task: str):
    name = _PT_CLASSES[canonical_task(task)]
    if framework == "pt":
        from .. import pt as package
    else:
        from .. import tf as package

        name = "TF" + name
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


# ------------------------------------------------------------------------------------------- write
def write_folder(
    folder: Path, config: SegformerConfig, task: str, state: Mapping[str, np.ndarray], framework: str
) -> list[Path]:
    """Write ``config.json`` + the weights of ``framework`` into ``folder`` (exists, empty); the files."""
    architecture = _PT_CLASSES[task] if framework == "pt" else "TF" + _PT_CLASSES[task]
    save_pretrained_state(folder, config, state, task, framework, architecture)  # h5 carries the BN counters
    return sorted(p for p in folder.iterdir() if p.is_file())


def read_folder_state(folder: Path, config: SegformerConfig, task: str, framework: str) -> dict[str, np.ndarray]:
    """Read back what :func:`write_folder` wrote (canonical names, PyTorch layout, counters included)."""
    specs = parameter_table(config, task)
    if framework == "pt":
        return load_state_dict(folder / SAFE_WEIGHTS_NAME)
    state = read_canonical_state(folder / TF_WEIGHTS_NAME, specs)
    state.update(read_h5_counters(folder / TF_WEIGHTS_NAME))
    return state


def _bit_exact(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> Check:
    names = sorted(set(expected) | set(got))
    worst = 0.0
    for name in names:
        if name not in expected or name not in got:
            return Check(f"written tensors bit-exact ({name} {'missing' if name not in got else 'extra'})", float("inf"), 0.0, "tensors")
        a, b = np.asarray(expected[name]), np.asarray(got[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            return Check(f"written tensors bit-exact ({name}: {a.dtype}{a.shape} vs {b.dtype}{b.shape})", float("inf"), 0.0, "tensors")
        if a.tobytes() != b.tobytes():
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) or float("inf"))
    return Check(f"written tensors bit-exact ({len(names)} tensors)", worst, 0.0, "tensors")


def _overlaps(src: Path, dst: Path) -> bool:
    """True when writing (or replacing) ``dst`` could touch ``src``: the same path, or one inside the other."""
    src, dst = src.resolve(), dst.resolve()
    return src == dst or dst in src.parents or (src.is_dir() and src in dst.parents)


def _copy_extras(source: SourceCheckpoint, tmp: Path) -> list[str]:
    """Carry ``preprocessor_config.json`` over from a folder source; original sources get the default one."""
    folder = source.path.parent
    if source.kind.startswith("original"):
        from ..common.image_processing import SegformerImageProcessor

        SegformerImageProcessor().save_pretrained(tmp)
        return ["default preprocessor_config.json written (512x512, ImageNet mean/std)"]
    if (folder / PREPROCESSOR_NAME).is_file():
        shutil.copyfile(folder / PREPROCESSOR_NAME, tmp / PREPROCESSOR_NAME)
    return []


def _progress(enabled: bool, total: int | None, desc: str):
    from tqdm.auto import tqdm

    # delay: a conversion that takes less than a second shows no bar at all
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, delay=1.0, unit="step" if total else "tensor")


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike | None,
    to: str = "pt",
    *,
    num_heads: Sequence[int] | str | None = None,
    num_labels: int | None = None,
    labels: str | os.PathLike | None = None,
    id2label: Mapping[int, str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    seed: int = 0,
    inputs: Sequence[np.ndarray] | None = None,
    keep_outputs: bool = False,
    source_framework: str | None = None,
    verify: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> ConversionReport:
    """Convert ``src`` to a Hugging Face-layout folder ``dst`` for ``to`` (``"pt"`` or ``"tf"``), verified.

    Args:
        src: a folder or a checkpoint file of any supported kind (detected from the content).
        dst: the destination folder (must not exist unless ``overwrite``); ``None`` verifies without writing.
        to: ``"pt"`` (``model.safetensors``) or ``"tf"`` (``tf_model.h5``).
        num_heads: heads per stage for sources without a config (``[1, 2, 5, 8]`` or ``"1,2,5,8"``).
        num_labels / labels / id2label: label names (a set name ``ade20k`` / ``cityscapes``, a JSON file,
            or a dict); the count must equal the checkpoint's classifier size.
        tolerance: the largest max |diff| of any compared output accepted (default 1e-4).
        overwrite: replace an existing ``dst``.
        sizes, seed: the verification inputs (seeded standard normal, batch 1).
        inputs: your own NCHW float32 verification inputs instead (e.g. processed photos).
        keep_outputs: keep every model output in ``report.outputs`` (one ``{framework: {name: array}}`` per
            input; the destination framework's model is the one loaded from the written files).
        source_framework: ``"pt"`` / ``"tf"`` picks the weights of a folder holding both.
        verify: run the models (needs both frameworks); the bit-exact read-back check always runs.
        progress: show a tqdm progress bar (the CLI turns it on).

    Returns:
        :class:`ConversionReport` (``report.checks``: named max |diff|; ``report.files``: files written).

    Raises:
        ConversionError: left-over / missing tensors, shape mismatches, bad options.
        VerificationError: a check above the tolerance (``err.report``); nothing written.
        CheckpointError: ``src`` is not a readable checkpoint. FileExistsError: ``dst`` exists.
    """
    start = time.perf_counter()
    say = log or (lambda text: None)
    if to not in FRAMEWORKS:
        raise ValueError(f"to must be one of {list(FRAMEWORKS)}, got {to!r}")
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0 <= tolerance < float("inf"):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if isinstance(num_heads, str):
        try:
            num_heads = [int(h) for h in num_heads.replace(" ", "").split(",") if h]
        except ValueError:
            raise ValueError(f"--num-heads must be comma-separated integers like 1,2,5,8, got {num_heads!r}") from None
    src_path = Path(src)
    dst_path = Path(dst) if dst is not None else None
    if dst_path is not None:
        if src_path.exists() and _overlaps(src_path, dst_path):
            raise ValueError(
                f"destination {os.fspath(dst_path)!r} is the source or overlaps it ({os.fspath(src_path)!r}); "
                "the source is never modified: choose a new folder"
            )
        if dst_path.exists() and not overwrite:
            raise FileExistsError(f"destination {os.fspath(dst_path)!r} already exists; pass --overwrite (overwrite=True) to replace it")
        if dst_path.exists() and not dst_path.is_dir():
            raise NotADirectoryError(f"destination {os.fspath(dst_path)!r} exists and is not a folder")
    if not _framework_available(to):
        raise MissingDependencyError(missing_message("torch" if to == "pt" else "tensorflow", f"converting to {to!r}"))
    reference_framework = "tf" if to == "pt" else "pt"
    if verify and not _framework_available(reference_framework):
        raise MissingDependencyError(missing_message(
            "torch" if reference_framework == "pt" else "tensorflow",
            f"verifying a conversion (runs the {reference_framework} model next to the {to} one)",
            "or pass verify=False (--no-verify)",
        ))

    bar = _progress(progress, None, "reading")
    try:
        source = read_source(src_path, to=to, num_heads=num_heads, source_framework=source_framework, progress=bar)
    finally:
        bar.close()
    config, label_notes = apply_labels(source.config, source.task, num_labels, labels, id2label)
    report = ConversionReport(
        source=os.fspath(source.path),
        source_kind=source.kind,
        to=to,
        task=source.task,
        config=config,
        destination=os.fspath(dst_path) if dst_path is not None else None,
        reference_framework=reference_framework if verify else None,
        tolerance=float(tolerance),
        notes=source.notes + label_notes,
        dropped_keys=source.dropped_keys,
    )
    say(f"read {source.path} ({source.kind}, {source.task}, {len(source.state)} tensors)")

    parent = (dst_path.parent if dst_path is not None else Path(tempfile.gettempdir())).resolve()
    name = dst_path.name if dst_path is not None else "segformer-verify"
    tmp = temp_folder_for(parent / name)
    try:
        bar = _progress(progress, 3, "writing")
        write_folder(tmp, config, source.task, source.state, to)
        report.notes += _copy_extras(source, tmp)
        bar.update(1)
        bar.set_description("checking written tensors")
        report.checks.append(_bit_exact(source.state, read_folder_state(tmp, config, source.task, to)))
        bar.update(1)
        if verify:
            bar.set_description("running both frameworks")
            candidate = load_model(to, source.task, tmp)
            reference = build_model(reference_framework, source.task, config, source.state)
            if inputs is None:
                inputs = verification_inputs(config, sizes, seed)
            report.checks += verify_state(
                config, source.task, (reference_framework, reference), (to, candidate),
                [np.asarray(x, dtype=np.float32) for x in inputs], float(tolerance),
                report.outputs if keep_outputs else None,
            )
        bar.update(1)
        bar.close()
        if not report.passed:
            worst = max(report.failed(), key=lambda c: c.max_abs_diff)
            raise VerificationError(
                f"conversion of {source.path} refused: {worst.name} max |diff| {worst.max_abs_diff:.3e} is above "
                f"the tolerance {worst.tolerance:g}; nothing was written\n{report.table()}",
                report,
            )
        if dst_path is not None:
            written = [dst_path / p.name for p in sorted(tmp.iterdir()) if p.is_file()]
            _move_into_place(tmp, dst_path, overwrite)
            report.files = [os.fspath(p) for p in written]
            report.written = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report


def _move_into_place(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder onto ``dst``; an existing ``dst`` is exchanged with it in one
    rename where the platform allows (:func:`segformer.common.atomic.replace_folder`).

    Temporary files and folders are created private (0600 / 0700); the result gets the usual permissions
    (0666 / 0777 less the umask), like any file the user writes.
    """
    umask = current_umask()
    for path in tmp.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)
    os.chmod(tmp, 0o777 & ~umask)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"destination {os.fspath(dst)!r} appeared while converting; not overwritten")
    replace_folder(tmp, dst)
