"""``segformer.Segmenter``: one call from images to named classes, the same in PyTorch and Keras.

    from segformer import Segmenter

    segmenter = Segmenter.from_pretrained("b0-ade")               # preset, Hub id or folder; framework="tf" for Keras
    result = segmenter("photo.jpg")                               # PIL image, uint8 array, path, folder, glob or list
    print(result.classes[:3]); result.mask("sky"); result.overlay()

A call on one image (a PIL image, an array, one file) returns one
:class:`~segformer.common.inference.segmentation_result.SegmentationResult`; a call on a list, a folder (searched
recursively for image files, sorted) or a glob pattern returns a list of them, in that order.

Each image goes through the same steps in both frameworks: EXIF orientation, RGB; the resize rule
(``resize``); the processor's rescale and normalization; the model in ``mode`` ``"whole"`` or ``"slide"``
(optionally multi-scale + flip); logits upsampled bilinearly to the image's own size; argmax and the
probability of the chosen class. Without a preset the resize rule is the processor's (Hugging Face's fixed
size, 512 x 512 by default) and whole-image logits are upsampled once, straight to the image's size, as
Hugging Face's post-processing does, so ``to_pipeline()`` equals transformers' image-segmentation pipeline
(except for files deeper than 8 bits, which transformers clips and this library scales by their range).
With keep-ratio resizing, sliding windows or augmentation the original's rules apply (logits upsampled to
the model input's size, then to the image's; see :mod:`segformer.common.inference`). A preset
brings the original recipe's test-time settings: keep-ratio resize to its test scale (ADE20K: long side <= 2048,
short side <= 512, sizes rounded up to multiples of 32) and, for the Cityscapes 1024 x 1024 and 768 x 768
models, sliding windows; every setting can be overridden by keyword.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .common.inference.rules import MAX_WINDOWS, as_bool, as_size_pair, check_inference_args
from .common.base.sizes import positive_int
from .common.model.presets import PRESETS, Preset, find_preset, get_preset, keep_ratio_size
from .common.images.labels import default_palette
from .common.inference.segmentation_result import SegmentationResult

__all__ = [
    "Segmenter", "DEFAULT_CROP_SIZE", "DEFAULT_STRIDE", "FRAMEWORKS", "MAX_DEFAULT_WORKERS", "RESIZE_RULES",
    "backend_module", "default_palette", "default_workers",
]

FRAMEWORKS = ("pt", "tf")
RESIZE_RULES = ("processor", "keep-ratio", "none")
DEFAULT_CROP_SIZE = (512, 512)  # sliding windows without a preset
DEFAULT_STRIDE = (341, 341)


def backend_module(framework: str) -> Any:
    """The framework adapter (``segformer.pt.backend`` / ``segformer.tf.backend``) of ``"pt"`` / ``"tf"``:
    the one place a framework is picked by name."""
    import importlib

    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {list(FRAMEWORKS)}, got {framework!r}")
    return importlib.import_module(f"segformer.{framework}.backend")


def _framework_of(model: Any) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "pt"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return "tf"
    raise TypeError(
        "model must be a segformer.pt SegformerForSemanticSegmentation (torch.nn.Module) or a segformer.tf "
        f"TFSegformerForSemanticSegmentation (keras.Model), got {type(model).__name__}"
    )


def _expand(images: Any) -> tuple[list[Any], bool]:
    """``(items, single)``: every image or file the argument names, and whether it named exactly one image.
    Paths go through :func:`segformer.common.images.image_io.expand_inputs` (folders recursively, globs, ``@list``)."""
    from PIL import Image

    from .common.images.image_io import expand_inputs

    if isinstance(images, (Image.Image, np.ndarray)):
        return [images], True
    if isinstance(images, (str, os.PathLike)):
        text = os.fspath(images)
        single = Path(text).is_file() and not (isinstance(images, str) and text.startswith("@"))
        return list(expand_inputs([images])), single
    if isinstance(images, (list, tuple)):
        items: list[Any] = []
        for entry in images:
            items.extend(_expand(entry)[0])
        if not items:
            raise ValueError("images: got an empty list")
        return items, False
    raise TypeError(
        "images must be a PIL image, a uint8 (H, W, 3) or (H, W) array, a file path, a folder, a glob pattern, an "
        f"@list file or a list of those; got {type(images).__name__}"
    )


MAX_DEFAULT_WORKERS = 4


def default_workers(framework: str = "pt", device: Any = None) -> int:
    """Parallel pipelines :meth:`Segmenter.imap` runs by default: with PyTorch on the CPU one per intra-op
    thread (``torch.get_num_threads()``, so 1 per process under ``torchrun`` with ``OMP_NUM_THREADS=1``), at
    most :data:`MAX_DEFAULT_WORKERS`; otherwise 2 (the model on an accelerator or in TensorFlow's thread
    pool, decoding and upsampling of the other image beside it). The adapter's ``Backend.default_workers``."""
    return backend_module(framework).Backend.default_workers(device)


def _rgb(item: Any, max_pixels: int | None = None) -> tuple[np.ndarray, str | None]:
    """uint8 ``(H, W, 3)`` RGB of one image and its source file (files and PIL images as
    :mod:`segformer.common.images.image_io` decodes them: EXIF orientation, deep images by their range)."""
    from PIL import Image

    from .common.images.image_io import image_to_rgb, load_image

    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise TypeError(
                f"image arrays must be uint8 (H, W, 3) RGB or (H, W) grey, got dtype {item.dtype}; convert it, "
                "or pass a PIL image or a file"
            )
        if item.ndim == 2:
            return np.repeat(item[:, :, None], 3, axis=2), None
        if item.ndim != 3 or item.shape[2] not in (3, 4):
            raise ValueError(f"image arrays must have shape (H, W, 3), (H, W, 4) or (H, W) (channels last; a channels-first "
                             f"(3, H, W) array is array.transpose(1, 2, 0)), got {item.shape}")
        return np.ascontiguousarray(item[:, :, :3]), None
    if isinstance(item, Image.Image):
        return image_to_rgb(item), None
    return load_image(item, max_pixels), os.fspath(item)


def _segmentation_preset(name_or_path: str | os.PathLike) -> Preset | None:
    """The preset a name means (``None`` for an existing path or an unknown name); an encoder preset is an error."""
    text = os.fspath(name_or_path)
    preset = None if Path(text).exists() else find_preset(text)
    if preset is not None and preset.task != "semantic-segmentation":
        raise ValueError(
            f"preset {preset.name!r} is an {preset.task} encoder, not a segmentation model; choose one of "
            + ", ".join(name for name, p in PRESETS.items() if p.task == "semantic-segmentation")
        )
    return preset


class Segmenter:
    """A segmentation model with its processor and inference settings, callable on images.

    Args:
        model: a ``segformer.pt.SegformerForSemanticSegmentation`` or ``segformer.tf.TFSegformerForSemanticSegmentation``.
        processor: a :class:`~segformer.SegformerImageProcessor` (default: Hugging Face's defaults).
        preset: a :class:`~segformer.common.model.presets.Preset` (or its name) whose test-time settings to use.
        mode: ``"whole"`` or ``"slide"`` (default: the preset's, else ``"whole"``).
        crop_size, stride: sliding windows ``(height, width)`` (default: the preset's, else 512 / 341).
        scales, flip: multi-scale + horizontal-flip test-time augmentation (probabilities averaged); one scale
            without flip resizes the image once, straight to the resize rule's size times that scale (the same
            as a plain ``resize`` to that size).
        resize: ``"processor"`` (the processor's fixed size), ``"keep-ratio"`` (the original's rule, bounded by
            ``test_scale = (long, short)`` and rounded up to ``size_divisor``), ``"none"`` (the image as it is),
            or an int / ``(height, width)``. Default: ``"keep-ratio"`` with a preset, else ``"processor"``.
        test_scale, size_divisor: the keep-ratio bounds (default: the preset's).
        batch_size: images run through the model together (those of equal size).
        palette: uint8 ``(K, 3)`` colours or a label-set name (default: by preset / number of classes).
        device: PyTorch device (``"cpu"``, ``"cuda"``, ...) or TensorFlow device name (``"/GPU:0"``); one this
            machine does not have is refused, listing those it has.
        max_windows: the most sliding windows (over every test-time pass) one image may take; more, or a whole
            pass costing over 8x slide mode's FLOPs (``rules.check_work``), are refused up front (``None``: no limit).

    Before an image runs, its model input size (resize rule x largest scale) and the memory that takes are
    estimated (:func:`~segformer.common.inference.memory.estimate_memory`); an image that would need more than
    this process can allocate (RAM, cgroup and ``RLIMIT_AS`` limits) is refused with a
    :class:`~segformer.common.base.errors.ResourceLimitError` naming the settings, the memory and what fits.
    The model always runs in eval mode (see the backend adapters).
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        preset: Preset | str | None = None,
        mode: str | None = None,
        crop_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        scales: float | Sequence[float] = (1.0,),
        flip: bool = False,
        resize: str | int | Sequence[int] | None = None,
        test_scale: Sequence[int] | None = None,
        size_divisor: int | None = None,
        batch_size: int = 1,
        palette: np.ndarray | str | None = None,
        device: Any = None,
        max_windows: int | None = MAX_WINDOWS,
    ) -> None:
        from .common.images.image_processing import SegformerImageProcessor
        from .common.images.viz import _palette_array

        self.framework = _framework_of(model)
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        config = model.config
        if getattr(config, "num_labels", None) is None or not hasattr(config, "id2label"):
            raise TypeError(f"model must have a SegformerConfig with num_labels / id2label, got {type(config).__name__}")
        self.model = model
        self.processor = SegformerImageProcessor() if processor is None else processor
        self.id2label = {int(k): str(v) for k, v in config.id2label.items()}
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        preset_settings = self.preset.inference_settings() if self.preset else {"mode": "whole"}
        self.settings = check_inference_args(
            mode=mode or preset_settings["mode"],
            crop_size=crop_size if crop_size is not None else preset_settings.get("crop_size") or DEFAULT_CROP_SIZE,
            stride=stride if stride is not None else preset_settings.get("stride") or DEFAULT_STRIDE,
            scales=scales,
            flip=flip,
        )
        self.resize, self.target_size = self._resize_rule(resize)
        self.test_scale = tuple(test_scale) if test_scale is not None else (self.preset.test_scale if self.preset else None)
        self.size_divisor = size_divisor if size_divisor is not None else (self.preset.size_divisor if self.preset else None)
        if self.resize == "keep-ratio" and self.test_scale is None:
            raise ValueError("resize='keep-ratio' needs test_scale=(long_side, short_side) (a preset provides one)")
        if self.test_scale is not None:
            as_size_pair("test_scale", self.test_scale)
        if self.size_divisor is not None:
            self.size_divisor = positive_int("size_divisor", self.size_divisor)
        if max_windows is not None:
            max_windows = positive_int("max_windows", max_windows)
        self.max_windows = max_windows
        num_labels = int(config.num_labels)
        if palette is None:
            self.palette = default_palette(num_labels, self.preset.label_set if self.preset else None,
                                           palette=getattr(config, "extra", {}).get("palette"))
        else:
            self.palette = _palette_array(palette, "Segmenter")
        if len(self.palette) < num_labels:
            raise ValueError(f"palette has {len(self.palette)} colours but the model has {num_labels} classes")
        self.device = device
        self.max_pixels: int | None = None  # decoding limit for files (None: Pillow's decompression-bomb limit)
        self.backend = backend_module(self.framework).Backend(model, device)  # eval mode, on the device

    def _resize_rule(self, resize: Any) -> tuple[str, tuple[int, int] | None]:
        if resize is None:
            return ("keep-ratio" if self.preset else "processor"), None
        if isinstance(resize, str):
            if resize not in RESIZE_RULES:
                raise ValueError(f"resize must be one of {list(RESIZE_RULES)} or an int / (height, width), got {resize!r}")
            return resize, None
        return "fixed", as_size_pair("resize", resize)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, framework: str = "pt", device: Any = None, **options: Any
    ) -> "Segmenter":
        """A segmenter for a preset name (``"b0-ade"``, see ``segformer presets``), a Hub id or a folder.

        ``framework`` is ``"pt"`` (PyTorch) or ``"tf"`` (Keras); ``options`` are the constructor's keywords.
        The processor comes from the folder's ``preprocessor_config.json`` when it has one.
        """
        adapter = backend_module(framework)
        _segmentation_preset(name_or_path)  # an encoder preset is refused before any loading
        model, _ = adapter.load_pretrained(os.fspath(name_or_path))
        return cls.from_loaded(model, name_or_path, device=device, **options)

    @classmethod
    def from_loaded(cls, model: Any, name_or_path: str | os.PathLike, device: Any = None, **options: Any) -> "Segmenter":
        """A segmenter for a ``model`` already loaded from ``name_or_path``, with the processor and preset
        :meth:`from_pretrained` gives (``segformer predict`` builds its segmenter this way)."""
        from .common.images.image_processing import SegformerImageProcessor

        source = os.fspath(name_or_path)
        folder = Path(source)
        if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
            processor = SegformerImageProcessor()
        else:
            try:
                processor = SegformerImageProcessor.from_pretrained(source)
            except FileNotFoundError:
                processor = SegformerImageProcessor()
        options.setdefault("preset", _segmentation_preset(source))
        return cls(model, processor, device=device, **options)

    @classmethod
    def from_preset(cls, preset: str, framework: str = "pt", device: Any = None, **options: Any) -> "Segmenter":
        """keras-hub's spelling of :meth:`from_pretrained`."""
        return cls.from_pretrained(preset, framework=framework, device=device, **options)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` the model sees for a ``height x width`` image under the resize rule (the largest
        test-time scale included)."""
        from .common.inference.rules import scaled_size

        return scaled_size(self._resized_size(height, width), max(self.settings.scales), self.settings.size_divisor)

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of a ``height x width`` image under the resize rule, before any test-time scale."""
        if self.resize == "processor":
            return (self.processor.size["height"], self.processor.size["width"]) if self.processor.do_resize else (height, width)
        if self.resize == "keep-ratio":
            return keep_ratio_size(height, width, self.test_scale, self.size_divisor)
        if self.resize == "fixed":
            return self.target_size
        return height, width

    @property
    def _single_scale(self) -> float | None:
        """The one test-time scale without augmentation (folded into the resize: the image is resized once,
        straight to the scaled size, as a plain resize to that size would), else ``None``."""
        return None if self.settings.augmented else self.settings.scales[0]

    def _prepared(self, image: np.ndarray) -> np.ndarray:
        """float32 ``(C, h, w)`` pixel values of one RGB image after the resize rule (and a single test-time
        scale) and normalization."""
        from .common.inference.rules import scaled_size

        height, width = image.shape[:2]
        scale = self._single_scale
        layout = {"data_format": "channels_first", "input_data_format": "channels_last"}  # never guessed: (3, W, 3)
        if scale in (None, 1.0) and self.resize == "processor":
            batch = self.processor(images=image, **layout)
        elif scale in (None, 1.0) and self.resize == "none":
            batch = self.processor(images=image, do_resize=False, **layout)
        else:
            target = self._resized_size(height, width)
            if scale not in (None, 1.0):
                target = scaled_size(target, scale, self.settings.size_divisor)
            batch = self.processor(images=image, do_resize=True, size={"height": target[0], "width": target[1]}, **layout)
        return np.asarray(batch["pixel_values"][0], dtype=np.float32)

    @property
    def _direct(self) -> bool:
        """Whether logits are upsampled once, straight to the image size (Hugging Face's post-processing), or
        by the original's rules (to the model input's size, then to the image's: keep-ratio, slide, TTA)."""
        return self.settings.mode == "whole" and not self.settings.augmented and self.resize != "keep-ratio"

    def _stream(
        self, pixel_values: np.ndarray, size: tuple[int, int], return_probabilities: bool, keep_confidence: bool,
        labels_out: np.ndarray | None,
    ) -> Any:
        """Labels / confidence (/ probabilities) of one image ``(1, C, H, W)`` by the inference helpers."""
        kwargs = {
            "mode": self.settings.mode,
            "crop_size": self.settings.crop_size,
            "stride": self.settings.stride,
            "scales": (1.0,) if self._single_scale is not None else self.settings.scales,  # folded into _prepared
            "flip": self.settings.flip,
            "output_size": size,
            "return_confidence": keep_confidence,
            "return_probabilities": return_probabilities,
            "window_batch": self.batch_size,
            "labels_out": labels_out,
        }
        return self.backend.stream(pixel_values, **kwargs)

    def __call__(
        self,
        images: Any,
        *,
        top_k: int | None = None,
        min_area: float = 0.0,
        return_probabilities: bool = False,
        keep_confidence: bool = True,
        labels_out: np.ndarray | None = None,
    ) -> SegmentationResult | list[SegmentationResult]:
        """Segment one image (-> one result) or several (a list, folder or glob -> a list of results).

        Args:
            top_k: keep at most this many classes in ``result.classes`` (largest first).
            min_area: drop classes covering less than this fraction of the image from ``result.classes``.
            return_probabilities: also keep the float32 ``(K, H, W)`` class probabilities in each result.
            keep_confidence: keep the float32 ``(H, W)`` confidence map (class summaries have the mean
                confidence either way); turn off for very large images.
            labels_out: for one image, an int array ``(H, W)`` (e.g. a ``numpy.memmap`` on disk, uint8 for up to
                256 classes) the label map is written into band by band.

        Memory: the image, its label map and bands of ``K x band x W`` floats; in slide mode with
        ``resize="none"`` the image stays uint8 and windows are normalized one at a time.
        """
        from .common.inference.streaming import check_labels_out

        options = self._options(return_probabilities, keep_confidence)
        if labels_out is not None:
            check_labels_out(labels_out, len(self.id2label))
        items, single = _expand(images)
        if labels_out is not None and not single:
            raise ValueError("labels_out takes the label map of one image; pass one image")
        results: list[SegmentationResult] = []
        for start in range(0, len(items), self.batch_size):
            loaded = [self._load(item, *options, labels_out is not None) for item in items[start : start + self.batch_size]]
            results.extend(self._run_chunk(loaded, top_k, min_area, return_probabilities, keep_confidence, labels_out))
        return results[0] if single else results

    def imap(
        self,
        images: Any,
        *,
        workers: int | None = None,
        top_k: int | None = None,
        min_area: float = 0.0,
        return_probabilities: bool = False,
        keep_confidence: bool = True,
    ) -> Iterator[SegmentationResult | BaseException]:
        """Results one by one, in input order, for many images, computed by ``workers`` parallel pipelines.

        Each worker (a background thread) takes the next ``batch_size`` images and does everything for them:
        decode, resize / normalize, the model (equal-sized inputs in one call), upsampling and argmax; the
        caller receives the results in input order while the workers go on (at most ``2 x workers`` chunks
        ahead). The results are the ones :meth:`__call__` gives, bit for bit. A file that cannot be read, or an
        image too small for the model, yields its :class:`~segformer.common.images.image_io.BadImageError` in its
        place instead of stopping the run, and so does an image refused by the window / memory limits (its
        ``ResourceLimitError``).

        ``workers``: ``None`` (default) picks :func:`default_workers` (PyTorch on the CPU: one per intra-op
        thread, at most 4; otherwise 2); ``0`` runs everything in the calling thread. With PyTorch on the
        CPU and ``workers >= 2`` the intra-op threads are split between the workers
        (``torch.get_num_threads() // workers`` each, at least 1) while the iteration runs, and restored when
        it ends: on a few cores, whole pipelines side by side keep every core busy (the numpy upsampling and
        argmax run single-threaded), where one pipeline with every thread leaves cores idle between model
        calls. Peak memory grows with ``workers`` (each holds its images, logits and bands). Keras model calls
        are serialized (one at a time; TensorFlow's own thread pool runs each), the rest runs in parallel.
        """
        import threading

        from .common.base.errors import ResourceLimitError
        from .common.images.image_io import BadImageError
        from .common.inference.prefetch import Prefetched

        options = self._options(return_probabilities, keep_confidence)
        if workers is None:
            workers = self.backend.default_workers(self.device)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be None or an int >= 0, got {workers!r}")
        items, _ = _expand(images)
        chunks = [items[start : start + self.batch_size] for start in range(0, len(items), self.batch_size)]
        model_lock = threading.Lock() if self.backend.serialized else None

        def run(chunk: list[Any]) -> list[Any]:
            loaded: list[Any] = []
            for item in chunk:
                try:
                    loaded.append(self._load(item, *options))
                except (BadImageError, ResourceLimitError) as error:  # in its place; the others go on
                    loaded.append(error)
            good = [entry for entry in loaded if not isinstance(entry, BaseException)]
            results = iter(self._run_chunk(good, top_k, min_area, return_probabilities, keep_confidence,
                                           model_lock=model_lock) if good else [])
            return [entry if isinstance(entry, BaseException) else next(results) for entry in loaded]

        with self.backend.split_threads(workers):
            for results in Prefetched(run, chunks, ahead=max(2 * workers, 1), workers=workers):
                yield from results

    @property
    def _lazy(self) -> bool:
        """Slide mode on the image as it is: windows are cut from the uint8 image and normalized one by one, so
        no float copy of the whole image is made (memory: the image, the label map and a few bands)."""
        return self.settings.mode == "slide" and self.resize == "none" and self._single_scale == 1.0

    def _window_source(self, image: np.ndarray, model_lock: Any = None) -> Any:
        """A streaming pass over the uint8 image whose windows are normalized when the model needs them."""
        from .common.inference.streaming import PassSource, run_by_shape

        def model_call(batch: list[np.ndarray]) -> list[np.ndarray]:
            with model_lock or contextlib.nullcontext():
                return list(self.backend.logits(np.stack(batch)))

        def window_logits(windows: Sequence[Any]) -> list[np.ndarray]:
            crops = [self._prepared(np.ascontiguousarray(image[w.y1 : w.y2, w.x1 : w.x2])) for w in windows]
            return run_by_shape(crops, self.batch_size, model_call)

        return PassSource(image.shape[:2], False, window_logits)

    @property
    def _batched(self) -> bool:
        """Whole mode without augmentation: equal-sized inputs share one model call."""
        return self.settings.mode == "whole" and not self.settings.augmented

    @staticmethod
    def _options(return_probabilities: Any, keep_confidence: Any) -> tuple[bool, bool]:
        return as_bool("return_probabilities", return_probabilities), as_bool("keep_confidence", keep_confidence)

    def _load(self, item: Any, return_probabilities: bool = False, keep_confidence: bool = True,
              labels_given: bool = False) -> tuple[np.ndarray, str | None, np.ndarray | None]:
        """``(image, source, pixel values or None)``: decoded, checked against the model's smallest input (a
        :class:`~segformer.common.images.image_io.BadImageError`) and the window and memory limits (the label map
        not counted when written into the caller's ``labels_out``) and, for batched whole mode, prepared."""
        image, source = _rgb(item, self.max_pixels)
        self._check_model_input(image.shape[:2], source)
        self.check_limits(image.shape[:2], source, return_probabilities, keep_confidence, labels_given)
        return image, source, (self._prepared(image) if self._batched else None)

    def _check_model_input(self, size: tuple[int, int], source: str | None) -> None:
        """Refuse an image whose model inputs (each test-time scale; windows in slide mode) are smaller than the
        model accepts, naming the image, so that one small image among many is reported in its place."""
        from .common.images.image_io import BadImageError
        from .common.inference.rules import scaled_size

        height, width = size
        for scale in self.settings.scales:
            target = scaled_size(self._resized_size(height, width), scale, self.settings.size_divisor)
            if self.settings.mode == "slide":
                target = (min(target[0], self.settings.crop_size[0]), min(target[1], self.settings.crop_size[1]))
            try:
                self.model.config.check_input_size(*target)
            except ValueError as err:
                raise BadImageError(
                    source or "<image array>",
                    f"the {height}x{width} image is too small for this model ({err}); pass a larger image or a "
                    "resize that enlarges it (resize='processor' or a size)",
                ) from None

    def _origin(self) -> str:
        """The settings that decide the model input size, as the caller wrote them."""
        if self.resize == "fixed":
            rule = f"resize={self.target_size}"
        elif self.resize == "processor":
            rule = f"processor size {self.processor.size}" if self.processor.do_resize else "the image's own size"
        elif self.resize == "keep-ratio":
            rule = f"resize='keep-ratio', test_scale={self.test_scale}"
        else:
            rule = "resize='none'"
        scales = self.settings.scales
        return rule + (f", scales={list(scales)}" if scales != (1.0,) else "") + (", flip=True" if self.settings.flip else "")

    def check_limits(self, size: tuple[int, int], source: str | None = None, return_probabilities: bool = False,
                     keep_confidence: bool = True, labels_on_disk: bool = False) -> None:
        """Refuse, before any work, an image of ``size = (H, W)`` whose sliding windows exceed ``max_windows`` or
        whose estimated memory exceeds what this process can allocate
        (:class:`~segformer.common.base.errors.ResourceLimitError`)."""
        from .common.inference.memory import check_inference_memory
        from .common.inference.rules import check_work, scaled_size

        height, width = int(size[0]), int(size[1])
        what = f"image {source!r}" if source else "image"
        what += f" ({height}x{width}) under {self._origin()}"
        base = self._resized_size(height, width)
        if self._single_scale is not None:
            inputs = [scaled_size(base, self._single_scale, self.settings.size_divisor)]
        else:
            inputs = [scaled_size(base, scale, self.settings.size_divisor) for scale, _ in self.settings.passes]
        largest = max(inputs, key=lambda hw: hw[0] * hw[1])
        extra = 4 * len(self.id2label) * height * width * (int(return_probabilities) + int(self.settings.augmented))
        check_inference_memory(self.model.config, largest, what, self.settings.mode, extra,
                               crop_size=self.settings.crop_size, stride=self.settings.stride,
                               framework=self.framework, keep_confidence=keep_confidence, window_batch=self.batch_size,
                               labels_on_disk=labels_on_disk)
        check_work(self.model.config, self.settings.mode, inputs, self.settings.crop_size, self.settings.stride,
                   self.max_windows, what)

    def _run_chunk(
        self,
        loaded: Sequence[tuple[np.ndarray, str | None, np.ndarray | None]],
        top_k: int | None,
        min_area: float,
        return_probabilities: bool,
        keep_confidence: bool = True,
        labels_out: np.ndarray | None = None,
        model_lock: Any = None,
    ) -> list[SegmentationResult]:
        from .common.inference.streaming import PassSource, stream_segmentation

        options = {"return_confidence": keep_confidence, "return_probabilities": return_probabilities,
                   "num_classes": len(self.id2label)}
        streamed: dict[int, Any] = {}
        if self._lazy:
            for index, (image, _, _) in enumerate(loaded):
                source = self._window_source(image, model_lock)
                streamed[index] = stream_segmentation(lambda scale, flipped, source=source: source, image.shape[:2],
                                                      self.settings, labels_out=labels_out, **options)
        elif self._batched:
            groups: dict[tuple, list[int]] = {}
            for index, (_, _, pixels) in enumerate(loaded):
                groups.setdefault(pixels.shape, []).append(index)
            for members in groups.values():  # one model call per group of equal-sized inputs
                with model_lock or contextlib.nullcontext():
                    logits = self.backend.logits(np.stack([loaded[i][2] for i in members]))
                for row, index in enumerate(members):
                    size = loaded[index][0].shape[:2]
                    frame = size if self._direct else loaded[index][2].shape[1:]
                    source = PassSource(frame, False, lambda windows, low=logits[row]: [low])
                    streamed[index] = stream_segmentation(lambda scale, flipped, source=source: source, size,
                                                          self.settings, labels_out=labels_out, **options)
        else:
            for index, (image, _, _) in enumerate(loaded):
                pixel_values = self._prepared(image)[None]
                with model_lock or contextlib.nullcontext():  # the model runs inside the stream here
                    streamed[index] = self._stream(pixel_values, image.shape[:2], return_probabilities,
                                                   keep_confidence, labels_out)
        results = []
        for index, (image, source, _) in enumerate(loaded):
            stream = streamed[index]
            results.append(SegmentationResult(
                stream.labels, stream.confidence, stream.class_pixels, stream.class_confidence, self.id2label,
                self.palette, image, probabilities=stream.probabilities, source=source, top_k=top_k,
                min_area=min_area, finite=stream.finite,
            ))
        return results
