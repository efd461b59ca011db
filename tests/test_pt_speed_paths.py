"""The PyTorch speed paths give the numbers of the textbook formulations on the CPU.

* the segmentation loss (classes-contiguous cross-entropy) == ``cross_entropy(interpolate(logits))`` of the
  NCHW tensor, value and gradients, float64 and float32, with ignored pixels and non-integer scales;
* the trainer's fused AdamW == the for-loop ``torch.optim.AdamW`` on the same gradients;
* ``compile_for_inference`` (``torch.compile``, inductor) == the eager fast path (slow: it compiles);
* the eval fast path's folded head never goes stale: after optimizer steps (fused / foreach / for-loop AdamW
  and SGD), ``.data`` / numpy / ``no_grad`` / ``copy_`` edits, ``load_state_dict``, BatchNorm statistics
  changes, ``requires_grad_`` and dtype moves it equals the textbook path (``use_fast_path=False``);
* the Mix-FFN's one-operator depthwise conv + GELU runs exactly where it applies (eval, no autograd, float32
  CPU, not traced) and equals the textbook path, also after encoder weight edits and optimizer steps.

Speed itself is never asserted here; the numbers are in benchmarks/README.md and benchmarks/TRAINING.md.
"""

from __future__ import annotations

import copy
import platform

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from randomize import random_state, tiny_config  # noqa: E402
from segformer.common.training.recipe import TrainConfig  # noqa: E402
from segformer.pt import SegformerForSemanticSegmentation  # noqa: E402
from segformer.pt.losses import upsampled_cross_entropy  # noqa: E402
from segformer.pt.training import build_optimizer, build_param_groups  # noqa: E402


def _textbook_loss(logits, labels, ignore_index):
    upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(upsampled, labels.long(), ignore_index=ignore_index)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(2, 5, 13, 17, 50, 67), (1, 3, 8, 8, 8, 8), (2, 7, 16, 16, 64, 64)])
def test_loss_equals_cross_entropy_of_the_upsampled_nchw_logits(dtype, shape):
    batch, k, h, w, out_h, out_w = shape
    generator = torch.Generator().manual_seed(sum(shape))
    logits = (3 * torch.randn(batch, k, h, w, generator=generator, dtype=dtype)).requires_grad_()
    labels = torch.randint(0, k, (batch, out_h, out_w), generator=generator)
    labels[:, :3] = 255  # ignored rows
    expected = _textbook_loss(logits, labels, 255)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    got = upsampled_cross_entropy(logits, labels, 255)
    (got_grad,) = torch.autograd.grad(got, logits)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    loss_diff = abs(float(got) - float(expected))
    grad_diff = float((got_grad - expected_grad).abs().max() / expected_grad.abs().max())
    assert loss_diff <= tol * max(1.0, abs(float(expected))), f"loss max |diff| {loss_diff:.2e}"
    assert grad_diff <= tol, f"relative gradient max |diff| {grad_diff:.2e}"


def test_model_gradients_with_the_new_loss_equal_the_textbook_loss():
    """Training gradients of every parameter (tiny config, randomized weights, plain path) are unchanged."""
    config = tiny_config(num_labels=4)
    model = SegformerForSemanticSegmentation(config).double().train()
    model.load_state_dict({k: torch.from_numpy(v).double() if v.dtype != np.int64 else torch.from_numpy(v)
                           for k, v in random_state(config, "semantic_segmentation").items()}, strict=False)
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(2, 3, 45, 61, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 45, 61), generator=generator)
    labels[0, :5] = 255
    params = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad(model(pixel_values=pixels, labels=labels).loss, params)
    logits = model(pixel_values=pixels).logits
    # the loss is computed in float32 whatever the model's precision (as before, and as transformers)
    reference = torch.autograd.grad(_textbook_loss(logits.float(), labels, 255), params)
    # relative to the largest gradient (linear_c.*.proj.bias has a true gradient of zero: BatchNorm follows)
    scale = max(float(b.abs().max()) for b in reference)
    worst = max(float((a - b).abs().max()) for a, b in zip(ours, reference)) / scale
    assert worst <= 1e-6, f"parameter gradients, max |diff| / max |gradient| {worst:.2e}"


def test_fused_adamw_equals_the_for_loop_adamw():
    config = tiny_config()
    model = SegformerForSemanticSegmentation(config).train()
    twin = copy.deepcopy(model)
    recipe = TrainConfig(lr=1e-3, warmup_steps=0)
    fused = build_optimizer(model, recipe)
    assert fused.defaults["fused"] is True
    plain = torch.optim.AdamW(build_param_groups(twin, recipe), lr=recipe.lr, betas=recipe.betas, eps=recipe.eps,
                              weight_decay=recipe.weight_decay, foreach=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # identical random gradients, so only the update rule is compared
        grads = [torch.randn(p.shape, generator=generator) for p in model.parameters()]
        for net, optimizer in ((model, fused), (twin, plain)):
            for parameter, grad in zip(net.parameters(), grads):
                parameter.grad = grad.clone()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    worst = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(model.parameters(), twin.parameters()))
    assert worst <= 1e-6, f"parameters after 20 steps, relative max |diff| {worst:.2e}"


def test_compile_for_inference_rejects_bad_arguments():
    from segformer.pt.inference import compile_for_inference

    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        compile_for_inference("b0")
    model = SegformerForSemanticSegmentation(tiny_config())
    with pytest.raises(TypeError, match="freezing must be a bool, got int"):
        compile_for_inference(model, freezing=1)
    with pytest.raises(TypeError, match="dynamic must be None or a bool, got str"):
        compile_for_inference(model, dynamic="yes")


@pytest.mark.slow
def test_compiled_fast_path_equals_the_eager_fast_path():
    from segformer.pt.inference import compile_for_inference

    config = tiny_config(num_labels=5)
    model = SegformerForSemanticSegmentation(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, "semantic_segmentation").items()},
                          strict=False)
    pixels = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        eager = model(pixels).logits
        plain = copy.deepcopy(model)
        plain.use_fast_path = False
        textbook = plain(pixels).logits
        compiled = compile_for_inference(copy.deepcopy(model))(pixels).logits
    assert compiled.shape == eager.shape == (1, 5, 16, 24)
    assert float((compiled - eager).abs().max()) <= 1e-5, "compiled vs eager fast path"
    assert float((compiled - textbook).abs().max()) <= 1e-4, "compiled fast path vs plain path"


def test_training_fast_head_equals_the_plain_head_values_and_gradients():
    """Training with ``use_fast_path`` (linear_fuse folded into the projections) == the textbook head
    (concatenation + 1x1 conv): logits, loss and every parameter gradient (float64, randomized weights)."""
    config = tiny_config(num_labels=4)
    model = SegformerForSemanticSegmentation(config).double().train()
    model.load_state_dict({k: torch.from_numpy(v).double() if v.dtype != np.int64 else torch.from_numpy(v)
                           for k, v in random_state(config, "semantic_segmentation", seed=3).items()}, strict=False)
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 3, 45, 61, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 45, 61), generator=generator)
    params = [p for p in model.parameters() if p.requires_grad]
    results = {}
    for fast in (True, False):
        model.use_fast_path = fast
        out = model(pixel_values=pixels, labels=labels)
        results[fast] = (out.logits.detach(), out.loss.detach(), torch.autograd.grad(out.loss, params))
    (fast_logits, fast_loss, fast_grads), (plain_logits, plain_loss, plain_grads) = results[True], results[False]
    assert fast_logits.shape == plain_logits.shape == (2, 4, 12, 16)
    assert float((fast_logits - plain_logits).abs().max()) <= 1e-12, "training logits fast vs plain"
    assert abs(float(fast_loss - plain_loss)) <= 1e-12, "loss fast vs plain"
    scale = max(float(g.abs().max()) for g in plain_grads)
    worst = max(float((a - b).abs().max()) for a, b in zip(fast_grads, plain_grads)) / scale
    assert worst <= 1e-10, f"parameter gradients fast vs plain, max |diff| / max |gradient| {worst:.2e}"


def test_eval_fold_is_reused_only_while_the_weights_are_unchanged():
    """The eval fast head keeps its folded weights between no-grad calls; changing any weight it reads (a
    state dict load, an in-place edit of BatchNorm's statistics, ``.double()``) gives the new model's logits
    (== the plain path), and with autograd on the fold is rebuilt so every head parameter gets a gradient."""
    config = tiny_config(num_labels=3)
    model = SegformerForSemanticSegmentation(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, "semantic_segmentation", seed=4).items()},
                          strict=False)
    pixels = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))

    def check(label):
        with torch.inference_mode():
            fast = model(pixels.to(next(model.parameters()).dtype)).logits
            model.use_fast_path = False
            plain = model(pixels.to(fast.dtype)).logits
            model.use_fast_path = True
        assert float((fast - plain).abs().max()) <= 1e-4, label
        return fast

    first = check("first call")
    again = check("second call (cached fold)")
    assert torch.equal(first, again)
    assert model.decode_head.__dict__["_fold_cache"] is not None  # the fold was kept
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, "semantic_segmentation", seed=5).items()},
                          strict=False)
    reloaded = check("after load_state_dict")
    assert float((reloaded - first).abs().max()) > 1e-3
    with torch.no_grad():
        model.decode_head.batch_norm.running_mean.add_(0.5)
    shifted = check("after an in-place BatchNorm edit")
    assert float((shifted - reloaded).abs().max()) > 1e-3
    model.double()
    assert check("after .double()").dtype == torch.float64
    model.float()
    logits = model(pixels).logits  # eval, autograd on
    grads = torch.autograd.grad(logits.square().sum(), [model.decode_head.linear_fuse.weight,
                                                         model.decode_head.linear_c[0].proj.weight])
    assert all(float(g.abs().max()) > 0 for g in grads)


@pytest.mark.parametrize("band_elements", [1, 3000, 10**9])
@pytest.mark.parametrize("shape", [(2, 5, 13, 17, 52, 67), (1, 4, 5, 6, 5, 9), (2, 6, 7, 9, 28, 36)])
def test_banded_loss_equals_the_full_upsampled_cross_entropy(shape, band_elements):
    """The banded loss (one image and a few logit rows at a time, integer height factor, any width ratio) ==
    ``cross_entropy(interpolate(logits))`` of the whole tensor: value and gradient (float64), with ignored
    pixels, bands of one row (``band_elements=1``) up to one band per image; without autograd too."""
    from segformer.pt.losses import banded_upsampled_cross_entropy

    batch, k, h, w, out_h, out_w = shape
    generator = torch.Generator().manual_seed(sum(shape) + band_elements % 97)
    logits = (3 * torch.randn(batch, k, h, w, generator=generator, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, k, (batch, out_h, out_w), generator=generator)
    labels[:, 1:4, 2:] = 255
    labels[-1, -2:] = 255
    expected = _textbook_loss(logits, labels, 255)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    got = banded_upsampled_cross_entropy(logits, labels, 255, band_elements)
    (grad,) = torch.autograd.grad(got, logits)
    assert abs(float(got.detach() - expected.detach())) <= 1e-12
    assert float((grad - expected_grad).abs().max()) <= 1e-14 + 1e-12 * float(expected_grad.abs().max())
    with torch.no_grad():
        assert abs(float(banded_upsampled_cross_entropy(logits, labels, 255, band_elements) - expected)) <= 1e-12


def test_loss_all_ignored_is_zero_with_zero_gradient_and_bad_heights_are_refused():
    """Every pixel ignored: 0 and a zero gradient on both paths (torch's mean-reduced cross_entropy gives NaN)."""
    from segformer.pt.losses import banded_upsampled_cross_entropy, upsampled_cross_entropy

    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    ignored = torch.full((1, 16, 16), 255)
    assert torch.isnan(_textbook_loss(logits, ignored, 255))
    for loss in (banded_upsampled_cross_entropy(logits, ignored, 255), upsampled_cross_entropy(logits, ignored[:, :15], 255)):
        (grad,) = torch.autograd.grad(loss, logits)
        assert float(loss) == 0.0 and float(grad.abs().max()) == 0.0
    with pytest.raises(ValueError, match="labels height 15 is not a whole multiple of the logits height 4"):
        banded_upsampled_cross_entropy(logits, torch.zeros(1, 15, 16, dtype=torch.long), 255)


# ---------------------------------------------------------------------------- the eval fold never goes stale
def _eval_model(seed: int = 6):
    config = tiny_config(num_labels=3)
    model = SegformerForSemanticSegmentation(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, "semantic_segmentation", seed=seed).items()},
                          strict=False)
    return model


_PIXELS = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(7))


def _fast_and_textbook(model, pixels=_PIXELS):
    """(fast path logits, textbook path logits) of the same model, eval, without autograd."""
    model.eval()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        fast = model(pixels.to(dtype)).logits
        model.use_fast_path = False
        try:
            plain = model(pixels.to(dtype)).logits
        finally:
            model.use_fast_path = True
    return fast, plain


def _assert_fast_equals_textbook(model, before, label, tol=1e-5):
    """The fast path == the textbook path after an update, and the update did change the logits (so a fold of
    the weights before it would be caught)."""
    fast, plain = _fast_and_textbook(model)
    worst = float((fast.double() - plain.double()).abs().max())
    assert worst <= tol, f"{label}: fast vs textbook path, max |diff| {worst:.2e}"
    assert float((plain.double() - before.double()).abs().max()) > 1e-3, f"{label}: the update changed nothing"


def _one_training_step(model, optimizer_factory):
    model.train()
    optimizer = optimizer_factory(model.parameters())
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, (2, 40, 56), generator=generator)
    model(pixel_values=_PIXELS, labels=labels).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize("name, factory", [
    ("AdamW fused", lambda p: torch.optim.AdamW(p, fused=True)),
    ("AdamW foreach, default lr", lambda p: torch.optim.AdamW(p, foreach=True)),
    ("AdamW foreach", lambda p: torch.optim.AdamW(p, lr=1e-2, foreach=True)),
    ("AdamW for-loop", lambda p: torch.optim.AdamW(p, lr=1e-2, foreach=False)),
    ("SGD fused", lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, fused=True)),
    ("SGD foreach", lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, foreach=True)),
])
def test_eval_fast_path_after_one_optimizer_step_equals_the_textbook_path(name, factory):
    """One training step (the BatchNorm running statistics move too) between two eval calls: the second eval
    call sees the new weights. Fused / foreach kernels update parameters without bumping their version."""
    model = _eval_model()
    before, _ = _fast_and_textbook(model)
    _one_training_step(model, factory)
    _assert_fast_equals_textbook(model, before, name)


def _edit_data(model):  # ``.data`` has a version counter of its own: in-place edits through it are invisible
    for p in model.decode_head.parameters():
        p.data.mul_(1.5)


def _edit_numpy(model):  # a numpy view of the same memory
    for p in model.decode_head.parameters():
        view = p.detach().numpy()
        view *= 1.5


def _edit_no_grad(model):
    with torch.no_grad():
        for p in model.decode_head.parameters():
            p.mul_(1.5)


def _edit_data_copy(model):
    generator = torch.Generator().manual_seed(9)
    for p in model.decode_head.parameters():
        p.data.copy_(torch.randn(p.shape, generator=generator) * 0.2)


def _edit_copy(model):
    generator = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in model.decode_head.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)


def _edit_load_state_dict(model):
    model.load_state_dict({k: torch.from_numpy(v) for k, v in
                           random_state(model.config, "semantic_segmentation", seed=11).items()}, strict=False)


def _edit_load_state_dict_assign(model):
    model.load_state_dict({k: torch.from_numpy(v) for k, v in
                           random_state(model.config, "semantic_segmentation", seed=11).items()}, strict=False, assign=True)


def _edit_bn_stats(model):  # buffers edited in place through ``.data``, then replaced outright
    bn = model.decode_head.batch_norm
    bn.running_mean.data.add_(0.5)
    bn.running_var.data.mul_(2.0)


def _edit_bn_stats_train_forward(model):  # a train-mode forward moves the running statistics
    model.train()
    with torch.no_grad():
        model(pixel_values=_PIXELS * 3 + 1)
    model.eval()


def _edit_requires_grad(model):  # frozen head, then an update through ``.data`` (how frozen layers get edited)
    model.decode_head.requires_grad_(False)
    _edit_data(model)
    model.decode_head.requires_grad_(True)


@pytest.mark.parametrize("edit", [_edit_data, _edit_numpy, _edit_no_grad, _edit_data_copy, _edit_copy,
                                  _edit_load_state_dict, _edit_load_state_dict_assign, _edit_bn_stats,
                                  _edit_bn_stats_train_forward, _edit_requires_grad],
                         ids=lambda f: f.__name__[len("_edit_"):])
def test_eval_fast_path_after_a_weight_edit_equals_the_textbook_path(edit):
    model = _eval_model()
    before, _ = _fast_and_textbook(model)
    _fast_and_textbook(model)  # a second cached call
    edit(model)
    _assert_fast_equals_textbook(model, before, edit.__name__)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_eval_fast_path_after_a_dtype_move_equals_the_textbook_path(dtype):
    """``.to(dtype)`` and back to float32, each followed by an eval call and then a ``.data`` edit: every call
    sees the weights it runs with (float64 to 1e-10, float32 to 1e-5, the 16-bit types to 2 % of the logits)."""
    model = _eval_model()
    previous, _ = _fast_and_textbook(model)
    for step, target in enumerate([dtype, dtype, torch.float32, torch.float32]):
        model.to(target)
        if step % 2:
            generator = torch.Generator().manual_seed(20 + step)
            for p in model.decode_head.parameters():
                p.data.copy_(torch.randn(p.shape, generator=generator) * 0.3)
        fast, plain = _fast_and_textbook(model)
        assert fast.dtype == plain.dtype == target
        fast, plain = fast.double(), plain.double()
        tol = {torch.float64: 1e-10, torch.float32: 1e-5}.get(target, 0.02 * float(plain.abs().max()))
        worst = float((fast - plain).abs().max())
        assert worst <= tol, f"step {step} ({target}): fast vs textbook path, max |diff| {worst:.2e}"
        if step % 2:
            assert float((plain - previous.double()).abs().max()) > 10 * tol, f"step {step}: the edit changed nothing"
        previous = plain


def test_eval_fold_is_computed_once_while_the_weights_hold_the_same_bits(monkeypatch):
    """The cache is used (one fold for repeated no-grad calls), and a change of one element of any tensor the
    fold reads, made where no version counter sees it, is caught: each such edit costs exactly one new fold."""
    import segformer.pt.decode_head as decode_head

    calls = []
    real = decode_head.fold_decode_head
    monkeypatch.setattr(decode_head, "fold_decode_head", lambda *a: calls.append(1) or real(*a))
    model = _eval_model()
    for _ in range(3):
        _fast_and_textbook(model)
    assert len(calls) == 1
    for i, tensor in enumerate(model.decode_head._fold_sources()):
        flat = tensor.detach().numpy().reshape(-1)  # shared memory, no version bump
        flat[i % flat.size] += 0.25
        fast, plain = _fast_and_textbook(model)
        assert len(calls) == 2 + i, f"source {i} edited: the fold was not recomputed"
        assert float((fast - plain).abs().max()) <= 1e-5, f"source {i} edited"


def test_same_bits_compares_every_bit():
    from segformer.pt.decode_head import same_bits

    a = torch.tensor([1.0, float("nan"), 0.0, -2.5])
    assert same_bits([a], [a.clone()])  # NaN == NaN bit for bit
    negative_zero = a.clone()
    negative_zero[2] = -0.0
    assert not same_bits([a], [negative_zero])
    one_ulp = a.clone()
    one_ulp[3] = torch.nextafter(one_ulp[3], torch.tensor(0.0))
    assert not same_bits([a], [one_ulp])
    assert not same_bits([a], [a.double()])  # dtype
    assert not same_bits([a], [a.reshape(2, 2)])  # shape
    assert not same_bits([a], [a, a])  # count
    grid = torch.arange(12.0).reshape(3, 4)
    assert same_bits([grid.t().contiguous()], [grid.t()])  # non-contiguous: compared element by element
    edited = grid.clone()
    edited[1, 2] = 99.0
    assert not same_bits([grid.t().contiguous()], [edited.t()])
    assert same_bits([torch.zeros(0)], [torch.zeros(0)])


def _mix_ffns(model):
    from segformer.pt.layers import SegformerMixFFN
    return [module for module in model.modules() if isinstance(module, SegformerMixFFN)]


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels):
        return self.model(pixels).logits


def test_fused_conv_gelu_runs_where_it_applies_and_equals_the_textbook_path(monkeypatch):
    """The Mix-FFN's one-operator depthwise conv + GELU (oneDNN post-op): taken by every block in an eval
    no-grad float32 CPU call (counted, so a silent fallback fails), not taken with autograd on, in float64,
    with oneDNN turned off, while tracing, or with the fast path off; every one of those calls equals the
    textbook path."""
    import segformer.pt.layers as layers

    fused_here = layers._has_fused_conv_gelu()
    if platform.machine().lower() in ("x86_64", "amd64"):  # every x86-64 CPU build of torch ships oneDNN with it
        assert fused_here
    decisions = []
    real = layers.fused_conv_gelu_applies
    monkeypatch.setattr(layers, "fused_conv_gelu_applies", lambda x: decisions.append(real(x)) or decisions[-1])
    model = _eval_model()
    blocks = len(_mix_ffns(model))
    assert blocks > 1 and all(ffn.exact_gelu for ffn in _mix_ffns(model))

    fast, plain = _fast_and_textbook(model)  # no_grad, float32
    assert decisions == [fused_here] * blocks  # the textbook call asks nothing
    assert float((fast - plain).abs().max()) <= 1e-5

    def taken(run):
        decisions.clear()
        out = run()
        return out, decisions[:]

    with torch.no_grad():
        reference = model(_PIXELS).logits
    out, seen = taken(lambda: model(_PIXELS).logits.detach())  # autograd on (eval-mode gradients, e.g. saliency)
    assert seen == [False] * blocks and float((out - reference).abs().max()) <= 1e-5
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        out, seen = taken(lambda: model(_PIXELS).logits)
    assert seen == [False] * blocks and float((out - reference).abs().max()) <= 1e-5
    with torch.no_grad():
        traced = torch.jit.trace(_Logits(model), (_PIXELS,), check_trace=False)
        assert not any("mkldnn::_convolution_pointwise" in str(node) for node in traced.graph.nodes())
        assert float((traced(_PIXELS) - reference).abs().max()) <= 1e-5
        model_64 = copy.deepcopy(model).double()
        out, seen = taken(lambda: model_64(_PIXELS.double()).logits)
    assert seen == [False] * blocks and float((out - reference.double()).abs().max()) <= 1e-5


def test_fused_conv_gelu_reads_the_encoder_weights_at_every_call():
    """Nothing is cached: an in-place ``.data`` edit of every depthwise conv (no version bump) and an optimizer
    step on the encoder are seen by the next fused call."""
    model = _eval_model()
    before, _ = _fast_and_textbook(model)
    for ffn in _mix_ffns(model):
        ffn.dwconv.dwconv.weight.data.mul_(1.7)
        ffn.dwconv.dwconv.bias.data.add_(0.3)
    _assert_fast_equals_textbook(model, before, "dwconv .data edit")
    edited, _ = _fast_and_textbook(model)
    _one_training_step(model, lambda p: torch.optim.AdamW(p, lr=1e-2, fused=True))
    _assert_fast_equals_textbook(model, edited, "fused AdamW step")
