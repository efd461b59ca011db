"""Output-name collisions in ``segformer predict``: input name sets such as ``x.png`` + ``x_overlay.png``,
``x.png`` + ``x.jpg``, ``legend.png``, a folder holding ``x.png`` and ``a/x.png``, ``--out`` equal to the input
folder, outputs already there with and without ``--overwrite``.

Oracle: the output names are computed here from the documented rule (``OUT/NAME.png`` and
``OUT/NAME_overlay.png`` per image, ``NAME`` the stem of a file given directly or its path below a folder
given, plus ``OUT/legend.png``). If two outputs coincide or an output is an input, or an output exists without
``--overwrite``, the command must refuse with one ``error:`` line before writing anything (every file in the
output folder unchanged). Otherwise every image's mask and overlay must exist at that image's own size (each
input has a size no other input has, so a mask written from another image is caught).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fuzzing.cases import Case, cli, require
from fuzzing.gen_files import setup  # noqa: F401 - the same tiny model folder

POOL = ["x.png", "x_overlay.png", "x.jpg", "X.png", "legend.png", "y.png", "y_overlay.png", "x.png.png",
        "x_overlay_overlay.png", "sub/x.png", "sub/y.jpg", "dir/x.png", "dir/a/x.png", "dir/x_overlay.png"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {os.fspath(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_case(rng, context, folder):
    from PIL import Image

    os.chdir(folder)
    chosen = sorted(set(rng.choice(POOL, size=int(rng.integers(1, 4)), replace=False).tolist()))
    sizes = {}
    for index, name in enumerate(chosen):
        path = folder / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (20 + 3 * index, 30 + 2 * index)
        Image.fromarray(np.full(size + (3,), 40 * index, np.uint8)).save(path, format="JPEG" if name.endswith(".jpg") else "PNG")
        sizes[os.path.realpath(path)] = size
    arguments = []
    for name in chosen:
        if name.startswith("dir/"):
            if "in/dir" not in arguments:
                arguments.append("in/dir")
        else:
            arguments.append(f"in/{name}")
    out_name = str(rng.choice(["out", "out", "in", "in/sub"]))
    out = folder / out_name
    overwrite = bool(rng.random() < 0.5)
    no_overlay = bool(rng.random() < 0.2)
    # the documented naming rule, computed here
    named: list[tuple[str, str]] = []  # (input path, output name)
    for argument in arguments:
        path = folder / argument
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                named.append((os.path.realpath(found), found.relative_to(path).with_suffix("").as_posix()))
        else:
            named.append((os.path.realpath(path), path.stem))
    outputs: list[str] = [os.path.realpath(out / "legend.png")]
    for _, name in named:
        outputs.append(os.path.realpath(out / f"{name}.png"))
        if not no_overlay:
            outputs.append(os.path.realpath(out / f"{name}_overlay.png"))
    inputs = {path for path, _ in named}
    collision = len(set(outputs)) < len(outputs) or bool(set(outputs) & inputs)
    existing = []
    if rng.random() < 0.3 and not collision:
        target = Path(outputs[int(rng.integers(1, len(outputs)))])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"previous content")
        existing.append(target)
    refuse = collision or (bool(existing) and not overwrite)
    before = _snapshot(out) if out.exists() else {}
    description = {"inputs": chosen, "arguments": arguments, "out": out_name, "overwrite": overwrite,
                   "no_overlay": no_overlay, "existing": [os.path.relpath(p, folder) for p in existing],
                   "collision": collision}

    def run():
        argv = ["predict", "--model", os.fspath(context["folder"]), *arguments, "--out", out_name, "--no-progress",
                "--workers", "0"] + (["--overwrite"] if overwrite else []) + (["--no-overlay"] if no_overlay else [])
        return cli(argv)

    def after(error):
        if error is not None and out.exists():
            now = _snapshot(out)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            require(not changed, f"refused after writing / changing {changed[:4]}")

    def check(answer, caught):
        status, _, err = answer
        require(status == 0, f"exit status {status}: {err.strip()[-200:]}")
        for path, name in named:
            outs = [out / f"{name}.png"] + ([] if no_overlay else [out / f"{name}_overlay.png"])
            for output in outs:
                require(output.is_file(), f"{output.relative_to(folder)} missing")
                with Image.open(output) as image:
                    got = image.size[::-1]
                require(got == sizes[path], f"{output.relative_to(folder)} is {got}, its input "
                                            f"{os.path.relpath(path, folder)} is {sizes[path]}: another image's output")

    return Case(description, run, expect="error" if refuse else "ok",
                names=("would both write", "already exists", "is the input", "legend", "overwrite", "rename"),
                check=check, after=after)
