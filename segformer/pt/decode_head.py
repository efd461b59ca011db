"""The decode heads (PyTorch): the all-MLP head and mmseg's (``config.decode_head_type``). Mirrored by
``segformer/tf/decode_head.py``.

Plain path (``use_fast_path=False``): per stage ``proj`` to D channels, bilinear upsample
to the stage-1 size, concatenate (stage 4, 3, 2, 1), ``linear_fuse`` (1x1, 4D -> D), BatchNorm, ReLU,
dropout, ``classifier``.

Training fast path (``use_fast_path`` on, the default): ``linear_fuse`` alone folded into each stage's
``proj`` (BatchNorm stays live), the concatenation never built; same values and gradients within float
rounding.

Fast path (eval, same numbers within float rounding): ``linear_fuse`` and the eval BatchNorm folded
into each stage's ``proj`` by :func:`segformer.common.model.head_fold.fold_decode_head` (the derivation is
there), run at each stage's own resolution; the 4D-channel concatenation at 1/4 resolution is never built.

mmseg head (``decode_head_type="mmseg"``): per stage ``proj`` (no bias), BatchNorm, ReLU, upsample, concatenate
(stage 1, 2, 3, 4), ``linear_fuse``, BatchNorm, ReLU, channel dropout, ``classifier``. Training runs the plain
path (the per-stage ReLU stops the training fold); the eval fast path folds each stage's BatchNorm into its
``proj`` and the fuse BatchNorm + ``linear_fuse``'s block of each stage into a D x D map run before the
upsampling (:func:`segformer.common.model.head_fold.fold_mmseg_decode_head`).

Changing the head (checklist):

1. the layers and the plain path here and in ``segformer/tf/decode_head.py`` (same names, same order);
2. the fold, once, in ``segformer/common/model/head_fold.py`` (both fast paths call it on their weights);
3. the weight table ``segformer/common/model/weights.py`` (names and shapes both frameworks load);
4. the FLOP count ``segformer/common/model/flops.py`` (plain and fast);
5. the tests: fast path == plain path (``tests/test_pt_model.py``, ``tests/test_tf_fast_path.py``) and
   the fixtures' logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.model.config import SegformerConfig, patch_embed_size
from ..common.model.head_fold import fold_decode_head, fold_mmseg_decode_head
from .pretrained import SegformerPreTrainedModel

__all__ = ["SegformerMLP", "SegformerDecodeHead", "stage_maps", "FAST_HEAD_CHUNK", "fast_head_chunk", "same_bits"]

# The eval fast path produces the fused map at most this many channels at a time: (B, h_1, w_1, 128) float32
# is 8 MB at 512x512, small enough for the allocator to reuse, where a full (B, h_1, w_1, D) buffer (50 MB
# for b2) is mapped and page-faulted anew on every call. Large inputs use fewer channels per chunk, so a
# chunk stays within FAST_HEAD_CHUNK_ELEMENTS floats (32 MB) and the head's working memory does not grow
# with D; traced / exported graphs (input sizes symbolic) use FAST_HEAD_CHUNK.
FAST_HEAD_CHUNK = 128
FAST_HEAD_CHUNK_ELEMENTS = 8 * 1024 * 1024


_SAME_SIZE_INTEGER = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_MEMCMP: list = []  # [the C library's memcmp, or None where it cannot be loaded], filled on first use


def _memcmp():
    if not _MEMCMP:
        try:
            import ctypes

            function = ctypes.CDLL(None).memcmp  # the process's own C library (POSIX)
            function.restype, function.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        except (OSError, TypeError, AttributeError):  # no such symbol table (Windows): torch.equal below
            function = None
        _MEMCMP.append(function)
    return _MEMCMP[0]


def same_bits(kept: list[torch.Tensor], live: list[torch.Tensor]) -> bool:
    """Whether each ``live`` tensor holds exactly the bits of its ``kept`` copy (same dtype, device and shape;
    elements compared bit for bit, so NaN == NaN and -0.0 != 0.0). Contiguous CPU tensors are compared with
    ``memcmp`` (2-3x faster than ``torch.equal`` on the decode head's weights), others with ``torch.equal`` of
    same-width integer views."""
    if len(kept) != len(live):
        return False
    memcmp = _memcmp()
    for a, b in zip(kept, live):
        if a.dtype != b.dtype or a.device != b.device or a.shape != b.shape:
            return False
        if memcmp is not None and a.device.type == "cpu" and a.is_contiguous() and b.is_contiguous():
            if a.numel() and memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) != 0:
                return False
            continue
        as_int = _SAME_SIZE_INTEGER.get(a.element_size()) if a.is_floating_point() else None
        if as_int is not None:
            a, b = a.view(as_int), b.view(as_int)
        if not torch.equal(a, b):
            return False
    return True


def fast_head_chunk(tokens: int) -> int:
    """Channels per chunk of the fast path for ``tokens = h_1 * w_1`` stage-1 positions of one image (8..128).

    Chosen per image, not per batch: the chunks fix the order in which the classifier sums over channels, so
    an image's logits are the same bit for bit alone or batched with others (a batch's buffers are then
    ``B`` times one image's)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return FAST_HEAD_CHUNK
    return int(min(FAST_HEAD_CHUNK, max(8, FAST_HEAD_CHUNK_ELEMENTS // max(int(tokens), 1) // 8 * 8)))


class SegformerMLP(nn.Module):
    """Per-stage projection: map (B, C_i, h, w) -> tokens (B, h*w, D). With ``batch_norm`` (the mmseg head)
    ``proj`` has no bias and a ``batch_norm`` (over the D channels of the stage map) follows it; the head applies
    it (and the ReLU after it)."""

    def __init__(self, input_dim: int, decoder_hidden_size: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, decoder_hidden_size, bias=not batch_norm)
        if batch_norm:
            self.batch_norm = nn.BatchNorm2d(decoder_hidden_size, eps=1e-5, momentum=0.1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden_states.flatten(2).transpose(1, 2))


def stage_maps(config: SegformerConfig, encoder_hidden_states: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Every stage as a (B, C_i, h_i, w_i) map; a token-shaped last stage (``reshape_last_stage=False``)
    is reshaped with the size computed from the previous stage (never from a square root)."""
    maps = list(encoder_hidden_states)
    if maps[-1].ndim == 3:
        _, _, height, width = maps[-2].shape
        k, s = config.patch_sizes[-1], config.strides[-1]
        height, width = patch_embed_size(height, k, s), patch_embed_size(width, k, s)
        batch, _, channels = maps[-1].shape
        maps[-1] = maps[-1].transpose(1, 2).reshape(batch, channels, height, width)
    return maps


class SegformerDecodeHead(SegformerPreTrainedModel):
    """All-MLP decode head. ``forward(encoder_hidden_states)``: the encoder's stage maps
    (B, C_i, h_i, w_i) -> logits (B, num_labels, h_1, w_1) at the stage-1 resolution (H/4 x W/4).

    A pre-trained model like Hugging Face's (``config``, weight init); its weights live under
    ``decode_head.`` in a segmentation checkpoint.
    """

    def __init__(self, config: SegformerConfig) -> None:
        super().__init__(config)
        d = config.decoder_hidden_size
        self.mmseg = config.decode_head_type == "mmseg"
        self.linear_c = nn.ModuleList(SegformerMLP(c, d, batch_norm=self.mmseg) for c in config.hidden_sizes)
        self.linear_fuse = nn.Conv2d(d * config.num_encoder_blocks, d, kernel_size=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(d, eps=1e-5, momentum=0.1)
        self.activation = nn.ReLU()
        # mmseg drops whole channels (Dropout2d); the all-MLP head single values
        self.dropout = (nn.Dropout2d if self.mmseg else nn.Dropout)(config.classifier_dropout_prob)
        self.classifier = nn.Conv2d(d, config.num_labels, kernel_size=1)
        self.fast_path_enabled = True
        self.post_init()

    def forward(self, encoder_hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        maps = stage_maps(self.config, encoder_hidden_states)
        if self.mmseg:
            if self.fast_path_enabled and not self.training:
                return self._logits_fast_mmseg(maps)
            fused = self.activation(self.batch_norm(self._fused_plain(maps)))
            return self.classifier(self.dropout(fused)).contiguous()
        if self.fast_path_enabled and not self.training:
            return self._logits_fast(maps)
        if not self.fast_path_enabled:
            fused = self.batch_norm(self._fused_plain(maps))
            # contiguous NCHW like Hugging Face's (the encoder works in channels-last memory)
            return self.classifier(self.dropout(self.activation(fused))).contiguous()
        fused = self.batch_norm(self._fused_folded(maps))  # (B, D, h_1, w_1), channels-last memory
        # ReLU in place (BatchNorm's backward needs its input, not its output); the 1x1 classifier as one
        # batched GEMM (K, D) @ (D, h_1*w_1) per image, which writes contiguous NCHW logits (like Hugging Face's)
        # directly (a 1x1 Conv2d of channels-last memory runs as "slow_conv2d" here, forward and backward)
        hidden = self.dropout(F.relu(fused, inplace=True))
        batch, d, height, width = hidden.shape
        k = self.classifier.weight.shape[0]
        logits = torch.baddbmm(self.classifier.bias[None, :, None], self.classifier.weight.reshape(k, d).expand(batch, k, d),
                               hidden.reshape(batch, d, height * width))  # (B, K, h_1*w_1)
        return logits.view(batch, k, height, width)

    def _fused_plain(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """``linear_fuse`` of the per-stage projections resized to the stage-1 size (bilinear,
        ``align_corners=False``): concatenated in stage order n..1 (all-MLP head), or, for mmseg's
        ``SegformerHead``, each ``relu(BN(proj(x)))`` concatenated in stage order 1..n."""
        batch = maps[0].shape[0]
        size = maps[0].shape[2:]
        projected = []
        for mlp, hidden in zip(self.linear_c, maps):
            height, width = hidden.shape[2:]
            x = mlp(hidden).transpose(1, 2).reshape(batch, -1, height, width)
            if self.mmseg:
                x = self.activation(mlp.batch_norm(x))
            projected.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return self.linear_fuse(torch.cat(projected if self.mmseg else projected[::-1], dim=1))

    def _fused_folded(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Training fast path: ``linear_fuse(concat(up(proj_i(x_i))))`` with ``linear_fuse`` folded into each
        stage's ``proj`` (:func:`fold_decode_head` without BatchNorm, which stays live), run at each stage's
        own resolution in token layout: the (B, 4D, h_1, w_1) concatenation and its 1x1 conv are never built
        (b0 512x512: decode-head forward 10.4 -> 1.8 GFLOP per image). The same values and gradients as
        :meth:`_fused_plain` within float rounding. Returns (B, D, h_1, w_1) in channels-last memory."""
        d = self.config.decoder_hidden_size
        n = self.config.num_encoder_blocks
        size = maps[0].shape[2:]
        one, zero = torch.ones_like(self.batch_norm.weight), torch.zeros_like(self.batch_norm.weight)
        weights, shift = fold_decode_head(  # identity "BatchNorm" (scale 1, shift 0): only linear_fuse folds
            self.linear_fuse.weight.reshape(d, n * d), [mlp.proj.weight for mlp in self.linear_c],
            [mlp.proj.bias for mlp in self.linear_c], one, zero, zero, one, 0.0,
        )
        tokens = [m.permute(0, 2, 3, 1) for m in maps]  # (B, h_i, w_i, C_i): views of channels-last maps
        fused = F.linear(tokens[0], weights[0], shift)  # (B, h_1, w_1, D)
        for i in range(1, n):
            y = F.linear(tokens[i], weights[i]).permute(0, 3, 1, 2)  # (B, D, h_i, w_i), channels-last memory
            # in place: neither the GEMM's nor the upsampling's backward needs this sum
            fused.add_(F.interpolate(y, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1))
        return fused.permute(0, 3, 1, 2)

    def _fold_sources(self) -> list[torch.Tensor]:
        """Every tensor the eval fold reads, in this order: linear_fuse, BatchNorm (weight, bias, running mean,
        running variance), then each stage's projection (weight, bias; mmseg head: weight and its BatchNorm's
        weight, bias, running mean, running variance)."""
        bn = self.batch_norm
        sources = [self.linear_fuse.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var]
        if self.mmseg:
            return sources + [
                t for mlp in self.linear_c for b in (mlp.batch_norm,)
                for t in (mlp.proj.weight, b.weight, b.bias, b.running_mean, b.running_var)
            ]
        return sources + [t for mlp in self.linear_c for t in (mlp.proj.weight, mlp.proj.bias)]

    def _fold(self, tensors: list[torch.Tensor]) -> tuple:
        """The eval fold of :meth:`_fold_sources`' tensors (in that order) for this head type."""
        d = self.config.decoder_hidden_size
        n = self.config.num_encoder_blocks
        fuse, gamma, beta, mean, var, *stages = tensors
        if self.mmseg:
            per_stage = [stages[i : i + 5] for i in range(0, len(stages), 5)]
            return fold_mmseg_decode_head(fuse.reshape(d, n * d), [s[0] for s in per_stage], [s[1:] for s in per_stage],
                                          (gamma, beta, mean, var), self.batch_norm.eps)
        return fold_decode_head(fuse.reshape(d, n * d), stages[0::2], stages[1::2], gamma, beta, mean, var,
                                self.batch_norm.eps)

    def _folded_eval_weights(self) -> tuple:
        """:meth:`_fold` of the eval weights (BatchNorm's running statistics folded in).

        Without autograd (``torch.no_grad`` / ``torch.inference_mode``) the fold is reused while every tensor it
        reads holds the same bits as when it was computed: the cache keeps a copy of them and compares it with
        the live tensors on every call (dtype, device, shape and each element's bit pattern). The fold is a
        function of exactly these values, so no update can leave it stale, whatever way it is made (fused /
        foreach optimizer kernels, ``.data`` or numpy edits, ``load_state_dict``, ``.to()``, a train-mode
        forward moving the running statistics). The comparison reads the head's weights twice, a small
        fraction of the fold's own cost (``benchmarks/README.md``, "Eval fold cache"). With autograd on, or
        while tracing / compiling, the fold is recomputed so gradients and graphs see it; on an accelerator too
        (there the fold is a few queued kernels, while comparing would wait for the device on every call)."""
        bn = self.batch_norm
        sources = self._fold_sources()
        cacheable = not (torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling())
        cacheable = cacheable and all(t.device.type == "cpu" for t in sources)
        if cacheable:
            cached = self.__dict__.get("_fold_cache")
            if cached is not None and cached[0] == bn.eps and same_bits(cached[1], sources):
                return cached[2]
        # folded from the kept copy itself, so the cache holds the fold of exactly the bits it compares
        tensors = [t.detach().clone() for t in sources] if cacheable else sources
        folded = self._fold(tensors)
        if cacheable:  # nothing written while tracing / compiling (no side effect in exported graphs)
            self.__dict__["_fold_cache"] = (bn.eps, tensors, folded)
        return folded

    def _logits_fast(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Eval-only logits: BatchNorm(linear_fuse(concat)) folded into per-stage maps, ReLU, classifier.

        Token layout throughout: the stage maps are channels-last, so every 1x1 conv is one GEMM on
        (B, h, w, C) memory (``F.linear``, no im2col); all folded biases and the BN shift ride on the
        lowest-resolution stage's GEMM (bilinear weights sum to one, so a constant passes the upsampling
        unchanged, and stage 1's full-resolution GEMM needs no bias pass); the upsampled stages are added in
        place; the fused map is built :func:`fast_head_chunk` channels at a time and each chunk's classifier
        GEMM accumulates into contiguous NCHW logits.
        """
        d = self.config.decoder_hidden_size
        n = self.config.num_encoder_blocks
        size = maps[0].shape[2:]
        weights, shift = self._folded_eval_weights()
        batch, _, height, width = maps[0].shape
        k = self.classifier.weight.shape[0]
        classifier = self.classifier.weight.reshape(k, d)
        tokens = [m.permute(0, 2, 3, 1) for m in maps]  # (B, h_i, w_i, C_i): free views of channels-last maps
        logits = None
        chunk = fast_head_chunk(height * width)  # per image: batching never changes the sums
        for start in range(0, d, chunk):  # output channels in chunks: bounded working memory
            stop = min(start + chunk, d)
            fused = F.linear(tokens[0], weights[0][start:stop], shift[start:stop] if n == 1 else None)  # (B, h_1, w_1, c)
            for i in range(1, n):
                bias = shift[start:stop] if i == n - 1 else None
                y = F.linear(tokens[i], weights[i][start:stop], bias).permute(0, 3, 1, 2)  # (B, c, h_i, w_i)
                # in place on ``fused`` itself (not through a permuted view of it, which ONNX tracing loses)
                fused.add_(F.interpolate(y, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1))
            fused.relu_()  # dropout is the identity in eval
            part = fused.reshape(batch, height * width, stop - start).transpose(1, 2)  # (B, c, h_1*w_1)
            weight = classifier[:, start:stop].expand(batch, k, stop - start)
            if logits is None:  # (K, c) @ (c, h_1*w_1) per image + bias: contiguous (B, K, h_1*w_1)
                logits = torch.baddbmm(self.classifier.bias[None, :, None].expand(batch, k, height * width), weight, part)
            else:
                logits.baddbmm_(weight, part)
        return logits.view(batch, k, height, width)

    def _logits_fast_mmseg(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Eval-only logits of the mmseg head: ``relu(sum_i up(F_i relu(A_i x_i + c_i)) + shift)``, classifier
        (:func:`fold_mmseg_decode_head`; the folded weights cached as for the all-MLP head). Token layout: every
        1x1 conv is one GEMM on channels-last (B, h, w, C) memory; each stage's D x D block runs at the stage's
        own resolution before the upsampling; ``shift`` rides on the lowest-resolution stage (bilinear weights
        sum to one); the n*D-channel concatenation is never built."""
        n = self.config.num_encoder_blocks
        size = maps[0].shape[2:]
        weights, biases, blocks, shift = self._folded_eval_weights()
        batch, _, height, width = maps[0].shape
        fused = None
        for i, hidden in enumerate(maps):
            y = F.relu(F.linear(hidden.permute(0, 2, 3, 1), weights[i], biases[i]))  # (B, h_i, w_i, D)
            y = F.linear(y, blocks[i], shift if i == n - 1 else None)
            if i > 0:
                y = F.interpolate(y.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
            fused = y if fused is None else fused.add_(y)
        fused = fused.relu_()  # dropout is the identity in eval
        d, k = fused.shape[-1], self.classifier.weight.shape[0]
        part = fused.reshape(batch, height * width, d).transpose(1, 2)  # (B, D, h_1*w_1)
        logits = torch.baddbmm(self.classifier.bias[None, :, None].expand(batch, k, height * width),
                               self.classifier.weight.reshape(k, d).expand(batch, k, d), part)
        return logits.view(batch, k, height, width)
