"""The bundled sample image (COCO val2017 000000039769, two cats; the references' test photo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SAMPLE_IMAGE", "load_sample_image"]

SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "data" / "sample_cats.jpg"


def load_sample_image() -> np.ndarray:
    """The sample photo as a uint8 RGB array of shape (480, 640, 3)."""
    with Image.open(SAMPLE_IMAGE) as picture:
        return np.asarray(picture.convert("RGB"))
