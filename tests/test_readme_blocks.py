"""Every Python block of README.md and of the model cards runs as written.

How: the blocks are extracted (```python fences) and run, each in a fresh namespace, in one Python process started
in a folder that holds ``photo.jpg``, with the Hub offline. One mechanical substitution, nothing else: each quoted
model name or path in ``MODEL_NAMES`` (a preset name, a Hub id, the card's ``"path/to/this/folder"``) becomes the
path of a tiny random model written here with the 150 ADE20K labels (PyTorch weights; the TF card gets a Keras
folder). A README block preceded by ``<!-- readme-test: skip (reason) -->`` is not run (there is none today).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from randomize import random_state, tiny_config

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAMES = ("b0-ade", "nvidia/segformer-b0-finetuned-ade-512-512", "segformer_b0_ade20k_512", "path/to/this/folder")
SKIP = "<!-- readme-test: skip"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)

RUNNER = r"""
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
for name, code in blocks:
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    except BaseException:
        print(f"FAILED: {name}\n{code}\n{traceback.format_exc()}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {name}", flush=True)
"""


def python_blocks(text: str, source: str) -> list[tuple[str, str]]:
    """``(name, code)`` of each python block of ``text`` not marked to skip."""
    blocks = []
    for i, match in enumerate(BLOCK.finditer("\n" + text)):
        if not match.group("before").strip().startswith(SKIP):
            blocks.append((f"{source} python block {i + 1}", match.group("code")))
    return blocks


def substitute(code: str, folder: Path) -> str:
    for name in MODEL_NAMES:
        code = code.replace(f'"{name}"', json.dumps(str(folder)))
    return code


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A working folder with ``photo.jpg``, and tiny ADE20K-labelled models: a PyTorch folder and a Keras folder,
    each with ``preprocessor_config.json`` and the model card that ``convert`` writes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from segformer.common.checkpoints.model_card import write_inference_files
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.tf import TFSegformerForSemanticSegmentation

    ade = json.loads((ROOT / "segformer" / "common" / "data" / "ade20k.json").read_text())["id2label"]
    config = tiny_config(num_labels=len(ade), id2label=ade)
    state = random_state(config, "semantic_segmentation", seed=0)
    base = tmp_path_factory.mktemp("blocks")
    folders = {"pt": base / "pt-model", "tf": base / "tf-model"}
    pt = SegformerForSemanticSegmentation(config)
    pt.load_state_dict_numpy(state)
    pt.save_pretrained(folders["pt"])
    tf_model = TFSegformerForSemanticSegmentation(config)
    tf_model.load_state_dict_numpy(state)
    tf_model.save_pretrained(folders["tf"])
    for framework, folder in folders.items():
        write_inference_files(folder, config, image_size=(64, 64), framework=framework, how="Random weights (a test).")
    work = base / "work"
    work.mkdir()
    photo = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(photo).save(work / "photo.jpg")
    del torch
    return work, folders


def _run(blocks: list[tuple[str, str]], work: Path) -> None:
    (work / "blocks.json").write_text(json.dumps(blocks))
    (work / "runner.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k not in ("USE_TF", "USE_TORCH")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "runner.py", "blocks.json"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-6000:]
    assert out.stdout.count("ok: ") == len(blocks), out.stdout


def test_readme_and_model_card_blocks_run_as_written(world):
    work, folders = world
    readme = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "README.md")
    assert len(readme) >= 3  # Quick start (PyTorch, Keras) and "the transformers way"
    cards = {fw: python_blocks((folder / "README.md").read_text(encoding="utf-8"), f"{fw} model card")
             for fw, folder in folders.items()}
    assert len(cards["pt"]) == 2 and len(cards["tf"]) == 1  # ours for both; transformers' pipeline for PyTorch weights
    assert any("pipeline(" in code for _, code in cards["pt"])
    blocks = [(name, substitute(code, folders[fw])) for fw in ("pt", "tf") for name, code in cards[fw]]
    blocks += [(name, substitute(code, folders["pt"])) for name, code in readme]
    for name, code in blocks:
        assert not any(f'"{m}"' in code for m in MODEL_NAMES), name
    _run(blocks, work)


def test_block_extraction_honours_the_skip_marker():
    text = "intro\n```python\nx = 1\n```\n<!-- readme-test: skip (needs a GPU) -->\n```python\ny = 2\n```\n"
    assert python_blocks(text, "t") == [("t python block 1", "x = 1")]
    assert substitute('m = load("b0-ade")', Path("/tmp/m")) == 'm = load("/tmp/m")'
