"""Writers: a save leaves exactly one current set of weights, exports never write over their inputs,
environment faults (disk full, read-only) at every writer are one ``error:`` line with the previous file intact."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import numpy as np
import pytest

from tests.randomize import random_state, tiny_config

torch = pytest.importorskip("torch")


def _pt_model(seed: int):
    from segformer.pt import SegformerForSemanticSegmentation

    config = tiny_config()
    model = SegformerForSemanticSegmentation(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, "semantic_segmentation", seed).items()})
    return model


def _same_weights(loaded, model) -> bool:
    mine, theirs = model.state_dict(), loaded.state_dict()
    return all(torch.equal(mine[k], theirs[k]) for k in mine)


# --------------------------------------------------------------------------- one current set of weights
@pytest.mark.parametrize("first_safe, second_safe", [(True, False), (False, True)])
def test_pt_save_in_another_format_removes_the_stale_weights(tmp_path, first_safe, second_safe):
    from segformer.pt import SegformerForSemanticSegmentation

    old, new = _pt_model(0), _pt_model(1)
    old.save_pretrained(tmp_path, safe_serialization=first_safe)
    new.save_pretrained(tmp_path, safe_serialization=second_safe)
    weights = sorted(n for n in os.listdir(tmp_path) if n != "config.json")
    assert weights == ["model.safetensors" if second_safe else "pytorch_model.bin"]
    assert _same_weights(SegformerForSemanticSegmentation.from_pretrained(tmp_path), new)


def test_pt_save_removes_stale_shards_and_tf_weights(tmp_path):
    old, new = _pt_model(0), _pt_model(1)
    total = sum(v.nelement() * 4 for v in old.state_dict().values())
    old.save_pretrained(tmp_path, max_shard_size=total // 3)  # safetensors shards + index
    (tmp_path / "tf_model.h5").write_bytes(b"an older TF save")
    new.save_pretrained(tmp_path, safe_serialization=False)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "pytorch_model.bin"]


def test_tf_save_removes_stale_pt_weights(tmp_path):
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    _pt_model(0).save_pretrained(tmp_path)  # an older PyTorch save: model.safetensors
    config = tiny_config()
    model = TFSegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "semantic_segmentation", 1))
    model.save_pretrained(tmp_path)  # tf_model.h5
    assert sorted(os.listdir(tmp_path)) == ["config.json", "tf_model.h5"]
    loaded = TFSegformerForSemanticSegmentation.from_pretrained(tmp_path)
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x).logits), np.asarray(model(x).logits))


# --------------------------------------------------------------------------- exports never write over inputs
def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_inputs")
    _pt_model(0).save_pretrained(root / "model")
    return root / "model"


def _export_over(model_dir, tmp_path, capsys, out, *extra):
    from segformer.cli import main

    before = _snapshot(model_dir)
    status = main(["export", "--model", str(model_dir), "--format", "onnx", "--size", "32,32", "--no-check",
                   "--out", str(out), "--overwrite", *extra])
    err = capsys.readouterr().err
    assert status == 2 and err.count("error:") == 1 and "never writes over its inputs" in err, err
    assert _snapshot(model_dir) == before
    return err


def test_export_refuses_out_that_is_the_model_folder(model_dir, tmp_path, capsys):
    err = _export_over(model_dir, tmp_path, capsys, model_dir)
    assert "--out" in err and "is the input --model" in err


def test_export_refuses_out_inside_the_model_folder(model_dir, tmp_path, capsys):
    err = _export_over(model_dir, tmp_path, capsys, model_dir / "model.safetensors")
    assert "is inside the input --model" in err


def test_export_refuses_out_that_contains_the_model_or_links_to_it(model_dir, tmp_path, capsys):
    _export_over(model_dir, tmp_path, capsys, model_dir.parent)
    link = tmp_path / "link"
    link.symlink_to(model_dir, target_is_directory=True)
    assert "is the input --model" in _export_over(model_dir, tmp_path, capsys, link)


def test_export_refuses_out_over_calibration_images(model_dir, tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "calibration"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    listing = tmp_path / "list.txt"
    listing.write_text("calibration/a.png\n")
    before = (images / "a.png").read_bytes()
    for out, given in ((images, str(images)), (images / "a.png", f"@{listing}"), (listing, f"@{listing}")):
        err = _export_over(model_dir, tmp_path, capsys, out, "--calibration", given)
        assert "--calibration" in err
    assert (images / "a.png").read_bytes() == before and listing.read_text() == "calibration/a.png\n"


# --------------------------------------------------------------------------- a full disk, for real
@contextlib.contextmanager
def file_size_limit(limit: int):
    """Files may not grow past ``limit`` bytes (RLIMIT_FSIZE; SIGXFSZ ignored so a write fails with EFBIG):
    what a full disk does to every writer, whichever library writes."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _one_error_line(err: str, path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and os.fspath(path) in lines[0], err
    assert "Traceback" not in err


def test_keras_save_on_a_full_disk_keeps_the_previous_file(tmp_path):
    """``model.save("x.keras")`` of our Keras classes writes atomically: a file-size fault raises ``OSError`` and
    the previous archive stays byte for byte, with no temporary left (Keras alone writes the zip in place)."""
    pytest.importorskip("tensorflow")
    from segformer.tf import TFSegformerForSemanticSegmentation

    config = tiny_config()
    model = TFSegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "semantic_segmentation", 2))
    model(np.zeros((1, 3, 32, 32), np.float32))
    target = tmp_path / "model.keras"
    model.save(target)
    before = target.read_bytes()
    model.load_state_dict_numpy(random_state(config, "semantic_segmentation", 3))
    with file_size_limit(len(before) // 2), pytest.raises(OSError):
        model.save(target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]
    with pytest.raises(FileExistsError, match="model.keras"):
        model.save(target, overwrite=False)


@pytest.mark.parametrize("to", ["pt", "tf"])
def test_convert_on_a_full_disk_is_one_error_line_and_keeps_the_old_folder(tmp_path, capsys, to):
    from segformer.cli import main
    from tests.conftest import fixture_path

    if to == "tf":
        pytest.importorskip("tensorflow")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "config.json").write_text("old config")
    (dst / "model.safetensors").write_bytes(b"old weights")
    before = _snapshot(dst)
    argv = ["convert", str(fixture_path("original/tiny.pth")), str(dst), "--to", to, "--overwrite", "--quiet"]
    with file_size_limit(20_000):  # the config fits, the weights do not
        status = main(argv)
    err = capsys.readouterr().err
    assert status == 2
    _one_error_line(err, dst)
    assert _snapshot(dst) == before and sorted(os.listdir(tmp_path)) == ["dst"]


def test_train_checkpoint_on_a_full_disk_is_one_error_line_and_keeps_the_old_run(tmp_path, capsys):
    from segformer.cli import main
    from segformer.common.training.datasets import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data", num_train=2, num_val=0, size=(32, 32), num_labels=3)
    tiny_config().save_pretrained(tmp_path / "tiny")
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (run / "model.safetensors").write_bytes(b"old weights")
    before = _snapshot(run)
    argv = ["train", "--model", str(tmp_path / "tiny" / "config.json"), "--data", str(tmp_path / "data"),
            "--out", str(run), "--overwrite", "--steps", "2", "--batch-size", "1", "--crop-size", "32",
            "--img-scale", "32,32", "--checkpoint-every", "1", "--no-progress"]
    with file_size_limit(20_000):  # the log fits, the training state does not
        status = main(argv)
    err = capsys.readouterr().err
    assert status == 2
    _one_error_line(err, run)
    after = _snapshot(run)
    assert after["model.safetensors"] == b"old weights"
    assert not [name for name in after if name.startswith(".") or "/." in name]


# --------------------------------------------------------------------------- train / eval: refused up front
@pytest.fixture()
def small_data(tmp_path):
    from segformer.common.training.datasets import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "data", num_train=2, num_val=1, size=(32, 32), num_labels=3)
    tiny_config().save_pretrained(tmp_path / "tiny")
    return tmp_path


def _train(root, *extra):
    from segformer.cli import main

    return main(["train", "--model", str(root / "tiny" / "config.json"), "--data", str(root / "data"),
                 "--out", str(root / "run"), "--steps", "1", "--batch-size", "1", "--crop-size", "32",
                 "--img-scale", "32,32", "--no-progress", *extra])


def _relabel(root, split, value, index=0):
    from PIL import Image

    folder = root / "data" / "annotations" / split
    path = sorted(folder.iterdir())[index]
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("flag, value", [("--crop-size", "0,0"), ("--crop-size", "big"), ("--img-scale", "0,0"),
                                         ("--checkpoint-every", "0"), ("--checkpoint-every", "-3")])
def test_train_refuses_impossible_sizes_and_checkpoint_every(small_data, capsys, flag, value):
    assert _train(small_data, flag, value) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and flag in err and value in err, err
    assert not (small_data / "run").exists()


def test_train_and_eval_refuse_a_fully_ignored_dataset(small_data, capsys):
    from segformer.cli import main

    for split, count in (("training", 2), ("validation", 1)):
        for index in range(count):
            _relabel(small_data, split, 255, index)
    assert _train(small_data) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "ignored" in err and "nothing to" in err, err
    assert not (small_data / "run").exists()
    _pt_model(0).save_pretrained(small_data / "model")
    status = main(["eval", "--model", str(small_data / "model"), "--data", str(small_data / "data"), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 2 and "nan" not in captured.out.lower(), captured.out
    assert captured.err.count("error:") == 1 and "ignored" in captured.err


def test_train_names_the_label_maps_with_classes_the_model_cannot_predict(small_data, capsys):
    bad = _relabel(small_data, "training", 7, 1)
    assert _train(small_data) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and os.fspath(bad) in err and "class 7" in err, err
    assert not (small_data / "run").exists()


def test_train_overwrite_with_a_model_that_fails_to_load_keeps_the_old_run(small_data, capsys):
    from segformer.cli import main

    run = small_data / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (run / "model.safetensors").write_bytes(b"the old run's weights")
    before = _snapshot(run)
    broken = small_data / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((small_data / "tiny" / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    status = main(["train", "--model", str(broken), "--data", str(small_data / "data"), "--out", str(run),
                   "--overwrite", "--steps", "1", "--batch-size", "1", "--crop-size", "32", "--img-scale", "32,32",
                   "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("error:") == 1 and "model.safetensors" in err, err
    assert _snapshot(run) == before


def test_train_overwrite_refused_for_memory_keeps_the_old_run(small_data, capsys, monkeypatch):
    """A training step that cannot fit (``--crop-size`` x ``--batch-size`` against the memory limit) is refused
    before ``--overwrite`` touches the old run's log."""
    from segformer.common.base import resources

    monkeypatch.setattr(resources, "memory_limits", lambda: [("test limit", 2**30)])
    run = small_data / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    before = _snapshot(run)
    status = _train(small_data, "--overwrite", "--crop-size", "4096", "--batch-size", "8")
    err = capsys.readouterr().err
    assert status == 2 and err.count("error:") == 1 and "crop_size=4096x4096" in err, err
    assert _snapshot(run) == before


# --------------------------------------------------------------------------- heads: no false claims
def test_export_refuses_a_classification_checkpoint_instead_of_claiming_agreement(tmp_path, capsys):
    from segformer.cli import main
    from tests.conftest import fixture_path

    out = tmp_path / "cls.onnx"
    status = main(["export", "--model", str(fixture_path("hf/tiny-cls")), "--format", "onnx", "--size", "32,32",
                   "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 2 and "agreement" not in captured.out and not out.exists(), captured.out
    assert captured.err.count("error:") == 1 and "no trained decode head" in captured.err
    assert "--allow-random-head" in captured.err


def test_eval_tf_on_a_transformers_tf_model_h5_warns_of_no_random_head(tmp_path):
    pytest.importorskip("tensorflow")
    import shutil
    import warnings

    from segformer.commands.shared import load_model
    from tests.conftest import fixture_path

    folder = tmp_path / "tf-only"
    folder.mkdir()
    for name in ("config.json", "tf_model.h5"):  # written by transformers' TFSegformerForSemanticSegmentation
        shutil.copy(fixture_path(f"hf/tiny-seg/{name}"), folder / name)
    with warnings.catch_warnings(record=True) as caught:  # what `segformer eval --framework tf` loads, and says
        warnings.simplefilter("always")
        model = load_model("tf", str(folder), command="segformer eval")
    assert not [w for w in caught if "random" in str(w.message)], [str(w.message) for w in caught]
    expected = np.load(fixture_path("hf/tiny-seg/expected.npz"))
    logits = np.asarray(model(expected["a_pixel_values"]).logits)
    assert np.abs(logits - expected["a_tf_logits"]).max() < 1e-4


@pytest.mark.parametrize("wrap", ["plain", "model"])
def test_convert_reads_an_encoder_only_pth_saved_under_data_parallel(tmp_path, capsys, wrap):
    from safetensors.numpy import load_file

    from segformer.cli import main
    from tests.conftest import fixture_path

    source = torch.load(fixture_path("original/tiny_encoder.pth"), weights_only=True)
    prefixed = {f"module.{name}": value for name, value in source.items()}  # DataParallel / DDP key names
    torch.save(prefixed if wrap == "plain" else {"model": prefixed}, tmp_path / "ddp.pth")
    for name in ("plain", "ddp"):
        src = fixture_path("original/tiny_encoder.pth") if name == "plain" else tmp_path / "ddp.pth"
        status = main(["convert", str(src), str(tmp_path / name), "--to", "pt", "--num-heads", "1,1,2,2", "--quiet",
                       "--no-verify"])
        assert status == 0, capsys.readouterr().err
    plain, ddp = (load_file(tmp_path / name / "model.safetensors") for name in ("plain", "ddp"))
    assert sorted(plain) == sorted(ddp) and all(np.array_equal(plain[k], ddp[k]) for k in plain)


def test_convert_infers_b0_heads_of_an_encoder_only_pth_with_module_prefix(tmp_path, capsys):
    from segformer.cli import main
    from tests.conftest import shared_or_skip

    state = torch.load(shared_or_skip("original/b0.pth"), weights_only=True)["state_dict"]
    encoder = {f"module.{k.removeprefix('backbone.')}": v for k, v in state.items() if k.startswith("backbone.")}
    torch.save(encoder, tmp_path / "mit_b0_ddp.pth")
    assert main(["convert", str(tmp_path / "mit_b0_ddp.pth"), str(tmp_path / "out"), "--to", "pt", "--quiet",
                 "--no-verify"]) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_attention_heads"] == [1, 2, 5, 8] and config["hidden_sizes"] == [32, 64, 160, 256]


# --------------------------------------------------------------------------- first contact: quiet pipes
def test_train_and_eval_draw_no_progress_bars_into_a_pipe(small_data, capfd):
    from segformer.cli import main

    argv = ["train", "--model", str(small_data / "tiny" / "config.json"), "--data", str(small_data / "data"),
            "--out", str(small_data / "run"), "--steps", "2", "--batch-size", "1", "--crop-size", "32",
            "--img-scale", "32,32"]  # no --no-progress: stderr is not a terminal here
    assert main(argv) == 0
    assert main(["eval", "--model", str(small_data / "run"), "--data", str(small_data / "data")]) == 0
    err = capfd.readouterr().err
    assert "train (pt)" not in err and "eval:" not in err and "\r" not in err and "it/s" not in err, err


def test_library_log_noise_is_silenced_unless_verbose(capfd):
    import logging

    from segformer.cli import quiet_frameworks
    from segformer.common.base import deps

    logging.getLogger("absl").addHandler(handler := logging.StreamHandler())  # where "WARNING:absl:..." went
    try:
        with quiet_frameworks(verbose=False):
            logging.getLogger("absl").warning("absl notice")
            with deps.native_noise_silenced():
                os.write(2, b"INFO: native notice\n")
        with quiet_frameworks(verbose=True):
            logging.getLogger("absl").warning("verbose absl notice")
            with deps.native_noise_silenced():
                os.write(2, b"verbose native notice\n")
    finally:
        logging.getLogger("absl").removeHandler(handler)
    err = capfd.readouterr().err
    assert "absl notice" not in err.replace("verbose absl notice", "") and "INFO: native notice" not in err, err
    assert "verbose absl notice" in err and "verbose native notice" in err


def test_native_tensorflow_log_lines_are_off_by_default(monkeypatch):
    from segformer.cli import quiet_frameworks

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with quiet_frameworks(verbose=False):  # "E0000 ... oneDNN supports DT_BOOL only ..." is an ERROR-level line
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # the user's choice is kept
    with quiet_frameworks(verbose=False):
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_verbose_is_accepted_after_the_command(capsys):
    from segformer.cli import main

    assert main(["presets", "--verbose"]) == 0 and main(["presets", "-v"]) == 0
    assert main(["--verbose", "presets"]) == 0
    assert "b0-ade" in capsys.readouterr().out


@pytest.mark.slow
def test_export_tflite_prints_no_library_noise_into_a_pipe(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("tensorflow")
    from tests.conftest import fixture_path

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "segformer", "export", "--model", str(fixture_path("hf/tiny-seg")),
                             "--format", "tflite", "--size", "32,32", "--out", str(tmp_path / "m.tflite")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_hub_hint_names_the_current_download_command():
    from segformer.common.model.presets import get_preset, preset_unavailable_message

    message = preset_unavailable_message(get_preset("b0-ade"), OSError("offline"))
    assert f"hf download {get_preset('b0-ade').hub_id}" in message
    assert "huggingface-cli download" not in message


def test_info_names_the_ade20k_classes_as_demo_does(capsys):
    import re

    from segformer.cli import main
    from segformer.common.images.labels import get_label_set

    names = set(get_label_set("ade20k")[0].values())
    assert main(["info", "--size", "64"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("most frequent predicted classes:"))
    found = re.findall(r"([^,:]+) \(\d+ px\)", line.split(":", 1)[1])
    assert found and all(name.strip() in names for name in found), line
    assert "LABEL_" not in out


def test_dir_lists_the_lazy_public_api_without_importing_frameworks():
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys, segformer; names = dir(segformer); "
            "print(sorted(set(segformer.__all__) - set(names)), 'torch' in sys.modules, 'tensorflow' in sys.modules, "
            "all(n in names for n in ('pt', 'tf')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": root}, cwd=root)
    assert result.stdout.split() == ["[]", "False", "False", "True"], result.stdout + result.stderr


def test_readme_puts_each_segmenter_option_where_the_api_takes_it():
    import inspect
    import re
    from pathlib import Path

    from segformer import Segmenter

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = text.index("`Segmenter` returns, per image")
    paragraph = text[start: text.index("\n\n", start)]
    constructor, _, per_call = paragraph.partition("Per call")
    init = set(inspect.signature(Segmenter.__init__).parameters)
    call = set(inspect.signature(Segmenter.__call__).parameters) & set(inspect.signature(Segmenter.imap).parameters)
    keyword = re.compile(r"`(\w+)=")
    assert {"top_k", "min_area", "return_probabilities"} <= set(keyword.findall(per_call))
    misplaced = [name for name in keyword.findall(constructor) if name not in init]
    misplaced += [name for name in keyword.findall(per_call) if name not in call]
    assert not misplaced, misplaced


def test_saved_model_export_on_a_full_disk_is_one_error_line(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from segformer.cli import main
    from tests.conftest import fixture_path

    out = tmp_path / "saved"
    out.mkdir()
    (out / "saved_model.pb").write_bytes(b"the previous export")
    argv = ["export", "--model", str(fixture_path("hf/tiny-seg")), "--format", "saved-model", "--size", "32,32",
            "--out", str(out), "--overwrite", "--no-check"]
    with file_size_limit(20_000):  # the graph fits, the variables do not
        status = main(argv)
    err = capsys.readouterr().err
    assert status == 2
    _one_error_line(err, out)
    assert _snapshot(out) == {"saved_model.pb": b"the previous export"} and sorted(os.listdir(tmp_path)) == ["saved"]


def test_os_errors_from_keeps_other_errors():
    from segformer.common.base.atomic import os_errors_from

    with pytest.raises(OSError) as info, os_errors_from("/x/out", RuntimeError):
        raise RuntimeError(f"SaveV2 failed: /x/.tmp/part-0; {os.strerror(28)} [Op:SaveV2]")
    assert info.value.errno == 28 and info.value.filename == "/x/out"
    with pytest.raises(RuntimeError, match="shape mismatch"), os_errors_from("/x/out", RuntimeError):
        raise RuntimeError("shape mismatch")
