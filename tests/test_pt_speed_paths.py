"""The PyTorch speed paths give the numbers of the textbook formulations on the CPU.

* the segmentation loss (classes-contiguous cross-entropy) == ``cross_entropy(interpolate(logits))`` of the
  NCHW tensor, value and gradients, float64 and float32, with ignored pixels and non-integer scales;
* the trainer's fused AdamW == the for-loop ``torch.optim.AdamW`` on the same gradients;
* ``compile_for_inference`` (``torch.compile``, inductor) == the eager fast path (slow: it compiles).

Speed itself is never asserted here; the numbers are in benchmarks/README.md and benchmarks/TRAINING.md.
"""

from __future__ import annotations

import copy

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


def test_banded_loss_all_ignored_is_nan_and_bad_heights_are_refused():
    from segformer.pt.losses import banded_upsampled_cross_entropy

    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    assert torch.isnan(banded_upsampled_cross_entropy(logits, torch.full((1, 16, 16), 255), 255))
    assert torch.isnan(_textbook_loss(logits, torch.full((1, 16, 16), 255), 255))
    with pytest.raises(ValueError, match="labels height 15 is not a whole multiple of the logits height 4"):
        banded_upsampled_cross_entropy(logits, torch.zeros(1, 15, 16, dtype=torch.long), 255)
