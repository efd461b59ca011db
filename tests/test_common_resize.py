"""segformer.common.images.resize.resize_bilinear against torch.nn.functional.interpolate and tf.image.resize."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segformer.common.images.resize import linear_indices_weights, resize_bilinear

# (in_h, in_w, out_h, out_w): integer up / down factors, non-integer ratios, 1-pixel edges, identity.
SIZES = [
    (16, 24, 500, 300),
    (16, 24, 37, 53),
    (128, 128, 512, 512),
    (100, 77, 33, 41),
    (37, 53, 16, 24),
    (64, 64, 17, 113),
    (1, 1, 4, 6),
    (3, 9, 2, 1),
    (7, 3, 100, 99),
    (5, 7, 5, 7),
]


@pytest.mark.parametrize("in_h,in_w,out_h,out_w", SIZES)
def test_matches_torch_interpolate(in_h: int, in_w: int, out_h: int, out_w: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(in_h * 1000 + out_w)
    x = rng.standard_normal((2, 5, in_h, in_w)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=False
    ).numpy()
    got = resize_bilinear(x, (out_h, out_w))
    assert got.dtype == np.float32 and got.shape == expected.shape
    diff32 = float(np.abs(got - expected).max())
    x64 = x.astype(np.float64)
    expected64 = torch.nn.functional.interpolate(torch.from_numpy(x64), size=(out_h, out_w), mode="bilinear").numpy()
    diff64 = float(np.abs(resize_bilinear(x64, (out_h, out_w)) - expected64).max())
    print(f"resize_bilinear vs torch {in_h}x{in_w}->{out_h}x{out_w}: float32 {diff32:.3g}, float64 {diff64:.3g}")
    assert diff32 <= 1e-6
    assert diff64 <= 1e-12


@pytest.mark.parametrize("in_h,in_w,out_h,out_w", SIZES[:6])
def test_matches_tf_resize_channels_last(in_h: int, in_w: int, out_h: int, out_w: int) -> None:
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(in_w).standard_normal((2, in_h, in_w, 3)).astype(np.float32)
    expected = tf.image.resize(x, (out_h, out_w), method="bilinear", antialias=False).numpy()
    got = resize_bilinear(x, (out_h, out_w), channels_first=False)
    assert got.shape == (2, out_h, out_w, 3)
    # TF rounds its source coordinates differently from PyTorch (up to ~1.6e-5 on large upscales).
    assert float(np.abs(got - expected).max()) <= 2e-5


@settings(max_examples=40, deadline=None)
@given(
    in_h=st.integers(1, 40),
    in_w=st.integers(1, 40),
    out_h=st.integers(1, 90),
    out_w=st.integers(1, 90),
    lead=st.sampled_from([(), (3,), (2, 1)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_torch(in_h, in_w, out_h, out_w, lead, seed) -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(seed).standard_normal(lead + (4, in_h, in_w)).astype(np.float32)
    before = x.copy()
    got = resize_bilinear(x, (out_h, out_w))
    flat = torch.from_numpy(x.reshape(-1, 4, in_h, in_w))
    expected = torch.nn.functional.interpolate(flat, size=(out_h, out_w), mode="bilinear", align_corners=False)
    assert got.shape == lead + (4, out_h, out_w)
    assert float(np.abs(got.reshape(expected.shape) - expected.numpy()).max()) <= 1e-6
    assert np.array_equal(x, before)


def test_constant_and_linear_fields_are_preserved() -> None:
    constant = np.full((1, 2, 7, 9), 3.25, dtype=np.float64)
    assert np.all(resize_bilinear(constant, (13, 4)) == 3.25)
    weights = linear_indices_weights(10, 23, np.float64)
    assert np.allclose(weights[2] + weights[3], 1.0)
    half = resize_bilinear(np.zeros((3, 4, 6), np.float16), (2, 3))
    assert half.dtype == np.float16 and half.shape == (3, 2, 3)
    two_d = resize_bilinear(np.arange(12, dtype=np.float32).reshape(3, 4), (6, 8))
    assert two_d.shape == (6, 8)


def test_errors() -> None:
    with pytest.raises(TypeError, match="float dtype.*got int64"):
        resize_bilinear(np.zeros((1, 4, 4), np.int64), (2, 2))
    with pytest.raises(ValueError, match=r"size must be \(height, width\) with positive ints"):
        resize_bilinear(np.zeros((1, 4, 4), np.float32), (0, 2))
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, C\)"):
        resize_bilinear(np.zeros((4, 4), np.float32), (2, 2), channels_first=False)
