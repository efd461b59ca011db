"""Non-regular and odd files given as images: a FIFO, a folder named like an image, /dev/null and /dev/zero
(through links), a Unix socket, symbolic-link loops, dangling links, a file named ``@weird.png`` (passed as
``./@weird.png`` and as ``@weird.png``), beside a good PNG; into ``load_image``, ``image_size``,
``Segmenter(...)(path)``, ``Segmenter.imap`` and ``segformer predict``.

Oracle: a bad entry must be a clear error naming it (``imap`` / ``predict`` may instead report it in place and
go on: ``imap`` yields the error at its position, ``predict`` exits 1 naming it and writes the good image's
outputs). Nothing may block: a FIFO gets a writer after 3 s from a helper thread, so a reader that blocked
in ``open()`` comes back and the case is reported as ``hang``. The good image gives labels of its own size.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np

from fuzzing.cases import Case, Hang, cli, require

BLOCK_SECONDS = 3.0
KINDS = ["fifo", "folder", "dev_null", "dev_zero", "socket", "loop", "dangling", "at_name_dot", "at_name", "good"]


def setup(folder):
    import torch

    from randomize import random_state, tiny_config
    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config()
    model = SegformerForSemanticSegmentation(config).eval()
    model.load_state_dict_numpy(random_state(config, "seg"))
    model.save_pretrained(folder / "model")
    torch.set_num_threads(1)
    return {"model": model, "folder": folder / "model"}


def _good(folder, name="good.png"):
    from PIL import Image

    rng = np.random.default_rng(len(name))
    Image.fromarray(rng.integers(0, 256, size=(36, 44, 3), dtype=np.uint8)).save(folder / name)
    return folder / name


def _make(kind, folder, keep):
    """``(argument, path on disk)`` of one odd entry."""
    if kind == "fifo":
        path = folder / "pipe.png"
        os.mkfifo(path)
    elif kind == "folder":
        path = folder / "folder.png"
        path.mkdir()
        (path / "inside.txt").write_text("x")
    elif kind in ("dev_null", "dev_zero"):
        path = folder / f"{kind}.png"
        path.symlink_to("/dev/null" if kind == "dev_null" else "/dev/zero")
    elif kind == "socket":
        path = folder / "sock.png"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.fspath(path))
        keep.append(server)
    elif kind == "loop":
        path = folder / "loop_a.png"
        path.symlink_to(folder / "loop_b.png")
        (folder / "loop_b.png").symlink_to(path)
    elif kind == "dangling":
        path = folder / "dangling.png"
        path.symlink_to(folder / "missing.png")
    elif kind in ("at_name", "at_name_dot"):
        path = _good(folder, "@weird.png")
        return ("./@weird.png" if kind == "at_name_dot" else "@weird.png"), path
    else:
        path = _good(folder, "other.png")
    return os.fspath(path), path


def _unblock_fifo(path, done):
    """After BLOCK_SECONDS, give a reader blocked on the FIFO a writer (junk, then end of file)."""
    deadline = time.monotonic() + BLOCK_SECONDS
    while time.monotonic() < deadline:
        if done.is_set():
            return
        time.sleep(0.05)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: nobody is reading (good)
    except OSError:
        return
    try:
        os.write(fd, b"not an image")
    finally:
        os.close(fd)


def make_case(rng, context, folder):
    from segformer import Segmenter

    kind = str(rng.choice(KINDS))
    entry = str(rng.choice(["load_image", "image_size", "segmenter", "imap", "predict", "predict_strict"]))
    keep: list = []
    os.chdir(folder)  # "./@weird.png" and "@weird.png" are relative names
    argument, path = _make(kind, folder, keep)
    good = _good(folder)
    valid = kind in ("good", "at_name_dot")
    expect = "ok" if valid else ("either" if kind == "at_name" or entry in ("imap", "predict") else "error")
    done = threading.Event()
    if kind == "fifo":
        threading.Thread(target=_unblock_fifo, args=(path, done), daemon=True).start()
    description = {"kind": kind, "entry": entry, "argument": argument.replace(os.fspath(folder), "<case>")}
    started = [0.0]

    def run():
        from segformer.common.images.image_io import image_size, load_image

        started[0] = time.monotonic()
        if entry == "load_image":
            return load_image(argument)
        if entry == "image_size":
            return image_size(argument)
        if entry == "segmenter":
            return Segmenter(context["model"])(argument)
        if entry == "imap":
            return list(Segmenter(context["model"]).imap([os.fspath(good), argument], workers=0))
        argv = ["predict", "--model", os.fspath(context["folder"]), os.fspath(good), argument, "--out", "out",
                "--no-progress", "--workers", "0"] + (["--strict"] if entry == "predict_strict" else [])
        return cli(argv)

    def after(error):
        done.set()
        for item in keep:
            item.close()
        if time.monotonic() - started[0] >= BLOCK_SECONDS and kind == "fifo":
            raise Hang(f"blocked on the FIFO {argument!r} until a writer came ({BLOCK_SECONDS:g} s)")

    def check(answer, caught):
        if entry == "load_image":
            require(answer.shape == (36, 44, 3), f"decoded shape {answer.shape}")
        elif entry == "image_size":
            require(tuple(answer) == (36, 44), f"image_size {answer}")
        elif entry == "segmenter":
            results = answer if isinstance(answer, list) else [answer]
            require(all(r.label_map.shape == (36, 44) for r in results), "labels of the wrong size")
        elif entry == "imap":
            require(len(answer) == 2, f"imap gave {len(answer)} items for 2 inputs")
            require(not isinstance(answer[0], BaseException) and answer[0].label_map.shape == (36, 44),
                    f"the good image gave {answer[0]!r}")
            if not valid:
                require(isinstance(answer[1], BaseException) and argument.lstrip("./") in str(answer[1]) or
                        os.path.basename(argument) in str(answer[1]), f"the bad entry gave {answer[1]!r}, not an error naming it")
        else:
            status, out, err = answer
            require((folder / "out" / "good.png").is_file(), "no mask for the good image")
            if valid:
                require(status == 0, f"exit status {status}: {err.strip()[-200:]}")
            else:
                require(status == 1 and os.path.basename(argument) in err,
                        f"exit status {status}, the bad entry not named: {err.strip()[-200:]}")

    return Case(description, run, expect=expect, names=(os.path.basename(argument),), check=check, after=after)
