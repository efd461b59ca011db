"""PyTorch model family against the Hugging Face fixtures and independent numpy computations."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import fixture_path, shared_or_skip  # noqa: E402
from randomize import random_state, tiny_config  # noqa: E402
from segformer import SegformerConfig  # noqa: E402
from segformer.common.checkpoints import CheckpointError  # noqa: E402
from segformer.pt import (  # noqa: E402
    SegformerDecodeHead,
    SegformerForImageClassification,
    SegformerForSemanticSegmentation,
    SegformerModel,
)

CLASSES = {
    "tiny-seg": SegformerForSemanticSegmentation,
    "small-seg": SegformerForSemanticSegmentation,
    "tiny-seg-binary": SegformerForSemanticSegmentation,
    "tiny-cls": SegformerForImageClassification,
    "tiny-base": SegformerModel,
}
TOL = 1e-5


def _compare_with_expected(model, expected, inputs, use_fast_path):
    """max |diff| per output for every input of an expected.npz, as {name: diff}."""
    model.use_fast_path = use_fast_path
    diffs = {}
    for inp in inputs:
        if f"{inp}_pixel_values" not in expected.files:
            continue
        pixel_values = torch.from_numpy(expected[f"{inp}_pixel_values"])
        kwargs = {}
        if f"{inp}_labels" in expected.files:
            kwargs["labels"] = torch.from_numpy(expected[f"{inp}_labels"])
        with torch.no_grad():
            out = model(pixel_values, output_hidden_states=True, output_attentions=not use_fast_path, **kwargs)
        for key in expected.files:
            if not key.startswith(f"{inp}_pt_"):
                continue
            what = key[len(inp) + 4 :]
            if what.startswith("attentions_"):
                if use_fast_path:
                    continue
                got = out.attentions[int(what.rsplit("_", 1)[1])]
            elif what.startswith("hidden_states_"):
                got = out.hidden_states[int(what.rsplit("_", 1)[1])]
            else:
                got = getattr(out, what)
            assert tuple(got.shape) == expected[key].shape, key
            diffs[f"{inp}_{what}"] = float(np.abs(got.numpy() - expected[key]).max())
    return diffs


@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("use_fast_path", [True, False])
def test_hf_fixtures_reproduce_reference_outputs(name, weights, use_fast_path):
    folder = fixture_path(f"hf/{name}")
    model = CLASSES[name].from_pretrained(folder / weights)
    assert not model.training
    expected = np.load(folder / "expected.npz")
    diffs = _compare_with_expected(model, expected, ["a", "b"], use_fast_path)
    print(name, weights, "fast" if use_fast_path else "plain", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert diffs and max(diffs.values()) <= TOL, diffs


def test_b0_ade_random_on_the_cats_image():
    folder = shared_or_skip("hf/b0-ade-random")
    model = SegformerForSemanticSegmentation.from_pretrained(folder)
    expected = np.load(folder / "expected.npz")
    for fast in (True, False):
        diffs = _compare_with_expected(model, expected, ["cats"], fast)
        print("b0-ade-random", fast, {k: f"{v:.2e}" for k, v in diffs.items()})
        assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (65, 71), (33, 29)])
def test_shapes_at_every_stage(size):
    config = tiny_config(num_labels=4)
    model = SegformerForSemanticSegmentation(config).eval()
    height, width = size
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width), output_hidden_states=True, output_attentions=True)
    stages = config.stage_sizes(height, width)
    assert stages[0] == (-(-height // 4), -(-width // 4))  # ceil(H/4): no padding to 32 needed
    assert tuple(out.logits.shape) == (2, 4, *stages[0])
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, c, *s) for c, s in zip(config.hidden_sizes, stages)]
    assert len(out.attentions) == sum(config.depths)
    for i, (attn, (h, w)) in enumerate(zip(out.attentions, stages)):
        r = config.sr_ratios[i]
        kv = (h // r) * (w // r) if r > 1 else h * w
        assert tuple(attn.shape) == (2, config.num_attention_heads[i], h * w, kv)
    base = SegformerModel(config).eval()
    assert tuple(base(torch.randn(1, 3, height, width)).last_hidden_state.shape) == (1, 16, *stages[-1])


def test_return_dict_false_tuples_and_key_access():
    config = tiny_config()
    model = SegformerForSemanticSegmentation(config).eval()
    x, labels = torch.randn(1, 3, 64, 64), torch.randint(0, 3, (1, 64, 64))
    out = model(x, labels=labels, output_hidden_states=True, output_attentions=True)
    tup = model(x, labels=labels, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert len(tup) == 4 and torch.equal(tup[1], out.logits) and torch.equal(out["logits"], out.logits)
    assert torch.equal(out[0], out.loss) and list(out.keys()) == ["loss", "logits", "hidden_states", "attentions"]
    assert len(model(x, return_dict=False)) == 1
    base = SegformerModel(config).eval()
    assert len(base(x, return_dict=False)) == 1 and len(base(x, output_hidden_states=True, return_dict=False)) == 2


def _numpy_bilinear(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Independent half-pixel bilinear (align_corners=False) resize of (B, C, h, w) to size."""
    _, _, h, w = logits.shape
    out_h, out_w = size

    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = src - lo
        return lo, hi, frac

    ylo, yhi, fy = axis(h, out_h)
    xlo, xhi, fx = axis(w, out_w)
    top = logits[:, :, ylo][:, :, :, xlo] * (1 - fx) + logits[:, :, ylo][:, :, :, xhi] * fx
    bottom = logits[:, :, yhi][:, :, :, xlo] * (1 - fx) + logits[:, :, yhi][:, :, :, xhi] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def test_segmentation_loss_ignores_255_and_averages_over_valid_pixels():
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(tiny_config(num_labels=4)).eval()
    x = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, 4, (2, 100, 150))  # any label size: logits are upsampled to it
    labels[:, :40] = 255
    out = model(x, labels=labels)
    logits = _numpy_bilinear(out.logits.detach().double().numpy(), (100, 150))
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    lab = labels.numpy()
    valid = lab != 255
    picked = np.take_along_axis(log_probs, np.where(valid, lab, 0)[:, None], axis=1)[:, 0]
    expected = -(picked * valid).sum() / valid.sum()
    assert abs(out.loss.item() - expected) < 1e-5


def test_binary_segmentation_loss_averages_over_all_pixels():
    model = SegformerForSemanticSegmentation(tiny_config(num_labels=1)).eval()
    x = torch.randn(1, 3, 64, 64)
    labels = torch.randint(0, 2, (1, 64, 64))
    labels[:, :10] = 255
    out = model(x, labels=labels)
    z = _numpy_bilinear(out.logits.detach().double().numpy(), (64, 64))[:, 0]
    y = labels.numpy().astype(np.float64)
    bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    expected = (bce * (y != 255)).mean()
    assert abs(out.loss.item() - expected) < 1e-5


def test_classification_losses_by_problem_type():
    x = torch.randn(3, 3, 64, 64)
    model = SegformerForImageClassification(tiny_config(num_labels=4)).eval()
    labels = torch.tensor([0, 3, 1])
    out = model(x, labels=labels)
    z = out.logits.detach().double().numpy()
    ce = -(z[np.arange(3), labels.numpy()] - np.log(np.exp(z).sum(1))).mean()
    assert abs(out.loss.item() - ce) < 1e-5
    multi = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]])
    out = model(x, labels=multi)
    y = multi.numpy()
    expected = (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).mean()
    assert abs(out.loss.item() - expected) < 1e-5
    reg = SegformerForImageClassification(tiny_config(num_labels=1)).eval()
    target = torch.tensor([0.5, -1.0, 2.0])
    out = reg(x, labels=target)
    assert abs(out.loss.item() - ((out.logits.detach().numpy()[:, 0] - target.numpy()) ** 2).mean()) < 1e-5


def test_bad_labels_raise_clear_errors():
    model = SegformerForSemanticSegmentation(tiny_config(num_labels=3)).eval()
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"labels contain values \[3, 7\] outside \[0, 3\) that are not the ignore index 255"):
        model(x, labels=torch.tensor([3, 7, 0, 255]).repeat(2, 16, 16))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        model(x, labels=torch.zeros(2, 64, 64))
    with pytest.raises(ValueError, match="labels batch size 1 does not match pixel_values batch size 2"):
        model(x, labels=torch.zeros(1, 64, 64, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must have shape \(batch, height, width\)"):
        model(x, labels=torch.zeros(2, 1, 64, 64, dtype=torch.long))
    with pytest.raises(TypeError, match="pixel_values must be floating point"):
        model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expects num_channels=3"):
        model(torch.zeros(2, 64, 64, 3))
    with pytest.raises(ValueError, match=r"size 33x17 is too small: stage 1 is 9x5.*at least 29"):
        model(torch.zeros(2, 3, 33, 17))
    nan = torch.zeros(2, 3, 64, 64)
    nan[0, 0, 0, 0] = float("nan")
    assert model(nan).logits.shape[0] == 2  # off by default (speed)
    model.check_finite = True
    with pytest.raises(ValueError, match="pixel_values contain NaN or Inf"):
        model(nan)
    with pytest.raises(ValueError, match="must have 4 dimensions"):
        model(torch.zeros(3, 64, 64))


def test_backward_reaches_every_parameter():
    config = tiny_config(num_labels=3, drop_path_rate=0.1, hidden_dropout_prob=0.1, classifier_dropout_prob=0.1)
    model = SegformerForSemanticSegmentation(config).train()
    out = model(torch.randn(2, 3, 64, 64), labels=torch.randint(0, 3, (2, 64, 64)))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert model.decode_head.batch_norm.num_batches_tracked.item() == 1


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config(num_labels=3)
    model = SegformerForSemanticSegmentation(config).train()
    x, labels = torch.randn(1, 3, 64, 64), torch.randint(0, 3, (1, 64, 64))
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.gradient_checkpointing_enable() if enable else model.gradient_checkpointing_disable()
        model(x, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_dropout_and_drop_path_only_in_training():
    config = tiny_config(drop_path_rate=0.5, hidden_dropout_prob=0.3)
    model = SegformerForSemanticSegmentation(config)
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    model.train()
    torch.manual_seed(1)
    a = model(x).logits
    torch.manual_seed(2)
    assert not torch.equal(a, model(x).logits)


def _load_random(cls, config, task, seed=0):
    model = cls(config).eval()
    model.load_state_dict_numpy(random_state(config, task, seed))
    return model


@pytest.mark.parametrize("variant", ["b0", "b1", pytest.param("b2", marks=pytest.mark.slow),
                                     pytest.param("b3", marks=pytest.mark.slow), pytest.param("b4", marks=pytest.mark.slow),
                                     pytest.param("b5", marks=pytest.mark.slow)])
def test_fast_path_equals_plain_path(variant):
    config = SegformerConfig.from_variant(variant, num_labels=19)
    model = _load_random(SegformerForSemanticSegmentation, config, "seg")
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        model.use_fast_path = True
        fast = model(x).logits
        model.use_fast_path = False
        plain = model(x).logits
    diff = float((fast - plain).abs().max())
    print(variant, "fast vs plain max|diff|", diff)
    assert diff <= 1e-4


def test_fast_path_channel_chunks_with_remainder_and_batch():
    """The fast head builds the fused map FAST_HEAD_CHUNK channels at a time: a decoder width that is not a
    multiple of it (300 = 2 x 128 + 44) and a batch of 2 give the plain path's logits."""
    from segformer.pt.decode_head import FAST_HEAD_CHUNK

    config = tiny_config(num_labels=7, decoder_hidden_size=300)
    assert config.decoder_hidden_size % FAST_HEAD_CHUNK != 0 and config.decoder_hidden_size > 2 * FAST_HEAD_CHUNK
    model = _load_random(SegformerForSemanticSegmentation, config, "seg", seed=5)
    x = torch.randn(2, 3, 75, 53)
    with torch.no_grad():
        fast = model(x).logits
        model.use_fast_path = False
        plain = model(x).logits
    assert fast.shape == plain.shape == (2, 7, 19, 14) and fast.is_contiguous()
    assert float((fast - plain).abs().max()) <= 1e-5


def test_reshape_last_stage_false_works():
    config = tiny_config(num_labels=3)
    state = random_state(config, "seg")
    flat = SegformerConfig.from_dict({**config.to_dict(), "reshape_last_stage": False})
    a = SegformerForSemanticSegmentation(config).eval()
    b = SegformerForSemanticSegmentation(flat).eval()
    a.load_state_dict_numpy(state)
    b.load_state_dict_numpy(state)
    x = torch.randn(2, 3, 65, 97)  # non-square, odd: no square-root guessing
    with torch.no_grad():
        assert torch.equal(a(x).logits, b(x).logits)
        assert tuple(b.segformer(x).last_hidden_state.shape) == (2, 3 * 4, 16)  # (B, N, C)
    cls_state = random_state(config, "cls")
    ca, cb = SegformerForImageClassification(config).eval(), SegformerForImageClassification(flat).eval()
    ca.load_state_dict_numpy(cls_state)
    cb.load_state_dict_numpy(cls_state)
    assert torch.allclose(ca(x).logits, cb(x).logits, atol=1e-6)


@pytest.mark.parametrize("safe", [True, False])
def test_save_load_round_trip_is_bit_exact(tmp_path, safe):
    config = tiny_config(num_labels=5)
    model = _load_random(SegformerForSemanticSegmentation, config, "seg", seed=3)
    model.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["SegformerForSemanticSegmentation"]
    again, report = SegformerForSemanticSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert report.ok
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert not list(tmp_path.glob("*.tmp"))


def test_base_and_task_prefixes_and_new_heads(tmp_path):
    folder = fixture_path("hf/tiny-base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg, report = SegformerForSemanticSegmentation.from_pretrained(folder, output_loading_info=True, num_labels=19)
    assert report.added_prefix == "segformer."
    assert all(k.startswith("decode_head.") for k in report.missing_keys) and report.missing_keys
    base = SegformerModel.from_pretrained(folder)
    assert all(torch.equal(base.state_dict()[k], seg.segformer.state_dict()[k]) for k in base.state_dict())
    with pytest.warns(UserWarning, match="unexpected"):
        enc, report = SegformerModel.from_pretrained(fixture_path("hf/tiny-seg"), output_loading_info=True)
    assert report.removed_prefix == "segformer." and "decode_head.classifier.weight" in report.unexpected_keys
    with pytest.raises(ValueError, match="ignore_mismatched_sizes=True"):
        SegformerForSemanticSegmentation.from_pretrained(fixture_path("hf/tiny-seg"), num_labels=19)
    with pytest.warns(UserWarning, match="mismatched"):
        new, report = SegformerForSemanticSegmentation.from_pretrained(
            fixture_path("hf/tiny-seg"), num_labels=19, ignore_mismatched_sizes=True, output_loading_info=True
        )
    assert [k for k, _, _ in report.mismatched_keys] == ["decode_head.classifier.weight", "decode_head.classifier.bias"]
    assert new.config.num_labels == 19 and new.decode_head.classifier.weight.shape[0] == 19


def test_tf_h5_file_loads_into_pytorch():
    folder = fixture_path("hf/small-seg")
    model = SegformerForSemanticSegmentation.from_pretrained(folder / "tf_model.h5")
    expected = np.load(folder / "expected.npz")
    diffs = _compare_with_expected(model, expected, ["a"], True)
    assert max(diffs.values()) <= TOL


class _Evil:
    def __reduce__(self):
        return (print, ("code from a checkpoint ran",))


def test_pickles_that_need_code_are_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    with open(path, "wb") as handle:
        pickle.dump({"encoder.x": _Evil()}, handle, protocol=2)
    (tmp_path / "config.json").write_text(tiny_config().to_json_string())
    with pytest.raises(CheckpointError, match="refused to load"):
        SegformerModel.from_pretrained(tmp_path)


def test_hub_id_resolves_through_the_local_cache(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    source = fixture_path("hf/tiny-seg")
    snapshot = tmp_path / "hub" / "models--nvidia--segformer-tiny" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((source / name).read_bytes())
    refs = tmp_path / "hub" / "models--nvidia--segformer-tiny" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import importlib

    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)
    try:
        model = SegformerForSemanticSegmentation.from_pretrained("nvidia/segformer-tiny")
        assert model.config.num_labels == 3
        with pytest.raises(FileNotFoundError, match="offline mode"):
            SegformerForSemanticSegmentation.from_pretrained("nvidia/not-in-cache")
    finally:
        monkeypatch.undo()
        importlib.reload(huggingface_hub.constants)


def test_hub_id_without_huggingface_hub_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"needs huggingface_hub .*pip install huggingface_hub"):
        SegformerForSemanticSegmentation.from_pretrained("nvidia/segformer-b0-finetuned-ade-512-512")


def test_decode_head_alone_matches_hf_signature():
    config = tiny_config()
    head = SegformerDecodeHead(config).eval()
    maps = [torch.randn(1, c, 16 // (2**i), 16 // (2**i)) for i, c in enumerate(config.hidden_sizes)]
    assert tuple(head(maps).shape) == (1, 3, 16, 16)


def test_fast_head_chunks_are_chosen_per_image_not_per_batch(monkeypatch):
    """The channels per chunk fix the order of the classifier's sums over channels; they come from one image's
    size, so batching equal-sized images (predict, Segmenter) does not change that order (with the batch's
    size b0 logits of 768x1024 photos differed between batch 2 and batch 1)."""
    import torch

    from segformer.pt import SegformerForSemanticSegmentation, decode_head

    config = tiny_config(decoder_hidden_size=32)
    model = SegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "seg", 3))
    model.eval()
    asked = []
    chosen = decode_head.fast_head_chunk
    monkeypatch.setattr(decode_head, "fast_head_chunk", lambda tokens: asked.append(tokens) or chosen(tokens))
    with torch.inference_mode():
        for batch in (1, 3):
            model(torch.randn(batch, 3, 64, 96))
    assert asked == [16 * 24, 16 * 24]  # stage-1 positions of one image, whatever the batch
    assert chosen(16 * 24) == 128 and chosen(256 * 256) == 128 and chosen(512 * 512) == 32
