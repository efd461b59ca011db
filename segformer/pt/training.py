"""Fine-tuning and evaluation in PyTorch with the original SegFormer recipe. Mirrored by ``segformer/tf/training.py``.

* Optimizer: ``torch.optim.AdamW`` with one parameter group per ``(lr_mult, decay_mult)`` of the recipe
  (``segformer.common.training``: encoder LayerNorms without weight decay, ``decode_head.*`` at 10x lr),
  the fused implementation on CPU / CUDA (same updates within float rounding).
* Schedule: the lr of every group is set by hand before each optimizer step from
  :func:`segformer.common.training.recipe.lr_at` (mmcv poly + linear warm-up); no ``LRScheduler`` object, so
  resuming needs only the step number.
* Gradient accumulation (``grad_accum`` micro-batches per step; DDP syncs only on the last one),
  optional ``bfloat16`` autocast, optional gradient checkpointing of the encoder stages.
* Checkpoints: ``model + optimizer + step + RNG states`` in one ``torch.save`` file written atomically;
  ``Trainer(..., resume=True)`` continues exactly where it stopped (the data order is a pure function of
  the step, see ``segformer.pt.data``).
* Distributed: under ``torchrun`` the trainer joins the process group, wraps the model in
  ``DistributedDataParallel`` and synchronizes the decode head's BatchNorm (``segformer.pt.distributed``,
  whose names stay importable from here).
* The loop itself (record, progress, evaluation, log and checkpoint cadence, the NaN / Inf policy) is
  :class:`segformer.common.training.loop.TrainLoop`, shared with the TF trainer; this module supplies the step
  (:meth:`Trainer.forward_backward`, :meth:`Trainer.apply_step`, :meth:`Trainer.discard_step`), the training
  state and the label predictor of :func:`evaluate` (banded, sharded over ranks by
  :func:`segformer.common.training.loop.evaluate_dataset`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from ..common.inference.memory import check_training_memory
from ..common.base.allocator import tune_allocator
from ..common.base.atomic import atomic_write_bytes
from ..common.training.metrics import SegmentationMetric
from ..common.base.random_state import host_rng_state, set_host_rng_state
from ..common.training.loop import (
    TrainLoop, check_state_format, damaged_state_error, evaluate_dataset, existing_state_file,
)
from ..common.training.recipe import StopSignals, TrainConfig
from .backend import adapted_threads
from .data import make_train_loader
from .distributed import (
    DistributedContext,
    SyncBatchNorm2d,
    all_reduce_mean,
    cleanup_distributed,
    convert_sync_batchnorm,
    init_distributed,
)

__all__ = [
    "DistributedContext",
    "SyncBatchNorm2d",
    "Trainer",
    "build_model",
    "build_optimizer",
    "build_param_groups",
    "cleanup_distributed",
    "convert_sync_batchnorm",
    "evaluate",
    "init_distributed",
    "load_training_state",
    "save_training_state",
    "set_learning_rate",
]

STATE_NAME = "training_state.pt"


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def build_param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """One ``torch.optim`` group per ``(lr_mult, decay_mult)`` of the recipe, by canonical parameter name.

    Each group carries ``lr`` (its schedule at step 0), ``weight_decay``, and for bookkeeping ``lr_mult``,
    ``decay_mult`` and ``names``. Frozen parameters (``requires_grad=False``) are left out.
    """
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, parameter in _unwrap(model).named_parameters():
        if not parameter.requires_grad:
            continue
        rule = config.rule(name)
        key = (rule.lr_mult, rule.decay_mult)
        if key not in groups:
            groups[key] = {
                "params": [], "names": [], "lr_mult": rule.lr_mult, "decay_mult": rule.decay_mult,
                "lr": config.lr_at(0, rule.lr_mult), "weight_decay": config.weight_decay * rule.decay_mult,
            }
        groups[key]["params"].append(parameter)
        groups[key]["names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    return list(groups.values())


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """``AdamW(betas, eps, weight_decay)`` over :func:`build_param_groups` (decoupled decay, as mmcv/PyTorch).

    The fused implementation (one kernel per parameter instead of a dozen element-wise ops) when every
    parameter is a floating-point tensor on the CPU or a CUDA GPU; the same update within float rounding.
    """
    tune_allocator(training=True)  # this process trains: larger glibc malloc thresholds (common.allocator)
    groups = build_param_groups(model, config)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                             weight_decay=config.weight_decay, fused=fused or None)


def set_learning_rate(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int) -> float:
    """Set every group's lr for optimizer step ``step`` (0-based); returns the base (``lr_mult`` 1) lr."""
    for group in optimizer.param_groups:
        group["lr"] = config.lr_at(step, group.get("lr_mult", 1.0))
    return config.lr_at(step)


# ---------------------------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain values (loadable with ``weights_only=True``)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), **host_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    set_host_rng_state(state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


STATE_FORMAT = "segformer-pt-training-state-2"


def save_training_state(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``{model, optimizer, step, train_config, rng, extra}`` to ``path`` atomically (one file).

    Only tensors and plain containers are stored, so :func:`load_training_state` reads the file with
    ``torch.load(weights_only=True)``: a run folder from someone else cannot run code. ``extra`` must hold
    plain values (numbers, strings, lists, dicts, tensors).
    """
    state = {
        "format": STATE_FORMAT,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": int(step),
        "train_config": config.to_dict(),
        "rng": _rng_state(),
        "extra": dict(extra or {}),
    }
    path = Path(path)
    buffer = io.BytesIO()  # serialized in memory: torch's zip writer meeting a full disk is a bare RuntimeError
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_training_state(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True
) -> dict[str, Any]:
    """Load what :func:`save_training_state` wrote into ``model`` (and ``optimizer``); returns the whole dict.

    The file is read with ``torch.load(weights_only=True)`` (no code from it runs). A damaged file, or one
    that is not a segformer PyTorch training state, is a :class:`~segformer.common.checkpoints.CheckpointError`
    naming it.
    """
    from ..common.checkpoints import check_torch_version, torch_load_error

    path = existing_state_file(path)
    check_torch_version(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip / pickle / truncation errors come in many types
        raise torch_load_error(path, err) from None
    check_state_format(path, state, STATE_FORMAT, "PyTorch",
                       "; states written before weights_only loading cannot be resumed")
    try:
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise TypeError("step")
        _unwrap(model).load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if restore_rng:
            _set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        raise damaged_state_error(path, err, " while restoring model / optimizer / RNG") from None
    return state


# ---------------------------------------------------------------------------------------------- evaluation


def _whole_image_labels(model: Any, pixel_values: Any, size: tuple[int, int]) -> Any:
    from .inference import predict_labels

    return predict_labels(model, pixel_values, output_size=size)


def evaluate(
    model: nn.Module,
    dataset: Any,
    num_labels: int | None = None,
    ignore_index: int = 255,
    context: DistributedContext | None = None,
    predict: Callable[[nn.Module, torch.Tensor, tuple[int, int]], torch.Tensor] | None = None,
    progress: bool = False,
    bf16: bool = False,
) -> SegmentationMetric:
    """Dataset-level confusion matrix of ``model`` on ``dataset`` (TF twin: ``segformer.tf.training.evaluate``):
    :func:`segformer.common.training.loop.evaluate_dataset` over ``predict(model, pixel_values, (H, W)) -> (1, H, W)``
    (default :func:`segformer.pt.inference.predict_labels` at ``(H, W)``, banded, so the full-resolution
    logits are never held; e.g. sliding windows instead), in eval mode without gradients.

    Under a process group every rank evaluates its share and the int64 matrices are summed, so every rank
    returns the metric of the whole dataset.
    """
    context = context or DistributedContext()
    inner = _unwrap(model)
    num_labels = int(num_labels if num_labels is not None else inner.config.num_labels)
    predict = predict or _whole_image_labels
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def labels_of(pixel_values: Any, size: tuple[int, int]) -> Any:
        with torch.no_grad(), autocast:
            pred = predict(inner, torch.from_numpy(pixel_values).to(context.device), size)
        return pred.cpu().numpy() if isinstance(pred, torch.Tensor) else pred

    def sum_counts(counts: Any) -> Any:
        matrix = torch.from_numpy(counts).to(context.device)
        dist.all_reduce(matrix)
        return matrix.cpu().numpy()

    was_training = inner.training
    inner.eval()
    try:
        return evaluate_dataset(labels_of, dataset, num_labels, ignore_index, context.rank, context.world_size,
                                sum_counts if context.distributed else None, progress=progress)
    finally:
        if was_training:
            inner.train()


# ---------------------------------------------------------------------------------------------- trainer


class Trainer(TrainLoop):
    """Fine-tunes a ``SegformerForSemanticSegmentation`` with :class:`~segformer.common.training.recipe.TrainConfig`.

    Args:
        model: the model (its ``config`` gives ``num_labels``); moved to ``context.device``.
        config: hyper-parameters (the original recipe by default).
        train_dataset: items ``pixel_values`` float32 (3, h, w) and ``labels`` int64 (h, w) of one crop
            size (a ``SegmentationFolderDataset`` with a ``TrainTransform`` and a ``seed``).
        eval_dataset: optional, evaluated every ``config.eval_every`` steps and at the end.
        out_dir: where ``train_log.jsonl``, the training state and the final checkpoint go (``None``: nowhere).
        context: from :func:`init_distributed` (default: single process on CPU).
        resume: continue from ``out_dir/last/training_state.pt``.
        progress: show a tqdm bar (main process only).
        echo: print every log record.

    ``train()`` returns the list of per-step records ``{"step", "loss", "lr", "lr_head", ...}``.
    """

    framework = "pt"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_dataset: Any,
        eval_dataset: Any = None,
        out_dir: str | os.PathLike | None = None,
        context: DistributedContext | None = None,
        resume: bool = False,
        progress: bool = True,
        echo: bool = True,
        predict: Callable | None = None,
    ) -> None:
        self.config = config
        self.context = context or DistributedContext()
        check_training_memory(model.config, config.crop_size, config.batch_size, "pt")  # before any step
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.progress = progress
        self.predict = predict
        inner = model.to(self.context.device)
        inner.train()
        if config.gradient_checkpointing:
            inner.gradient_checkpointing_enable()
        if self.context.distributed and config.sync_bn:
            convert_sync_batchnorm(inner)
        self.inner = inner
        self.optimizer = build_optimizer(inner, config)
        self._start(resume, lambda path: load_training_state(path, inner, self.optimizer), STATE_NAME, echo)
        if self.context.distributed:
            device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            self.model: nn.Module = nn.parallel.DistributedDataParallel(inner, device_ids=device_ids)
        else:
            self.model = inner

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    @property
    def world_size(self) -> int:
        return self.context.world_size

    # ------------------------------------------------------------------ pieces
    def _autocast(self) -> Any:
        if self.config.bf16:
            return torch.autocast(self.context.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward_backward(self, micro_batches: tuple[dict[str, Any], ...]) -> tuple[float, bool]:
        """Gradients of one step over ``grad_accum`` micro-batches (DDP syncs on the last one), the BatchNorm
        statistics saved first; ``(mean loss over ranks, finite on every rank)``. The NaN / Inf policy and the
        update are :meth:`~segformer.common.training.loop.TrainLoop.train_step`'s."""
        self._saved_buffers = [(b, b.detach().clone()) for b in self.inner.buffers()]
        total = 0.0
        count = len(micro_batches)
        with adapted_threads():  # fewer threads while other processes hold CPUs (the thread policy)
            for index, batch in enumerate(micro_batches):
                sync = contextlib.nullcontext()
                if self.context.distributed and index < count - 1:
                    sync = self.model.no_sync()
                with sync:
                    with self._autocast():
                        outputs = self.model(
                            pixel_values=batch["pixel_values"].to(self.context.device),
                            labels=batch["labels"].to(self.context.device), return_dict=True,
                        )
                    (outputs.loss / count).backward()
                total += float(outputs.loss.detach())
        grads = [p.grad for p in self.inner.parameters() if p.grad is not None]
        finite = math.isfinite(total)
        if finite and grads:
            finite = bool(torch.stack([g.float().abs().sum() for g in grads]).sum().isfinite())
        if self.context.distributed:
            flag = torch.tensor([0.0 if finite else 1.0], device=self.context.device)
            dist.all_reduce(flag)
            finite = bool(flag.item() == 0.0)
        return all_reduce_mean(total / count, self.context), finite

    def apply_step(self) -> None:
        set_learning_rate(self.optimizer, self.config, self.step)
        with adapted_threads():
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._saved_buffers = []

    def discard_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in self._saved_buffers:
                buffer.copy_(saved)
        self._saved_buffers = []

    def evaluate(self, dataset: Any = None) -> dict[str, Any]:
        metric = evaluate(
            self.inner, dataset if dataset is not None else self.eval_dataset,
            ignore_index=self.config.ignore_index, context=self.context, predict=self.predict,
            progress=self.progress, bf16=self.config.bf16,
        )
        return metric.compute()

    def save_state(self) -> None:
        """Training state to ``out_dir/last/training_state.pt`` (main process; atomic)."""
        if self.out_dir is not None and self.context.is_main:
            save_training_state(self.out_dir / "last" / STATE_NAME, self.inner, self.optimizer, self.step, self.config)
        if self.context.distributed:
            dist.barrier()

    def save_model(self) -> None:
        """The model in the Hugging Face layout (``config.json`` + ``model.safetensors``) in ``out_dir``."""
        if self.out_dir is not None and self.context.is_main:
            self.inner.save_pretrained(self.out_dir)
        if self.context.distributed:
            dist.barrier()

    def micro_batches(self, start: int) -> Any:
        """This rank's micro-batches (:func:`~segformer.pt.data.make_train_loader`)."""
        config = self.config
        return iter(make_train_loader(
            self.train_dataset, config.batch_size, seed=config.seed, rank=self.context.rank,
            world_size=self.context.world_size, start=start, num_workers=config.num_workers,
        ))

    def stop_requested(self, stop: StopSignals) -> bool:
        requested = stop.signal is not None
        if self.context.distributed:  # every rank stops after the same step
            flag = torch.tensor([1.0 if requested else 0.0], device=self.context.device)
            dist.all_reduce(flag)
            requested = bool(flag.item() > 0)
        return requested


def build_model(
    model: str | os.PathLike,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    **config_overrides: Any,
) -> nn.Module:
    """A ``SegformerForSemanticSegmentation`` to fine-tune, in training mode.

    ``model`` is resolved by :func:`segformer.common.checkpoints.model_source.resolve_model_source` (a variant name or a
    ``config.json``: random weights drawn with ``torch.manual_seed(seed)``; or a checkpoint folder / file).
    ``id2label`` (from the dataset) names the classes; ``config_overrides`` change config fields
    (e.g. ``drop_path_rate=0.0``).
    """
    from ..common.checkpoints.model_source import resolve_model_source
    from .modeling import SegformerForSemanticSegmentation

    source = resolve_model_source(model, num_labels, id2label, **config_overrides)
    torch.manual_seed(seed)
    if source.config is not None:
        built = SegformerForSemanticSegmentation(source.config)
    else:
        built = SegformerForSemanticSegmentation.from_pretrained(
            source.checkpoint, ignore_mismatched_sizes=source.ignore_mismatched_sizes, **source.overrides
        )
    built.train()
    return built
