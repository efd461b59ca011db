"""Proof on the Hugging Face fixtures: each folder converted PT -> TF (from its PyTorch weights) and TF -> PT
(from its ``tf_model.h5``) through ``convert`` reproduces the fixture's expected outputs (Hugging Face
PyTorch's) within 1e-5.

Each conversion runs on the fixture's own inputs and keeps the outputs of both models: the destination
framework's (loaded from the written files) and the source framework's (from the source tensors), so one
conversion checks both frameworks against the expected numbers. Measured max |diff| printed (``pytest -s``).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import fixture_path
from segformer.conversion import convert

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

pytestmark = pytest.mark.parity

TOLERANCE = 1e-5
OUTPUTS = ("logits", "last_hidden_state", "hidden_states_0", "hidden_states_1", "hidden_states_2", "hidden_states_3")
# One Keras build per conversion dominates the time: the default tier converts each fixture at least
# once (each conversion checks both frameworks), the slow tier adds the other directions.
DEFAULT = {
    ("tiny-seg", "pt->tf"), ("tiny-seg", "tf->pt"), ("small-seg", "pt->tf"), ("small-seg", "tf->pt"),
    ("tiny-cls", "pt->tf"), ("tiny-base", "tf->pt"), ("tiny-seg-binary", "pt->tf"), ("b0-ade-random", "pt->tf"),
}
PARAMS = [
    (name, direction) if (name, direction) in DEFAULT else pytest.param(name, direction, marks=pytest.mark.slow)
    for name in ("tiny-seg", "small-seg", "tiny-cls", "tiny-base", "tiny-seg-binary", "b0-ade-random")
    for direction in ("pt->tf", "tf->pt")
]


def _prefixes(expected):
    return sorted({k.split("_", 1)[0] for k in expected.files if k.endswith("_pixel_values")})


@pytest.mark.parametrize("name, direction", PARAMS)
def test_fixture_conversion_reproduces_expected(name, direction, tmp_path):
    folder = fixture_path(f"hf/{name}/config.json").parent
    expected = np.load(folder / "expected.npz")
    prefixes = _prefixes(expected)
    inputs = [expected[f"{p}_pixel_values"] for p in prefixes]
    source, to = direction.split("->")
    if source == "tf" and not (folder / "tf_model.h5").exists():
        # tiny-seg-binary: the reference TF has no binary path, so no tf_model.h5; start from ours
        convert(folder, tmp_path / "tf-first", to="tf", source_framework="pt", verify=False)
        folder = tmp_path / "tf-first"
    report = convert(folder, tmp_path / "out", to=to, source_framework=source, inputs=inputs, keep_outputs=True)
    assert report.written and report.passed
    print(f"FIXTURE hf/{name} {direction}: conversion PT vs TF max|diff| {report.max_abs_diff:.3e}")
    for prefix, outputs in zip(prefixes, report.outputs):
        for framework, out in outputs.items():
            where = "from the written files" if framework == to else "from the source"
            for key in OUTPUTS:
                ref_key = f"{prefix}_pt_{key}"
                if ref_key not in expected.files:
                    continue
                assert out[key].shape == expected[ref_key].shape, (name, direction, prefix, key)
                diff = float(np.max(np.abs(out[key].astype(np.float64) - expected[ref_key])))
                print(f"FIXTURE hf/{name} {direction} input {prefix}: {framework} ({where}) {key} max|diff| {diff:.3e}")
                assert diff <= TOLERANCE, (name, direction, prefix, framework, key, diff)
