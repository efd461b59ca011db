"""What :class:`segformer.Segmenter` returns for one image: the label map and what it says, numpy only.

Shapes: the label map is ``(H, W)`` int32 at the image's own size; probabilities (on request) are float32
``(K, H, W)``; the confidence map is the probability of the chosen class, float32 ``(H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..images.viz import colorize as _colorize
from ..images.viz import overlay as _overlay

__all__ = ["ClassSummary", "SegmentationResult", "summarize_classes"]


@dataclass(frozen=True)
class ClassSummary:
    """One class present in a label map: ``fraction`` of the image's pixels, mean ``confidence`` over them."""

    id: int
    name: str
    fraction: float
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "fraction": self.fraction, "confidence": self.confidence}


def summarize_classes(
    class_pixels: np.ndarray,
    class_confidence: np.ndarray,
    id2label: Mapping[int, str],
    top_k: int | None = None,
    min_area: float = 0.0,
) -> list[ClassSummary]:
    """The classes present (``class_pixels[k] > 0``), largest first (ties by id), with their pixel fraction and
    mean confidence (``class_confidence[k] / class_pixels[k]``: summed probabilities of the chosen class over
    its pixels); those below ``min_area`` (a fraction in [0, 1]) are dropped, then at most ``top_k`` are kept."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
    if isinstance(min_area, bool) or not isinstance(min_area, (int, float)) or not 0.0 <= float(min_area) <= 1.0:
        raise ValueError(f"min_area must be a fraction of the image in [0, 1], got {min_area!r}")
    total = int(class_pixels.sum())
    present = np.nonzero(class_pixels)[0]
    order = sorted(present.tolist(), key=lambda k: (-int(class_pixels[k]), k))
    result = []
    for class_id in order:
        fraction = float(class_pixels[class_id]) / total
        if fraction < float(min_area):
            continue
        name = id2label.get(class_id, f"LABEL_{class_id}")
        mean = float(class_confidence[class_id] / class_pixels[class_id])
        result.append(ClassSummary(int(class_id), str(name), fraction, mean))
    return result[:top_k] if top_k is not None else result


class SegmentationResult:
    """The segmentation of one image.

    Attributes:
        label_map: int ``(H, W)`` class ids at the image's own size (int32, or the array it was written into).
        confidence: float32 ``(H, W)``: the probability of each pixel's class (``None`` when not kept).
        class_pixels / class_confidence: int64 / float64 ``(K,)``: pixels per class, and the sum of their
            confidence.
        probabilities: float32 ``(K, H, W)`` when asked for (``return_probabilities=True``), else ``None``.
        classes: :class:`ClassSummary` of the classes kept (``top_k`` / ``min_area``), largest first.
        id2label: ``{id: name}`` of the model; ``palette`` uint8 ``(K, 3)``.
        image: the RGB uint8 ``(H, W, 3)`` image that was segmented (after EXIF orientation).
        source: the file it came from, or ``None``.
        finite: ``False`` if any logit was NaN or infinite (the labels are then meaningless).
    """

    def __init__(
        self,
        label_map: np.ndarray,
        confidence: np.ndarray | None,
        class_pixels: np.ndarray,
        class_confidence: np.ndarray,
        id2label: Mapping[int, str],
        palette: np.ndarray,
        image: np.ndarray,
        probabilities: np.ndarray | None = None,
        source: str | None = None,
        top_k: int | None = None,
        min_area: float = 0.0,
        finite: bool = True,
    ) -> None:
        self.finite = finite
        self.label_map = label_map
        self.confidence = confidence
        self.probabilities = probabilities
        self.id2label = dict(id2label)
        self.palette = palette
        self.image = image
        self.source = source
        self.class_pixels = class_pixels
        self.class_confidence = class_confidence
        self.classes = summarize_classes(class_pixels, class_confidence, self.id2label, top_k=top_k, min_area=min_area)

    def __repr__(self) -> str:
        shown = ", ".join(f"{c.name} {c.fraction:.1%}" for c in self.classes[:5])
        more = "" if len(self.classes) <= 5 else f", +{len(self.classes) - 5} more"
        where = f"{self.source!r}, " if self.source else ""
        return f"SegmentationResult({where}{self.label_map.shape[0]}x{self.label_map.shape[1]}: {shown}{more})"

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return int(self.label_map.shape[0]), int(self.label_map.shape[1])

    def class_id(self, name_or_id: int | str) -> int:
        """The class id of a name (exact, else case-insensitive) or an id; ``ValueError`` listing the names, or
        naming the ids when several classes share the name (``mask("x")`` never picks one of two classes "x")."""
        if isinstance(name_or_id, (int, np.integer)) and not isinstance(name_or_id, bool):
            if int(name_or_id) not in self.id2label:
                raise ValueError(f"class id {name_or_id} is not a class of this model (0..{len(self.id2label) - 1})")
            return int(name_or_id)
        if not isinstance(name_or_id, str):
            raise TypeError(f"class must be a name (str) or an id (int), got {type(name_or_id).__name__}")
        matches = [class_id for class_id, name in self.id2label.items() if name == name_or_id]
        if not matches:
            folded = name_or_id.strip().lower()
            matches = [class_id for class_id, name in self.id2label.items() if name.strip().lower() == folded]
        if len(matches) > 1:
            raise ValueError(
                f"class name {name_or_id!r} is ambiguous: classes {matches} are all named "
                f"{sorted({self.id2label[i] for i in matches})}; pass a class id instead"
            )
        if matches:
            return matches[0]
        names = sorted(self.id2label.values())
        shown = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
        raise ValueError(f"unknown class {name_or_id!r}; classes of this model: {shown}")

    def mask(self, name_or_id: int | str) -> np.ndarray:
        """bool ``(H, W)``: the pixels labelled with this class (a name or an id)."""
        return self.label_map == self.class_id(name_or_id)

    def colorize(self) -> np.ndarray:
        """uint8 ``(H, W, 3)``: every pixel in its class's palette colour."""
        return _colorize(self.label_map, self.palette)

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """uint8 ``(H, W, 3)``: the class colours blended over the image with weight ``alpha``."""
        return _overlay(self.image, self.label_map, self.palette, alpha=alpha)

    def to_pipeline(self) -> list[dict[str, Any]]:
        """transformers' ``pipeline("image-segmentation")`` output for this image: one
        ``{"score": None, "label": name, "mask": PIL.Image (mode "L", 255 inside)}`` per class present,
        in increasing class id (every class present, whatever ``top_k`` / ``min_area``).

        Equal to the pipeline's for the same pixels, with one deliberate difference in decoding files: an image
        deeper than 8 bits (16-bit PNG / TIFF, float TIFF) is scaled by its real range here, where transformers'
        loader converts it with Pillow, which clips every value above 255 to white (a 16-bit photo comes out
        almost all white there, so its masks differ)."""
        from PIL import Image

        annotation = []
        for class_id in np.nonzero(self.class_pixels)[0].tolist():
            mask = ((self.label_map == class_id) * 255).astype(np.uint8)
            annotation.append({"score": None, "label": self.id2label[class_id], "mask": Image.fromarray(mask)})
        return annotation

    def summary(self) -> str:
        """One line per kept class: ``name  fraction  confidence``."""
        lines = [f"{self.source or 'image'}: {self.size[0]}x{self.size[1]}"]
        for item in self.classes:
            lines.append(f"  {item.id:>4}  {item.name:<24} {item.fraction:7.2%}  confidence {item.confidence:.2f}")
        return "\n".join(lines)
