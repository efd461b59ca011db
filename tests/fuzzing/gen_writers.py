"""Environment faults in every writer: disk full (ENOSPC at a random byte), read-only file system (EROFS),
permission denied (EACCES) and file too large (EFBIG) while writing safetensors, ``.bin`` (PyTorch
``save_pretrained(safe_serialization=False)``), a whole PyTorch ``save_pretrained`` folder, TF ``.h5``, config /
processor JSON, PNG images and masks, a PyTorch training checkpoint and ``segformer convert --to pt`` (and, in
``gen_writers_tf``, ``.keras`` files, Keras ``save_pretrained`` to h5 / safetensors and ``convert --to tf``),
each over a previous version of the same output (or into an empty folder).

Faults are real where the worker can mount a small tmpfs (root in a container): ENOSPC by filling the
file system up to a random number of free bytes, EROFS by remounting it read-only. Elsewhere ENOSPC becomes
EFBIG (``RLIMIT_FSIZE`` at that byte, also real and seen by C writers) and EROFS / EACCES are raised by
Python's ``open`` / ``os.open`` / ``os.replace`` / ``os.rename`` / ``os.mkdir`` for paths in the destination
folder (C libraries that open files themselves do not see those).

Oracle: a write that fails must be a clear error (an ``OSError`` or documented error whose message names the
destination), and leave the destination folder byte for byte as it was (previous content intact, no
temporary left). A write that succeeds (the fault came after its last byte) must read back as the new content.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np

from fuzzing.cases import Case, cli, require

WRITERS = ["safetensors", "bin", "pt_save_pretrained", "h5", "config_json", "processor_json", "png", "mask_png",
           "train_checkpoint", "convert_pt"]
TF_WRITERS = ["keras", "tf_save_pretrained", "tf_save_pretrained_safe", "convert_tf"]  # gen_writers_tf
FAULTS = ["enospc", "erofs", "eacces", "efbig"]


def setup(folder):
    import torch

    from randomize import random_state, tiny_config
    from segformer.pt import SegformerForSemanticSegmentation

    torch.set_num_threads(1)
    config = tiny_config()
    models = []
    for seed in (1, 2):
        model = SegformerForSemanticSegmentation(config).eval()
        model.load_state_dict_numpy(random_state(config, "seg", seed=seed))
        models.append(model)
    mount = folder / "fs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", os.fspath(mount)],
                             capture_output=True).returncode == 0
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG comes back as an error, not a signal
    source = Path(__file__).resolve().parent.parent / "fixtures" / "hf" / "tiny-seg"
    return {"config": config, "models": models, "mount": mount, "mounted": mounted, "source": source}


def _content(writer, version, context):
    """A function writing version ``version`` (0 or 1) of ``writer``'s output into ``dest``, and its reader."""
    import torch

    from segformer import SegformerConfig, SegformerImageProcessor
    from segformer.common.checkpoints import load_state_dict, read_tf_h5, save_safetensors, write_tf_h5
    from segformer.common.images.viz import save_mask_png, save_png
    from segformer.common.model.weights import parameter_table, to_tf_layout

    model = context["models"][version]
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(version)
    if writer == "safetensors":
        return (lambda dest: save_safetensors(state, dest / "model.safetensors"),
                lambda dest: _same_state(load_state_dict(dest / "model.safetensors"), state))
    if writer in ("bin", "pt_save_pretrained"):
        safe = writer == "pt_save_pretrained"

        def read(dest):
            from segformer.pt import SegformerForSemanticSegmentation

            loaded = SegformerForSemanticSegmentation.from_pretrained(dest)
            return _same_state({k: v.numpy() for k, v in loaded.state_dict().items()}, state)
        return (lambda dest: model.save_pretrained(dest, safe_serialization=safe)), read
    if writer == "h5":
        tf = {s.tf_name: to_tf_layout(s, state[s.name]) for s in parameter_table(context["config"], "seg")
              if s.kind != "counter"}
        return (lambda dest: write_tf_h5(dest / "tf_model.h5", "tf_segformer_for_semantic_segmentation", tf),
                lambda dest: _same_state(read_tf_h5(dest / "tf_model.h5")[1] if isinstance(read_tf_h5(dest / "tf_model.h5"), tuple)
                                         else read_tf_h5(dest / "tf_model.h5"), tf))
    if writer == "config_json":
        fields = {k: v for k, v in context["config"].to_dict().items() if k not in ("id2label", "label2id")}
        config = SegformerConfig(**{**fields, "num_labels": 3 + version})  # names follow the count
        return (lambda dest: config.save_pretrained(dest),
                lambda dest: SegformerConfig.from_json_file(dest / "config.json").num_labels == 3 + version)
    if writer == "processor_json":
        processor = SegformerImageProcessor(size={"height": 64 + version, "width": 64})
        return (lambda dest: processor.save_pretrained(dest),
                lambda dest: SegformerImageProcessor.from_pretrained(dest).size["height"] == 64 + version)
    if writer in ("png", "mask_png"):
        from PIL import Image

        if writer == "png":
            rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
            return (lambda dest: save_png(dest / "image.png", rgb),
                    lambda dest: np.array_equal(np.asarray(Image.open(dest / "image.png").convert("RGB")), rgb))
        labels = rng.integers(0, 3, size=(40, 50)).astype(np.int64)
        return (lambda dest: save_mask_png(dest / "mask.png", labels),
                lambda dest: np.array_equal(np.asarray(Image.open(dest / "mask.png")), labels))
    if writer == "train_checkpoint":
        from segformer.common.training.recipe import TrainConfig
        from segformer.pt.training import save_training_state

        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return (lambda dest: save_training_state(dest / "state.pt", model, optimizer, 10 + version, TrainConfig()),
                lambda dest: torch.load(dest / "state.pt", weights_only=True)["step"] == 10 + version)
    if writer == "keras":
        import keras

        tf_model = context["tf_models"][version]

        def read(dest):
            loaded = keras.saving.load_model(dest / "model.keras")
            return all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), tf_model.get_weights()))
        return (lambda dest: tf_model.save(dest / "model.keras")), read
    if writer in ("tf_save_pretrained", "tf_save_pretrained_safe"):
        tf_model = context["tf_models"][version]
        safe = writer.endswith("_safe")

        def read(dest):
            from segformer.tf import TFSegformerForSemanticSegmentation

            loaded = TFSegformerForSemanticSegmentation.from_pretrained(dest)
            return all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), tf_model.get_weights()))
        return (lambda dest: tf_model.save_pretrained(dest, safe_serialization=safe)), read
    if writer in ("convert_pt", "convert_tf"):
        target = writer[-2:]

        def write(dest):
            argv = ["convert", os.fspath(context["source"]), os.fspath(dest / "converted"), "--to", target, "--overwrite",
                    "--quiet", "--no-verify"]  # verification is not what this case is about
            status, _, err = cli(argv)
            if status != 0:  # not one clean error line (cli() raises CliRefusal for that): a raw failure
                raise RuntimeError(f"convert exited {status} without one clean error: line: {err.strip()[-300:]}")
        return write, lambda dest: (dest / "converted" / "config.json").is_file()
    raise KeyError(writer)


def _same_state(loaded, expected) -> bool:
    return set(loaded) == set(expected) and all(np.array_equal(np.asarray(loaded[k]), expected[k]) for k in expected)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {os.fspath(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} | {
        os.fspath(p.relative_to(folder)) + "/": b"" for p in folder.rglob("*") if p.is_dir()}


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


@contextlib.contextmanager
def _python_fault(dest: Path, code: int):
    """Raise ``OSError(code)`` from Python's file-creating calls for paths inside ``dest``."""
    root = os.path.realpath(dest)
    inside = lambda p: isinstance(p, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(p)).startswith(root)  # noqa: E731
    real = {"open": builtins.open, "io_open": io.open, "os_open": os.open, "replace": os.replace, "rename": os.rename,
            "mkdir": os.mkdir}

    def fail(path):
        raise OSError(code, os.strerror(code), os.fspath(path))

    def patched_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            fail(file)
        return real["open"](file, mode, *args, **kwargs)

    def patched_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            fail(path)
        return real["os_open"](path, flags, *args, **kwargs)

    def patched_move(name):
        def move(src, dst, *args, **kwargs):
            if inside(dst) or inside(src):
                fail(dst)
            return real[name](src, dst, *args, **kwargs)
        return move

    def patched_mkdir(path, *args, **kwargs):
        if inside(path):
            fail(path)
        return real["mkdir"](path, *args, **kwargs)

    builtins.open = io.open = patched_open
    os.open, os.replace, os.rename, os.mkdir = patched_os_open, patched_move("replace"), patched_move("rename"), patched_mkdir
    try:
        yield
    finally:
        builtins.open, io.open = real["open"], real["io_open"]
        os.open, os.replace, os.rename, os.mkdir = real["os_open"], real["replace"], real["rename"], real["mkdir"]


def make_case(rng, context, folder, writers=WRITERS):
    writer = str(rng.choice(writers))
    fault = str(rng.choice(FAULTS))
    previous = bool(rng.random() < 0.7)
    mounted = context["mounted"]
    real = mounted and fault in ("enospc", "erofs")
    if real:
        base = context["mount"]
        for entry in base.iterdir():  # the file system is shared by the worker's cases: start empty
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        subprocess.run(["mount", "-o", "remount,rw", os.fspath(base)], check=True)
    else:
        base = folder
    dest = base / "dest"
    dest.mkdir()
    # a previous version in the other weights format too: a save must leave exactly one current set of weights
    old_writer = writer
    twins = {"bin": "pt_save_pretrained", "pt_save_pretrained": "bin", "tf_save_pretrained": "tf_save_pretrained_safe",
             "tf_save_pretrained_safe": "tf_save_pretrained"}
    if writer in twins and rng.random() < 0.5:
        old_writer = twins[writer]
    write_old, _ = _content(old_writer, 0, context)
    write_new, read_new = _content(writer, 1, context)
    if previous:
        write_old(dest)
    # the size of the new write, measured in a scratch folder, picks where the fault strikes
    sizes = context.setdefault("sizes", {})
    if writer not in sizes:
        scratch = folder / "measure"
        scratch.mkdir()
        write_new(scratch)
        sizes[writer] = sum(p.stat().st_size for p in scratch.rglob("*") if p.is_file())
        shutil.rmtree(scratch)
    needed = sizes[writer]
    at = int(rng.integers(0, int(needed * 1.3) + 4096))
    before = _snapshot(dest)
    if fault == "erofs" and real:  # busy (a file still open): emulate it instead
        real = subprocess.run(["mount", "-o", "remount,ro", os.fspath(base)], capture_output=True).returncode == 0
    description = {"writer": writer, "fault": fault, "real": real, "previous": old_writer if previous else None,
                   "bytes": needed, "at": at}

    def run():
        if fault == "enospc" and real:
            filler = base / ".filler"
            with open(filler, "wb") as handle:
                handle.write(b"\0" * max(0, _free_bytes(base) - at))
            return write_new(dest)
        if fault == "erofs" and real:
            return write_new(dest)  # remounted read-only below, before the case starts
        if fault in ("enospc", "efbig"):  # RLIMIT_FSIZE: writes past ``at`` bytes of a file fail with EFBIG
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (max(at, 1), limit[1]))
            try:
                return write_new(dest)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        with _python_fault(dest, errno.EROFS if fault == "erofs" else errno.EACCES):
            return write_new(dest)

    def after(error):
        if real:
            subprocess.run(["mount", "-o", "remount,rw", os.fspath(base)], check=True)
            (base / ".filler").unlink(missing_ok=True)
        if error is None:
            return
        now = _snapshot(dest)
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        require(not changed, f"a failed write ({type(error).__name__}) changed {changed[:4]}"
                             + (" (previous content lost)" if any(k in before for k in changed) else " (left behind)"))

    def check(answer, caught):
        require(read_new(dest), "the write succeeded but does not read back as the new content")
        leftovers = sorted(p.name for p in dest.rglob("*") if p.name.endswith((".tmp", ".old")))
        require(not leftovers, f"temporaries left: {leftovers[:3]}")

    names = {"safetensors": ("model.safetensors",), "h5": ("tf_model.h5",), "config_json": ("config.json",),
             "processor_json": ("preprocessor_config.json",), "png": ("image.png",), "mask_png": ("mask.png",),
             "train_checkpoint": ("state.pt",), "convert_pt": ("converted",), "convert_tf": ("converted",),
             "keras": ("model.keras",)}.get(writer, ("dest",))
    return Case(description, run, expect="either", names=names, check=check, after=after, errors=(OSError,))
