"""Fuzzing: random configs and random corruptions of checkpoint / config files into every loader.

Only documented errors (segformer.common.base.errors.DOCUMENTED_ERRORS) may escape; files written by segformer
carry a checksum, so every corruption of them must be detected. Bounded in CI; for a long run:
``SEGFORMER_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_files.py -s``.
"""

from __future__ import annotations

import collections
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_path
from randomize import random_state, tiny_config
from segformer import SegformerConfig
from segformer.common.checkpoints import load_state_dict, read_tf_h5, save_safetensors, write_tf_h5
from segformer.common.base.errors import DOCUMENTED_ERRORS
from segformer.common.model.weights import parameter_table, to_tf_layout

EXAMPLES = int(os.environ.get("SEGFORMER_FUZZ_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for kind, counter in sorted(OUTCOMES.items()):
        print(f"\nfuzz {kind}: {sum(counter.values())} cases: {dict(counter)}")


def _outcome(kind: str, func):
    """Run ``func``; count and return (outcome name, result). Undocumented exceptions propagate (a bug)."""
    try:
        result = func()
    except DOCUMENTED_ERRORS as err:
        name = type(err).__name__
        assert name in ("ValueError", "TypeError", "CheckpointError", "FileNotFoundError", "ImportError"), (
            f"{name} is a subclass of a documented error but not one we raise on purpose: {err}"
        )
        assert str(err), f"{name} without a message"
        OUTCOMES[kind][name] += 1
        return name, None
    return "loaded", result


_values = st.one_of(
    st.integers(-3, 600), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.none(),
    st.booleans(), st.lists(st.integers(-2, 70), max_size=6), st.lists(st.floats(-1, 10), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
)
_fields = st.sampled_from([
    "num_channels", "num_encoder_blocks", "depths", "sr_ratios", "hidden_sizes", "patch_sizes", "strides",
    "num_attention_heads", "mlp_ratios", "hidden_act", "hidden_dropout_prob", "drop_path_rate", "layer_norm_eps",
    "patch_layer_norm_eps", "stage_layer_norm_eps", "decoder_hidden_size", "semantic_loss_ignore_index",
    "reshape_last_stage", "num_labels",
    "id2label", "label2id", "problem_type", "classifier_dropout_prob", "initializer_range", "unknown_key",
])


@SETTINGS
@given(st.dictionaries(_fields, _values, max_size=4))
def test_random_configs_raise_only_documented_errors(overrides):
    def build():
        config = SegformerConfig(**overrides)
        again = SegformerConfig.from_dict(json.loads(config.to_json_string()))
        assert again == config

    outcome, _ = _outcome("config", build)
    if outcome == "loaded":
        OUTCOMES["config"]["valid"] += 1


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory):
    """Files to corrupt: HF-written (no checksum) and segformer-written (checksummed)."""
    root = tmp_path_factory.mktemp("ckpt")
    folder = fixture_path("hf/tiny-seg")
    files = {}
    for name in ("model.safetensors", "pytorch_model.bin", "tf_model.h5", "config.json"):
        shutil.copy(folder / name, root / f"hf_{name}")
        files[f"hf_{name}"] = root / f"hf_{name}"
    config = tiny_config()
    state = random_state(config, "seg", seed=1)
    save_safetensors(state, root / "ours.safetensors")
    tf = {s.tf_name: to_tf_layout(s, state[s.name]) for s in parameter_table(config, "seg") if s.kind != "counter"}
    write_tf_h5(root / "ours.h5", "tf_segformer_for_semantic_segmentation", tf)
    files["ours.safetensors"] = root / "ours.safetensors"
    files["ours.h5"] = root / "ours.h5"
    return files


def _loader(name):
    if name.endswith(".h5"):
        return read_tf_h5
    if name.endswith("config.json"):
        return SegformerConfig.from_json_file
    return load_state_dict


def _corrupt(data: bytes, mode: str, position: float, count: int, seed: int) -> bytes:
    if mode == "truncate":
        return data[: int(position * len(data))]
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for _ in range(count):
        index = int(rng.integers(0, len(out)))
        out[index] ^= int(rng.integers(1, 256))
    return bytes(out)


@SETTINGS
@given(
    name=st.sampled_from(["hf_model.safetensors", "hf_pytorch_model.bin", "hf_tf_model.h5", "hf_config.json", "ours.safetensors", "ours.h5"]),
    mode=st.sampled_from(["truncate", "flip"]),
    position=st.floats(0.0, 0.999),
    count=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_corrupted_files_give_documented_errors(checkpoint_files, tmp_path_factory, name, mode, position, count, seed):
    if name.endswith(".bin"):
        pytest.importorskip("torch")
    source = checkpoint_files[name]
    original = source.read_bytes()
    target = tmp_path_factory.mktemp("bad") / source.name
    corrupted = _corrupt(original, mode, position, count, seed)
    target.write_bytes(corrupted)
    kind = f"{name}/{mode}"
    outcome, loaded = _outcome(kind, lambda: _loader(name)(target))
    if outcome != "loaded":
        return
    if mode == "truncate" and len(corrupted) < len(original):
        pytest.fail(f"a truncated {name} ({len(corrupted)} of {len(original)} bytes) loaded")
    clean = _loader(name)(source)
    same = _same(clean, loaded)
    OUTCOMES[kind]["loaded, data intact" if same else "loaded, values changed (no checksum in file)"] += 1
    if name.startswith("ours"):
        assert same, "a corrupted segformer-written file returned changed tensors"


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        a, b = a[1], b[1]
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    return a == b
