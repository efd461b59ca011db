"""Fuzzing: random TIFF variants and non-regular files into the image readers.

A TIFF that decodes must give the colours an image viewer shows (Pillow's RGB conversion of the same pixels
stored unturned, or for images deeper than 8 bits the documented scaling by range, computed here in numpy, then
the orientation table); one that does not must be a
``BadImageError`` naming it. A path that is not a regular file is refused before anything opens it (a FIFO must
not block). Bounded in CI; for a long run: ``SEGFORMER_FUZZ_EXAMPLES=1000 python -m pytest tests/test_fuzz_images.py -s``.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segformer.common.images.image_io import BadImageError, check_image, image_size, load_image

EXAMPLES = int(os.environ.get("SEGFORMER_FUZZ_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
ORIENTATION = 0x0112
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "F"]
COMPRESSIONS = [None, "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg", "group4"]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for kind, counter in sorted(OUTCOMES.items()):
        print(f"\nfuzz {kind}: {sum(counter.values())} cases: {dict(counter)}")


class _Timeout(Exception):
    pass


def _bounded(seconds: int, func):
    """``func()`` that fails the test instead of hanging (SIGALRM: the main thread on POSIX)."""
    if not hasattr(signal, "SIGALRM"):
        return func()

    def alarm(signum, frame):
        raise _Timeout(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return func()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _picture(mode: str, height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        top = int(rng.choice([255, 4095, 65535]))
        return Image.fromarray(rng.integers(0, top + 1, (height, width), dtype=np.uint16))
    if mode == "F":
        scale = float(rng.choice([1.0, 1000.0]))
        return Image.fromarray((rng.random((height, width)) * scale).astype(np.float32))
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


_ORIENTED = {  # how a viewer shows stored pixels under each TIFF / EXIF orientation value
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, k=-1), 7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


def _expected(path: Path, mode: str) -> np.ndarray:
    """The stored pixels of an unturned file as a viewer shows them: Pillow's RGB conversion; deep images scaled
    by range (numpy)."""
    with Image.open(path) as stored:
        if mode not in ("I;16", "F"):
            return np.asarray(stored.convert("RGB"))
        values = np.asarray(stored).astype(np.float64)
    if mode == "F":
        low, high = values.min(), values.max()
        grey = np.round(values * 255) if low >= 0 and high <= 1 else (
            np.zeros_like(values) if high == low else np.round((values - low) * 255 / (high - low)))
    else:
        high = values.max()
        top = 255 if high <= 255 else 2 ** int(np.ceil(np.log2(high + 1))) - 1
        grey = values if high <= 255 else np.round(values * 255 / top)
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


@SETTINGS
@given(mode=st.sampled_from(MODES), compression=st.sampled_from(COMPRESSIONS), height=st.integers(1, 40),
       width=st.integers(1, 40), orientation=st.sampled_from([None, 1, 2, 3, 4, 5, 6, 7, 8]),
       cut=st.sampled_from([None, None, None, 0.3, 0.8]), seed=st.integers(0, 1000))
def test_tiff_variants_decode_as_a_viewer_shows_them_or_name_the_file(mode, compression, height, width, orientation,
                                                                        cut, seed):
    folder = Path(tempfile.mkdtemp(prefix="fuzz-tiff-"))
    path = folder / "image.tif"
    options = {"tiffinfo": {ORIENTATION: orientation}} if orientation else {}
    picture = _picture(mode, height, width, seed)
    try:
        picture.save(path, compression=compression, **options)
        picture.save(folder / "plain.tif", compression=compression)  # the same pixels, not turned
    except (OSError, ValueError, TypeError):
        OUTCOMES["tiff"]["Pillow cannot write this pair"] += 1  # e.g. CCITT of 8-bit pixels, JPEG of a palette
        return
    if cut is not None:
        data = path.read_bytes()
        path.write_bytes(data[: max(8, int(len(data) * cut))])
    try:
        got = _bounded(30, lambda: load_image(path))
    except BadImageError as err:
        assert err.path == str(path) and err.reason
        assert cut is not None, f"a whole TIFF that Pillow wrote was refused: {err}"
        OUTCOMES["tiff"]["truncated, BadImageError"] += 1
        return
    assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
    assert image_size(path) == got.shape[:2]
    if cut is None:
        np.testing.assert_array_equal(got, _ORIENTED[orientation or 1](_expected(folder / "plain.tif", mode)))
        OUTCOMES["tiff"]["decoded as shown"] += 1
    else:
        OUTCOMES["tiff"]["truncated, decoded"] += 1  # pixels past the cut are undefined; shape and type hold


@SETTINGS
@given(kind=st.sampled_from(["fifo", "folder", "dev_null", "dev_zero", "socket", "link_to_fifo", "dangling", "empty"]),
       reader=st.sampled_from(["load_image", "image_size", "check_image", "load_label", "list"]))
def test_non_regular_files_are_refused_without_opening_them(kind, reader):
    from segformer.common.images.image_io import expand_inputs
    from segformer.common.training.datasets import load_label

    folder = Path(tempfile.mkdtemp(prefix="fz-", dir="/tmp" if os.path.isdir("/tmp") else None))  # short: sockets
    path = folder / "x.png"
    keep = []
    if kind in ("fifo", "link_to_fifo"):
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes on this platform")
        os.mkfifo(folder / "pipe")
        if kind == "fifo":
            path = folder / "pipe"
        else:
            path.symlink_to(folder / "pipe")
    elif kind == "folder":
        path.mkdir()
    elif kind in ("dev_null", "dev_zero"):
        path.symlink_to("/dev/null" if kind == "dev_null" else "/dev/zero")
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.fspath(path))
        keep.append(server)
    elif kind == "dangling":
        path.symlink_to(folder / "missing.png")
    else:
        path.write_bytes(b"")
    calls = {
        "load_image": lambda: load_image(path),
        "image_size": lambda: image_size(path),
        "check_image": lambda: check_image(path),
        "load_label": lambda: load_label(path),
        "list": lambda: expand_inputs([f"@{path}"]),
    }
    try:
        result = _bounded(20, calls[reader])
    except (BadImageError, FileNotFoundError, ValueError) as err:
        assert os.fspath(path) in str(err) or str(path)[1:] in str(err), str(err)
        OUTCOMES[f"non-regular/{reader}"][type(err).__name__] += 1
    else:
        assert reader == "check_image" and isinstance(result, str) and result, result  # the reason, never None
        OUTCOMES[f"non-regular/{reader}"]["reason"] += 1
    finally:
        for item in keep:
            item.close()
