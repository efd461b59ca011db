"""Array coercion for :class:`~segformer.common.images.image_processing.SegformerImageProcessor`: argument
normalization, images and label maps of every accepted kind (PIL, numpy, torch, TF, nested lists) to numpy
HWC / 2-D arrays with their checks, and the label-map numerics (reduce labels, nearest resize, Pillow
resize). numpy + Pillow only; torch / tensorflow objects are read without importing either.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Mapping

import numpy as np
from PIL import Image

from segformer.common.base.sizes import positive_int
from segformer.common.images.labels import IGNORE_INDEX
from segformer.common.model.pixel_values import DATA_FORMATS

RETURN_TENSORS = (None, "np", "pt", "tf")
# Pillow filter codes (PIL.Image.Resampling values), as stored in preprocessor_config.json.
RESAMPLE_NAMES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
PIL_NEAREST = 0
PIL_BILINEAR = 2
PIL_TO_RGB_MODES = ("1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
# PIL modes whose bands are pixel values (not palette indices or another color space): kept when the channel
# rule keeps their band count.
KEEPABLE_PIL_MODES = ("L", "LA", "RGBA")


# ----------------------------------------------------------------------------------------------------------------
# Argument normalization


def normalize_size(size: Any) -> dict[str, int]:
    allowed = "an int, a (height, width) pair, or {'height': h, 'width': w}"
    if isinstance(size, Mapping):
        if set(size) != {"height", "width"}:
            raise ValueError(f"size must be {allowed}; got {dict(size)!r} (keys {sorted(size)})")
        height, width = size["height"], size["width"]
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        height = width = size
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        height, width = size
    else:
        raise ValueError(f"size must be {allowed}; got {size!r}")
    return {"height": positive_int("size['height']", height), "width": positive_int("size['width']", width)}


def normalize_resample(resample: Any) -> int:
    if isinstance(resample, str):
        key = resample.strip().lower()
        if key not in RESAMPLE_NAMES:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE_NAMES)} or a PIL filter code 0..5, got {resample!r}")
        return RESAMPLE_NAMES[key]
    if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)):
        raise ValueError(f"resample must be a PIL filter (PIL.Image.Resampling / int 0..5) or a name, got {resample!r}")
    if int(resample) not in RESAMPLE_NAMES.values():
        raise ValueError(f"resample must be a PIL filter code in 0..5 ({RESAMPLE_NAMES}), got {int(resample)}")
    return int(resample)


def normalize_stats(value: Any, name: str) -> float | list[float]:
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        numbers = [float(value)]
        scalar = True
    else:
        try:
            numbers = [float(v) for v in value]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a sequence of numbers (one per channel), got {value!r}") from None
        scalar = False
        if not numbers:
            raise ValueError(f"{name} must not be empty")
    if not all(np.isfinite(numbers)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if name == "image_std" and any(v == 0 for v in numbers):
        raise ValueError(f"image_std must be non-zero, got {value!r}")
    return numbers[0] if scalar else numbers


def normalize_rescale_factor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise ValueError(f"rescale_factor must be a finite number, got {value!r}")
    return float(value)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_pixel_range(do_rescale: bool, rescale_factor: float, do_normalize: bool, image_mean: Any, image_std: Any,
                      low: float = 0.0, high: float = 255.0, what: str = "processor") -> None:
    """Refuse settings under which inputs in ``[low, high]`` (uint8 images: ``[0, 255]``) overflow float32 to
    inf, before any image is processed: the largest ``|(x * rescale_factor - mean) / std|`` (``std`` as float32,
    as it is applied) must stay below float32's max (3.4e38). A tiny ``image_std`` or a huge ``rescale_factor``
    would otherwise give an inf / NaN input, and the model would "predict" one class everywhere."""
    factor = rescale_factor if do_rescale else 1.0
    ends = [low * factor, high * factor]
    if max(abs(v) for v in ends) > FLOAT32_MAX:
        raise ValueError(
            f"{what}: rescale_factor={rescale_factor} turns pixel values up to {high:g} into {max(ends, key=abs):.3g}, "
            f"beyond float32's range ({FLOAT32_MAX:.3g}): inputs would be inf; use a factor up to "
            f"{FLOAT32_MAX / max(abs(low), abs(high), 1.0):.3g} (1/255 for uint8 images)"
        )
    if not do_normalize:
        return
    means = np.atleast_1d(np.asarray(image_mean, dtype=np.float64))
    with np.errstate(over="ignore"):
        stds = np.atleast_1d(np.asarray(image_std, dtype=np.float32)).astype(np.float64)
    if not np.isfinite(stds).all():
        raise ValueError(
            f"{what}: image_std={image_std} is beyond float32's range ({FLOAT32_MAX:.3g}): every normalized value "
            "would be 0 (one class everywhere)"
        )
    if means.size != stds.size and 1 not in (means.size, stds.size):
        return  # refused per image, naming the channel counts
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        largest = max(float(np.max(np.abs((end - means) / stds))) for end in ends) if stds.size else 0.0
    if not np.isfinite(largest) or largest > FLOAT32_MAX:
        raise ValueError(
            f"{what}: image_std={image_std} with image_mean={image_mean} and rescale_factor={factor} maps pixel values "
            f"in [{low:g}, {high:g}] to {largest:.3g}, beyond float32's range ({FLOAT32_MAX:.3g}): inputs would be inf; "
            "image_std must be at least about "
            f"{float(np.max(np.abs(np.subtract.outer(ends, means)))) / FLOAT32_MAX:.3g} in magnitude"
        )


def check_size_memory(size: dict[str, int], count: int) -> None:
    """Refuse, before resizing, a processor ``size`` whose outputs cannot fit: every image's float32 pixel
    values (3 channels) plus one image's resized uint8 copy and its float64 rescaling."""
    from segformer.common.base.resources import check_memory

    pixels = size["height"] * size["width"]
    check_memory(count * pixels * 3 * 4 + pixels * 3 * (1 + 8), f"size={size}",
                 f"resizing {count} image(s) to {size['height']}x{size['width']} float32 pixel values")


def normalize_return_tensors(return_tensors: Any) -> str | None:
    value = getattr(return_tensors, "value", return_tensors)
    if value not in RETURN_TENSORS:
        raise ValueError(f"return_tensors must be one of {RETURN_TENSORS}, got {return_tensors!r}")
    return value


def normalize_data_format(value: Any, name: str, allow_none: bool = True) -> str | None:
    value = getattr(value, "value", value)
    if value is None and allow_none:
        return None
    aliases = {"channels_first": "channels_first", "first": "channels_first", "channels_last": "channels_last", "last": "channels_last"}
    if not isinstance(value, str) or value not in aliases:
        allowed = ", ".join(repr(v) for v in DATA_FORMATS) + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return aliases[value]


# ----------------------------------------------------------------------------------------------------------------
# Input conversion


def is_pil(value: Any) -> bool:
    return isinstance(value, Image.Image)


def is_arraylike(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return True
    module = type(value).__module__
    if module.startswith(("torch", "tensorflow", "jax", "jaxlib", "keras")):
        return hasattr(value, "shape")
    return hasattr(value, "__array__") and hasattr(value, "shape") and hasattr(value, "dtype")


def to_numpy(value: Any) -> np.ndarray:
    """A numpy view/copy of an array-like (torch tensors are detached and moved to the CPU first)."""
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    if hasattr(value, "numpy") and callable(value.numpy):
        return np.asarray(value.numpy())
    return np.asarray(value)


def flatten(inputs: Any, name: str, single_ndims: tuple[int, ...], batch_ndim: int) -> list[Any]:
    """Flatten images / maps into a list of single items (PIL images or numpy arrays).

    A single array with ``ndim in single_ndims`` is one item, with ``ndim == batch_ndim`` a batch; lists (and
    lists of lists) are flattened the same way.
    """
    shapes = " or ".join(f"{n}-D" for n in single_ndims)
    allowed = (
        f"a PIL image, a numpy array / torch or tf tensor ({shapes} for one item, {batch_ndim}-D for a batch), "
        "or a list of them"
    )

    def one(value: Any, depth: int) -> list[Any]:
        if is_pil(value):
            return [value]
        if is_arraylike(value):
            array = to_numpy(value)
            if array.ndim in single_ndims:
                return [array]
            if array.ndim == batch_ndim:
                return list(array)
            raise ValueError(f"{name}: got an array of shape {array.shape}; expected {allowed}")
        if isinstance(value, (list, tuple)) and depth < 2:
            if len(value) == 0:
                raise ValueError(f"{name}: got an empty list; expected {allowed}")
            items: list[Any] = []
            for element in value:
                items.extend(one(element, depth + 1))
            return items
        raise TypeError(f"{name}: got {type(value).__name__}; expected {allowed}")

    return one(inputs, 0)


def check_dtype(array: np.ndarray, name: str, index: int) -> None:
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(
            f"{name}[{index}]: dtype {array.dtype} is not supported; allowed: unsigned / signed integers "
            "(uint8 0..255) or floats (0..1 or 0..255)"
        )


CHANNEL_COUNTS = (1, 2, 3, 4)  # grey, grey + alpha, RGB, RGBA


def infer_channels_last(shape: tuple[int, ...], name: str, index: int) -> bool:
    """Whether a 3-D image of ``shape`` is channels-last, inferred only where one reading is possible: exactly one
    of the first and last axes has a channel count (1, 2, 3 or 4). Where both do (a 3-row RGB image
    ``(3, W, 3)`` is also a 3-channel image ``W`` pixels high and 3 wide) nothing is guessed: the error asks for
    ``input_data_format`` (transformers assumes channels first there, with a warning)."""
    first, last = shape[0] in CHANNEL_COUNTS, shape[-1] in CHANNEL_COUNTS
    if first and last:
        raise ValueError(
            f"{name}[{index}]: the channel axis of an image of shape {shape} is ambiguous (channels last: "
            f"{shape[0]}x{shape[1]} pixels of {shape[-1]} channels; channels first: {shape[1]}x{shape[2]} pixels of "
            f"{shape[0]} channels); pass input_data_format='channels_last' (HWC) or 'channels_first' (CHW)"
        )
    if first or last:
        return last
    raise ValueError(
        f"{name}[{index}]: cannot find the channel axis of an image of shape {shape}; expected 1, 2, 3 or 4 "
        "channels on the first (CHW) or last (HWC) axis, or a 2-D (H, W) grayscale image"
    )


def check_integer_range(array: np.ndarray, index: int, do_rescale: bool, rescale_factor: float) -> None:
    """Integer images outside 0..255 (16-bit, ...) under the default ``rescale_factor=1/255`` are refused:
    they would be clipped to white. Another ``rescale_factor`` or ``do_rescale=False`` says how they are scaled."""
    if not np.issubdtype(array.dtype, np.integer) or not do_rescale or rescale_factor != 1 / 255:
        return
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"images[{index}]: integer image ({array.dtype}) has values {low}..{high}, outside 0..255; pass "
            "rescale_factor=1/65535 (16-bit) or the factor for its range, or do_rescale=False with values "
            "already scaled, or convert it to uint8 first (segformer.common.images.image_io.load_image scales files by their range)"
        )


def kept_channels(do_convert_rgb: bool, image_mean: Any, image_std: Any) -> tuple[int, ...]:
    """Channel counts other than 3 that an image keeps (see ``SegformerImageProcessor``'s channel rule): all of
    1, 2, 4 without RGB conversion, else those that the normalization takes as transformers does: each of
    ``image_mean`` / ``image_std`` one number (any count) or a list of that many values."""
    if not do_convert_rgb:
        return (1, 2, 4)
    stats = [s for s in (image_mean, image_std) if s is not None]

    def takes(stat: Any, n: int) -> bool:
        return (isinstance(stat, numbers.Real) and not isinstance(stat, bool)) or (isinstance(stat, list) and len(stat) == n)

    return tuple(n for n in (1, 2, 4) if stats and all(takes(s, n) for s in stats))


def image_to_hwc(
    image: Any, do_convert_rgb: bool, input_data_format: str | None, index: int, keep_channels: tuple[int, ...] = ()
) -> tuple[np.ndarray, bool]:
    """One image as a numpy ``(H, W, C)`` array (C = 3, or a count in ``keep_channels``), and whether it was HWC."""
    name = "images"
    if is_pil(image):
        kept = image.mode in KEEPABLE_PIL_MODES and len(image.getbands()) in keep_channels
        if do_convert_rgb and image.mode != "RGB" and image.mode in PIL_TO_RGB_MODES and not kept:
            image = image.convert("RGB")
        array = np.asarray(image)
        channels_last = True
        if array.ndim == 2:
            array = array[:, :, None]
    else:
        array = image
        if array.ndim == 2:
            array = array[:, :, None]
            channels_last = True
        elif input_data_format is not None:
            channels_last = input_data_format == "channels_last"
        else:
            check_dtype(array, name, index)
            if 0 in array.shape:
                raise ValueError(f"{name}[{index}]: image is empty, shape {array.shape}")
            channels_last = infer_channels_last(array.shape, name, index)
        if not channels_last:
            array = np.moveaxis(array, 0, -1)
    check_dtype(array, name, index)
    if 0 in array.shape:
        raise ValueError(f"{name}[{index}]: image is empty, shape (H, W, C) = {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError(f"{name}[{index}]: float image contains NaN or infinity")
    channels = array.shape[-1]
    if channels == 3 or channels in keep_channels:
        return array, channels_last
    if channels == 1:
        return np.repeat(array, 3, axis=-1), channels_last
    if channels in (2, 4):
        if channels == 4:
            return array[..., :3], channels_last
        return np.repeat(array[..., :1], 3, axis=-1), channels_last
    raise ValueError(
        f"{name}[{index}]: image has {channels} channels (shape {array.shape} as HWC); allowed: 1 (gray), 2 (LA), "
        "3 (RGB) or 4 (RGBA)"
    )


def map_to_2d(segmentation_map: Any, index: int) -> np.ndarray:
    """One label map as a numpy integer ``(H, W)`` array (not copied if it is one already)."""
    name = "segmentation_maps"
    if is_pil(segmentation_map):
        array = np.asarray(segmentation_map)
        if array.ndim != 2:
            raise ValueError(
                f"{name}[{index}]: a PIL label map must be single-channel ('L', 'P', 'I', 'I;16'), got mode "
                f"{segmentation_map.mode!r}"
            )
    else:
        array = segmentation_map
    if array.ndim != 2:
        raise ValueError(f"{name}[{index}]: label map must be 2-D (H, W), got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"{name}[{index}]: label map is empty, shape {array.shape}")
    return label_values(array, f"{name}[{index}]")


def label_values(array: np.ndarray, what: str) -> np.ndarray:
    """A label map's class indices as an integer array: integer dtypes as they are (a uint8 map of a huge image
    is not widened), bool and integer-valued floats as int64; anything else is an error naming ``what``."""
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{what}: float label map must hold integer class indices (no NaN, no fractions)")
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what}: dtype {array.dtype} is not supported; allowed: integers, bool, or integer-valued floats")
    return array


# ----------------------------------------------------------------------------------------------------------------
# Numerics


def reduce_labels(label_map: np.ndarray) -> np.ndarray:
    """ADE20K-style label reduction, returning a new int64 array: 0 -> 255, k -> k - 1, 255 stays 255.

    (Identical to Hugging Face's in-place ``reduce_label`` for every value, including values above 255:
    256 -> 255.)
    """
    labels = np.asarray(label_map).astype(np.int64)
    reduced = labels - 1
    reduced[(labels == 0) | (labels == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced


@functools.lru_cache(maxsize=256)
def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output pixel for Pillow's NEAREST resize along one axis (int64 ``(out_size,)``)."""
    ramp = Image.fromarray(np.arange(in_size, dtype=np.int32)[:, None])
    picked = np.asarray(ramp.resize((1, out_size), resample=PIL_NEAREST)).reshape(-1)
    indices = picked.astype(np.int64)
    indices.setflags(write=False)
    return indices


def resize_nearest(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D array of any integer dtype with Pillow's NEAREST sampling grid, without a uint8 round trip."""
    rows = _nearest_indices(label_map.shape[0], size[0])
    cols = _nearest_indices(label_map.shape[1], size[1])
    return label_map[rows[:, None], cols[None, :]]


def pil_resize(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Hugging Face's ``image_transforms.resize`` on an HWC array: via Pillow, uint8 where it can be.

    Returns HWC; uint8 for uint8 / integer-valued inputs in [0, 255], float32 otherwise. Inputs Hugging Face
    refuses (floats outside [0, 1] that are not integers in [0, 255]) are resized per channel in Pillow's
    float mode "F" with the same filter, without rounding.
    """
    height, width = size
    rescaled = False
    if array.dtype == np.uint8:
        pixels = array
    elif np.allclose(array, array.astype(int)) and array.min() >= 0 and array.max() <= 255:
        pixels = array.astype(np.uint8)
    elif array.min() >= 0 and array.max() <= 1:
        pixels = (array.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)
        rescaled = True
    else:
        planes = [
            np.asarray(Image.fromarray(np.ascontiguousarray(array[:, :, c], dtype=np.float32)).resize(
                (width, height), resample=resample, reducing_gap=None))
            for c in range(array.shape[-1])
        ]
        return np.stack(planes, axis=-1)
    picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else np.ascontiguousarray(pixels))
    resized = np.asarray(picture.resize((width, height), resample=resample, reducing_gap=None))
    if resized.ndim == 2:
        resized = resized[:, :, None]
    if rescaled:
        resized = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    return resized


def softmax(array: np.ndarray, axis: int) -> np.ndarray:
    shifted = array - array.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)
