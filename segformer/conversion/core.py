"""Convert a SegFormer checkpoint to a Hugging Face-layout folder for PyTorch or TensorFlow, with proof.

:func:`convert` is ``segformer convert`` and ``segformer.convert``. The steps, in order:

1. **Read** the source (its kind detected from the content, not the name): a Hugging Face-layout folder or
   weights file (``model.safetensors``, ``pytorch_model.bin``, sharded index, ``tf_model.h5``), our
   ``.keras`` archive, an original NVlabs ``.pth`` (mmcv or encoder-only ``mit_b*``), an mmsegmentation
   ``mit.py`` ``.pth`` (:mod:`~segformer.conversion.mmseg`, which also writes ``to="mmseg"``: one checkpoint file,
   read back bit for bit, no models run) or a keras-hub preset folder (:mod:`~segformer.conversion.keras_hub`,
   which also writes ``to="keras-hub"``).
   Nothing in the source is ever written to.
2. **Map** every tensor onto the canonical table (numpy, PyTorch layout): original keys through
   :mod:`segformer.conversion.original`, TF names through :mod:`segformer.common.model.weights`. The task (base
   model / semantic segmentation / image classification) is read off the tensor names. Every source
   tensor must be consumed and every model tensor present, else :class:`ConversionError` lists the names.
3. **Write** ``config.json`` + ``model.safetensors`` (``to="pt"``) or ``tf_model.h5`` (``to="tf"``) into a
   temporary folder ``.DST.PID.RANDOM.tmp`` next to the destination (:func:`segformer.common.base.atomic.atomic_folder`) (BatchNorm running statistics included in
   both directions; ``num_batches_tracked``, which Keras has no variable for, rides along in an h5
   attribute so PT -> TF -> PT is bit-exact on every tensor).
4. **Verify** before the folder is renamed into place: the written tensors are read back and compared
   bit for bit with the mapped ones; the destination framework's model is loaded *from the written folder*
   and run, next to the other framework's model built from the mapped source tensors, on seeded inputs of
   two sizes (64x64 and an odd 65x97 by default); logits and every stage's hidden state are compared.
   Above ``tolerance`` (default 1e-4) nothing is written and :class:`VerificationError` carries the report.
5. **Rename** the temporary folder onto the destination (an existing destination only with
   ``overwrite=True``; it is replaced whole, exchanged in one rename where the platform allows).

The steps live in :mod:`~segformer.conversion.source` (read, map, labels),
:mod:`~segformer.conversion.write` (write, read back), :mod:`~segformer.conversion.verify` (models of both
frameworks, output comparison) and :mod:`~segformer.conversion.report` (report types, errors); this module
runs them in order and re-exports their public names.

For a PT <-> TF conversion the two models compared are the source framework's (with the source tensors)
and the destination framework's (from the written files). For an original checkpoint they are our PT and
TF builds of the mapped tensors; agreement with the original code's own outputs is proven by the tests
(``tests/test_conversion_original.py`` against the fixtures the original code wrote).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..common.base.atomic import atomic_folder, atomic_path
from ..common.checkpoints import COUNTERS_ATTR
from ..common.base.deps import MissingDependencyError, missing_message
from .report import (
    DEFAULT_SIZES,
    KERAS_HUB_SIZES,
    DEFAULT_TOLERANCE,
    FRAMEWORKS,
    MMSEG_TARGET,
    PREPROCESSOR_NAME,
    TARGETS,
    Check,
    ConversionError,
    ConversionReport,
    VerificationError,
)
from .keras_hub import KERAS_HUB, write_keras_hub_target
from .source import SourceCheckpoint, apply_labels, detect_task, read_source
from .verify import _framework_available, build_model, load_model, run_model, verification_inputs, verify_state
from .write import bit_exact_check, read_folder_state, write_folder, write_mmseg_checkpoint

__all__ = [
    "FRAMEWORKS",
    "TARGETS",
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


def _overlaps(src: Path, dst: Path) -> bool:
    """True when writing (or replacing) ``dst`` could touch ``src``: the same path, or one inside the other."""
    from ..common.base.atomic import output_overlap

    return output_overlap(src, dst) is not None


def _copy_extras(source: SourceCheckpoint, tmp: Path) -> list[str]:
    """Carry ``preprocessor_config.json`` over from a folder source; original sources get the default one."""
    folder = source.path.parent
    if source.kind == KERAS_HUB:
        from ..common.images.image_processing import SegformerImageProcessor

        settings = source.meta.get("preprocessor")
        if settings is not None:
            SegformerImageProcessor(**settings).save_pretrained(tmp)
            return ["preprocessor_config.json from the preset's image converter (size, mean / std)"]
        side = source.meta.get("image_size") or 512
        SegformerImageProcessor(size={"height": side, "width": side}).save_pretrained(tmp)
        return [f"the preset has no preprocessor: default preprocessor_config.json written ({side}x{side}, ImageNet mean/std)"]
    if source.kind.startswith(("original", "mmseg")):
        from ..common.images.image_processing import SegformerImageProcessor

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
    image_size: int | None = None,
    finish: Callable[[Path, ConversionReport], Any] | None = None,
) -> ConversionReport:
    """Convert ``src`` to a Hugging Face-layout folder ``dst`` for ``to`` (``"pt"`` or ``"tf"``), or to a
    keras-hub preset (``to="keras-hub"``, :mod:`segformer.conversion.keras_hub`), verified; or, with ``to="mmseg"``,
    to an mmsegmentation 1.x checkpoint file ``dst`` (read back and compared bit for bit).

    Args:
        src: a folder or a checkpoint file of any supported kind (detected from the content).
        dst: the destination folder (must not exist unless ``overwrite``); ``None`` verifies without writing.
        to: ``"pt"`` (``model.safetensors``), ``"tf"`` (``tf_model.h5``) or ``"keras-hub"`` (a
            ``SegFormerImageSegmenter`` preset: what keras-hub cannot represent is refused or measured, in the report).
        num_heads: heads per stage for sources without a config (``[1, 2, 5, 8]`` or ``"1,2,5,8"``).
        num_labels / labels / id2label: label names (a set name ``ade20k`` / ``cityscapes``, a JSON file,
            or a dict); the count must equal the checkpoint's classifier size.
        tolerance: the largest max |diff| of any compared output accepted (default 1e-4).
        overwrite: replace an existing ``dst``.
        sizes, seed: the verification inputs (seeded standard normal, batch 1).
        inputs: your own NCHW float32 verification inputs instead (e.g. processed photos).
        keep_outputs: keep every model output in ``report.outputs`` (one ``{framework: {name: array}}`` per
            input; the destination framework's model is the one loaded from the written files); not for keras-hub.
        source_framework: ``"pt"`` / ``"tf"`` picks the weights of a folder holding both.
        verify: run the models (needs both frameworks); the bit-exact read-back check always runs.
        progress: show a tqdm progress bar (the CLI turns it on).
        image_size: ``to="keras-hub"`` only: the square input size of the preset (default: the source's
            square processor size, else 512).
        finish: called as ``finish(folder, report)`` on the verified temporary folder before it is renamed onto
            ``dst``, to add files (the CLI writes ``preprocessor_config.json`` and the model card there), so a
            failure there too leaves ``dst`` as it was.

    Returns:
        :class:`ConversionReport` (``report.checks``: named max |diff|; ``report.files``: files written).

    Raises:
        ConversionError: left-over / missing tensors, shape mismatches, bad options.
        VerificationError: a check above the tolerance (``err.report``); nothing written.
        CheckpointError: ``src`` is not a readable checkpoint. FileExistsError: ``dst`` exists.
    """
    start = time.perf_counter()
    say = log or (lambda text: None)
    if to not in TARGETS:
        raise ValueError(f"to must be one of {list(TARGETS)}, got {to!r}")
    if image_size is not None and to != KERAS_HUB:
        raise ValueError(f"image_size (--image-size) is for to='keras-hub' only, got to={to!r}")
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
        if dst_path.exists() and not dst_path.is_dir() and to != MMSEG_TARGET:
            raise NotADirectoryError(f"destination {os.fspath(dst_path)!r} exists and is not a folder")
        if dst_path.is_dir() and to == MMSEG_TARGET:
            raise IsADirectoryError(f"destination {os.fspath(dst_path)!r} is a folder; --to mmseg writes one .pth file")
    if to == MMSEG_TARGET:
        return _convert_to_mmseg(src_path, dst_path, num_heads, num_labels, labels, id2label, overwrite, start)
    if to == KERAS_HUB:
        reference_framework = "pt" if _framework_available("pt") else "tf"
    elif not _framework_available(to):
        raise MissingDependencyError(missing_message("torch" if to == "pt" else "tensorflow", f"converting to {to!r}"))
    else:
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

    with contextlib.ExitStack() as stack:
        if dst_path is None:  # verification only: written to a private temporary folder, then deleted
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segformer-verify-")))
        else:  # the whole destination is replaced: nothing of an existing one is carried over
            tmp = stack.enter_context(atomic_folder(dst_path, "destination", discard=lambda name: True))
        bar = _progress(progress, 3, "writing")
        if to == KERAS_HUB:
            checks, notes = write_keras_hub_target(
                tmp, source, config, image_size, verify, float(tolerance),
                KERAS_HUB_SIZES if tuple(sizes) == DEFAULT_SIZES else sizes, inputs, seed,
            )
            report.checks += checks
            report.notes += notes
        else:
            _write_and_verify(tmp, source, config, to, report, reference_framework, verify, inputs, sizes, seed,
                              float(tolerance), keep_outputs, bar)
        bar.update(3)
        bar.close()
        if not report.passed:
            worst = max(report.failed(), key=lambda c: c.max_abs_diff)
            raise VerificationError(
                f"conversion of {source.path} refused: {worst.name} max |diff| {worst.max_abs_diff:.3e} is above "
                f"the tolerance {worst.tolerance:g}; nothing was written\n{report.table()}",
                report,
            )
        if dst_path is not None:
            if dst_path.exists() and not overwrite:
                raise FileExistsError(f"destination {os.fspath(dst_path)!r} appeared while converting; not overwritten")
            if finish is not None:  # more files of the destination, written before it is renamed into place
                finish(tmp, report)
            report.files = [os.fspath(dst_path / p.name) for p in sorted(tmp.iterdir()) if p.is_file()]
    report.written = dst_path is not None  # the folder was renamed into place when the block ended
    report.seconds = time.perf_counter() - start
    return report


def _convert_to_mmseg(src: Path, dst: Path | None, num_heads, num_labels, labels, id2label, overwrite: bool,
                      start: float) -> ConversionReport:
    """``to="mmseg"``: the source's canonical tensors written as an mmseg 1.x checkpoint, read back with the mmseg
    reader and compared bit for bit (tensors and architecture) before it is renamed onto ``dst``."""
    if not _framework_available("pt"):
        raise MissingDependencyError(missing_message("torch", "writing an mmsegmentation checkpoint (--to mmseg)"))
    source = read_source(src, to="pt", num_heads=num_heads)
    config, label_notes = apply_labels(source.config, source.task, num_labels, labels, id2label)
    report = ConversionReport(
        source=os.fspath(source.path), source_kind=source.kind, to=MMSEG_TARGET, task=source.task, config=config,
        destination=os.fspath(dst) if dst is not None else None, notes=source.notes + label_notes,
        dropped_keys=source.dropped_keys,
    )
    with contextlib.ExitStack() as stack:
        if dst is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segformer-verify-"))) / "mmseg.pth"
        else:
            tmp = stack.enter_context(atomic_path(dst, overwrite=overwrite))
        try:
            write_mmseg_checkpoint(tmp, config, source.task, source.state)
        except ValueError as err:
            raise ConversionError(f"--to mmseg: {err}") from None
        back = read_source(tmp, to="pt")
        report.checks.append(bit_exact_check(source.state, back.state))
        same = [name for name in ("depths", "hidden_sizes", "num_attention_heads", "decoder_hidden_size", "id2label",
                                  "decode_head_type", "layer_norm_eps", "patch_layer_norm_eps", "stage_layer_norm_eps")
                if getattr(back.config, name) != getattr(config, name)]
        if same:
            report.checks.append(Check(f"architecture read back ({', '.join(same)} differ)", float("inf"), 0.0, "tensors"))
        if not report.passed:
            raise VerificationError(f"conversion of {source.path} to mmseg refused: the checkpoint does not read back "
                                    f"as written; nothing was written\n{report.table()}", report)
    report.files = [os.fspath(dst)] if dst is not None else []
    report.written = dst is not None
    report.seconds = time.perf_counter() - start
    return report


def _write_and_verify(tmp, source, config, to, report, reference_framework, verify, inputs, sizes, seed, tolerance,
                      keep_outputs, bar) -> None:
    """Write the Hugging Face-layout folder of ``to`` into ``tmp``, read it back bit for bit, run both frameworks."""
    write_folder(tmp, config, source.task, source.state, to)
    report.notes += _copy_extras(source, tmp)
    bar.set_description("checking written tensors")
    report.checks.append(bit_exact_check(source.state, read_folder_state(tmp, config, source.task, to)))
    if verify:
        bar.set_description("running both frameworks")
        candidate = load_model(to, source.task, tmp)
        reference = build_model(reference_framework, source.task, config, source.state)
        if inputs is None:
            inputs = verification_inputs(config, sizes, seed)
        report.checks += verify_state(
            config, source.task, (reference_framework, reference), (to, candidate),
            [np.asarray(x, dtype=np.float32) for x in inputs], tolerance,
            report.outputs if keep_outputs else None,
        )
