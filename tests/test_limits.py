"""Values that cannot be right are refused, and requests that cannot fit are refused from arithmetic before any
allocation: config values, processor settings, Segmenter options, devices, sliding-window counts, memory (the
real limit: RLIMIT_AS, cgroup, available RAM), checkpoint tensors and sr_ratios.

Memory checks run against a fixed limit (``resources.memory_limits`` replaced), so the outcome does not depend on
the machine; one test lowers RLIMIT_AS in a subprocess."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from randomize import tiny_config
from segformer import Segmenter, SegformerConfig
from segformer.common.base import resources
from segformer.common.base.errors import ResourceLimitError

ROOT = Path(__file__).resolve().parent.parent
GB = 2**30


@pytest.fixture
def limit_8gb(monkeypatch):
    """This process may allocate 8 GB, whatever the machine has."""
    monkeypatch.setattr(resources, "memory_limits", lambda: [("test limit", 8 * GB)])


@pytest.fixture(scope="module")
def model():
    import torch

    from segformer.pt import SegformerForSemanticSegmentation

    torch.manual_seed(0)
    return SegformerForSemanticSegmentation(tiny_config(hidden_dropout_prob=0.5, classifier_dropout_prob=0.5)).eval()


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- the memory limit


def test_cgroup_limits_v1_and_v2_are_read(tmp_path, monkeypatch):
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir()
    v1.mkdir()
    (v2 / "memory.max").write_text(f"{3 * GB}\n")
    (v2 / "memory.current").write_text(f"{1 * GB}\n")
    (v1 / "memory.limit_in_bytes").write_text(f"{5 * GB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{1 * GB}\n")
    monkeypatch.setattr(resources, "_cgroup_dirs", lambda: [("v1", v1), ("v2", v2)])
    source, left = resources._cgroup()
    assert left == 2 * GB and "memory.max" in source
    (v2 / "memory.max").write_text("max\n")  # v2 without a limit; v1 "unlimited" is a number near 2**63
    source, left = resources._cgroup()
    assert left == 4 * GB and "limit_in_bytes" in source
    (v1 / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")
    assert resources._cgroup() is None


def test_check_memory_names_argument_need_and_limit(monkeypatch):
    monkeypatch.setattr(resources, "memory_limits", lambda: [("RAM available", 8 * GB), ("cgroup x", 1 * GB)])
    resources.check_memory(GB // 2, "arg", "thing")
    with pytest.raises(ResourceLimitError, match=r"arg=7: thing would need about 3\.0 GB, more than the 1\.0 GB .*cgroup x"):
        resources.check_memory(3 * GB, "arg=7", "thing")


def test_rlimit_as_slide_mode_is_a_clear_error_not_memory_error(tmp_path):
    """Under a 1.5 GB address-space limit (a container), a large image in slide mode is refused by the memory
    check naming RLIMIT_AS; before, the label / confidence maps' allocation died with a raw MemoryError."""
    script = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, resource.RLIM_INFINITY))
        import numpy as np, torch
        sys.path.insert(0, "tests")
        from randomize import tiny_config
        from segformer import Segmenter
        from segformer.pt import SegformerForSemanticSegmentation
        model = SegformerForSemanticSegmentation(tiny_config(num_labels=150)).eval()
        segmenter = Segmenter(model, mode="slide", resize="none")
        image = np.zeros((10000, 10000, 3), np.uint8)
        try:
            segmenter(image)
        except MemoryError:
            print("RAW MemoryError")
        except ValueError as err:
            print("REFUSED", type(err).__name__, err)
        """
    )
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "REFUSED ResourceLimitError" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "RLIMIT_AS" in done.stdout and "10000x10000" in done.stdout and "would fit" in done.stdout


# ------------------------------------------------------------------------------------------- Segmenter options


@pytest.mark.parametrize("options, match", [
    ({"crop_size": 0, "mode": "slide"}, "crop_size must be positive"),
    ({"stride": 0, "mode": "slide"}, "stride must be positive"),
    ({"size_divisor": 0}, "size_divisor must be a positive int"),
    ({"max_windows": 0}, "max_windows must be a positive int"),
    ({"palette": np.random.default_rng(0).random((3, 3))}, r"whole numbers in \[0, 255\].*\* 255"),
    ({"palette": np.eye(3)}, r"whole numbers in \[0, 255\]"),
    ({"palette": "nope"}, "palette: unknown label set 'nope'"),
    ({"device": "bogus"}, r"device='bogus' is not available to PyTorch .*available: cpu"),
])
def test_segmenter_options_that_cannot_be_right(model, options, match):
    with pytest.raises(ValueError, match=match):
        Segmenter(model, **options)


def test_cuda_device_on_a_build_without_it(model):
    import torch

    wanted = "cuda:99" if torch.cuda.is_available() else "cuda"  # a device this machine lacks, either way
    with pytest.raises(ValueError, match=r"device='cuda(:99)?' is not available to PyTorch .*available: cpu"):
        Segmenter(model, device=wanted)


def test_integer_palette_still_accepted(model):
    palette = np.array([[0, 0, 255], [255, 0, 0], [0, 128, 0]], dtype=np.float64)
    np.testing.assert_array_equal(Segmenter(model, palette=palette).palette, palette.astype(np.uint8))


@pytest.mark.parametrize("options, error, match", [
    ({"return_probabilities": "yes"}, ValueError, "return_probabilities must be True or False"),
    ({"keep_confidence": "no"}, ValueError, "keep_confidence must be True or False"),
    ({"labels_out": np.zeros((40, 48), np.float32)}, TypeError, "integer dtype"),
    ({"labels_out": np.zeros((40, 48), np.int32)[::1, ::1].view(np.int32)[None][0][:, :].copy()[:, :]}, None, None),
])
def test_call_options(model, image, options, error, match):
    segmenter = Segmenter(model, resize="none")
    if error is None:
        result = segmenter(image, **options)
        np.testing.assert_array_equal(options["labels_out"], result.label_map)
        return
    with pytest.raises(error, match=match):
        segmenter(image, **options)


def test_labels_out_read_only_is_refused(model, image):
    labels = np.zeros((40, 48), np.uint8)
    labels.flags.writeable = False
    with pytest.raises(ValueError, match="labels_out is read-only"):
        Segmenter(model, resize="none")(image, labels_out=labels)


def test_uint8_labels_out_for_more_than_256_classes_is_refused(image):
    from segformer.pt import SegformerForSemanticSegmentation

    wide = SegformerForSemanticSegmentation(tiny_config(num_labels=300)).eval()
    with pytest.raises(ValueError, match=r"uint8, which holds class ids up to 255, but the model has 300 classes"):
        Segmenter(wide, resize="none")(image, labels_out=np.zeros((40, 48), np.uint8))
    labels = np.zeros((40, 48), np.uint16)
    result = Segmenter(wide, resize="none")(image, labels_out=labels, keep_confidence=False)
    assert labels.max() == result.label_map.max() and labels.max() > 255 or set(np.unique(labels)) <= set(range(300))


def test_duplicate_class_names_are_ambiguous_in_mask(image):
    import torch

    from segformer.pt import SegformerForSemanticSegmentation

    torch.manual_seed(0)
    named = SegformerForSemanticSegmentation(tiny_config(num_labels=3, id2label={0: "x", 1: "x", 2: "y"})).eval()
    result = Segmenter(named, resize="none")(image)
    with pytest.raises(ValueError, match=r"'x' is ambiguous: classes \[0, 1\]"):
        result.mask("x")
    np.testing.assert_array_equal(result.mask(1), result.label_map == 1)
    np.testing.assert_array_equal(result.mask("y"), result.label_map == 2)


def test_model_switched_to_train_still_runs_in_eval_mode(model, image):
    """Dropout 0.5: in train mode two passes differ; the segmenter must give its eval-mode answer every call and
    give the caller's mode back afterwards."""
    import torch

    segmenter = Segmenter(model, resize="none")
    expected = segmenter(image, return_probabilities=True).probabilities
    model.train()
    try:
        with torch.no_grad():  # the premise: train mode is not deterministic (on a copy: BatchNorm stats move)
            twin = copy.deepcopy(model)
            pixels = torch.from_numpy(segmenter._prepared(image)[None])
            assert not torch.equal(twin(pixels).logits, twin(pixels).logits)
        for _ in range(2):
            np.testing.assert_array_equal(segmenter(image, return_probabilities=True).probabilities, expected)
            assert model.training and model.decode_head.dropout.training
        results = list(segmenter.imap([image, image], workers=2, return_probabilities=True))
        for result in results:
            np.testing.assert_array_equal(result.probabilities, expected)
        assert model.training
    finally:
        model.eval()


# ------------------------------------------------------------------------------------------- windows and memory


def test_slide_stride_1_is_refused_by_window_count(model):
    image = np.zeros((120, 160, 3), np.uint8)
    segmenter = Segmenter(model, mode="slide", crop_size=64, stride=1, resize="none")
    expected = (120 - 64 + 1) * (160 - 64 + 1)
    with pytest.raises(ResourceLimitError, match=rf"would run {expected} windows .*max_windows=4096"):
        segmenter(image)
    from segformer.common.inference.rules import check_window_count

    assert check_window_count([(120, 160)], (64, 64), (1, 1), None) == expected


def test_whole_mode_pass_far_costlier_than_slide_mode_is_refused():
    """b0 on an 8000x8000 image in whole mode (a pass of ~125 TFLOPs, tens of minutes on a CPU) is refused before
    any work, pointing to slide mode; Cityscapes-sized whole passes of b5 are not; ``max_windows=None`` lifts it."""
    from segformer.common.inference.rules import check_work

    b0 = SegformerConfig.from_variant("b0", num_labels=150)
    with pytest.raises(ResourceLimitError, match=r"whole mode would cost about [\d,]+ GFLOPs .*use mode='slide'"):
        check_work(b0, "whole", [(8000, 8000)], (1024, 1024), (768, 768))
    check_work(b0, "whole", [(8000, 8000)], (1024, 1024), (768, 768), max_windows=None)
    b5 = SegformerConfig.from_variant("b5", num_labels=19)
    for size in ((1024, 2048), (2048, 4096)):
        check_work(b5, "whole", [size], (1024, 1024), (768, 768))
    check_work(b0, "whole", [(512, 512)], (1024, 1024), (768, 768))


@pytest.mark.parametrize("options, match", [
    ({"resize": (30000, 30000)}, r"resize=\(30000, 30000\).*a 30000x30000 model input in whole mode"),
    ({"scales": (30.0,), "flip": True}, r"scales=\[30\.0\], flip=True.*a 15360x15360 model input"),
    ({"scales": (30.0,)}, r"scales=\[30\.0\].*a 15360x15360 model input"),
])
def test_segmenter_memory_refused_before_work(model, image, limit_8gb, options, match):
    with pytest.raises(ResourceLimitError, match=match + r".*would need about [\d.]+ GB, more than the 8\.0 GB"):
        Segmenter(model, **options)(image)


def test_imap_yields_a_refused_image_in_its_place(model, image):
    big = np.zeros((120, 160, 3), np.uint8)
    segmenter = Segmenter(model, mode="slide", crop_size=64, stride=1, resize="none")
    results = list(segmenter.imap([image, big, image], workers=0))
    assert isinstance(results[1], ResourceLimitError) and "windows" in str(results[1])
    assert [r.label_map.shape for r in (results[0], results[2])] == [(40, 48), (40, 48)]


def test_processor_size_memory_refused_before_resize(limit_8gb, image):
    from segformer.common.images.image_processing import SegformerImageProcessor

    with pytest.raises(ResourceLimitError, match=r"size=\{'height': 60000, 'width': 60000\}: .* [\d.]+ GB, more than"):
        SegformerImageProcessor(size=60000)(image)
    with pytest.raises(ValueError, match=r"size\['height'\] must be a positive int, got 1000000000\.0"):
        SegformerImageProcessor.from_dict({"size": {"height": 1e9, "width": 1e9}})
    processor = SegformerImageProcessor.from_dict({"size": {"height": 10**9, "width": 10**9}})
    with pytest.raises(ResourceLimitError, match="1000000000x1000000000"):
        processor(image)


def test_post_processing_target_sizes_memory(limit_8gb):
    from segformer.common.images.post_processing import post_process_semantic_segmentation

    logits = np.zeros((1, 150, 4, 4), np.float32)
    with pytest.raises(ResourceLimitError, match=r"target_sizes \(largest 60000x60000\): .* TB, more than the 8\.0 GB"):
        post_process_semantic_segmentation(logits, target_sizes=[(60000, 60000)])
    assert post_process_semantic_segmentation(logits, target_sizes=[(6, 5)])[0].shape == (6, 5)


@pytest.mark.parametrize("overrides, match", [
    ({"hidden_sizes": [16384] * 4, "num_attention_heads": [1] * 4}, r"hidden_sizes=\[16384, 16384, 16384, 16384\]"),
    ({"decoder_hidden_size": 65536, "num_labels": 100000}, r"decoder_hidden_size=65536, num_labels=100000"),
])
def test_huge_models_refused_before_allocation(limit_8gb, overrides, match):
    from segformer.pt import SegformerForSemanticSegmentation

    config = SegformerConfig(**overrides)
    with pytest.raises(ResourceLimitError, match=match + r".*parameters would need about [\d.]+ GB"):
        SegformerForSemanticSegmentation(config)


def test_huge_tf_model_refused_before_allocation(limit_8gb):
    from segformer.tf import TFSegformerForSemanticSegmentation

    with pytest.raises(ResourceLimitError, match=r"TFSegformerForSemanticSegmentation config \(hidden_sizes=\[16384"):
        TFSegformerForSemanticSegmentation(SegformerConfig(hidden_sizes=[16384] * 4, num_attention_heads=[1] * 4))


def test_training_crop_refused_before_the_first_step(limit_8gb):
    from segformer.common.inference.memory import check_training_memory

    config = SegformerConfig.from_variant("b0", num_labels=150)
    assert check_training_memory(config, (512, 512), 8) < 8 * GB
    with pytest.raises(ResourceLimitError, match=r"crop_size=4096x4096 with batch_size=8 \(--crop-size / --batch-size\)"):
        check_training_memory(config, (4096, 4096), 8)


def test_pt_trainer_checks_the_crop(limit_8gb):
    from segformer.common.training.recipe import TrainConfig
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.pt.training import Trainer

    model = SegformerForSemanticSegmentation(SegformerConfig.from_variant("b0", num_labels=150))
    with pytest.raises(ResourceLimitError, match="crop_size=4096x4096"):
        Trainer(model, TrainConfig(crop_size=(4096, 4096), batch_size=8), train_dataset=[])


def test_info_size_refused(limit_8gb, capsys):
    from segformer.cli import main

    assert main(["info", "--size", "100000"]) != 0
    err = capsys.readouterr().err
    assert "error: --size 100000: a 100000x100000 model input" in err and "Traceback" not in err


def test_expanded_torch_storage_is_refused(tmp_path):
    import torch

    from segformer.common.base.errors import CheckpointError
    from segformer.common.checkpoints.torch_io import read_torch_bin

    path = tmp_path / "pytorch_model.bin"
    torch.save({"weight": torch.zeros(1).expand(60000, 60000), "view": torch.arange(10.0)[2:5]}, path)
    assert path.stat().st_size < 4096
    with pytest.raises(CheckpointError, match=r"shape \(60000, 60000\) claims 3,600,000,000 elements .* stores 4 bytes"):
        read_torch_bin(path)
    torch.save({"view": torch.arange(10.0)[2:5], "t": torch.ones(2, 3).t()}, path)
    loaded = read_torch_bin(path)
    np.testing.assert_array_equal(loaded["view"], [2.0, 3.0, 4.0])


# ------------------------------------------------------------------------------------------- configs and files


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e-6, 0.0, "1e-6", None])
def test_layer_norm_eps_that_cannot_be_right(value):
    """A Hugging Face file's layer_norm_eps is replaced by the 1e-5 its models compute with, but only a value that
    could be an epsilon is replaced; before, NaN / inf / negative / strings were silently accepted."""
    with pytest.raises(ValueError, match=r"layer_norm_eps must be a positive number \(finite"):
        SegformerConfig.from_dict({"layer_norm_eps": value})
    with pytest.raises(ValueError, match=r"layer_norm_eps must be a positive number \(finite"):
        SegformerConfig(layer_norm_eps=value)


@pytest.mark.parametrize("data", [
    {"num_labels": 3, "id2label": {"0": "a", "1": "b"}},
    {"num_labels": 2, "id2label": {"0": "a", "1": "b", "2": "c"}},
])
def test_id2label_wins_over_num_labels_with_a_warning_as_transformers(data):
    transformers = pytest.importorskip("transformers")
    reference = transformers.SegformerConfig.from_dict(dict(data))
    with pytest.warns(UserWarning, match=r"does not match id2label.*id2label wins"):
        ours = SegformerConfig.from_dict(dict(data))
    assert ours.num_labels == reference.num_labels == len(data["id2label"])
    assert ours.id2label == reference.id2label
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = SegformerConfig.from_dict(dict(data), num_labels=5)  # an override replaces the names, as there
    reference = transformers.SegformerConfig.from_dict(dict(data), num_labels=5)
    assert again.id2label == reference.id2label
    names = {0: "p", 1: "q", 2: "r", 3: "s"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        renamed = SegformerConfig.from_dict(dict(data), id2label=names)  # new names bring their own count
    assert renamed.id2label == transformers.SegformerConfig.from_dict(dict(data), id2label=names).id2label == names


@pytest.mark.parametrize("settings, match", [
    ({"image_std": 1e-40}, r"image_std=1e-40 .* maps pixel values in \[0, 255\] to 5\.9\de\+39"),
    ({"image_std": [1e-39, 1.0, 1.0]}, "beyond float32's range"),
    ({"rescale_factor": 1e37}, r"rescale_factor=1e\+37 turns pixel values up to 255 into 2\.55e\+39"),
    ({"rescale_factor": 1e36, "image_std": 0.001}, "beyond float32's range"),
    ({"image_std": 1e39}, r"image_std=1e\+39 is beyond float32's range .* would be 0"),
])
def test_processor_settings_that_overflow_are_refused(settings, match, image):
    from segformer.common.images.image_processing import SegformerImageProcessor

    with pytest.raises(ValueError, match=match):
        SegformerImageProcessor(**settings)
    with pytest.raises(ValueError, match=match.split(" ")[0]):
        SegformerImageProcessor().preprocess(image, **settings)


def test_processor_settings_at_the_edge_stay_finite(image):
    """The bound is the arithmetic one: settings just inside it give finite float32 pixel values (numpy oracle)."""
    from segformer.common.images.image_processing import SegformerImageProcessor

    std = 1e-36
    values = SegformerImageProcessor(image_std=std, do_resize=False)(image)["pixel_values"][0]
    scaled = (image.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    expected = ((scaled - mean) / np.float32(std)).transpose(2, 0, 1)
    assert np.isfinite(values).all() and np.abs(values).max() > 1e35
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_sr_ratios_that_do_not_match_the_weights(tmp_path):
    from segformer.pt import SegformerForSemanticSegmentation

    SegformerForSemanticSegmentation(tiny_config()).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    for wrong in ([4, 2, 1, 1], [8, 4, 2, 2]):  # a re-initialized reduction; a reduction without weights
        data["sr_ratios"] = wrong
        (tmp_path / "config.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match=rf"sr_ratios {re.escape(str(wrong))} do not match the weights.*"
                                             r"sr_ratios \[8, 4, 2, 1\]"):
            SegformerForSemanticSegmentation.from_pretrained(tmp_path)


def test_h5_soft_link_is_refused(tmp_path):
    import h5py

    from segformer.common.base.errors import CheckpointError
    from segformer.common.checkpoints import read_tf_h5

    path = tmp_path / "tf_model.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"layer"]
        group = handle.create_group("layer")
        group.attrs["weight_names"] = [b"model/w:0"]
        handle.create_dataset("data", data=np.zeros(3, np.float32))
        group["model/w:0"] = h5py.SoftLink("/data")
    with pytest.raises(CheckpointError, match="soft link; refused, not followed"):
        read_tf_h5(path)


def test_palette_flag_named():
    from segformer.commands.predict import palette_for

    with pytest.raises(ValueError, match=r"--palette: unknown label set 'nope'; valid names: ade20k, cityscapes \(or 'auto'\)"):
        palette_for(150, "nope")


def test_eval_device_bogus_is_one_error_line(capsys, tmp_path):
    from segformer.cli import main

    assert main(["eval", "--model", "b0", "--data", str(tmp_path), "--device", "bogus"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: device='bogus' is not available to PyTorch") and "available: cpu" in err[-1]


def test_tf_device_strings_list_what_tensorflow_sees():
    import tensorflow as tf

    from segformer.tf.backend import check_device

    have = [d.name for d in tf.config.list_logical_devices()]
    assert check_device("/CPU:0") == "/CPU:0" and check_device("cpu") == "cpu" and check_device(None) is None
    for wanted in ("bogus", "/GPU:99", "/TPU:0", 3):
        with pytest.raises(ValueError, match=rf"device={re.escape(repr(wanted))} is not available to TensorFlow.*"
                                             rf"available: {re.escape(', '.join(have))}"):
            check_device(wanted)


@pytest.mark.slow
def test_tf_segmenter_runs_with_training_false(image):
    """The Keras model runs with training=False every call (dropout 0.5 would change the answer otherwise), and
    the Segmenter checks its device through the adapter."""
    from segformer.tf import TFSegformerForSemanticSegmentation

    keras_model = TFSegformerForSemanticSegmentation(tiny_config(hidden_dropout_prob=0.5, classifier_dropout_prob=0.5))
    with pytest.raises(ValueError, match="device='bogus' is not available to TensorFlow"):
        Segmenter(keras_model, device="bogus")
    segmenter = Segmenter(keras_model, resize="none", device="/CPU:0")
    pixels = segmenter._prepared(image)[None]
    trained = [np.asarray(keras_model(pixels, training=True).logits) for _ in range(2)]
    assert np.abs(trained[0] - trained[1]).max() > 1e-3  # the premise: dropout is live in training mode
    first = segmenter(image, return_probabilities=True).probabilities
    # TensorFlow's CPU kernels may differ in the last bit between calls; dropout would differ by far more
    np.testing.assert_allclose(segmenter(image, return_probabilities=True).probabilities, first, rtol=0, atol=1e-6)


def test_predict_tta_scales_30_and_max_windows_are_one_error_line(model, image, tmp_path, limit_8gb, capsys):
    from PIL import Image

    from segformer.cli import main

    model.save_pretrained(tmp_path / "model")
    Image.fromarray(image).save(tmp_path / "a.png")
    common = ["predict", "--model", str(tmp_path / "model"), str(tmp_path / "a.png"), "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "o1"), "--tta", "--scales", "30"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: image ") and "more than the 8.0 GB available" in err[-1]
    stride_one = ["--mode", "slide", "--slide-crop", "16", "--slide-stride", "1", "--eval-size", "none"]
    assert main(common + ["--out", str(tmp_path / "o2"), *stride_one, "--max-windows", "100"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "would run 825 windows" in err[-1] and "max_windows=100" in err[-1]
    assert not (tmp_path / "o2" / "a.png").exists()


@pytest.mark.parametrize("flag", ["do_resize", "do_rescale", "do_normalize", "do_reduce_labels", "do_convert_rgb"])
def test_processor_flags_must_be_booleans(flag):
    """A processor flag given as a string (``"no"`` is truthy to ``bool``) is refused in the constructor and the
    call, naming the flag; numpy booleans are taken."""
    from segformer.common.images.image_processing import SegformerImageProcessor

    with pytest.raises(ValueError, match=f"{flag} must be True or False, got 'no'"):
        SegformerImageProcessor(**{flag: "no"})
    processor = SegformerImageProcessor(**{flag: np.bool_(False)})
    assert getattr(processor, flag) is False
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=f"{flag} must be True or False"):
        processor(image, **{flag: "yes"})
