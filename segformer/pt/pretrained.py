"""``SegformerPreTrainedModel``: config, weight init, loading and saving (PyTorch).

Mirrored by ``segformer/tf/pretrained.py``. The framework-agnostic half (finding files, reading any
format, matching names with the canonical table, writing atomically) is ``segformer.common.pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..common.atomic import atomic_folder, atomic_path
from ..common.checkpoint import PT_WEIGHTS_NAME, LoadReport
from ..common.config import SegformerConfig
from ..common.pretrained import prepare_state, save_pretrained_state
from ..common.weights import parameter_table

__all__ = ["SegformerPreTrainedModel"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


class SegformerPreTrainedModel(nn.Module):
    """Base class: holds the config, initializes weights like Hugging Face, loads and saves checkpoints.

    ``from_pretrained`` accepts a Hugging Face-layout folder (``model.safetensors``, ``pytorch_model.bin``,
    sharded index, or ``tf_model.h5``), a single weights file (with ``config.json`` beside it or
    ``config=``), or a Hub model id (through ``huggingface_hub``, extra ``[hub]``).
    """

    config_class = SegformerConfig
    base_model_prefix = "segformer"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _task: str | None = None  # canonical task of the parameter table; None: not loadable on its own
    _check_finite: bool = False

    def __init__(self, config: SegformerConfig, *args: Any, **kwargs: Any) -> None:
        if not isinstance(config, SegformerConfig):
            raise TypeError(f"config must be a segformer SegformerConfig, got {type(config).__name__}")
        config.validate()
        super().__init__()
        self.config = config

    # ------------------------------------------------------------------------------- init
    def post_init(self) -> None:
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Linear / Conv2d ``normal(0, initializer_range)`` and zero bias; norms weight 1, bias 0 (as HF)."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    # ------------------------------------------------------------------------- switches
    @property
    def use_fast_path(self) -> bool:
        """Eval-mode fast path (fused attention, folded decode head); ``False`` forces the plain path."""
        flags = [m.fast_path_enabled for m in self.modules() if "fast_path_enabled" in m.__dict__]
        return all(flags) if flags else False

    @use_fast_path.setter
    def use_fast_path(self, value: bool) -> None:
        for module in self.modules():
            if "fast_path_enabled" in module.__dict__:
                module.fast_path_enabled = bool(value)

    @property
    def check_finite(self) -> bool:
        """Reject NaN / Inf pixel values with a ValueError (one pass over the input; off by default for speed,
        on in ``segformer predict``)."""
        return self._check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        for module in self.modules():
            if isinstance(module, SegformerPreTrainedModel):
                module._check_finite = bool(value)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each encoder stage in the backward pass (saves activation memory)."""
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    # ------------------------------------------------------------------------ numpy state
    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """Canonical names -> numpy arrays (PyTorch layout, float32 / int64), detached copies."""
        return {k: v.detach().cpu().float().numpy().copy() if v.is_floating_point() else v.detach().cpu().numpy().copy()
                for k, v in self.state_dict().items()}

    def load_state_dict_numpy(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy numpy arrays (canonical names, PyTorch layout) into the model's parameters and buffers."""
        own = self.state_dict()
        unknown = sorted(set(state) - set(own))
        missing = sorted(set(own) - set(state))
        if unknown or (strict and missing):
            raise KeyError(f"load_state_dict_numpy: unknown keys {unknown}, missing keys {missing if strict else []}")
        with torch.no_grad():
            for name, array in state.items():
                target = own[name]
                if tuple(array.shape) != tuple(target.shape):
                    raise ValueError(f"{name}: shape {tuple(array.shape)} does not fit the model's {tuple(target.shape)}")
                target.copy_(torch.as_tensor(np.asarray(array)).to(target.dtype))

    # ------------------------------------------------------------------------ load / save
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: SegformerConfig | None = None,
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        torch_dtype: str | torch.dtype | None = None,
        dtype: str | torch.dtype | None = None,
        use_safetensors: bool | None = None,
        **config_overrides: Any,
    ):
        """Load a checkpoint; ``config_overrides`` (e.g. ``num_labels=19``) change the config first.

        Missing / unexpected / mismatched tensors are listed in a warning and, with
        ``output_loading_info=True``, returned as a :class:`~segformer.common.checkpoint.LoadReport`.
        The model is returned in eval mode, like Hugging Face's.
        """
        if cls._task is None:
            raise TypeError(f"{cls.__name__} cannot be loaded on its own; load a full model class instead")
        prefer = ("torch", "safetensors", "h5") if use_safetensors is False else ("safetensors", "torch", "h5")
        config, tensors, report = prepare_state(
            pretrained_model_name_or_path,
            cls._task,
            config=config,
            prefer=prefer,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            **config_overrides,
        )
        model = cls(config, *model_args)
        model.load_state_dict_numpy(tensors, strict=False)
        wanted = dtype if dtype is not None else torch_dtype
        if wanted is not None and wanted != "auto":
            if isinstance(wanted, str):
                if wanted not in _DTYPES:
                    raise ValueError(f"dtype must be one of {list(_DTYPES)} or a torch.dtype, got {wanted!r}")
                wanted = _DTYPES[wanted]
            model = model.to(wanted)
        model.eval()
        if output_loading_info:
            return model, report
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs: Any) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``), atomically as one folder."""
        if self._task is None:
            raise TypeError(f"{type(self).__name__} cannot be saved on its own; save the full model")
        state = self.state_dict_numpy()
        with atomic_folder(save_directory) as directory:
            if safe_serialization:
                save_pretrained_state(directory, self.config, state, self._task, "pt", type(self).__name__)
            else:
                names = [s.name for s in parameter_table(self.config, self._task)]
                with atomic_path(directory / PT_WEIGHTS_NAME) as tmp:
                    torch.save({n: torch.from_numpy(state[n]) for n in names}, tmp)
                self.config.copy(architectures=[type(self).__name__]).save_pretrained(directory)
        return Path(save_directory)


LoadReport = LoadReport  # re-exported for type hints of output_loading_info
