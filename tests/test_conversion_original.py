"""Proof on the original code's checkpoints: converting ``tiny.pth``, ``tiny_encoder.pth`` and ``b0.pth``
(written by the NVlabs code) and running the result in PyTorch and in TensorFlow reproduces the original's
stage features and logits within 1e-5. The measured max |diff| is printed (``pytest -s``).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import fixture_path, shared_or_skip
from segformer.conversion import convert

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

pytestmark = pytest.mark.parity

TOLERANCE = 1e-5

CASES = {
    # name: (checkpoint, io file, options, logits key)
    "tiny": ("original/tiny.pth", "original/tiny_io.npz", {}, "decode_logits"),
    "tiny_encoder": ("original/tiny_encoder.pth", "original/tiny_io.npz", {"num_heads": [1, 1, 2, 2]}, "cls_logits_derived"),
    "b0": ("original/b0.pth", "original/b0_io.npz", {}, "decode_logits"),
}


def _path(relative):
    return shared_or_skip(relative) if relative.startswith("original/b0") else fixture_path(relative)


# One conversion checks both frameworks; the default tier converts tiny both ways and the others to TF
# (the TF build dominates the time), the slow tier adds the remaining directions.
PARAMS = [
    ("tiny", "pt"),
    ("tiny", "tf"),
    ("tiny_encoder", "tf"),
    pytest.param("tiny_encoder", "pt", marks=pytest.mark.slow),
    ("b0", "tf"),
    pytest.param("b0", "pt", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, to", PARAMS)
def test_original_reproduces_original_code(name, to, tmp_path):
    """One conversion proves both frameworks: the destination model is loaded from the written files, the
    other framework's model is built from the mapped tensors; both are compared with the original's outputs."""
    checkpoint, io_file, options, logits_key = CASES[name]
    src, io = _path(checkpoint), np.load(_path(io_file))
    report = convert(src, tmp_path / "out", to=to, inputs=[io["input"]], keep_outputs=True, **options)
    assert report.written and report.passed
    assert report.config.layer_norm_eps == 1e-6 and report.config.patch_layer_norm_eps == 1e-5
    print(f"ORIGINAL {name} -> {to}: PT vs TF of the converted weights max|diff| {report.max_abs_diff:.3e}")
    for framework, out in report.outputs[0].items():
        where = "from the written files" if framework == to else "built from the mapped tensors"
        for i in range(4):
            diff = float(np.max(np.abs(out[f"hidden_states_{i}"].astype(np.float64) - io[f"stage{i + 1}"])))
            print(f"ORIGINAL {name} -> {to}: {framework} ({where}) stage{i + 1} max|diff| {diff:.3e}")
            assert diff <= TOLERANCE, (name, to, framework, i, diff)
        assert out["logits"].shape == io[logits_key].shape
        diff = float(np.max(np.abs(out["logits"].astype(np.float64) - io[logits_key])))
        print(f"ORIGINAL {name} -> {to}: {framework} ({where}) {logits_key} max|diff| {diff:.3e}")
        assert diff <= TOLERANCE, (name, to, framework, diff)


def test_b0_labels_from_meta(tmp_path):
    src = shared_or_skip("original/b0.pth")
    report = convert(src, tmp_path / "out", to="pt", verify=False)
    assert report.config.num_labels == 150 and report.config.id2label[7] == "bed "
    assert report.config.num_attention_heads == [1, 2, 5, 8]
