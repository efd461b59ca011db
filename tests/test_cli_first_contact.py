"""A new user's first hour with the CLI: version / ``python -m``, install hints, folders with bad
files, class summaries and legends, random heads, label-count mismatches, convert's head rule, model cards,
quiet output, and the ``--overwrite`` / never-over-an-input rules with environment faults."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segformer
from segformer.cli import main
from tests.randomize import tiny_config

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny segmentation checkpoint (4 named labels) and a base (encoder-only) checkpoint."""
    import torch

    from segformer.pt import SegformerForSemanticSegmentation, SegformerModel

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    names = {0: "sky", 1: "tree", 2: "road", 3: "car"}
    config = tiny_config(num_labels=4, id2label={str(k): v for k, v in names.items()})
    SegformerForSemanticSegmentation(config).save_pretrained(root / "seg")
    SegformerModel(config).save_pretrained(root / "base")
    return root


@pytest.fixture()
def photos(tmp_path):
    """good.png, sub/deep16.png (16-bit), sub/rotated.jpg (EXIF 6), truncated.jpg, fake.png (text), notes.txt."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / "good.png")
    Image.fromarray(rng.integers(0, 65536, (36, 44), dtype=np.uint16)).save(folder / "sub" / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(folder / "sub" / "rotated.jpg", exif=exif)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "fake.png").write_text("not a picture")
    (folder / "notes.txt").write_text("shopping list")
    return folder


# ----------------------------------------------------------------------------------------- item 1, 2
def test_version_and_python_dash_m(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"segformer {segformer.__version__}"
    result = subprocess.run([sys.executable, "-m", "segformer", "--help"], capture_output=True, text=True, env=_env(),
                            cwd=ROOT.parent, timeout=120)
    assert result.returncode == 0 and "usage: segformer" in result.stdout and "--version" in result.stdout


def test_all_extra_lists_every_runtime_package():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert project["dynamic"] == ["version"]
    expanded = set()
    for name in re.match(r"segformer\[(.*)\]", extras["all"][0]).group(1).split(","):
        expanded |= {re.split(r"[<>=;\s]", req)[0] for req in extras[name]}
    assert {"torch", "keras", "huggingface_hub", "onnx", "onnxruntime"} <= expanded
    assert {"tensorflow", "tensorflow-cpu"} & expanded


# --------------------------------------------------------------------------------------------- item 3
@pytest.mark.parametrize("package, command", [
    ("torch", "pip install torch"),
    ("tensorflow", "pip install tensorflow keras"),
    ("keras", "pip install tensorflow keras"),
    ("huggingface_hub", "pip install huggingface_hub"),
    ("onnxruntime", "pip install onnx onnxruntime"),
    ("peft", "pip install peft"),
])
def test_missing_package_message_names_package_feature_and_command(monkeypatch, package, command):
    from segformer.common.base.deps import MissingDependencyError, require

    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError) as info:
        require(package, "the feature X")
    text = str(info.value)
    assert isinstance(info.value, ImportError)
    assert text.startswith("the feature X needs ") and f"Python package {package!r}" in text and command in text
    assert "pip install '.[" in text  # works from a clone too


def test_predict_eval_train_without_torch_point_to_tf(monkeypatch, models, photos, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    for argv in (["predict", "--model", str(models / "seg"), str(photos / "good.png"), "--out", str(tmp_path / "o")],
                 ["eval", "--model", str(models / "seg"), "--images", str(photos / "good.png"), "--labels", str(photos)],
                 ["info"]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: segformer ")
        assert "needs PyTorch" in err and "pip install torch" in err and "--framework tf" in err


def test_train_without_tensorflow_points_to_pt(monkeypatch, tmp_path, capsys):
    from segformer.common.training.datasets import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data", num_train=2, num_val=1, size=(32, 32), num_labels=3)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    capsys.readouterr()
    assert main(["train", "--framework", "tf", "--model", "b0", "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "needs TensorFlow" in err and "pip install tensorflow keras" in err and "--framework pt" in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------- item 4
def test_readme_install_section_keeps_ci_commands_and_covers_ordinary_machines():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = 'python -m pip install torch==2.13.0 && python -m pip install -e ".[all,dev]" && python -m pytest -q'
    assert test_command in readme and test_command in ci
    assert 'python -m pip install torch==2.13.0 && python -m pip install -e ".[all,dev]" && segformer demo' in readme
    assert ci.index(test_command) < ci.index("wheel-smoke")
    for needle in ("download.pytorch.org/whl/cpu", "download.pytorch.org/whl/cu", "tensorflow[and-cuda]", "[all]", "[hub]", "[onnx]"):
        assert needle in readme, needle


# --------------------------------------------------------------------------------------- items 5, 7
def test_predict_folder_skips_bad_files_names_them_and_exits_1(models, photos, tmp_path, capsys):
    from segformer.common.images.viz import load_mask_png

    out = tmp_path / "masks"
    capsys.readouterr()
    assert main(["predict", "--model", str(models / "seg"), str(photos), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert re.search(r"skipped 2 of 5 input\(s\):\n  .*fake.png: not an image.*\n  .*truncated.jpg: truncated", captured.err)  # input order
    assert "notes.txt" not in captured.out + captured.err  # folders give image files only
    for name, size in (("good", (56, 40)), ("sub/deep16", (44, 36)), ("sub/rotated", (32, 48))):
        assert Image.open(out / f"{name}.png").size == size  # rotated: EXIF applied, 48x32 stored -> 32x48
        assert (out / f"{name}_overlay.png").is_file()
    # one summary line per image: the most frequent classes with their pixel fractions, by name
    names = {0: "sky", 1: "tree", 2: "road", 3: "car"}
    for name in ("good", "sub/deep16", "sub/rotated"):
        mask = load_mask_png(out / f"{name}.png")
        ids, counts = np.unique(mask, return_counts=True)
        top = ids[np.argsort(-counts, kind="stable")][0]
        line = next(line for line in captured.out.splitlines() if f"{name}.png:" in line)
        assert re.search(rf": {names[int(top)]} {100 * counts.max() / mask.size:.1f} %", line), line
    # the legend has a swatch in the palette colour of every class that appears
    legend = np.asarray(Image.open(out / "legend.png").convert("RGB")).reshape(-1, 3)
    seen = set()
    for name in ("good", "sub/deep16", "sub/rotated"):
        seen |= set(np.unique(load_mask_png(out / f"{name}.png")).tolist())
    palette = np.asarray(Image.open(out / "good.png").getpalette()[: 3 * 4]).reshape(4, 3)
    for class_id in seen:
        assert (legend == palette[class_id]).all(axis=1).sum() >= 100, class_id
    assert "legend of the" in captured.out


def test_predict_strict_stops_before_any_work(models, photos, tmp_path, capsys):
    capsys.readouterr()
    assert main(["predict", "--model", str(models / "seg"), str(photos), "--out", str(tmp_path / "m"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fake.png: not an image" in err and "--strict" in err
    assert not (tmp_path / "m").exists()


def test_predict_glob_and_list_inputs(models, photos, tmp_path, capsys):
    (tmp_path / "list.txt").write_text("photos/good.png\nphotos/notes.txt\n")
    out = tmp_path / "m"
    capsys.readouterr()
    code = main(["predict", "--model", str(models / "seg"), str(photos / "sub" / "*.jpg"), f"@{tmp_path / 'list.txt'}",
                 "--out", str(out)])
    assert code == 1  # the listed text file is read as an image and reported
    assert re.search(r"notes.txt: not an image", capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "good_overlay.png", "legend.png", "rotated.png",
                                                     "rotated_overlay.png"]


def test_predict_refuses_random_decode_head_unless_allowed(models, photos, tmp_path, capsys):
    image = str(photos / "good.png")
    capsys.readouterr()
    assert main(["predict", "--model", str(models / "base"), image, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no trained decode head" in err and "--allow-random-head" in err and not (tmp_path / "a").exists()
    with pytest.warns(UserWarning, match="decode head is random"):
        code = main(["predict", "--model", str(models / "base"), image, "--out", str(tmp_path / "a"), "--allow-random-head"])
    assert code == 0 and (tmp_path / "a" / "good.png").is_file()


# ------------------------------------------------------------------ predict: inputs and environment faults
def test_predict_never_writes_over_an_input(models, photos, tmp_path, capsys):
    before = (photos / "good.png").read_bytes()
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        assert main(["predict", "--model", str(models / "seg"), str(photos / "good.png"), "--out", str(photos), *extra]) == 2
        err = capsys.readouterr().err
        assert "never writes over its inputs, even with --overwrite" in err and "good.png" in err
    assert (photos / "good.png").read_bytes() == before


def test_predict_out_parent_is_a_file(models, photos, tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    capsys.readouterr()
    code = main(["predict", "--model", str(models / "seg"), str(photos / "good.png"), "--out", str(tmp_path / "file" / "sub")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(tmp_path / "file" / "sub") in err
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize("fault", ["read-only", "disk-full"])
def test_predict_environment_faults_keep_old_outputs(models, photos, tmp_path, capsys, monkeypatch, fault):
    out = tmp_path / "m"
    args = ["predict", "--model", str(models / "seg"), str(photos / "good.png"), "--out", str(out)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    if fault == "read-only":
        if os.geteuid() == 0:  # root writes into read-only folders: fail the way the kernel would for a user
            real_open = os.open

            def refuse(path, flags, *a, **k):
                if flags & os.O_CREAT and str(path).startswith(str(out)):
                    raise PermissionError(errno.EACCES, "Permission denied", str(path))
                return real_open(path, flags, *a, **k)

            monkeypatch.setattr(os, "open", refuse)
        else:
            out.chmod(0o555)
    else:
        from segformer.common.base import atomic

        def full_disk(path, data):  # every writer's bytes reach the disk here
            Path(path).write_bytes(data[:12])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(atomic, "_write_file", full_disk)
    capsys.readouterr()
    try:
        assert main(args + ["--overwrite"]) == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot write ") and str(out / "good.png") in err
    assert ("Permission denied" if fault == "read-only" else "No space left on device") in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files intact, no temporary left


# --------------------------------------------------------------------------------------- eval / train
@pytest.fixture()
def dataset(tmp_path):
    from segformer.common.training.datasets import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path / "data", num_train=3, num_val=3, size=(32, 32), num_labels=3)


def test_eval_refuses_a_model_whose_num_labels_cannot_match(models, dataset, capsys):
    capsys.readouterr()
    assert main(["eval", "--model", str(models / "seg"), "--data", str(dataset), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the model predicts 4 classes but the dataset" in err and "has 3" in err
    (dataset / "id2label.json").unlink()  # without names: the label maps decide; 3 classes fit a 4-class model
    assert main(["eval", "--model", str(models / "seg"), "--data", str(dataset), "--no-progress"]) == 0
    label = dataset / "annotations" / "validation" / sorted(os.listdir(dataset / "annotations" / "validation"))[0]
    values = np.asarray(Image.open(label)).copy()
    values[0, 0] = 7
    Image.fromarray(values).save(label)
    capsys.readouterr()
    assert main(["eval", "--model", str(models / "seg"), "--data", str(dataset), "--no-progress"]) == 2
    assert "predicts 4 classes (0..3) but the label maps" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "train"])
def test_eval_and_train_stop_before_any_work_listing_bad_files(models, dataset, tmp_path, capsys, command):
    split = "validation" if command == "eval" else "training"
    images = sorted((dataset / "images" / split).iterdir())
    data = images[0].read_bytes()
    images[0].write_bytes(data[: len(data) // 3])
    (dataset / "annotations" / split / images[1].with_suffix(".png").name).write_text("not a png")
    (dataset / "id2label.json").write_text(json.dumps({str(i): n for i, n in enumerate(["sky", "tree", "road", "car"])}))
    capsys.readouterr()
    if command == "eval":
        code = main(["eval", "--model", str(models / "seg"), "--data", str(dataset), "--no-progress"])
    else:
        code = main(["train", "--model", str(models / "seg"), "--data", str(dataset), "--out", str(tmp_path / "run"),
                     "--steps", "1", "--crop-size", "32", "--no-progress"])
    assert code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "mIoU" not in captured.out and captured.out == ""
    assert re.search(r"error: 2 bad file\(s\) among 3 image / label pairs; nothing was run:\n"
                     rf"  .*{images[0].name}: truncated.*\n  .*{images[1].stem}.png: .*", captured.err), captured.err
    if command == "train":
        assert not (tmp_path / "run").exists()


def test_eval_images_without_a_label_are_listed(models, dataset, tmp_path, capsys):
    (dataset / "id2label.json").unlink()
    images = dataset / "images" / "validation"
    labels = tmp_path / "labels"
    labels.mkdir()
    first = sorted(images.iterdir())[0]
    (labels / f"{first.stem}.png").write_bytes((dataset / "annotations" / "validation" / f"{first.stem}.png").read_bytes())
    capsys.readouterr()
    assert main(["eval", "--model", str(models / "seg"), "--images", str(images), "--labels", str(labels), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "2 bad file(s) among 3" in err and err.count("label map does not exist") == 2 and first.stem not in err


def test_eval_takes_images_and_labels_folders(models, dataset, tmp_path, capsys):
    (dataset / "id2label.json").unlink()
    labels = dataset / "annotations" / "validation"
    (tmp_path / "picks.txt").write_text("\n".join(str(p) for p in sorted((dataset / "images" / "validation").iterdir())[:2]))
    capsys.readouterr()
    assert main(["eval", "--model", str(models / "seg"), "--images", f"@{tmp_path / 'picks.txt'}", "--labels", str(labels),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert ": 2 images" in out and out.strip().splitlines()[-1].startswith("mIoU: ")
    assert main(["eval", "--model", str(models / "seg"), "--data", str(dataset), "--images", "x", "--no-progress"]) == 2


# --------------------------------------------------------------------------------------------- item 8
def test_convert_requires_num_heads_for_unknown_dims_and_says_when_it_assumes(models, tmp_path, capsys):
    import shutil

    import torch

    from segformer.common.model.config import SegformerConfig
    from segformer.pt import SegformerForSemanticSegmentation

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(models / "seg" / "model.safetensors", bare / "model.safetensors")  # no config.json
    capsys.readouterr()
    assert main(["convert", str(bare / "model.safetensors"), str(tmp_path / "o"), "--to", "pt", "--no-verify", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "match no known variant" in err and "--num-heads" in err
    assert main(["convert", str(bare / "model.safetensors"), str(tmp_path / "o"), "--to", "pt", "--no-verify", "--quiet",
                 "--num-heads", "1,1,2,2"]) == 0
    assert not capsys.readouterr().out.startswith("ASSUMED")
    torch.manual_seed(0)
    b0 = tmp_path / "b0"
    SegformerForSemanticSegmentation(SegformerConfig.from_variant("b0", num_labels=2)).save_pretrained(b0)
    (b0 / "config.json").unlink()
    assert main(["convert", str(b0 / "model.safetensors"), str(tmp_path / "b0pt"), "--to", "pt", "--no-verify", "--quiet"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("ASSUMED") and "[1, 2, 5, 8]" in first and "b0" in first


# --------------------------------------------------------------------------------------------- item 9
def _front_matter(path: Path) -> str:
    text = path.read_text()
    assert text.startswith("---\n")
    return text.split("---\n")[1]


def test_train_and_convert_folders_carry_processor_and_model_card(dataset, tmp_path, capsys):
    from segformer.common.training.recipe import read_jsonl

    tiny_config(num_labels=3).save_pretrained(tmp_path / "cfg")
    run = tmp_path / "run"
    assert main(["train", "--model", str(tmp_path / "cfg" / "config.json"), "--data", str(dataset), "--out", str(run),
                 "--steps", "2", "--batch-size", "2", "--crop-size", "32", "--img-scale", "32,32", "--no-progress"]) == 0
    processor = json.loads((run / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "SegformerImageProcessor" and processor["size"] == {"height": 32, "width": 32}
    header = _front_matter(run / "README.md")
    miou = read_jsonl(run / "train_log.jsonl")[-1]["mIoU"]
    assert "library_name: transformers" in header and "pipeline_tag: image-segmentation" in header
    assert "- segformer" in header and 'datasets:\n- "data"' in header
    assert f"- type: mean_iou\n      value: {miou:.4f}" in header
    card = (run / "README.md").read_text()
    for index, name in json.loads((dataset / "id2label.json").read_text()).items():
        assert f"| {index} | {name} |" in card
    capsys.readouterr()
    assert main(["convert", str(run), str(tmp_path / "tf"), "--to", "tf", "--quiet", "--no-verify"]) == 0
    assert json.loads((tmp_path / "tf" / "preprocessor_config.json").read_text()) == processor
    header = _front_matter(tmp_path / "tf" / "README.md")
    assert "- tensorflow" in header and "library_name: transformers" in header
    assert "README.md" in capsys.readouterr().out


def test_trained_folder_loads_in_transformers_pipeline(dataset, tmp_path):
    transformers = pytest.importorskip("transformers")
    tiny_config(num_labels=3).save_pretrained(tmp_path / "cfg")
    run = tmp_path / "run"
    assert main(["train", "--model", str(tmp_path / "cfg" / "config.json"), "--data", str(dataset), "--out", str(run),
                 "--steps", "1", "--batch-size", "2", "--crop-size", "32", "--img-scale", "32,32", "--no-progress"]) == 0
    segmenter = transformers.pipeline("image-segmentation", model=str(run), framework="pt")
    image = Image.open(sorted((dataset / "images" / "validation").iterdir())[0]).convert("RGB")
    results = segmenter(image)
    names = set(json.loads((dataset / "id2label.json").read_text()).values())
    assert results and {r["label"] for r in results} <= names
    assert all(r["mask"].size == image.size for r in results)


# -------------------------------------------------------------------------------------------- item 10
def test_warnings_are_one_line_unless_verbose():
    import warnings

    from segformer.cli import quiet_frameworks
    from segformer.common.base import deps

    before = warnings.formatwarning
    with quiet_frameworks(verbose=False):
        text = warnings.formatwarning("first\n  second", UserWarning, "/some/file.py", 12)
        assert text == "warning: UserWarning: first second\n"
        assert deps.QUIET_IMPORTS and os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("2", "3")
    assert warnings.formatwarning is before and not deps.QUIET_IMPORTS
    with quiet_frameworks(verbose=True):
        assert "/some/file.py:12" in warnings.formatwarning("first", UserWarning, "/some/file.py", 12)


def test_tf_predict_prints_no_framework_start_up_lines(models, photos, tmp_path):
    tf_dir = tmp_path / "tf"
    assert main(["convert", str(models / "seg"), str(tf_dir), "--to", "tf", "--quiet", "--no-verify"]) == 0
    result = subprocess.run(
        [sys.executable, "-m", "segformer", "predict", "--framework", "tf", "--model", str(tf_dir), str(photos / "good.png"),
         "--out", str(tmp_path / "m")], capture_output=True, text=True,
        env={k: v for k, v in _env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "", result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [f"{photos / 'good.png'} -> {tmp_path / 'm' / 'good.png'}",
                                                                           "legend of the 4 classes seen"]


def test_demo_follows_the_overwrite_rule(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "overlay.png").write_bytes(b"mine")
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overlay.png" in err
    assert (out / "overlay.png").read_bytes() == b"mine"


def test_predict_parallel_workers_write_the_one_at_a_time_bytes(models, photos, tmp_path, capsys):
    """parallel pipelines (default, and 3 workers x 2 images) write exactly the files of one image at
    a time in the main thread, with the bad files (one found only while decoding) skipped and listed alike."""
    import torch

    rng = np.random.default_rng(5)
    for index, shape in enumerate([(40, 56), (33, 61), (40, 56), (40, 56), (32, 40), (33, 61)]):
        Image.fromarray(rng.integers(0, 256, shape + (3,), dtype=np.uint8)).save(photos / f"mixed{index}.png")
    threads = torch.get_num_threads()
    runs = {}
    for label, extra in (("serial", ["--workers", "0", "--batch-size", "1"]), ("default", []),
                         ("three", ["--workers", "3", "--batch-size", "2"])):
        out = tmp_path / label
        capsys.readouterr()
        assert main(["predict", "--model", str(models / "seg"), str(photos), "--out", str(out), "--no-progress", *extra]) == 1
        err = capsys.readouterr().err
        runs[label] = ({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))},
                       err[err.index("skipped"):])
        assert torch.get_num_threads() == threads  # the split between workers is undone
    files, skipped = runs["serial"]
    assert len(files) == 2 * 9 + 1 and "truncated.jpg: truncated" in skipped  # 9 images x (mask, overlay) + legend
    for label in ("default", "three"):
        assert runs[label][0].keys() == files.keys()
        assert all(runs[label][0][name] == files[name] for name in files), label
        assert runs[label][1] == skipped


def test_predict_xla_runs_tf_under_xla_with_the_same_masks(models, photos, tmp_path, capsys, xla_traces):
    """``--xla`` (TensorFlow only) runs the model's inference graph under XLA (traced in an XLA context) and
    writes the masks of the plain TF run (one image per call: the first call runs op by op, the second as the
    cached graph); with ``--framework pt`` it is refused before any model is loaded."""
    seen = xla_traces
    masks = {}
    for label, extra in (("plain", []), ("xla", ["--xla"])):
        seen.clear()
        out = tmp_path / label
        args = ["predict", "--model", str(models / "seg"), str(photos / "good.png"), str(photos / "sub" / "rotated.jpg"),
                "--out", str(out), "--framework", "tf", "--no-progress", "--workers", "0", "--batch-size", "1", *extra]
        assert main(args) == 0, capsys.readouterr().err
        assert seen and any(seen) == (label == "xla")
        masks[label] = {p.name: np.asarray(Image.open(p)) for p in sorted(out.rglob("*.png")) if "overlay" not in p.name}
    assert masks["xla"].keys() == masks["plain"].keys() and len(masks["plain"]) >= 2
    for name, plain in masks["plain"].items():  # float rounding may move a near-tie pixel, nothing more
        assert plain.shape == masks["xla"][name].shape and np.mean(plain == masks["xla"][name]) >= 0.99, name
    capsys.readouterr()
    assert main(["predict", "--model", str(models / "seg"), str(photos / "good.png"), "--out", str(tmp_path / "pt"),
                 "--framework", "pt", "--xla"]) == 2
    err = capsys.readouterr().err
    assert "--xla applies to --framework tf only" in err and not (tmp_path / "pt").exists()
