"""The original SegFormer (mmseg) training augmentations and evaluation preprocessing, in numpy + Pillow.

Training pipeline of the NVlabs configs (``local_configs/segformer``), step for step::

    Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))   -> RandomResize
    RandomCrop(crop_size, cat_max_ratio=0.75)               -> RandomCrop
    RandomFlip(prob=0.5)                                    -> RandomFlip
    PhotoMetricDistortion()                                 -> PhotoMetricDistortion
    Normalize(mean, std, to_rgb=True)                       -> normalize
    Pad(size=crop_size, pad_val=0, seg_pad_val=255)         -> pad_to

``TrainTransform`` chains them; ``EvalTransform`` resizes (optionally) and normalizes. Every random
step draws from an explicit ``numpy.random.Generator`` in a fixed order (resize ratio, crop offsets,
flip, photometric), so a seed reproduces an augmentation exactly, in any process.

Images are ``uint8`` ``(H, W, 3)`` RGB until ``normalize``; labels are integer ``(H, W)`` maps.
Outputs are ``pixel_values`` ``float32`` ``(3, H, W)`` and ``labels`` ``int64`` ``(H, W)``.

Known differences from mmseg (which uses OpenCV): image resizing is Pillow bilinear (which smooths
when it shrinks, OpenCV does not), label resizing is nearest with half-pixel centres (aligned with the
image; OpenCV's nearest uses ``floor(dst * scale)``), and RGB<->HSV uses rounded float formulas rather
than OpenCV's fixed-point tables (values agree within 1 on the 8-bit scale).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from ..base.sizes import rescale_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "PhotoMetricDistortion",
    "RandomCrop",
    "RandomFlip",
    "RandomResize",
    "TrainTransform",
    "hsv_to_rgb",
    "normalize",
    "pad_to",
    "rescale_size",
    "resize_image",
    "resize_label",
    "rgb_to_hsv",
]

IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


# ---------------------------------------------------------------------------------------------- checks


def _positive_pair(value: Sequence[int], name: str) -> tuple[int, int]:
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be a pair of positive integers, got {value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name} must be a pair of positive integers (each >= 1), got {value!r}")
    return int(pair[0]), int(pair[1])


def _in_range(value: float, name: str, low: float, high: float, low_open: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    left = "(" if low_open else "["
    ok = (number > low if low_open else number >= low) and number <= high
    if not ok or math.isnan(number):
        raise ValueError(f"{name} must lie in {left}{low}, {high}], got {value!r}")
    return number


def _ordered_range(value: Sequence[float], name: str, low: float, high: float) -> tuple[float, float]:
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if len(pair) != 2 or not (low <= pair[0] <= pair[1] <= high):
        raise ValueError(f"{name} must be a pair (low, high) with {low} <= low <= high <= {high}, got {value!r}")
    return pair[0], pair[1]


def _channel_triple(value: Sequence[float], name: str, positive: bool) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {value!r}") from None
    if len(triple) != 3:
        raise ValueError(f"{name} must be 3 numbers (one per RGB channel), got {value!r}")
    if positive and not all(v > 0 for v in triple):
        raise ValueError(f"{name} must be 3 positive numbers, got {value!r}")
    return triple  # type: ignore[return-value]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3) (RGB, channels last), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (0-255), got dtype {image.dtype}")
    return image


def _check_pair(image: np.ndarray, label: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    image = _check_image(image)
    if label is None:
        return image, None
    label = np.asarray(label)
    if label.ndim != 2 or label.shape != image.shape[:2]:
        raise ValueError(
            f"label must have shape (H, W) equal to the image's {image.shape[:2]}, got shape {label.shape}"
        )
    if not np.issubdtype(label.dtype, np.integer):
        raise TypeError(f"label must be an integer array of class indices, got dtype {label.dtype}")
    return image, label


# ---------------------------------------------------------------------------------------------- resizing


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of a ``uint8`` ``(H, W, 3)`` image to ``size = (h, w)`` with Pillow."""
    image = _check_image(image)
    height, width = int(size[0]), int(size[1])
    if (height, width) == image.shape[:2]:
        return image.copy()
    resized = Image.fromarray(image).resize((width, height), resample=Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).copy()


def resize_label(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer ``(H, W)`` map to ``size = (h, w)`` (half-pixel centres).

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * H / h)``, like Pillow ``NEAREST`` and
    torch ``nearest-exact``; the dtype and every value are preserved (no class is invented).
    """
    label = np.asarray(label)
    height, width = int(size[0]), int(size[1])
    rows = np.minimum(((np.arange(height) + 0.5) * (label.shape[0] / height)).astype(np.int64), label.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (label.shape[1] / width)).astype(np.int64), label.shape[1] - 1)
    return label[rows[:, None], cols[None, :]]


class RandomResize:
    """mmseg ``Resize(img_scale, ratio_range, keep_ratio=True)``.

    Draws ``ratio ~ U(ratio_range)``, sets the target scale ``(int(img_scale[0] * ratio),
    int(img_scale[1] * ratio))`` and rescales so that the long edge <= the larger and the short edge
    <= the smaller target value, keeping the aspect ratio (``rescale_size``). Image bilinear, label nearest.
    """

    def __init__(self, img_scale: Sequence[int] = (2048, 512), ratio_range: Sequence[float] = (0.5, 2.0)) -> None:
        self.img_scale = _positive_pair(img_scale, "img_scale")
        self.ratio_range = _ordered_range(ratio_range, "ratio_range", 1e-6, 1e6)

    def sample_scale(self, rng: np.random.Generator) -> tuple[int, int]:
        """The random target scale (one draw from ``rng``)."""
        low, high = self.ratio_range
        ratio = rng.random() * (high - low) + low
        return max(int(self.img_scale[0] * ratio), 1), max(int(self.img_scale[1] * ratio), 1)

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        image, label = _check_pair(image, label)
        scale = self.sample_scale(rng)
        size = rescale_size(image.shape[0], image.shape[1], scale)
        return resize_image(image, size), None if label is None else resize_label(label, size)

    def __repr__(self) -> str:
        return f"RandomResize(img_scale={self.img_scale}, ratio_range={self.ratio_range})"


# ---------------------------------------------------------------------------------------------- crop / flip


class RandomCrop:
    """mmseg ``RandomCrop(crop_size, cat_max_ratio, ignore_index)``.

    Crops ``crop_size = (h, w)`` at a uniform offset (a smaller side is kept whole and padded later).
    With ``cat_max_ratio < 1`` it re-draws the crop up to 10 times until the crop holds at least two
    non-ignored classes and the most frequent one covers less than ``cat_max_ratio`` of the non-ignored
    pixels; after 10 failures the 11th draw is used as is (exactly mmseg's loop).
    """

    def __init__(
        self, crop_size: Sequence[int] = (512, 512), cat_max_ratio: float = 0.75, ignore_index: int = 255
    ) -> None:
        self.crop_size = _positive_pair(crop_size, "crop_size")
        self.cat_max_ratio = _in_range(cat_max_ratio, "cat_max_ratio", 0.0, 1.0, low_open=True)
        self.ignore_index = int(ignore_index)

    def get_crop_bbox(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """A random ``(y1, y2, x1, x2)`` window (two draws from ``rng``: row offset, column offset)."""
        margin_h = max(height - self.crop_size[0], 0)
        margin_w = max(width - self.crop_size[1], 0)
        offset_h = int(rng.integers(0, margin_h + 1))
        offset_w = int(rng.integers(0, margin_w + 1))
        return offset_h, offset_h + self.crop_size[0], offset_w, offset_w + self.crop_size[1]

    def _acceptable(self, crop: np.ndarray) -> bool:
        values, counts = np.unique(crop, return_counts=True)
        counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        image, label = _check_pair(image, label)
        height, width = image.shape[:2]
        y1, y2, x1, x2 = self.get_crop_bbox(height, width, rng)
        if self.cat_max_ratio < 1.0 and label is not None:
            for _ in range(10):
                if self._acceptable(label[y1:y2, x1:x2]):
                    break
                y1, y2, x1, x2 = self.get_crop_bbox(height, width, rng)
        image = image[y1:y2, x1:x2].copy()
        return image, None if label is None else label[y1:y2, x1:x2].copy()

    def __repr__(self) -> str:
        return (
            f"RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio}, "
            f"ignore_index={self.ignore_index})"
        )


class RandomFlip:
    """mmseg ``RandomFlip(prob)``, horizontal: flips image and label together when ``rng.random() < prob``."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = _in_range(prob, "flip_prob", 0.0, 1.0)

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if rng.random() < self.prob:
            image = image[:, ::-1].copy()
            label = None if label is None else label[:, ::-1].copy()
        return image, label

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


# ---------------------------------------------------------------------------------------------- colour


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB -> HSV on float arrays ``(..., 3)`` in ``[0, 1]``: hue in ``[0, 1)``, saturation and value in ``[0, 1]``.

    Same formulas as :func:`colorsys.rgb_to_hsv`, vectorized.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = rgb.max(axis=-1)
    minc = rgb.min(axis=-1)
    delta = maxc - minc
    safe_delta = np.where(delta > 0, delta, 1.0)
    safe_max = np.where(maxc > 0, maxc, 1.0)
    sat = np.where(maxc > 0, delta / safe_max, 0.0)
    rc = (maxc - r) / safe_delta
    gc = (maxc - g) / safe_delta
    bc = (maxc - b) / safe_delta
    hue = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = np.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    return np.stack([hue, sat, maxc], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV -> RGB, the inverse of :func:`rgb_to_hsv` (float ``(..., 3)``, all channels in ``[0, 1]``)."""
    hsv = np.asarray(hsv, dtype=np.float64)
    hue, sat, val = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    sector = sector.astype(np.int64) % 6
    p = val * (1.0 - sat)
    q = val * (1.0 - sat * frac)
    t = val * (1.0 - sat * (1.0 - frac))
    choices_r = [val, q, p, p, t, val]
    choices_g = [t, val, val, q, p, p]
    choices_b = [p, p, t, val, val, q]
    conditions = [sector == k for k in range(6)]
    r = np.select(conditions, choices_r)
    g = np.select(conditions, choices_g)
    b = np.select(conditions, choices_b)
    return np.stack([r, g, b], axis=-1)


def _rgb_to_hsv_uint8(image: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``COLOR_RGB2HSV`` convention: H in ``[0, 180)`` (degrees / 2), S and V in ``[0, 255]``."""
    hsv = rgb_to_hsv(image.astype(np.float64) / 255.0)
    out = np.empty(image.shape, dtype=np.float64)
    out[..., 0] = np.round(hsv[..., 0] * 180.0) % 180.0
    out[..., 1] = np.round(hsv[..., 1] * 255.0)
    out[..., 2] = np.round(hsv[..., 2] * 255.0)
    return out.astype(np.uint8)


def _hsv_uint8_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_rgb_to_hsv_uint8` (OpenCV's 8-bit ``COLOR_HSV2RGB``)."""
    scaled = np.empty(hsv.shape, dtype=np.float64)
    scaled[..., 0] = hsv[..., 0].astype(np.float64) / 180.0
    scaled[..., 1] = hsv[..., 1].astype(np.float64) / 255.0
    scaled[..., 2] = hsv[..., 2].astype(np.float64) / 255.0
    return np.clip(np.round(hsv_to_rgb(scaled) * 255.0), 0, 255).astype(np.uint8)


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion.convert``: ``clip(x * alpha + beta, 0, 255)`` truncated to uint8."""
    return np.clip(values.astype(np.float32) * np.float32(alpha) + np.float32(beta), 0, 255).astype(np.uint8)


class PhotoMetricDistortion:
    """mmseg ``PhotoMetricDistortion``, same order and draws from ``rng``:

    1. brightness (p=0.5): ``x + U(-brightness_delta, brightness_delta)``
    2. mode = ``rng.integers(2)``; if mode == 1 contrast now (p=0.5): ``x * U(contrast_range)``
    3. saturation (p=0.5): HSV ``S * U(saturation_range)``
    4. hue (p=0.5): HSV ``(H + randint[-hue_delta, hue_delta)) % 180`` (OpenCV 8-bit hue, degrees / 2)
    5. if mode == 0 contrast now (p=0.5)

    Each step clips to ``[0, 255]`` and truncates to uint8, as mmseg does. Input and output: uint8 ``(H, W, 3)`` RGB.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = int(_in_range(brightness_delta, "brightness_delta", 0, 255))
        self.contrast_range = _ordered_range(contrast_range, "contrast_range", 0.0, 1e6)
        self.saturation_range = _ordered_range(saturation_range, "saturation_range", 0.0, 1e6)
        self.hue_delta = int(_in_range(hue_delta, "hue_delta", 0, 180))

    def _brightness(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return _convert(image, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        return image

    def _contrast(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return _convert(image, alpha=rng.uniform(*self.contrast_range))
        return image

    def _saturation(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            hsv = _rgb_to_hsv_uint8(image)
            hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            return _hsv_uint8_to_rgb(hsv)
        return image

    def _hue(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            hsv = _rgb_to_hsv_uint8(image)
            # numpy's randint(-d, d) excludes d; rng.integers has the same half-open range.
            shift = int(rng.integers(-self.hue_delta, self.hue_delta)) if self.hue_delta else 0
            hsv[..., 0] = ((hsv[..., 0].astype(np.int64) + shift) % 180).astype(np.uint8)
            return _hsv_uint8_to_rgb(hsv)
        return image

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        image = _check_image(image)
        image = self._brightness(image, rng)
        mode = int(rng.integers(2))
        if mode == 1:
            image = self._contrast(image, rng)
        image = self._saturation(image, rng)
        image = self._hue(image, rng)
        if mode == 0:
            image = self._contrast(image, rng)
        return image, label

    def __repr__(self) -> str:
        return (
            f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, contrast_range={self.contrast_range}, "
            f"saturation_range={self.saturation_range}, hue_delta={self.hue_delta})"
        )


# ---------------------------------------------------------------------------------------------- normalize / pad


def normalize(
    image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """``(image - mean) / std`` on the 0-255 scale: ``(H, W, 3)`` -> float32 ``(3, H, W)``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got shape {image.shape}")
    mean_array = np.asarray(_channel_triple(mean, "mean", positive=False), dtype=np.float32)
    std_array = np.asarray(_channel_triple(std, "std", positive=True), dtype=np.float32)
    out = (image.astype(np.float32) - mean_array) / std_array
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def pad_to(array: np.ndarray, size: Sequence[int], value: float, channels_first: bool = False) -> np.ndarray:
    """Pad bottom and right with ``value`` up to ``size = (h, w)`` (mmseg ``Pad``); larger sides stay as they are.

    ``array`` is ``(H, W)``, ``(H, W, C)``, or ``(C, H, W)`` with ``channels_first=True``.
    """
    array = np.asarray(array)
    h_axis = 1 if channels_first else 0
    height, width = array.shape[h_axis], array.shape[h_axis + 1]
    pad_h = max(int(size[0]) - height, 0)
    pad_w = max(int(size[1]) - width, 0)
    if pad_h == 0 and pad_w == 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[h_axis] = (0, pad_h)
    widths[h_axis + 1] = (0, pad_w)
    return np.pad(array, widths, mode="constant", constant_values=value)


# ---------------------------------------------------------------------------------------------- composed


class TrainTransform:
    """The SegFormer training augmentation, ``(image, label, rng) -> (pixel_values, labels)``.

    Args:
        crop_size: ``(h, w)`` of the crop and of every output.
        img_scale: base ``(long, short)`` rescale bound (``(2048, 512)`` for ADE20K, ``(2048, 1024)`` Cityscapes).
        ratio_range: ``(low, high)`` factor applied to ``img_scale``.
        cat_max_ratio: in ``(0, 1]``; 1 disables the dominant-class rule.
        flip_prob: horizontal flip probability in ``[0, 1]``.
        photometric: apply :class:`PhotoMetricDistortion` with the mmseg defaults.
        ignore_index: label value for padding and for "not a class" in the crop rule.
        mean, std: per-channel normalization on the 0-255 scale (RGB order).

    Call with ``image`` uint8 ``(H, W, 3)`` RGB, ``label`` integer ``(H, W)`` and a
    ``numpy.random.Generator``; returns ``pixel_values`` float32 ``(3, *crop_size)`` (padding 0 after
    normalization) and ``labels`` int64 ``crop_size`` (padding ``ignore_index``).
    """

    def __init__(
        self,
        crop_size: Sequence[int] = (512, 512),
        img_scale: Sequence[int] = (2048, 512),
        ratio_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: bool = True,
        ignore_index: int = 255,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
        self.crop_size = _positive_pair(crop_size, "crop_size")
        self.ignore_index = int(ignore_index)
        self.resize = RandomResize(img_scale, ratio_range)
        self.crop = RandomCrop(self.crop_size, cat_max_ratio, self.ignore_index)
        self.flip = RandomFlip(flip_prob)
        self.photometric = PhotoMetricDistortion() if photometric else None
        self.mean = _channel_triple(mean, "mean", positive=False)
        self.std = _channel_triple(std, "std", positive=True)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if rng is None:
            rng = np.random.default_rng()
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
            )
        if label is None:
            raise ValueError("TrainTransform needs a label map; use EvalTransform for images alone")
        image, label = _check_pair(image, label)
        image, label = self.resize(image, label, rng)
        image, label = self.crop(image, label, rng)
        image, label = self.flip(image, label, rng)
        if self.photometric is not None:
            image, label = self.photometric(image, label, rng)
        pixel_values = pad_to(normalize(image, self.mean, self.std), self.crop_size, 0.0, channels_first=True)
        labels = pad_to(label.astype(np.int64), self.crop_size, self.ignore_index)
        return pixel_values.astype(np.float32, copy=False), labels

    def __repr__(self) -> str:
        return (
            f"TrainTransform({self.resize!r}, {self.crop!r}, {self.flip!r}, {self.photometric!r}, "
            f"mean={self.mean}, std={self.std})"
        )


class EvalTransform:
    """Evaluation preprocessing, ``(image, label=None, rng=None) -> (pixel_values, labels)``.

    Args:
        size: ``None`` keeps the image size; ``(h, w)`` resizes to exactly that (Hugging Face style,
            e.g. ``(512, 512)``); with ``keep_ratio=True`` it is instead a ``(long, short)`` bound as in
            mmseg's test pipeline (``(2048, 512)`` for ADE20K).
        keep_ratio: fit inside ``size`` keeping the aspect ratio (``rescale_size``).
        size_divisor: after that, stretch each side up to the next multiple (mmseg ``AlignedResize``,
            32 in the SegFormer ADE20K configs). Needs ``keep_ratio=True`` or ``size=None``.
        mean, std: normalization on the 0-255 scale.

    The label (if given) is returned at its **original** size as int64: evaluate after resizing the
    logits back to it. ``rng`` is accepted for a uniform call signature and ignored.
    """

    def __init__(
        self,
        size: Sequence[int] | None = None,
        keep_ratio: bool = False,
        size_divisor: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = None if size is None else _positive_pair(size, "size")
        if keep_ratio and self.size is None:
            raise ValueError("keep_ratio=True needs size=(long, short), got size=None")
        if size_divisor is not None:
            if isinstance(size_divisor, bool) or not isinstance(size_divisor, (int, np.integer)) or size_divisor < 1:
                raise ValueError(f"size_divisor must be None or an integer >= 1, got {size_divisor!r}")
            if self.size is not None and not keep_ratio:
                raise ValueError("size_divisor applies with keep_ratio=True or size=None, not with an exact size")
        self.keep_ratio = bool(keep_ratio)
        self.size_divisor = None if size_divisor is None else int(size_divisor)
        self.mean = _channel_triple(mean, "mean", positive=False)
        self.std = _channel_triple(std, "std", positive=True)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(h, w)`` an ``height x width`` image is resized to."""
        if self.size is None:
            out_h, out_w = height, width
        elif self.keep_ratio:
            out_h, out_w = rescale_size(height, width, self.size)
        else:
            out_h, out_w = self.size
        if self.size_divisor is not None:
            out_h = int(math.ceil(out_h / self.size_divisor)) * self.size_divisor
            out_w = int(math.ceil(out_w / self.size_divisor)) * self.size_divisor
        return out_h, out_w

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None = None, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        image, label = _check_pair(image, label)
        image = resize_image(image, self.output_size(*image.shape[:2]))
        pixel_values = normalize(image, self.mean, self.std)
        return pixel_values, None if label is None else label.astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"EvalTransform(size={self.size}, keep_ratio={self.keep_ratio}, size_divisor={self.size_divisor}, "
            f"mean={self.mean}, std={self.std})"
        )
