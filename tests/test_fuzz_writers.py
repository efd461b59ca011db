"""Fuzzing: environment faults (disk full, permission denied, read-only file system) injected at every step
at which each writer touches the disk (creating its temporary, writing the bytes, syncing, renaming).

Every writer (safetensors, pytorch_model.bin, tf_model.h5, config JSON, PNG, training checkpoint) must
answer with one ``OSError`` that keeps the fault's errno and names the destination (what the command
line turns into one ``error:`` line), leave the previous file byte for byte as it was, and leave no
temporary behind. Bounded in CI; for a long run:
``SEGFORMER_FUZZ_EXAMPLES=1000 python -m pytest tests/test_fuzz_writers.py -s``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import os
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from randomize import random_state, tiny_config
from segformer.cli import error_line
from segformer.common.base import atomic

EXAMPLES = int(os.environ.get("SEGFORMER_FUZZ_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

FAULTS = {"ENOSPC": errno.ENOSPC, "EACCES": errno.EACCES, "EROFS": errno.EROFS}
STEPS = ("create", "write", "sync", "rename")


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for kind, counter in sorted(OUTCOMES.items()):
        print(f"\nfuzz {kind}: {sum(counter.values())} cases: {dict(counter)}")


@pytest.fixture(scope="module")
def writers():
    """``name -> (write(path, seed), file name)``: each writer of the library, with a seed that changes what
    it writes (so an overwrite that got through would show)."""
    torch = pytest.importorskip("torch")
    from segformer import SegformerConfig
    from segformer.common.checkpoints import save_safetensors, write_tf_h5
    from segformer.common.images.viz import save_mask_png, save_png
    from segformer.common.training.recipe import TrainConfig
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.pt.training import save_training_state

    config = tiny_config()
    model = SegformerForSemanticSegmentation(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_config = TrainConfig(total_steps=2, crop_size=(32, 32), img_scale=(32, 32), checkpoint_every=1)

    def state(seed):
        return random_state(config, "semantic_segmentation", seed)

    def pt_bin(path, seed):
        model.load_state_dict_numpy(state(seed))
        model.save_pretrained(path.parent, safe_serialization=False)

    def training_state(path, seed):
        model.load_state_dict_numpy(state(seed))
        save_training_state(path, model, optimizer, seed, train_config)

    rng = np.random.default_rng
    return {
        "safetensors": (lambda path, seed: save_safetensors(state(seed), path), "model.safetensors"),
        "bin": (pt_bin, "pytorch_model.bin"),
        "h5": (lambda path, seed: write_tf_h5(path, "m", {"segformer/x/kernel": rng(seed).normal(size=(3, 4))}),
               "tf_model.h5"),
        "json": (lambda path, seed: SegformerConfig(num_labels=2 + seed % 7).to_json_file(path), "config.json"),
        "png": (lambda path, seed: save_png(path, rng(seed).integers(0, 256, (9, 7, 3), dtype=np.uint8)), "image.png"),
        "mask_png": (lambda path, seed: save_mask_png(path, rng(seed).integers(0, 5, (9, 7)), "ade20k"), "mask.png"),
        "train_checkpoint": (training_state, "training_state.pt"),
    }


@contextlib.contextmanager
def _fault_at(step: str, code: int, keep: float):
    """Raise ``OSError(code)`` at ``step`` of every atomic write in the block (after writing the fraction
    ``keep`` of the bytes, for ``write``), as the kernel would."""
    message = os.strerror(code)
    if step == "create":
        def create(path):
            raise OSError(code, message, os.fspath(path))

        patch = mock.patch.object(atomic, "_create_file", create)
    elif step == "write":
        real = atomic._write_file

        def write(path, data):
            real(path, data[: int(len(data) * keep)])
            raise OSError(code, message)

        patch = mock.patch.object(atomic, "_write_file", write)
    elif step == "sync":
        def sync(path):
            raise OSError(code, message)

        patch = mock.patch.object(atomic, "_sync_file", sync)
    else:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if os.path.basename(os.fspath(src)).endswith(".tmp"):
                raise OSError(code, message, os.fspath(src), os.fspath(dst))
            return real_replace(src, dst, *args, **kwargs)

        patch = mock.patch.object(os, "replace", replace)
    with patch:
        yield


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@SETTINGS
@given(
    name=st.sampled_from(["safetensors", "bin", "h5", "json", "png", "mask_png", "train_checkpoint"]),
    fault=st.sampled_from(sorted(FAULTS)),
    step=st.sampled_from(STEPS),
    keep=st.floats(0.0, 1.0),
    seed=st.integers(1, 1000),
)
def test_environment_faults_at_every_writer(writers, tmp_path_factory, name, fault, step, keep, seed):
    write, file_name = writers[name]
    root = tmp_path_factory.mktemp("w")
    folder = root / "out"
    folder.mkdir()
    path = folder / file_name
    write(path, 0)  # the previous content
    before, siblings = _tree(root), sorted(os.listdir(root))
    code = FAULTS[fault]
    with _fault_at(step, code, keep), pytest.raises(OSError) as info:
        write(path, seed)
    err = info.value
    # one clear error: the fault's errno and the destination's name, and a one-line CLI message
    assert err.errno == code, f"{name}/{step}: errno {err.errno}, expected {fault}: {err!r}"
    where = f"{err} {err.filename or ''}"
    assert file_name in where or os.fspath(folder) in where, f"{name}/{step}: the error names no destination: {err!r}"
    line = error_line(err, argparse.Namespace(out=str(path)))
    assert line is not None and line[1] == 2 and "\n" not in line[0] and os.fspath(path) in line[0], line
    # the previous content intact, no temporary left (in the folder or beside it)
    assert _tree(root) == before, f"{name}/{step}/{fault}: files changed"
    assert sorted(os.listdir(root)) == siblings, f"{name}/{step}: left {sorted(os.listdir(root))}"
    OUTCOMES["writer faults, by writer (one clear error, old content intact)"][name] += 1
    OUTCOMES["writer faults, by fault"][f"{fault}@{step}"] += 1
    shutil.rmtree(root)
