"""The published SegFormer checkpoints as data: short names, Hub ids, label sets, input sizes, inference
settings of the original recipe and the published accuracy.

A preset name (``"b0-ade"``, ``"b2-city"``, ``"mit-b0"``, keras-hub's ``"segformer_b0_ade20k_512"``) can be
passed wherever a checkpoint folder or Hub id is accepted; :func:`resolve_preset_name` turns it into the Hub
id, which ``huggingface_hub`` then resolves through its cache. Nothing here downloads anything.

Sources of the figures:

* Hub ids: the ``nvidia/*`` checkpoints converted by Hugging Face from the original NVlabs release:
  ``nvidia/mit-b{0..5}`` (ImageNet-1k encoders with a 1000-class classifier),
  ``nvidia/segformer-b{0..4}-finetuned-ade-512-512``, ``nvidia/segformer-b5-finetuned-ade-640-640``
  (150 ADE20K classes), ``nvidia/segformer-b{0..5}-finetuned-cityscapes-1024-1024`` and
  ``nvidia/segformer-b0-finetuned-cityscapes-{512-1024,640-1280,768-768}`` (19 Cityscapes classes).
* Published accuracy: the SegFormer paper (Xie et al. 2021). ADE20K single-scale val mIoU (Table 1):
  B0 37.4, B1 42.2, B2 46.5, B3 49.4, B4 50.3, B5 51.0. Cityscapes single-scale val mIoU at 1024 x 1024
  (Table 1): B0 76.2, B1 78.5, B2 81.0, B3 81.7, B4 82.3, B5 82.4; the B0 real-time rows (Table 3): short
  side 768: 75.3, 640: 73.7, 512: 71.9. ImageNet-1k top-1 of the MiT encoders: 70.5, 78.7, 81.6, 83.1,
  83.6, 83.8 (B0..B5).
* Inference settings (the original mmsegmentation test configs): ADE20K whole-image inference; Cityscapes
  ``1024x1024`` and ``768x768`` models slide windows of 1024 (stride 768) and 768 (stride 768); the
  ``512x1024`` and ``640x1280`` models run on the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .variants import VARIANTS

__all__ = ["Preset", "PRESETS", "get_preset", "keep_ratio_size", "preset_unavailable_message", "find_preset", "resolve_preset_name", "format_presets_table"]


@dataclass(frozen=True)
class Preset:
    """One published checkpoint.

    Attributes:
        name: our short name (``"b0-ade"``); ``aliases`` holds the other accepted spellings.
        hub_id: the Hugging Face Hub model id.
        variant: ``"b0"`` .. ``"b5"`` (a key of ``VARIANTS``).
        task: ``"semantic-segmentation"`` or ``"image-classification"``.
        dataset: ``"ade20k"``, ``"cityscapes"`` or ``"imagenet-1k"``.
        label_set: the built-in label set with its palette (``"ade20k"``, ``"cityscapes"``) or ``None``.
        num_labels: classes of the checkpoint's head.
        input_size: ``(height, width)`` the model was fine-tuned at (its crop size).
        mode: ``"whole"`` or ``"slide"``: the original recipe's test-time inference.
        crop_size / stride: sliding-window settings when ``mode == "slide"``, else ``None``.
        test_scale: ``(long_side, short_side)`` bound of the original test-time resize: the image is scaled,
            keeping its aspect ratio, by the largest factor that fits both bounds (mmcv ``rescale``).
        size_divisor: the scaled size is rounded up to multiples of this (ADE20K's ``AlignedResize``), or ``None``.
        metric / score: the published figure (``"mIoU"`` single-scale val, or ``"top-1"``) in percent.
    """

    name: str
    hub_id: str
    variant: str
    task: str
    dataset: str
    label_set: str | None
    num_labels: int
    input_size: tuple[int, int]
    mode: str
    crop_size: tuple[int, int] | None
    stride: tuple[int, int] | None
    test_scale: tuple[int, int]
    size_divisor: int | None
    metric: str
    score: float
    aliases: tuple[str, ...] = field(default=())

    def inference_settings(self) -> dict[str, Any]:
        """Keyword arguments of ``predict_logits`` for the original recipe (``mode`` and, for slide, windows)."""
        if self.mode == "slide":
            return {"mode": "slide", "crop_size": self.crop_size, "stride": self.stride}
        return {"mode": "whole"}

    def test_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height x width`` is resized to before inference in the original recipe."""
        return keep_ratio_size(height, width, self.test_scale, self.size_divisor)


_ADE_MIOU = {"b0": 37.4, "b1": 42.2, "b2": 46.5, "b3": 49.4, "b4": 50.3, "b5": 51.0}
_CITY_MIOU = {"b0": 76.2, "b1": 78.5, "b2": 81.0, "b3": 81.7, "b4": 82.3, "b5": 82.4}
_IMAGENET_TOP1 = {"b0": 70.5, "b1": 78.7, "b2": 81.6, "b3": 83.1, "b4": 83.6, "b5": 83.8}
# B0 Cityscapes models fine-tuned at other resolutions: (height, width) -> (mode, window, test scale, mIoU).
_CITY_B0_EXTRA = {
    (512, 1024): ("whole", None, (1024, 512), 71.9),
    (640, 1280): ("whole", None, (1280, 640), 73.7),
    (768, 768): ("slide", (768, 768), (2048, 1024), 75.3),
}


def keep_ratio_size(
    height: int, width: int, scale: tuple[int, int], size_divisor: int | None = None
) -> tuple[int, int]:
    """mmcv's ``rescale`` with ``keep_ratio`` (:func:`segformer.common.images.transforms.rescale_size`: the largest
    size of the same aspect with ``long <= max(scale)`` and ``short <= min(scale)``), then rounded up to
    multiples of ``size_divisor``."""
    from ..base.sizes import rescale_size

    new_height, new_width = rescale_size(height, width, scale)
    if size_divisor:
        new_height = -(-new_height // size_divisor) * size_divisor
        new_width = -(-new_width // size_divisor) * size_divisor
    return new_height, new_width


def _build() -> dict[str, Preset]:
    presets: list[Preset] = []
    for variant in VARIANTS:
        presets.append(Preset(
            name=f"mit-{variant}", hub_id=f"nvidia/mit-{variant}", variant=variant, task="image-classification",
            dataset="imagenet-1k", label_set=None, num_labels=1000, input_size=(224, 224), mode="whole",
            crop_size=None, stride=None, test_scale=(224, 224), size_divisor=None, metric="top-1",
            score=_IMAGENET_TOP1[variant],
            aliases=(f"mit_{variant}", f"mit_{variant}_imagenet"),
        ))
        side = 640 if variant == "b5" else 512
        presets.append(Preset(
            name=f"{variant}-ade", hub_id=f"nvidia/segformer-{variant}-finetuned-ade-{side}-{side}", variant=variant,
            task="semantic-segmentation", dataset="ade20k", label_set="ade20k", num_labels=150,
            input_size=(side, side), mode="whole", crop_size=None, stride=None, test_scale=(2048, side),
            size_divisor=32, metric="mIoU",
            score=_ADE_MIOU[variant],
            aliases=(f"{variant}-ade-{side}", f"segformer_{variant}_ade20k_{side}", f"segformer-{variant}-ade"),
        ))
        presets.append(Preset(
            name=f"{variant}-city", hub_id=f"nvidia/segformer-{variant}-finetuned-cityscapes-1024-1024",
            variant=variant, task="semantic-segmentation", dataset="cityscapes", label_set="cityscapes",
            num_labels=19, input_size=(1024, 1024), mode="slide", crop_size=(1024, 1024), stride=(768, 768),
            test_scale=(2048, 1024), size_divisor=None, metric="mIoU", score=_CITY_MIOU[variant],
            aliases=(f"{variant}-city-1024", f"segformer_{variant}_cityscapes_1024", f"segformer-{variant}-city",
                     f"{variant}-cityscapes"),
        ))
        for (height, width), (mode, window, test_scale, score) in (_CITY_B0_EXTRA.items() if variant == "b0" else ()):
            suffix = f"{height}-{width}"
            presets.append(Preset(
                name=f"b0-city-{suffix}", hub_id=f"nvidia/segformer-b0-finetuned-cityscapes-{suffix}", variant="b0",
                task="semantic-segmentation", dataset="cityscapes", label_set="cityscapes", num_labels=19,
                input_size=(height, width), mode=mode, crop_size=window, stride=window, test_scale=test_scale,
                size_divisor=None, metric="mIoU", score=score,
                aliases=(f"segformer_b0_cityscapes_{height}x{width}",),
            ))
    return {preset.name: preset for preset in presets}


PRESETS: dict[str, Preset] = _build()

_LOOKUP: dict[str, str] = {}
for _preset in PRESETS.values():
    for _key in (_preset.name, *_preset.aliases, _preset.hub_id):
        _LOOKUP[_key.lower()] = _preset.name


def get_preset(name: str) -> Preset:
    """The preset for a short name, an alias (keras-hub's ``segformer_b0_ade20k_512``) or a Hub id.

    Raises ``ValueError`` listing the valid short names.
    """
    if not isinstance(name, str):
        raise TypeError(f"preset name must be a str, got {type(name).__name__}")
    key = _LOOKUP.get(name.strip().lower())
    if key is None:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[key]


def find_preset(name: str) -> Preset | None:
    """The preset a short name or alias stands for (not a Hub id or a path), or ``None``."""
    if not isinstance(name, str) or "/" in name or "\\" in name:
        return None
    key = _LOOKUP.get(name.strip().lower())
    return PRESETS[key] if key is not None else None


def preset_unavailable_message(preset: Preset, error: BaseException) -> str:
    """Why a preset could not be loaded, the Hub cache it was looked for in, and what to do instead."""
    import os

    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub"
    )
    return (
        f"preset {preset.name!r} is the Hugging Face Hub model {preset.hub_id!r}, which could not be loaded "
        f"({type(error).__name__}: {error}). Looked in the huggingface_hub cache {cache!r}. Download it once with "
        f"network access (pip install -U huggingface_hub; hf download {preset.hub_id}, the command that replaced huggingface-cli), or convert an "
        f"original NVlabs checkpoint instead: segformer convert {preset.variant}.pth OUT_DIR --to pt "
        "(then pass OUT_DIR)"
    )


def resolve_preset_name(name: str) -> str:
    """``name`` itself, unless it is a preset short name or alias: then the preset's Hub id.

    A Hub id (``org/name``) or a path is returned unchanged, so callers may pass anything through here.
    """
    if not isinstance(name, str) or "/" in name or "\\" in name:
        return name
    key = _LOOKUP.get(name.strip().lower())
    return PRESETS[key].hub_id if key is not None else name


def format_presets_table(task: str | None = None) -> str:
    """A Markdown table of the presets (all, or those of ``task``); ``segformer presets`` prints it."""
    rows = ["| preset | Hub id | task | classes | input | inference | published |", "|---|---|---|---|---|---|---|"]
    for preset in PRESETS.values():
        if task is not None and preset.task != task:
            continue
        size = f"{preset.input_size[0]}x{preset.input_size[1]}"
        if preset.mode == "slide":
            inference = f"slide {preset.crop_size[0]}x{preset.crop_size[1]} / {preset.stride[0]}"
        else:
            inference = "whole"
        kind = "segmentation" if preset.task == "semantic-segmentation" else "classification"
        rows.append(
            f"| {preset.name} | {preset.hub_id} | {kind} ({preset.dataset}) | {preset.num_labels} | {size} | "
            f"{inference} | {preset.metric} {preset.score:.1f} |"
        )
    return "\n".join(rows)
