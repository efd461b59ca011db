"""The source formats ``segformer convert`` accepts, one example each: the list ``segformer convert --help`` and
``segformer info`` print (the README's "Converting checkpoints" table shows the same rows)."""

from __future__ import annotations

__all__ = ["SOURCE_FORMATS", "format_list"]

# (what the source is, one example command); the kind is detected from the content, never from the name
SOURCE_FORMATS: tuple[tuple[str, str], ...] = (
    ("Hugging Face folder (config.json + model.safetensors / pytorch_model.bin / sharded index / tf_model.h5)",
     "segformer convert segformer-b0-ade/ b0-tf --to tf"),
    ("one weights file of such a folder, its config.json beside it",
     "segformer convert segformer-b0-ade/model.safetensors b0-tf --to tf"),
    ("our Keras archive (.keras)", "segformer convert model.keras b0-pt --to pt"),
    ("original NVlabs SegFormer .pth (backbone.patch_embed1.*, decode_head.linear_c1.*)",
     "segformer convert segformer.b0.512x512.ade.160k.pth b0-pt --to pt"),
    ("original ImageNet encoder mit_b*.pth (patch_embed1.*, head.*)", "segformer convert mit_b0.pth mit-b0 --to pt"),
    ("mmsegmentation 1.x / 0.x checkpoint, mit.py keys (backbone.layers.*, decode_head.convs.*, module. prefixes)",
     "segformer convert segformer_mit-b0_8xb2-160k_ade20k-512x512.pth b0-mmseg --to tf"),
)


def format_list(indent: str = "  ") -> str:
    """:data:`SOURCE_FORMATS` as text: each format on a line, its example on the next."""
    return "\n".join(f"{indent}{what}\n{indent}    e.g. {example}" for what, example in SOURCE_FORMATS)
