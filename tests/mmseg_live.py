"""Build mmsegmentation's own SegFormer (``MixVisionTransformer`` + ``SegformerHead``) with random weights.

Needs ``mmsegmentation==1.2.2`` with ``mmcv-lite==2.1.0`` and ``mmengine==0.10.7``. mmcv-lite has no compiled ops
and ``mmseg.utils`` imports ``mmcv.ops`` at import time: a module of placeholders stands in for it (neither the backbone nor
the head uses a compiled op). :func:`mmseg_available` says whether this works here; ``tests/fixtures/mmseg/make_fixture.py``
and the live test use :func:`build_mmseg_segformer`.
"""

from __future__ import annotations

import sys
import types

import numpy as np

# The architecture of the small fixture: non-default depths, widths, decoder width and class count.
ARCH = {
    "embed_dims": 8,
    "num_stages": 4,
    "num_layers": [1, 2, 1, 1],
    "num_heads": [1, 2, 4, 8],  # stage widths embed_dims * heads: 8, 16, 32, 64 (no published variant)
    "patch_sizes": [7, 3, 3, 3],
    "sr_ratios": [8, 4, 2, 1],
    "mlp_ratio": 4,
    "channels": 24,
    "num_classes": 5,
}
CLASSES = ("background", "road", "sky", "car", "person")
PALETTE = [[0, 0, 0], [128, 64, 128], [70, 130, 180], [0, 0, 142], [220, 20, 60]]
INPUT_SIZE = (67, 93)  # odd: every stage's size is rounded


def mmseg_available() -> bool:
    try:
        _import_mmseg()
    except Exception:  # not installed, or an incompatible mmcv / mmengine
        return False
    return True


def _import_mmseg():
    if "mmcv.ops" not in sys.modules:
        stub = types.ModuleType("mmcv.ops")
        # any compiled op: a placeholder class, never called here (dunder look-ups stay errors)
        stub.__getattr__ = lambda name: (_ for _ in ()).throw(AttributeError(name)) if name.startswith("__") else type(name, (), {})
        sys.modules["mmcv.ops"] = stub
    from mmseg.models.backbones.mit import MixVisionTransformer
    from mmseg.models.decode_heads.segformer_head import SegformerHead

    return MixVisionTransformer, SegformerHead


def build_mmseg_segformer(seed: int = 0, arch: dict = ARCH):
    """``(backbone, head)`` in eval mode, every parameter and BatchNorm statistic randomized (seeded)."""
    import torch

    MixVisionTransformer, SegformerHead = _import_mmseg()
    torch.manual_seed(seed)
    widths = [arch["embed_dims"] * h for h in arch["num_heads"]]
    backbone = MixVisionTransformer(
        in_channels=3, embed_dims=arch["embed_dims"], num_stages=arch["num_stages"], num_layers=arch["num_layers"],
        num_heads=arch["num_heads"], patch_sizes=arch["patch_sizes"], sr_ratios=arch["sr_ratios"],
        mlp_ratio=arch["mlp_ratio"], out_indices=(0, 1, 2, 3), drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
    )
    head = SegformerHead(in_channels=widths, in_index=[0, 1, 2, 3], channels=arch["channels"], dropout_ratio=0.1,
                         num_classes=arch["num_classes"], norm_cfg=dict(type="BN", requires_grad=True), align_corners=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (backbone, head):
            for name, tensor in module.state_dict().items():
                if name.endswith("num_batches_tracked"):
                    tensor.fill_(7)
                elif name.endswith("running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * (0.3 if tensor.ndim > 1 else 0.5)
                                 + (1.0 if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")) else 0.0))
    return backbone.eval(), head.eval()


def mmseg_logits(backbone, head, pixel_values: np.ndarray) -> np.ndarray:
    """mmseg's own decode-head logits (B, K, H/4, W/4) for NCHW float32 ``pixel_values``."""
    import torch

    with torch.no_grad():
        return head(backbone(torch.from_numpy(pixel_values))).numpy()


def state_dict_1x(backbone, head) -> dict:
    """The ``state_dict`` of mmseg's ``EncoderDecoder``: ``backbone.*`` and ``decode_head.*``."""
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"decode_head.{k}": v for k, v in head.state_dict().items()})
    return state


def config_text(arch: dict = ARCH) -> str:
    """A shortened mmseg config text as checkpoints' meta stores it (what the converter reads heads from)."""
    return (
        "norm_cfg = dict(type='SyncBN', requires_grad=True)\n"
        "model = dict(\n    type='EncoderDecoder',\n    backbone=dict(\n        type='MixVisionTransformer',\n"
        f"        in_channels=3,\n        embed_dims={arch['embed_dims']},\n        num_stages=4,\n"
        f"        num_layers={arch['num_layers']},\n        num_heads={arch['num_heads']},\n"
        f"        patch_sizes={arch['patch_sizes']},\n        sr_ratios={arch['sr_ratios']},\n"
        "        out_indices=(0, 1, 2, 3),\n        mlp_ratio=4),\n    decode_head=dict(\n"
        f"        type='SegformerHead',\n        in_channels={[arch['embed_dims'] * h for h in arch['num_heads']]},\n"
        f"        channels={arch['channels']},\n        num_classes={arch['num_classes']}))\n"
    )
