"""``segformer predict``: segment images, write label PNGs and overlays (PyTorch or Keras).

    segformer predict --model runs/b0 photos/ --out masks/
    segformer predict --model runs/b0 'shots/**/*.jpg' @more.txt one.png --out masks/
    segformer predict --model nvidia-b0-ade --framework tf big.jpg --out masks/ --mode slide

Inputs are files, folders (every image file below them, recursively, sorted), globs and ``@FILE`` lists
(one path per line). For every image ``NAME.ext`` it writes ``OUT/NAME.png`` (palette PNG: pixel value =
class index, shown in the label set's colours) and ``OUT/NAME_overlay.png`` (the colours blended over the
image), each atomically; images found in a folder, or by a glob below its fixed leading folders, keep their
sub-folders under OUT. Two inputs whose outputs would share a path (``x.png`` and ``x_overlay.png``) are refused
before any work, naming both. It prints one line
per image with its most frequent classes (fraction of pixels and name) and writes ``OUT/legend.png``
(colour, id and name of every class that appears). Existing outputs are never replaced without
``--overwrite`` (checked for every image before any work), and an input is never written over, even
with ``--overwrite``. A file that cannot be read (missing, truncated, not an image, too many pixels) is
skipped and listed at the end with its reason, and the exit status is 1; ``--strict`` stops at the first
one instead. Masks have the input's resolution. It is a thin layer over :class:`segformer.Segmenter`, built
as :meth:`segformer.Segmenter.from_pretrained` builds it (the folder's processor config, a preset's test-time
settings), so the masks are the label maps that ``Segmenter.from_pretrained(MODEL)(image)`` gives; every
inference option is one ``Segmenter`` argument. Labels are computed in row bands (no ``classes x H x W`` logits). ``--workers`` parallel pipelines each
decode, resize, segment and post-process their share of the images (``--batch-size`` consecutive images at a
time, equal-sized ones in one model call) while background threads write the outputs; the outputs are the
ones a one-at-a-time loop writes, byte for byte. By default (PyTorch on the CPU) there is one pipeline per
intra-op thread (``torch.get_num_threads()``, at most 4) and the threads are split between them: on a
2-core machine 2 pipelines of 1 thread, so both cores stay busy through the single-threaded upsampling and
PNG encoding; ``--workers 0`` runs one image at a time in the main thread. A progress bar shows images/s. Before any work every image's peak memory is estimated from its header
(:mod:`segformer.common.inference.memory`); one that would need more than is available (or ``--memory-limit``) is
refused with the mode that would fit. Images above 16 megapixels get their label map computed into a
temporary file on disk (the PNG is written from it). ``--max-pixels`` is an optional hard cap. Under
``torchrun`` (PyTorch) or with ``TF_CONFIG`` workers (Keras) the images are split by rank and each output
is written once. ``--check-finite``
(default on) skips an image whose logits hold NaN or Inf. A checkpoint without a trained decode head (base or
classification weights) is refused unless ``--allow-random-head``. A destination that cannot be written
(read-only, full disk, a file where a folder should be) stops with one ``error:`` line naming the path;
files already there stay as they were.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .shared import add_inference_arguments, build_segmenter, load_model

__all__ = ["LARGE_IMAGE_PIXELS", "LEGEND_NAME", "add_arguments", "check_memory", "output_paths", "palette_for", "run"]

LEGEND_NAME = "legend"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint folder (config.json + weights)")
    parser.add_argument("images", nargs="+",
                        help="image files, folders (recursive, sub-folders kept in the output names), globs "
                             "('photos/**/*.jpg', sub-folders below the fixed part kept) or @FILE (a text file, one "
                             "path per line); an image whose name starts with @ is passed as ./@name.png")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    parser.add_argument("--allow-random-head", action="store_true",
                        help="run a checkpoint whose decode head is not trained (base / classification weights)")
    parser.add_argument("--check-finite", dest="check_finite", action="store_true", default=True,
                        help="fail on NaN / Inf logits (default on)")
    parser.add_argument("--no-check-finite", dest="check_finite", action="store_false")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="refuse images with more pixels (default: no fixed limit; the memory check decides)")
    parser.add_argument("--memory-limit", default=None,
                        help="memory an image may need, e.g. 8GB (default: what the system has available); images "
                             "estimated above it are refused before any work, with the mode that would fit")
    parser.add_argument("--max-windows", type=int, default=None,
                        help="the most sliding windows one image may take in slide mode, over every test-time pass "
                             "(default 4096); more are refused before any work; 0: no limit")
    parser.add_argument("--batch-size", type=int, default=2,
                        help="images a worker takes at a time; equal-sized ones share a model call (default 2)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel pipelines, each decoding, segmenting and post-processing its share of the "
                             "images while outputs are written in the background (default: PyTorch on the CPU one "
                             "per intra-op thread, torch.get_num_threads(), at most 4, the threads split between "
                             "them; Keras 2); 0: everything one image at a time in the main thread")
    parser.add_argument("--no-overlay", action="store_true", help="write only the label PNGs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay mask weight in [0, 1] (default 0.5)")
    parser.add_argument("--palette", default=None,
                        help="ade20k | cityscapes | auto (default: the preset's label set, else by num_labels: 150 ade20k, 19 "
                             "cityscapes, else generated)")
    parser.add_argument("--top", type=int, default=3, help="classes listed per image (default 3)")
    add_inference_arguments(parser, "the resize Segmenter.from_pretrained uses: the preset's keep-ratio rule for a "
                                    "preset name, else the processor's (the folder's preprocessor_config.json, else "
                                    "512x512)")


def palette_for(num_labels: int, name: str | None = None) -> np.ndarray:
    """The colours for ``num_labels`` classes: a named set, or ADE20K (150) / Cityscapes (19) / generated
    (:func:`~segformer.common.images.labels.resolve_palette`, the one palette rule)."""
    from ..common.images.labels import resolve_palette

    return resolve_palette(num_labels, name, what="--palette")[0]


def output_paths(images: list[tuple[Path, str]], out: Path, overlay: bool = True) -> list[tuple[Path, Path, Path]]:
    """``(image, mask, overlay)`` per ``(image, output name)``. Every file written must belong to one input:
    two inputs whose outputs share a path (``x.png``'s overlay ``x_overlay.png`` and the mask of an input named
    ``x_overlay``, or two inputs with the same name), an input whose outputs would be the legend, and an output
    that is one of the inputs are errors naming both, before any work (``--overwrite`` or not)."""
    owners: dict[str, str] = {os.path.normcase(os.fspath(out / f"{LEGEND_NAME}.png")): "the legend"}
    result = []
    for path, name in images:
        mask, over = out / f"{name}.png", out / f"{name}_overlay.png"
        for output in (mask, over) if overlay else (mask,):
            key = os.path.normcase(os.fspath(output))
            if owners.get(key) == "the legend":
                raise ValueError(f"input {os.fspath(path)!r} would write {LEGEND_NAME}.png, the legend's name; rename it")
            if key in owners:
                raise ValueError(
                    f"inputs {owners[key]!r} and {os.fspath(path)!r} would both write {os.fspath(output)!r}; rename "
                    "one (each input NAME writes NAME.png and NAME_overlay.png)"
                )
            owners[key] = os.fspath(path)
        result.append((path, mask, over))
    inputs = {os.path.realpath(path): os.fspath(path) for path, _ in images}
    for output in [out / f"{LEGEND_NAME}.png"] + [p for _, mask, over in result for p in (mask, over)]:
        if os.path.realpath(output) in inputs:
            raise ValueError(
                f"output {os.fspath(output)!r} is the input {inputs[os.path.realpath(output)]!r}; predict never "
                "writes over its inputs, even with --overwrite: choose another --out"
            )
    return result


LARGE_IMAGE_PIXELS = 16_000_000  # larger images: label map computed into a file on disk, confidence not kept
_NO_PIXEL_LIMIT = 1 << 62  # the header is read before the memory check decides


def check_memory(segmenter: Any, jobs: list[Any], sizes: list[tuple[int, int]], args: argparse.Namespace,
                 in_flight: int = 1) -> None:
    """Refuse, before any work, an image whose estimated peak memory exceeds what is available (or
    ``--memory-limit``), saying what each mode would need.

    Images up to :data:`LARGE_IMAGE_PIXELS` run ``in_flight`` at a time (parallel workers x batch size), so each
    is checked as ``in_flight`` images of its size next to one framework baseline; larger ones run alone.
    """
    from ..common.inference.memory import available_memory, estimate_memory, format_bytes

    budget = _memory_budget(args.memory_limit) if args.memory_limit else available_memory()
    if budget is None:
        return
    config = segmenter.model.config
    settings = segmenter.settings
    for (image, _, _), (height, width) in zip(jobs, sizes):
        target = segmenter.input_size(height, width)
        huge = height * width > LARGE_IMAGE_PIXELS
        kwargs = dict(crop_size=settings.crop_size, stride=settings.stride, framework=segmenter.framework,
                      labels_on_disk=huge, window_batch=segmenter.batch_size)
        needed = estimate_memory(config, target, settings.mode, **kwargs)
        copies = 1 if huge else max(1, in_flight)
        concurrent = (needed.total - needed.framework) * copies + needed.framework
        if concurrent <= budget:
            continue
        if needed.total <= budget:
            raise ValueError(
                f"image {os.fspath(image)!r} ({height}x{width}) needs about {format_bytes(needed.total)} in "
                f"{settings.mode} mode, and {copies} images of its size in flight at once (--workers x --batch-size) "
                f"need about {format_bytes(concurrent)}, more than the {format_bytes(budget)} available; "
                "--workers 1 --batch-size 1 would fit"
            )
        other = "slide" if settings.mode == "whole" else "whole"
        alternative = estimate_memory(config, target, other, **kwargs)
        fits = (f"--mode {other} would need about {format_bytes(alternative.total)}, which fits"
                if alternative.total <= budget else f"--mode {other} would need about {format_bytes(alternative.total)}, "
                "which does not fit either: resize it (--eval-size) or use a machine with more memory")
        raise ValueError(
            f"image {os.fspath(image)!r} ({height}x{width}) needs about {format_bytes(needed.total)} in {settings.mode} "
            f"mode ({needed.describe()}), more than the {format_bytes(budget)} available; {fits}"
        )


def _memory_budget(text: str) -> int:
    units = {"KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40, "B": 1}
    value = str(text).strip().upper()
    for unit, size in units.items():
        if value.endswith(unit):
            try:
                return int(float(value[: -len(unit)]) * size)
            except ValueError:
                break
    raise ValueError(f"--memory-limit must be a size like 8GB or 500MB, got {text!r}")


def _progress(total: int, args: argparse.Namespace) -> Any:
    """A tqdm bar on stderr (images/s) whose ``write`` prints above it; silent with --no-progress."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, disable=args.no_progress or None, dynamic_ncols=True)


def _write_outputs(result: Any, mask_path: Path, overlay_path: Path, palette: np.ndarray, args: argparse.Namespace) -> None:
    from ..common.images.viz import save_mask_png, save_png

    _write(save_mask_png, mask_path, result.label_map, palette, overwrite=args.overwrite)
    if not args.no_overlay:
        _write(save_png, overlay_path, result.overlay(args.alpha), overwrite=args.overwrite)


def _raise_finished(writes: list[Any]) -> None:
    """Surface a failed background write at once (the first one, in order)."""
    while writes and writes[0].done():
        writes.pop(0).result()


def _segment_huge(segmenter: Any, image_path: Path, mask_path: Path, args: argparse.Namespace) -> Any:
    """One very large image: labels written into a temporary file next to the outputs while they are computed."""
    import tempfile

    from ..common.images.image_io import image_size

    height, width = image_size(image_path, segmenter.max_pixels)
    dtype = np.uint8 if len(segmenter.id2label) <= 256 else np.uint16
    handle, name = tempfile.mkstemp(prefix=f".{mask_path.stem}.", suffix=".labels.npy", dir=mask_path.parent)
    os.close(handle)
    try:
        labels = np.lib.format.open_memmap(name, mode="w+", dtype=dtype, shape=(height, width))
        result = segmenter(image_path, top_k=args.top, keep_confidence=False, labels_out=labels)
        result.label_map = np.asarray(labels)
        return result
    finally:
        os.unlink(name)


class _Ranks:
    """This process's place under ``torchrun`` (PyTorch: ``RANK`` / ``WORLD_SIZE``) or among ``TF_CONFIG``
    workers (Keras): images are split by rank, each output is written once by the rank that owns its image,
    the legend once by rank 0. Created before the model (TensorFlow's strategy must start first)."""

    def __init__(self, framework: str) -> None:
        self.context = self.workers = None
        self.rank, self.world = 0, 1
        if framework == "pt" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from ..pt.training import init_distributed

            self.context = init_distributed("cpu")
            self.rank, self.world = self.context.rank, self.context.world_size
        elif framework == "tf" and os.environ.get("TF_CONFIG"):
            from ..tf.workers import WorkerGroup

            self.workers = WorkerGroup()
            self.rank, self.world = self.workers.rank, self.workers.world

    def gather(self, used: set[int], num_labels: int, skipped: bool) -> tuple[set[int], bool]:
        """The classes seen and whether any image was skipped, over every rank (then the group is left)."""
        flags = np.zeros(num_labels + 1, dtype=np.int64)
        flags[sorted(used)] = 1
        flags[-1] = int(skipped)
        if self.context is not None:
            import torch
            import torch.distributed as dist

            from ..pt.training import cleanup_distributed

            total = torch.from_numpy(flags)
            dist.all_reduce(total)
            cleanup_distributed(self.context)
            flags = total.numpy()
        elif self.workers is not None and self.world > 1:
            flags = self.workers.sum(flags)
        return {int(i) for i in np.nonzero(flags[:-1])[0]}, bool(flags[-1])


def _write(save: Any, path: Path, *args: Any, **kwargs: Any) -> None:
    """``save(path, ...)``; an environment fault becomes one error naming the path (old file intact)."""
    from ..common.base.errors import WriteError

    try:
        save(path, *args, **kwargs)
    except FileExistsError:
        raise
    except OSError as err:
        raise WriteError(f"cannot write {os.fspath(path)!r}: {err.strerror or err}; files already there were left "
                         "as they were") from None


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ..common.base.errors import WriteError
    from ..common.images.image_io import BadImageError, expand_named_inputs, image_size
    from ..common.images.viz import legend, save_png
    from ..segmenter import default_workers

    if args.max_pixels is not None and args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    if args.max_windows is not None and args.max_windows < 0:
        raise ValueError(f"--max-windows must be >= 0 (0: no limit), got {args.max_windows}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be >= 0 (0: no background work), got {args.workers}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {os.fspath(out)!r} exists and is not a folder")
    jobs = output_paths(expand_named_inputs(args.images), out, overlay=not args.no_overlay)
    legend_path = out / f"{LEGEND_NAME}.png"
    if not args.overwrite:
        existing = [os.fspath(p) for _, mask, over in jobs for p in (mask, over) if p.exists()]
        existing += [os.fspath(legend_path)] if legend_path.exists() else []
        if existing:
            raise FileExistsError(f"{len(existing)} output(s) already exist, e.g. {existing[:3]}; pass --overwrite to replace them")
    skipped: list[tuple[str, str]] = []
    readable = []
    sizes = []
    for job in jobs:
        try:
            height, width = image_size(job[0], args.max_pixels or _NO_PIXEL_LIMIT)  # as shown: orientation applied
        except BadImageError as err:
            if args.strict:
                raise ValueError(f"{err} (--strict: stopped before any work)") from None
            skipped.append((err.path, err.reason))
            continue
        readable.append(job)
        sizes.append((height, width))
    ranks = _Ranks(args.framework)  # under torchrun / TF_CONFIG workers: this process's share of the images
    model = load_model(args.framework, args.model, command="segformer predict", allow_random_head=args.allow_random_head,
                       xla=args.xla)
    readable, sizes = readable[ranks.rank :: ranks.world], sizes[ranks.rank :: ranks.world]
    options = {} if args.palette in (None, "auto") else {"palette": palette_for(model.config.num_labels, args.palette)}
    if args.max_windows is not None:
        options["max_windows"] = args.max_windows or None
    segmenter = build_segmenter(model, args, batch_size=args.batch_size, **options)
    workers = default_workers(args.framework) if args.workers is None else args.workers
    if readable:
        check_memory(segmenter, readable, sizes, args, in_flight=max(workers, 1) * args.batch_size)
        for (image, _, _), (height, width) in zip(readable, sizes):  # the segmenter's own limits, before any work
            segmenter.check_limits((height, width), os.fspath(image), keep_confidence=False,
                                   labels_on_disk=height * width > LARGE_IMAGE_PIXELS)
        segmenter.max_pixels = max(h * w for h, w in sizes)  # checked above: decode them, however large
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"cannot create the output folder {os.fspath(out)!r}: {err.strerror or err}; files already "
                         "there were left as they were") from None
    used: set[int] = set()
    outputs = {os.fspath(image): (mask, over) for image, mask, over in readable}
    huge = [job for job, (h, w) in zip(readable, sizes) if h * w > LARGE_IMAGE_PIXELS]
    small = [job[0] for job in readable if job not in huge]
    progress = _progress(len(readable), args)
    with ThreadPoolExecutor(max(workers, 1)) as writers:
        writes: list[Any] = []

        def finish(result: Any, path: Any) -> None:
            mask_path, overlay_path = outputs[os.fspath(path)]
            if args.check_finite and not result.finite:
                print(f"error: non-finite logits for {os.fspath(path)!r}; nothing written for it", file=sys.stderr)
                skipped.append((os.fspath(path), "non-finite logits (NaN / Inf)"))
                return
            writes.append(writers.submit(_write_outputs, result, mask_path, overlay_path, segmenter.palette, args))
            used.update(int(i) for i in np.nonzero(result.class_pixels)[0])
            classes = ", ".join(f"{c.name} {100 * c.fraction:.1f} % (confidence {c.confidence:.2f})" for c in result.classes)
            progress.write(f"{os.fspath(path)} -> {os.fspath(mask_path)}: {classes}")
            progress.update()
            _raise_finished(writes)

        for path, result in zip(small, segmenter.imap(small, workers=workers, top_k=args.top, keep_confidence=False)):
            if isinstance(result, BaseException) and not isinstance(result, BadImageError):
                raise result  # refused by the segmenter's limits (checked up front: not expected here)
            if isinstance(result, BadImageError):
                if args.strict:
                    raise ValueError(f"{result} (--strict: stopped)")
                skipped.append((result.path, result.reason))
                progress.update()
                continue
            finish(result, path)
        for image_path, mask_path, _ in huge:  # one at a time, the label map on disk while it is computed
            finish(_segment_huge(segmenter, image_path, mask_path, args), image_path)
        for write in writes:
            write.result()
    progress.close()
    used, any_skipped = ranks.gather(used, len(segmenter.id2label), bool(skipped))
    if used and ranks.rank == 0:
        _write(save_png, legend_path, legend(sorted(used), segmenter.id2label, segmenter.palette), overwrite=args.overwrite)
        print(f"legend of the {len(used)} classes seen: {os.fspath(legend_path)}")
    if skipped:
        order = {os.fspath(image): index for index, (image, _, _) in enumerate(jobs)}
        print(f"skipped {len(skipped)} of {len(jobs)} input(s):", file=sys.stderr)
        for path, reason in sorted(skipped, key=lambda item: order.get(item[0], len(order))):
            print(f"  {path}: {reason}", file=sys.stderr)
    return 1 if any_skipped else 0

