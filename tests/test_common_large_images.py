"""Large images: TIFF / BigTIFF through tifffile (tiled, compressed, memory-mapped), the memory estimate."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import fixture_path


def test_tiled_bigtiff_reads_exactly_and_large_ones_are_memory_mapped(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    from segformer.common.images import image_io

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (300, 410, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "tiled.tif", pixels, tile=(64, 64), bigtiff=True, compression="zlib")
    assert image_io.image_size(tmp_path / "tiled.tif") == (300, 410)
    loaded = image_io.load_image(tmp_path / "tiled.tif")
    assert np.array_equal(loaded, pixels) and not isinstance(loaded, np.memmap)
    monkeypatch.setattr(image_io, "TIFF_MEMMAP_BYTES", 1000)
    mapped = image_io.load_image(tmp_path / "tiled.tif")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, pixels)
    deep = (rng.integers(0, 4096, (40, 30))).astype(np.uint16)  # a 12-bit scan in a 16-bit file
    tifffile.imwrite(tmp_path / "deep.tif", deep)
    expected = np.round(deep.astype(np.float64) * 255 / 4095).astype(np.uint8)
    assert np.array_equal(image_io.load_image(tmp_path / "deep.tif")[:, :, 1], expected)
    planar = np.moveaxis(pixels[:50, :60], -1, 0).copy()
    tifffile.imwrite(tmp_path / "planar.tif", planar, planarconfig="separate")
    assert np.array_equal(image_io.load_image(tmp_path / "planar.tif"), pixels[:50, :60])
    with pytest.raises(image_io.BadImageError, match="above the limit of 1,000"):
        image_io.load_image(tmp_path / "tiled.tif", max_pixels=1000)
    (tmp_path / "broken.tif").write_bytes((tmp_path / "tiled.tif").read_bytes()[:300])
    with pytest.raises(image_io.BadImageError, match="broken.tif"):
        image_io.load_image(tmp_path / "broken.tif")


def test_segmenter_on_a_memory_mapped_tiff_equals_the_png(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    tifffile = pytest.importorskip("tifffile")
    from PIL import Image

    from segformer import Segmenter
    from segformer.common.images import image_io

    monkeypatch.setattr(image_io, "TIFF_MEMMAP_BYTES", 1000)
    pixels = np.random.default_rng(1).integers(0, 256, (130, 170, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "scan.tif", pixels, tile=(32, 32), compression="zlib")
    Image.fromarray(pixels).save(tmp_path / "scan.png")
    segmenter = Segmenter.from_pretrained(str(fixture_path("hf/tiny-seg")), mode="slide", crop_size=64, stride=48,
                                          resize="none")
    assert segmenter._lazy
    from_tiff = segmenter(tmp_path / "scan.tif", keep_confidence=False)
    from_png = segmenter(tmp_path / "scan.png", keep_confidence=False)
    assert np.array_equal(from_tiff.label_map, from_png.label_map)


def test_memory_estimate_parts():
    from segformer.common.model.config import SegformerConfig
    from segformer.common.inference.memory import estimate_memory

    config = SegformerConfig.from_variant("b0", num_labels=150)
    whole = estimate_memory(config, (3000, 3000), "whole")
    assert whole.image == 3 * 9_000_000 and whole.kept_logits == 4 * 150 * 9_000_000 // 16
    # slide keeps about two rows of windows' logits, whatever the height: 16k x 16k stays bounded
    small = estimate_memory(config, (16384, 16384), "slide", labels_on_disk=True)
    tall = estimate_memory(config, (65536, 16384), "slide", labels_on_disk=True)
    assert small.kept_logits == tall.kept_logits and small.model == tall.model
    assert small.total - small.image < 2.5 * 2**30
    tf_whole = estimate_memory(config, (3000, 3000), "whole", framework="tf")
    assert tf_whole.model > 10 * whole.model  # TensorFlow materializes the attention matrices
