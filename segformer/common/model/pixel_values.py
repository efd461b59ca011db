"""The shape rules of the models' ``pixel_values``, shared by ``segformer.pt.modeling`` and
``segformer.tf.modeling`` (which add the dtype and finiteness checks of their own tensors).

``pixel_values`` has 4 dimensions, ``num_channels`` channels on the channel axis (1 for
``"channels_first"``, NCHW; 3 for ``"channels_last"``, NHWC), no empty dimension, and a height and width
that every stage's sequence-reduction conv accepts (:meth:`SegformerConfig.check_input_size`). Unknown
(``None``) dimensions of a traced shape are skipped.
"""

from __future__ import annotations

from typing import Sequence

from .config import SegformerConfig

__all__ = ["DATA_FORMATS", "check_pixel_shape", "floating_point_message"]

DATA_FORMATS = ("channels_first", "channels_last")


def check_pixel_shape(shape: Sequence[int | None], config: SegformerConfig, data_format: str = "channels_first") -> None:
    """``ValueError`` naming the shape seen when ``shape`` breaks a rule of the module docstring."""
    shape = tuple(shape)
    first = data_format == "channels_first"
    layout = "(batch, channels, height, width)" if first else "(batch, height, width, channels)"
    if len(shape) != 4:
        raise ValueError(f"pixel_values must have 4 dimensions {layout}, got shape {shape}")
    channel_axis = 1 if first else 3
    channels = shape[channel_axis]
    if channels is not None and channels != config.num_channels:
        raise ValueError(
            f"pixel_values has {channels} channels in dimension {channel_axis} but the model expects "
            f"num_channels={config.num_channels} ({data_format} layout {layout}; shape seen {shape})"
        )
    known = [d for d in shape if d is not None]
    if known and min(known) < 1:
        raise ValueError(f"pixel_values must not be empty, got shape {shape}")
    height, width = shape[2:4] if first else shape[1:3]
    if height is not None and width is not None:
        config.check_input_size(int(height), int(width))


def floating_point_message(dtype: str, fix: str) -> str:
    """The error text for integer / boolean ``pixel_values`` (``fix``: the framework's cast)."""
    return f"pixel_values must be floating point (normalized images), got dtype {dtype}; use SegformerImageProcessor or {fix}"
