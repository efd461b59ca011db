"""``SegformerPreTrainedModel``: config, weight init, loading and saving (PyTorch).

Mirrored by ``segformer/tf/pretrained.py``. The framework-agnostic half (finding files, reading any
format, matching names with the canonical table, writing atomically) is ``segformer.common.checkpoints.pretrained``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..common.base.allocator import tune_allocator
from ..common.base.atomic import atomic_folder, atomic_path, atomic_write_bytes
from ..common.model.switches import fast_path_enabled, set_fast_path
from ..common.checkpoints import LoadReport
from ..common.model.config import SegformerConfig
from ..common.model.hub import pop_save_kwargs, push_folder_to_hub, push_to_hub_with
from ..common.checkpoints.pretrained import (
    check_switch,
    prepare_state,
    replaced_by_save,
    save_pretrained_state,
    split_from_pretrained_kwargs,
    state_dict_to_numpy,
    weights_dtype,
    weights_preference,
)
from ..common.model.weights import check_model_memory, check_state_keys

__all__ = ["SegformerPreTrainedModel"]



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
        if self._task is not None:
            check_model_memory(config, self._task, type(self).__name__)  # refused before any weight is allocated
        tune_allocator()  # glibc malloc thresholds, once per process (segformer.common.base.allocator)
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
        return fast_path_enabled(self.modules())

    @use_fast_path.setter
    def use_fast_path(self, value: bool) -> None:
        set_fast_path(self.modules(), value)

    @property
    def check_finite(self) -> bool:
        """Reject NaN / Inf pixel values with a ValueError (one pass over the input; off by default for speed,
        on in ``segformer predict``)."""
        return self._check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        value = check_switch("check_finite", value)
        for module in self.modules():
            if isinstance(module, SegformerPreTrainedModel):
                module._check_finite = value

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each encoder stage in the backward pass (saves activation memory).

        ``gradient_checkpointing_kwargs`` go to ``torch.utils.checkpoint.checkpoint`` (transformers' ``Trainer``
        passes them); ``use_reentrant`` defaults to ``False`` here. With ``use_reentrant=True`` the first stage's input
        is made to require grad (as transformers' ``enable_input_require_grads``), so every weight, the patch
        embeddings included, gets the same gradient as without checkpointing.
        """
        if gradient_checkpointing_kwargs is not None and not isinstance(gradient_checkpointing_kwargs, dict):
            raise TypeError(
                f"gradient_checkpointing_kwargs must be a dict or None, got {type(gradient_checkpointing_kwargs).__name__}"
            )
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True
                module.gradient_checkpointing_kwargs = dict(gradient_checkpointing_kwargs or {})

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether gradient checkpointing is on (as transformers' property)."""
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    framework = "pt"

    @classmethod
    def can_generate(cls) -> bool:
        """``False``: no text generation (transformers' ``generate`` API)."""
        return False

    def enable_input_require_grads(self) -> None:
        """Make the first patch embedding's output require grad (transformers' recipe for reentrant gradient
        checkpointing with frozen weights, as PEFT uses it); undone by :meth:`disable_input_require_grads`."""
        self.disable_input_require_grads()

        def make_output_require_grad(module: nn.Module, inputs: Any, output: Any) -> None:
            output[0].requires_grad_(True)

        first = self.base_model.encoder.patch_embeddings[0]
        self._require_grads_hook = first.register_forward_hook(make_output_require_grad)

    def disable_input_require_grads(self) -> None:
        hook = self.__dict__.pop("_require_grads_hook", None)
        if hook is not None:
            hook.remove()

    @property
    def base_model(self) -> nn.Module:
        """The ``segformer`` encoder model of a task model; the model itself for ``SegformerModel``."""
        return getattr(self, self.base_model_prefix, self)

    def get_memory_footprint(self, return_buffers: bool = True) -> int:
        """Bytes held by the parameters (and buffers: BatchNorm statistics), as transformers computes it."""
        total = sum(p.nelement() * p.element_size() for p in self.parameters())
        if return_buffers:
            total += sum(b.nelement() * b.element_size() for b in self.buffers())
        return total

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
        check_state_keys(state, own, strict)
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
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args: Any,
        config: SegformerConfig | str | os.PathLike | None = None,
        state_dict: dict[str, Any] | None = None,
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        dtype: Any = None,
        torch_dtype: Any = None,
        use_safetensors: bool | None = None,
        from_tf: bool = False,
        **kwargs: Any,
    ):
        """Load a checkpoint, with transformers' keywords (the same as ``TFSegformerPreTrainedModel.from_pretrained``).

        ``kwargs``: the download options (``revision``, ``token``, ``cache_dir``, ``local_files_only``,
        ``force_download``, ``proxies``, ``subfolder``), which only steer where files come from and are never
        stored, and config fields to change first (e.g. ``num_labels=19``). Any other keyword is a
        ``TypeError`` naming it. ``state_dict`` (canonical names; torch tensors or numpy arrays) replaces the
        weights file: ``from_pretrained(None, config=config, state_dict=sd)``. Which file is read:
        :func:`segformer.common.checkpoints.pretrained.weights_preference` (``use_safetensors=True`` reads only
        safetensors, ``False`` never; ``from_tf=True`` reads ``tf_model.h5``). ``dtype`` (or ``torch_dtype``):
        ``"float32"``, ``"float16"``, ``"bfloat16"``, ``"float64"`` (or the torch dtype), or ``"auto"`` (the
        dtype ``config.json`` records): the weights are cast to it; the config is not changed.

        Missing / unexpected / mismatched tensors are listed in a warning and, with
        ``output_loading_info=True``, returned as a :class:`~segformer.common.checkpoints.LoadReport`.
        The model is returned in eval mode, like Hugging Face's.
        """
        if cls._task is None:
            raise TypeError(f"{cls.__name__} cannot be loaded on its own; load a full model class instead")
        if torch.empty(0).device.type == "meta":  # under `with torch.device("meta")` / set_default_device("meta")
            raise RuntimeError(  # transformers' words, which its tests match
                "You are using `from_pretrained` with a meta device context manager or "
                "`torch.set_default_device('meta')`.\nThis is an anti-pattern as `from_pretrained` wants to load existing "
                "weights, which a meta tensor cannot hold.\nIf you want to initialize an empty model on the meta device, "
                "build it with `ModelClass(config)` under the context manager or global device"
            )
        prefer = weights_preference("pt", use_safetensors, from_tf)
        weights_dtype(dtype, torch_dtype)  # a bad dtype fails before anything is read
        hub, config_overrides = split_from_pretrained_kwargs(cls.__name__, kwargs)
        if isinstance(config, (str, os.PathLike)):
            config = SegformerConfig.from_pretrained(config, **hub)
        numpy_state = None if state_dict is None else state_dict_to_numpy(state_dict)
        config, tensors, report = prepare_state(
            pretrained_model_name_or_path,
            cls._task,
            config=config,
            prefer=prefer,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            hub=hub,
            state_dict=numpy_state,
            **config_overrides,
        )
        model = cls(config, *model_args)
        model.load_state_dict_numpy(tensors, strict=False)
        wanted = weights_dtype(dtype, torch_dtype, config)
        if wanted is not None:
            model = model.to(getattr(torch, wanted))
        model.eval()
        if output_loading_info:
            return model, report
        return model

    @classmethod
    def from_preset(cls, preset: str, **kwargs: Any):
        """keras-hub's spelling of :meth:`from_pretrained`: a preset name (``"segformer_b0_ade20k_512"``,
        ``"b0-ade"``; ``segformer presets`` lists them), a Hub id or a folder; keywords as ``from_pretrained``."""
        return cls.from_pretrained(preset, **kwargs)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        state_dict: dict[str, Any] | None = None,
        save_function: Callable[[Any, Any], None] | None = None,
        push_to_hub: bool = False,
        max_shard_size: int | str = "5GB",
        safe_serialization: bool = True,
        **kwargs: Any,
    ) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin`` through ``save_function``, by
        default ``torch.save``), atomically as one folder, with transformers' keywords.

        ``state_dict``: saved instead of the model's own (the accelerate / FSDP pattern; canonical names; torch
        tensors or numpy arrays). Weights are written as float32 whatever the model's dtype, and ``config.json``
        records ``"dtype": "float32"``.
        ``max_shard_size`` (``"5GB"``, ``"200MB"``, bytes): larger weights are sharded with a Hugging Face index.
        ``is_main_process=False`` writes the weights but no ``config.json``. ``push_to_hub=True`` then uploads
        the folder through ``huggingface_hub`` to ``repo_id`` (default: the folder's name); ``token``,
        ``commit_message``, ``commit_description``, ``private``, ``create_pr`` and ``revision`` go to the upload.
        Any other keyword is a ``TypeError`` naming it.
        """
        if self._task is None:
            raise TypeError(f"{type(self).__name__} cannot be saved on its own; save the full model")
        repo_id, upload = pop_save_kwargs(
            type(self).__name__, kwargs,
            "is_main_process, state_dict, save_function, push_to_hub, max_shard_size, safe_serialization",
        )
        state = self.state_dict_numpy() if state_dict is None else state_dict_to_numpy(state_dict)

        def save_torch(tensors: dict[str, np.ndarray], path: Path) -> None:  # atomically, as every writer
            state = {n: torch.from_numpy(a) for n, a in tensors.items()}
            if save_function is not None:
                with atomic_path(path) as tmp:
                    save_function(state, tmp)
                return
            buffer = io.BytesIO()  # in memory first: torch's zip writer meeting a full disk is a bare RuntimeError
            torch.save(state, buffer)
            atomic_write_bytes(path, buffer.getvalue())

        weights_format = "safetensors" if safe_serialization else "torch"
        with atomic_folder(save_directory, discard=replaced_by_save(weights_format, is_main_process)) as folder:  # old or new, never a mix
            save_pretrained_state(
                folder, self.config, state, self._task, "pt", type(self).__name__,
                weights_format=weights_format,
                max_shard_size=max_shard_size, write_config=is_main_process, save_torch=save_torch,
            )
        directory = Path(save_directory)
        if push_to_hub:
            push_folder_to_hub(directory, repo_id or Path(save_directory).resolve().name, **upload)
        return directory

    def push_to_hub(self, repo_id: str, safe_serialization: bool = True, max_shard_size: int | str = "5GB", **kwargs: Any) -> Any:
        """Save into a temporary folder and upload it to the Hub repo ``repo_id`` through ``huggingface_hub``
        (``token``, ``commit_message``, ``commit_description``, ``private``, ``create_pr``, ``revision``)."""
        return push_to_hub_with(
            lambda folder: self.save_pretrained(folder, safe_serialization=safe_serialization, max_shard_size=max_shard_size),
            repo_id, **kwargs,
        )


LoadReport = LoadReport  # re-exported for type hints of output_loading_info
