"""``segformer bench --mode {memory,whole,folder,torchrun}``: inference at scale (PyTorch, b0, 150 classes,
random weights): peak memory of huge images, images/s over a folder, several processes.

    segformer bench --mode memory --megapixels 16,64,256 --threads 1   # slide mode, square images
    segformer bench --mode whole --side 3000 --threads 1               # whole mode, 3000 x 3000
    segformer bench --mode folder --images 200 --repeats 2             # predict's defaults vs one at a time
    segformer bench --mode torchrun --images 200                       # 2 processes x 1 thread vs 1 x 1

Every measurement runs in a fresh process and reports that process's peak RSS (``ru_maxrss``), so one
measurement's allocations do not hide another's. ``threads=None`` leaves the thread policy's default
(:mod:`segformer.common.base.threads`). Results are printed as Markdown table rows.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..common.base.threads import configure_threads

MB = 2**20


def _child_segment(mode: str, side_h: int, side_w: int, threads: int, workdir: str) -> dict:
    """Runs in a child process: segment one random-but-smooth image of ``side_h x side_w`` with b0 (150 classes)."""
    import numpy as np
    import torch

    from segformer import Segmenter
    from segformer.common.model.config import SegformerConfig
    from segformer.pt import SegformerForSemanticSegmentation

    configure_threads(threads)
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(SegformerConfig.from_variant("b0", num_labels=150)).eval()
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (side_h // 64 + 1, side_w // 64 + 1, 3), dtype=np.uint8)
    image = np.empty((side_h, side_w, 3), dtype=np.uint8)  # one contiguous copy: the input as a user holds it
    for top in range(0, side_h, 64):
        band = np.repeat(np.repeat(coarse[top // 64 : top // 64 + 1], 64, axis=0), 64, axis=1)
        image[top : top + 64] = band[: min(64, side_h - top), :side_w]
    labels = np.lib.format.open_memmap(os.path.join(workdir, "labels.npy"), mode="w+", dtype=np.uint8,
                                       shape=(side_h, side_w))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    segmenter = Segmenter(model, mode=mode, resize="none", crop_size=512, stride=341)
    start = time.perf_counter()
    result = segmenter(image, keep_confidence=False, labels_out=labels)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak": peak, "before": base, "image": image.nbytes, "labels": labels.nbytes,
            "classes": int((result.class_pixels > 0).sum())}


def _child_env(**extra: str) -> dict:
    """The children's environment: this checkout first on the path, the thread policy, ``extra``."""
    from ..common.base.threads import thread_environment

    env = dict(os.environ, **extra)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(thread_environment(env))
    return env


def _spawn(function: str, *args: object) -> dict:
    code = (f"import json; from segformer.benchmark import scale; "
            f"print(json.dumps(scale.{function}(*{args!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env())
    if done.returncode:
        raise RuntimeError(f"the measurement process failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(sizes: list[int], threads: int | None) -> None:
    print("| image | megapixels | ours: peak RSS | ours minus input and uint8 labels | full-resolution logits "
          "(mmseg-style slide) | time | s / MP |")
    print("|---|---|---|---|---|---|---|")
    for megapixels in sizes:
        side = int(round((megapixels * 1e6) ** 0.5))
        with tempfile.TemporaryDirectory() as workdir:
            row = _spawn("_child_segment", "slide", side, side, threads, workdir)
        pixels = side * side
        logits = 150 * pixels * 4  # what a slide that keeps num_classes x H x W float32 holds, before copies
        rest = row["peak"] - row["image"] - row["labels"]
        print(f"| {side}x{side} | {pixels / 1e6:.0f} | {row['peak'] / MB:,.0f} MB | {rest / MB:,.0f} MB | "
              f"{logits / MB:,.0f} MB | {row['seconds']:.0f} s | {row['seconds'] / (pixels / 1e6):.2f} |")


def whole(side: int, threads: int | None) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        row = _spawn("_child_segment", "whole", side, side, threads, workdir)
    print(f"whole {side}x{side}, b0, 150 classes: peak RSS {row['peak'] / MB:,.0f} MB, {row['seconds']:.1f} s")


FOLDER_SHAPES = [(480, 640), (640, 480), (600, 800), (768, 1024), (1000, 750), (864, 1152)]  # 0.31 to 1.0 MP


def _make_folder(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        height, width = FOLDER_SHAPES[rng.integers(len(FOLDER_SHAPES))]
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        image = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]
        Image.fromarray(image).save(folder / f"{index:04d}.jpg", quality=90)


def _save_model(folder: Path) -> None:
    import torch

    from segformer.common.model.config import SegformerConfig
    from segformer.pt import SegformerForSemanticSegmentation

    torch.manual_seed(0)
    SegformerForSemanticSegmentation(SegformerConfig.from_variant("b0", num_labels=150)).save_pretrained(folder)


def _child_loop(model: str, images: str, out: str, threads: int | None) -> dict:
    """The one-at-a-time loop: decode, segment, write, next (what ``predict`` did before), with the segmenter
    ``predict`` builds (``Segmenter.from_pretrained``: the checkpoint's processor settings)."""
    import torch

    from segformer import Segmenter
    from segformer.common.images.image_io import expand_inputs
    from segformer.common.images.viz import save_mask_png, save_png

    configure_threads(threads)
    start = time.perf_counter()
    segmenter = Segmenter.from_pretrained(model, batch_size=1)  # what predict builds, one image at a time
    paths = expand_inputs([images])
    for path in paths:
        result = segmenter(path, keep_confidence=False)
        save_mask_png(Path(out) / f"{path.stem}.png", result.label_map, segmenter.palette)
        save_png(Path(out) / f"{path.stem}_overlay.png", result.overlay(0.5))
    return {"seconds": time.perf_counter() - start, "images": len(paths)}


def _child_predict(argv: list, threads: int | None) -> dict:
    """``segformer predict`` in this process, timed like the loop (model loading included)."""
    import torch

    from segformer.cli import main

    configure_threads(threads)
    start = time.perf_counter()
    code = main(list(argv))
    return {"seconds": time.perf_counter() - start, "code": code}


def _predict_seconds(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def folder(count: int, threads: int | None, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        (root / "images").mkdir()
        _make_folder(root / "images", count)
        _save_model(root / "model")
        loop, piped = [], []
        for attempt in range(repeats):  # round robin: one run of each per repeat
            out = root / f"loop{attempt}"
            out.mkdir()
            loop.append(_spawn("_child_loop", str(root / "model"), str(root / "images"), str(out), threads)["seconds"])
            argv = ["predict", "--model", str(root / "model"), str(root / "images"), "--out",
                    str(root / f"piped{attempt}"), "--no-progress"]
            piped.append(_spawn("_child_predict", argv, threads)["seconds"])
            print(f"repeat {attempt}: loop {loop[-1]:.1f} s, predict {piped[-1]:.1f} s, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
        same = all(_same_files(root / "loop0", root / f"piped{a}") for a in range(repeats))
        print(f"outputs byte-identical to the loop's: {same}")
        print(f"| folder of {count} images, {threads or 'default'} thread(s) | one at a time | predict (defaults) | ratio (medians) |")
        print("|---|---|---|---|")
        print(f"| images/s min / median / max | {_rates(count, loop)} | {_rates(count, piped)} | "
              f"{statistics.median(loop) / statistics.median(piped):.2f}x |")


def _same_files(first: Path, second: Path) -> bool:
    """Every PNG the loop wrote is in the other folder with the same bytes."""
    names = sorted(p.name for p in first.glob("*.png"))
    return bool(names) and all((second / n).is_file() and (first / n).read_bytes() == (second / n).read_bytes()
                               for n in names)


def torchrun(count: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        (root / "images").mkdir()
        _make_folder(root / "images", count)
        _save_model(root / "model")
        env = _child_env(OMP_NUM_THREADS="1")
        single, double = [], []
        for attempt in range(repeats):
            args = ["predict", "--model", str(root / "model"), str(root / "images"), "--no-progress"]
            single.append(_predict_seconds([sys.executable, "-m", "segformer.cli", *args, "--out", str(root / f"a{attempt}")], env))
            run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "segformer.cli"]
            double.append(_predict_seconds(run + args + ["--out", str(root / f"b{attempt}")], env))
        print(f"| folder of {count} images | 1 process x 1 thread | torchrun 2 processes x 1 thread | ratio |")
        print("|---|---|---|---|")
        print(f"| images/s min / median / max | {_rates(count, single)} | {_rates(count, double)} | "
              f"{statistics.median(single) / statistics.median(double):.2f}x |")


def _rates(count: int, seconds: list[float]) -> str:
    rates = sorted(count / s for s in seconds)
    return f"{rates[0]:.2f} / {statistics.median(rates):.2f} / {rates[-1]:.2f}"


MODES = ("memory", "whole", "folder", "torchrun")


def run_mode(mode: str, *, threads: int | None = None, repeats: int = 3, images: int = 200,
             megapixels: list[int] = (16, 64, 256), side: int = 3000) -> None:
    """Run one scale measurement and print its Markdown rows (``segformer bench --mode MODE``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})", flush=True)
    if mode == "memory":
        memory(list(megapixels), threads)
    elif mode == "whole":
        whole(side, threads)
    elif mode == "folder":
        folder(images, threads, repeats)
    else:
        torchrun(images, repeats)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
