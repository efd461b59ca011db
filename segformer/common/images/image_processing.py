"""``SegformerImageProcessor``: Hugging Face-compatible preprocessing and post-processing, in numpy + Pillow.

Matches ``transformers.SegformerImageProcessor`` 4.57.6 (arguments, defaults, ``preprocessor_config.json``
format, order of operations, outputs bit for bit on inputs it accepts) and fixes its gaps: grayscale /
RGBA / LA / palette images are converted to RGB (``do_convert_rgb``), the caller's arrays are never
modified, the legacy ``reduce_labels`` keyword and config key are honoured (with a ``FutureWarning``),
label maps with values above 255 are resized (nearest) without a uint8 round trip, and post-processing
works on PyTorch tensors, TensorFlow tensors and numpy arrays alike.

Pipeline per image (``H, W`` in, ``h, w = size``): to numpy HWC -> RGB -> resize with Pillow (``resample``)
-> ``x * rescale_factor`` (float64, then float32) -> ``(x - mean) / std`` (float32) -> ``data_format``.
Per label map: integers ``(H, W)`` -> reduce labels (0 -> 255, k -> k - 1, 255 stays 255) -> nearest
resize to ``(h, w)`` (Pillow's NEAREST sampling grid) -> int64.

torch and tensorflow are imported only when a torch / tf object is passed or ``return_tensors`` asks.

This module is the processor (arguments, ``preprocessor_config.json``, the pipeline); array coercion and the
label-map numerics are :mod:`segformer.common.images.image_arrays`, post-processing is
:mod:`segformer.common.images.post_processing` (both re-exported here).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from segformer.common.base.atomic import atomic_write_text
from segformer.common.base.sizes import as_bool
from segformer.common.images.image_arrays import (
    PIL_BILINEAR,
    check_dtype,
    check_integer_range,
    check_pixel_range,
    check_size_memory,
    flatten,
    image_to_hwc,
    infer_channels_last,
    is_pil,
    kept_channels,
    map_to_2d,
    normalize_data_format,
    normalize_resample,
    normalize_rescale_factor,
    normalize_return_tensors,
    normalize_size,
    normalize_stats,
    pil_resize,
    reduce_labels,
    resize_nearest,
    to_numpy,
)
from segformer.common.images.post_processing import post_process_semantic_segmentation

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "PREPROCESSOR_CONFIG_NAME",
    "BatchFeature",
    "SegformerFeatureExtractor",
    "SegformerImageProcessor",
    "post_process_semantic_segmentation",
    "reduce_labels",
    "resize_nearest",
]

IMAGENET_DEFAULT_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

_INIT_ARGS = (
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_reduce_labels",
    "do_convert_rgb",
)
# Keys that Hugging Face writes into preprocessor_config.json and that carry no setting.
_META_KEYS = ("image_processor_type", "feature_extractor_type", "processor_class", "_processor_class", "auto_map")
# Arguments of the historical (<= 4.12) SegformerFeatureExtractor; they have no effect any more.
_LEGACY_IGNORED = (
    "keep_ratio",
    "image_scale",
    "align",
    "size_divisor",
    "do_random_crop",
    "crop_size",
    "do_pad",
    "padding_value",
    "segmentation_padding_value",
)
# ----------------------------------------------------------------------------------------------------------------
# Output container


class BatchFeature(dict):
    """The processor's output: a dict (``"pixel_values"``, ``"labels"``) that also allows attribute access.

    ``pixel_values``: float32 ``(N, 3, h, w)`` (``data_format="channels_first"``) or ``(N, h, w, 3)``;
    ``labels``: int64 ``(N, h, w)``. With ``return_tensors=None`` both are lists of numpy arrays.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchFeature has no key {name!r}; keys: {', '.join(self) or '(none)'}") from None

    @property
    def data(self) -> dict[str, Any]:
        """A plain dict of the contents (as Hugging Face's ``BatchFeature.data``)."""
        return dict(self)

    def to(self, *args: Any, **kwargs: Any) -> "BatchFeature":
        """Call ``.to(*args, **kwargs)`` on every torch tensor (device or dtype moves; labels keep int64)."""
        for key, value in list(self.items()):
            if type(value).__module__.startswith("torch") and hasattr(value, "to"):
                if value.is_floating_point():
                    self[key] = value.to(*args, **kwargs)
                else:
                    device = kwargs.get("device", next((a for a in args if not _is_torch_dtype(a)), None))
                    self[key] = value.to(device) if device is not None else value
        return self


def _is_torch_dtype(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and type(value).__name__ == "dtype"


# ----------------------------------------------------------------------------------------------------------------
# The processor


class SegformerImageProcessor:
    """Prepares images (and label maps) for SegFormer; drop-in for ``transformers.SegformerImageProcessor``.

    Args:
        do_resize: resize images and maps to ``size``.
        size: ``{"height": h, "width": w}``, a ``(h, w)`` pair or an int (square). Default 512 x 512.
        resample: Pillow filter for images (``PIL.Image.Resampling``, int 0..5 or a name); maps always use nearest.
        do_rescale: multiply pixel values by ``rescale_factor`` (default ``1/255``).
        do_normalize: ``(x - image_mean) / image_std`` per channel (ImageNet defaults).
        do_reduce_labels: map label 0 (background) to 255 (ignored) and k to k - 1 (ADE20K).
        do_convert_rgb: convert grayscale, LA, RGBA and palette images to RGB (alpha dropped), except where the
            channel rule below keeps their channels. Not in Hugging Face; written to ``preprocessor_config.json``
            only when ``False``.
        reduce_labels: deprecated name of ``do_reduce_labels`` (honoured, with a ``FutureWarning``).

    Channel rule. An image with 3 channels stays as it is. An image with 1, 2 or 4 channels (numpy / tensor
    ``(H, W, C)`` or ``(C, H, W)``; PIL modes ``L``, ``LA``, ``RGBA``) keeps them, as transformers does (RGB-NIR,
    RGB-D, 2-band data), when ``do_convert_rgb=False`` or when ``image_mean`` and ``image_std`` each are one number
    or a list of that many values (and ``do_normalize``): ``(40, 50, 4)`` with 4-value or scalar mean / std gives
    ``(1, 4, h, w)``. Otherwise,
    under the default settings, it is converted to RGB (gray repeated, alpha dropped) where transformers would
    fail on the 3-value ImageNet statistics; palette and other PIL modes are always converted. As in
    transformers, 2- and 4-channel uint8 images are resized by Pillow as ``LA`` / ``RGBA`` (alpha-weighted
    filtering: the last channel weights the others where it is below 255).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: Any = None,
        resample: Any = PIL_BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_reduce_labels: bool = False,
        do_convert_rgb: bool = True,
        **kwargs: Any,
    ) -> None:
        legacy = _pop_legacy_kwargs(kwargs, "SegformerImageProcessor")
        if legacy is not None and not do_reduce_labels:
            do_reduce_labels = legacy
        self.do_resize = as_bool("do_resize", do_resize)
        self.size = normalize_size(size if size is not None else {"height": 512, "width": 512})
        self.resample = normalize_resample(resample)
        self.do_rescale = as_bool("do_rescale", do_rescale)
        self.rescale_factor = normalize_rescale_factor(rescale_factor)
        self.do_normalize = as_bool("do_normalize", do_normalize)
        self.image_mean = normalize_stats(image_mean if image_mean is not None else list(IMAGENET_DEFAULT_MEAN), "image_mean")
        self.image_std = normalize_stats(image_std if image_std is not None else list(IMAGENET_DEFAULT_STD), "image_std")
        self.do_reduce_labels = as_bool("do_reduce_labels", do_reduce_labels)
        self.do_convert_rgb = as_bool("do_convert_rgb", do_convert_rgb)
        check_pixel_range(self.do_rescale, self.rescale_factor, self.do_normalize, self.image_mean, self.image_std,
                          what="SegformerImageProcessor")

    # -- calling --------------------------------------------------------------------------------------------

    def __call__(self, images: Any, segmentation_maps: Any = None, **kwargs: Any) -> BatchFeature:
        """Same as ``preprocess(images, segmentation_maps, **kwargs)``."""
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any = None,
        do_resize: bool | None = None,
        size: Any = None,
        resample: Any = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_reduce_labels: bool | None = None,
        do_convert_rgb: bool | None = None,
        return_tensors: Any = None,
        data_format: Any = "channels_first",
        input_data_format: Any = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocess images (and label maps); every argument left ``None`` takes the processor's setting.

        Args:
            images: a PIL image, numpy ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` array, torch / tf tensor, a 4-D
                batch, or a list of these. uint8 in [0, 255] or floats in [0, 1] (or [0, 255]).
            segmentation_maps: optional label maps, one per image with the same ``H, W``: ``(H, W)`` integer
                arrays / tensors, single-channel PIL images, a ``(N, H, W)`` batch, or a list.
            return_tensors: ``None`` (lists of numpy arrays), ``"np"``, ``"pt"`` or ``"tf"``.
            data_format: ``"channels_first"`` (``pixel_values`` ``(N, 3, h, w)``, default), ``"channels_last"``,
                or ``None`` (each image's input layout).
            input_data_format: layout of 3-D array inputs, ``"channels_first"`` / ``"channels_last"``; ``None``
                infers it where only one of the first and last axes can hold channels (1 to 4); where both can
                (``(3, W, 3)``: a 3-row RGB image, or 3 channels of ``W x 3`` pixels) it must be given: an
                error, where transformers assumes channels first.

        Returns:
            ``BatchFeature`` with ``pixel_values`` (float32) and, with maps, ``labels`` (int64 ``(N, h, w)``).
        """
        legacy = _pop_legacy_kwargs(kwargs, "preprocess", per_call=True)
        if legacy is not None and do_reduce_labels is None:
            do_reduce_labels = legacy
        do_resize = self.do_resize if do_resize is None else as_bool("do_resize", do_resize)
        size = self.size if size is None else normalize_size(size)
        resample = self.resample if resample is None else normalize_resample(resample)
        do_rescale = self.do_rescale if do_rescale is None else as_bool("do_rescale", do_rescale)
        rescale_factor = self.rescale_factor if rescale_factor is None else normalize_rescale_factor(rescale_factor)
        do_normalize = self.do_normalize if do_normalize is None else as_bool("do_normalize", do_normalize)
        image_mean = self.image_mean if image_mean is None else normalize_stats(image_mean, "image_mean")
        image_std = self.image_std if image_std is None else normalize_stats(image_std, "image_std")
        do_reduce_labels = self.do_reduce_labels if do_reduce_labels is None else as_bool("do_reduce_labels", do_reduce_labels)
        do_convert_rgb = self.do_convert_rgb if do_convert_rgb is None else as_bool("do_convert_rgb", do_convert_rgb)
        return_tensors = normalize_return_tensors(return_tensors)
        data_format = normalize_data_format(data_format, "data_format")
        input_data_format = normalize_data_format(input_data_format, "input_data_format")
        target = (size["height"], size["width"])
        check_pixel_range(do_rescale, rescale_factor, do_normalize, image_mean, image_std, what="preprocess")

        flat_images = flatten(images, "images", single_ndims=(2, 3), batch_ndim=4)
        if do_resize:
            check_size_memory(size, len(flat_images))
        flat_maps = None
        if segmentation_maps is not None:
            flat_maps = flatten(segmentation_maps, "segmentation_maps", single_ndims=(2,), batch_ndim=3)
            if len(flat_maps) != len(flat_images):
                raise ValueError(
                    f"segmentation_maps: got {len(flat_maps)} label maps for {len(flat_images)} images; pass exactly one "
                    "(H, W) map per image (a single 3-D array of maps is read as a batch (N, H, W))"
                )

        pixel_values: list[np.ndarray] = []
        image_sizes: list[tuple[int, int]] = []
        warn_scaled = False
        keep_channels = kept_channels(do_convert_rgb, image_mean if do_normalize else None, image_std if do_normalize else None)
        for index, image in enumerate(flat_images):
            hwc, was_channels_last = image_to_hwc(image, do_convert_rgb, input_data_format, index, keep_channels)
            check_integer_range(hwc, index, do_rescale, rescale_factor)
            image_sizes.append(hwc.shape[:2])
            if do_rescale and np.issubdtype(hwc.dtype, np.floating) and hwc.min() >= 0 and hwc.max() <= 1:
                warn_scaled = True
            if do_resize:
                hwc = pil_resize(hwc, target, resample)
            if do_rescale:
                hwc = (hwc.astype(np.float64) * rescale_factor).astype(np.float32)
            if do_normalize:
                if not np.issubdtype(hwc.dtype, np.floating):
                    hwc = hwc.astype(np.float32)
                channels = hwc.shape[-1]
                for stats_name, stats in (("image_mean", image_mean), ("image_std", image_std)):
                    if isinstance(stats, list) and len(stats) != channels:
                        raise ValueError(
                            f"{stats_name} has {len(stats)} values but images[{index}] has {channels} channels; "
                            f"pass {channels} values or one number"
                        )
                mean = np.asarray(image_mean, dtype=hwc.dtype)
                std = np.asarray(image_std, dtype=hwc.dtype)
                hwc = (hwc - mean) / std
            hwc = hwc.astype(np.float32)
            out_channels_last = was_channels_last if data_format is None else data_format == "channels_last"
            pixel_values.append(np.ascontiguousarray(hwc if out_channels_last else hwc.transpose(2, 0, 1)))
        if warn_scaled:
            warnings.warn(
                "images: float images already in [0, 1] are being rescaled again (do_rescale=True multiplies them by "
                f"rescale_factor={rescale_factor}); pass do_rescale=False if they are already scaled.",
                UserWarning,
                stacklevel=3,
            )

        result = BatchFeature(pixel_values=pixel_values)
        if flat_maps is not None:
            labels: list[np.ndarray] = []
            for index, segmentation_map in enumerate(flat_maps):
                label_map = map_to_2d(segmentation_map, index)
                if label_map.shape != image_sizes[index]:
                    raise ValueError(
                        f"segmentation_maps[{index}] is {label_map.shape} (H, W) but images[{index}] is "
                        f"{image_sizes[index]}; each map must have its image's height and width"
                    )
                if do_reduce_labels:
                    label_map = reduce_labels(label_map)
                if do_resize:
                    label_map = resize_nearest(label_map, target)
                labels.append(np.array(label_map, dtype=np.int64))
            result["labels"] = labels
        return _convert_tensors(result, return_tensors)

    # -- single steps (transformers' public methods) ---------------------------------------------------------

    @property
    def is_fast(self) -> bool:
        """``False``: this is the numpy / Pillow processor (transformers' "slow" one, whose numbers it matches)."""
        return False

    @staticmethod
    def _step_io(image: Any, input_data_format: Any) -> tuple[np.ndarray, str]:
        """One image as HWC numpy without any channel conversion, and its layout: ``"hw"`` (2-D),
        ``"channels_last"`` or ``"channels_first"``."""
        array = np.asarray(image) if is_pil(image) else to_numpy(image)
        input_data_format = normalize_data_format(input_data_format, "input_data_format")
        check_dtype(array, "image", 0)
        if array.ndim == 2:
            return array[:, :, None], "hw"
        if array.ndim != 3 or 0 in array.shape:
            raise ValueError(f"image must be a non-empty (H, W), (H, W, C) or (C, H, W) array, got shape {array.shape}")
        if input_data_format is None:
            input_data_format = "channels_last" if is_pil(image) or infer_channels_last(array.shape, "image", 0) else "channels_first"
        return (array if input_data_format == "channels_last" else np.moveaxis(array, 0, -1)), input_data_format

    @staticmethod
    def _step_out(hwc: np.ndarray, layout: str, data_format: Any) -> np.ndarray:
        """HWC back to the input's layout, or to ``data_format`` when given."""
        data_format = normalize_data_format(data_format, "data_format")
        if data_format is None and layout == "hw":
            return hwc[:, :, 0]
        target = layout if data_format is None else data_format
        return np.ascontiguousarray(hwc if target in ("channels_last", "hw") else hwc.transpose(2, 0, 1))

    def resize(
        self, image: Any, size: Any, resample: Any = PIL_BILINEAR, data_format: Any = None, input_data_format: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Resize one image to ``size`` (``{"height", "width"}``, a pair or an int) with Pillow, as transformers'
        ``resize``: uint8 out for uint8 / integer-valued input in [0, 255], float32 otherwise; the input's layout
        unless ``data_format`` says otherwise. Unknown keywords are a ``TypeError``."""
        if kwargs:
            raise TypeError(f"resize got unexpected keyword arguments {sorted(kwargs)}")
        hwc, layout = self._step_io(image, input_data_format)
        target = normalize_size(size)
        return self._step_out(pil_resize(hwc, (target["height"], target["width"]), normalize_resample(resample)), layout, data_format)

    def rescale(self, image: Any, scale: float, data_format: Any = None, input_data_format: Any = None, **kwargs: Any) -> np.ndarray:
        """``image * scale`` computed in float64, returned as float32 (transformers' ``rescale``)."""
        if kwargs:
            raise TypeError(f"rescale got unexpected keyword arguments {sorted(kwargs)}")
        hwc, layout = self._step_io(image, input_data_format)
        return self._step_out((hwc.astype(np.float64) * normalize_rescale_factor(scale)).astype(np.float32), layout, data_format)

    def normalize(
        self, image: Any, mean: float | Sequence[float], std: float | Sequence[float], data_format: Any = None,
        input_data_format: Any = None, **kwargs: Any,
    ) -> np.ndarray:
        """``(image - mean) / std`` per channel, in float32 for integer input (the input's float dtype otherwise),
        as transformers' ``normalize``; ``mean`` / ``std`` are one number or one value per channel."""
        if kwargs:
            raise TypeError(f"normalize got unexpected keyword arguments {sorted(kwargs)}")
        hwc, layout = self._step_io(image, input_data_format)
        values = hwc if np.issubdtype(hwc.dtype, np.floating) else hwc.astype(np.float32)
        stats = []
        for name, given in (("mean", mean), ("std", std)):
            value = normalize_stats(given, name)
            if isinstance(value, list) and len(value) != values.shape[-1]:
                raise ValueError(f"{name} has {len(value)} values but the image has {values.shape[-1]} channels")
            stats.append(np.asarray(value, dtype=values.dtype))
        return self._step_out((values - stats[0]) / stats[1], layout, data_format)

    def reduce_label(self, label: Any) -> np.ndarray:
        """ADE20K's label reduction on one map: 0 (background) -> 255 (ignored), k -> k - 1, 255 stays 255."""
        return reduce_labels(map_to_2d(label, 0))

    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Any = None, return_probabilities: bool = False
    ) -> list[Any]:
        """See the module-level ``post_process_semantic_segmentation``."""
        return post_process_semantic_segmentation(outputs, target_sizes, return_probabilities)

    # -- serialization ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The settings in Hugging Face's ``preprocessor_config.json`` format."""
        data: dict[str, Any] = {
            "do_normalize": self.do_normalize,
            "do_reduce_labels": self.do_reduce_labels,
            "do_rescale": self.do_rescale,
            "do_resize": self.do_resize,
            "image_mean": self.image_mean if not isinstance(self.image_mean, list) else list(self.image_mean),
            "image_processor_type": "SegformerImageProcessor",
            "image_std": self.image_std if not isinstance(self.image_std, list) else list(self.image_std),
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "size": dict(self.size),
        }
        if not self.do_convert_rgb:
            data["do_convert_rgb"] = False
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        atomic_write_text(json_file_path, self.to_json_string())

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SegformerImageProcessor) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any], **kwargs: Any) -> "SegformerImageProcessor":
        """Build from a ``preprocessor_config.json`` dict; ``kwargs`` override its values."""
        if not isinstance(config_dict, Mapping):
            raise TypeError(f"config_dict must be a mapping, got {type(config_dict).__name__}")
        return cls(**{**dict(config_dict), **kwargs})

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike, **kwargs: Any) -> "SegformerImageProcessor":
        from ..base.json_io import read_json

        data = read_json(json_file, "processor config", error=ValueError)  # nesting / size / encoding bounded
        if not isinstance(data, Mapping):
            raise ValueError(f"{os.fspath(json_file)!r}: a processor config must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "SegformerImageProcessor":
        """Load from a folder holding ``preprocessor_config.json`` (or the JSON file itself).

        A Hugging Face Hub repo id (``"nvidia/segformer-b0-finetuned-ade-512-512"``) is fetched with the
        optional ``huggingface_hub`` package when it is installed. The download options (``revision``,
        ``token``, ``cache_dir``, ``local_files_only``, ``force_download``, ``proxies``, ``subfolder``) steer
        where the file comes from and are never stored; other ``kwargs`` override the file's values.
        """
        from ..model.hub import download_file, pop_download_kwargs, resolve_model_dir

        hub = pop_download_kwargs(kwargs)
        path = Path(pretrained_model_name_or_path)
        if path.is_file() and not hub["subfolder"]:
            config_file = path
        elif path.is_dir():
            config_file = resolve_model_dir(os.fspath(path), **hub) / PREPROCESSOR_CONFIG_NAME
            if not config_file.is_file():
                raise FileNotFoundError(f"{os.fspath(config_file.parent)!r} has no {PREPROCESSOR_CONFIG_NAME}")
        else:
            config_file = download_file(os.fspath(pretrained_model_name_or_path), PREPROCESSOR_CONFIG_NAME, hub)
        return cls.from_json_file(config_file, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """Write ``save_directory/preprocessor_config.json`` (atomically); returns ``[path]``.

        ``push_to_hub=True`` then uploads the folder through ``huggingface_hub`` to ``repo_id`` (default: the
        folder's name) with ``token``, ``commit_message``, ``commit_description``, ``private``, ``create_pr``,
        ``revision``; any other keyword is a ``TypeError``.
        """
        from ..model.hub import pop_save_kwargs, push_folder_to_hub

        repo_id, upload = pop_save_kwargs(type(self).__name__, kwargs, "push_to_hub")
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"save_directory {os.fspath(directory)!r} is a file; pass a folder")
        directory.mkdir(parents=True, exist_ok=True)
        output = directory / PREPROCESSOR_CONFIG_NAME
        self.to_json_file(output)
        if push_to_hub:
            push_folder_to_hub(directory, repo_id or directory.resolve().name, **upload)
        return [os.fspath(output)]

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Save into a temporary folder and upload it to the Hub repo ``repo_id`` through ``huggingface_hub``."""
        from ..model.hub import push_to_hub_with

        return push_to_hub_with(self.save_pretrained, repo_id, **kwargs)


class SegformerFeatureExtractor(SegformerImageProcessor):
    """Deprecated alias of ``SegformerImageProcessor`` (as in Hugging Face); emits a ``FutureWarning``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "SegformerFeatureExtractor is deprecated and will be removed; use SegformerImageProcessor instead "
            "(same arguments and behaviour).",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _pop_legacy_kwargs(kwargs: dict[str, Any], where: str, per_call: bool = False) -> bool | None:
    """Remove legacy / meta keys from ``kwargs``; return the legacy ``reduce_labels`` value if given."""
    legacy: bool | None = None
    if "reduce_labels" in kwargs:
        legacy = bool(kwargs.pop("reduce_labels"))
        warnings.warn(
            "The `reduce_labels` argument is deprecated; it is honoured as `do_reduce_labels` "
            f"(= {legacy}). Use `do_reduce_labels` instead.",
            FutureWarning,
            stacklevel=4,
        )
    for key in _META_KEYS:
        kwargs.pop(key, None)
    ignored_legacy = sorted(key for key in _LEGACY_IGNORED if key in kwargs)
    for key in ignored_legacy:
        kwargs.pop(key)
    if ignored_legacy:
        warnings.warn(
            f"{where}: {', '.join(ignored_legacy)} belong to the old SegformerFeatureExtractor and have no effect "
            "(as in transformers >= 4.13); they were ignored.",
            UserWarning,
            stacklevel=4,
        )
    if kwargs:
        valid = _INIT_ARGS + (("return_tensors", "data_format", "input_data_format") if per_call else ())
        unknown = sorted(kwargs)
        kwargs.clear()
        warnings.warn(
            f"{where}: unknown arguments {', '.join(unknown)} were ignored; valid arguments: {', '.join(valid)}",
            UserWarning,
            stacklevel=4,
        )
    return legacy


def _convert_tensors(batch: BatchFeature, return_tensors: str | None) -> BatchFeature:
    if return_tensors is None:
        return batch
    stacked: dict[str, np.ndarray] = {}
    for key, values in batch.items():
        shapes = sorted({tuple(v.shape) for v in values})
        if len(shapes) != 1:
            raise ValueError(
                f"return_tensors={return_tensors!r} needs all {key} the same shape, got {shapes}; pass do_resize=True "
                "(one size for all) or return_tensors=None (lists)"
            )
        stacked[key] = np.stack(values)
    if return_tensors == "np":
        return BatchFeature(stacked)
    if return_tensors == "pt":
        import torch

        return BatchFeature({key: torch.from_numpy(value) for key, value in stacked.items()})
    import tensorflow as tf

    return BatchFeature({key: tf.convert_to_tensor(value) for key, value in stacked.items()})
