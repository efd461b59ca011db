"""Fine-tuning and evaluation in PyTorch with the original SegFormer recipe. Mirrored by ``segformer/tf/training.py``.

* Optimizer: ``torch.optim.AdamW`` with one parameter group per ``(lr_mult, decay_mult)`` of the recipe
  (``segformer.common.training``: encoder LayerNorms without weight decay, ``decode_head.*`` at 10x lr).
* Schedule: the lr of every group is set by hand before each optimizer step from
  :func:`segformer.common.training.lr_at` (mmcv poly + linear warm-up); no ``LRScheduler`` object, so
  resuming needs only the step number.
* Gradient accumulation (``grad_accum`` micro-batches per step; DDP syncs only on the last one),
  optional ``bfloat16`` autocast, optional gradient checkpointing of the encoder stages.
* Checkpoints: ``model + optimizer + step + RNG states`` in one ``torch.save`` file written atomically;
  ``Trainer(..., resume=True)`` continues exactly where it stopped (the data order is a pure function of
  the step, see ``segformer.pt.data``).
* Distributed: under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set) the trainer joins the
  process group (``gloo`` on CPU, ``nccl`` on GPU), wraps the model in ``DistributedDataParallel`` and
  makes the decode head's BatchNorm synchronized (the original trained with SyncBN): batch statistics are
  those of the global batch, so a W-process run with per-process batch b computes the same losses as one
  process with batch ``W * b``. ``torch.nn.SyncBatchNorm`` only runs on accelerators; on CPU
  :class:`SyncBatchNorm2d` does the same with differentiable all-reduces.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..common.atomic import atomic_path
from ..common.metrics import SegmentationMetric
from ..common.random_state import host_rng_state, set_host_rng_state
from ..common.training import JsonlLog, StopSignals, TrainConfig, nonfinite_loss_message, truncate_log
from .data import make_eval_loader, make_train_loader

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
    "predict_labels",
    "save_training_state",
    "set_learning_rate",
]

STATE_NAME = "training_state.pt"


# ---------------------------------------------------------------------------------------------- distributed


@dataclass
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``; ``is_main`` logs and saves."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group described by ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (``torchrun``), if any.

    ``device``: ``None`` picks ``cuda:LOCAL_RANK`` when CUDA is there, else CPU; backend ``nccl`` on CUDA,
    ``gloo`` on CPU. Without those variables (or ``WORLD_SIZE=1``) this is a single-process context.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    initialized_here = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        initialized_here = True
    return DistributedContext(rank, world_size, local_rank, torch_device, initialized_here)


def cleanup_distributed(context: DistributedContext) -> None:
    """Leave the process group if :func:`init_distributed` joined it."""
    if context.initialized_here and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training-mode statistics are those of the batch across all processes.

    Same parameters, buffers and ``state_dict`` keys as ``nn.BatchNorm2d``; works on CPU (``gloo``), where
    ``torch.nn.SyncBatchNorm`` refuses to run. Mean and (biased) variance are computed in two passes from
    all-reduced sums with ``torch.distributed.nn.functional.all_reduce``, whose backward all-reduces the
    gradients, so the backward pass is that of BatchNorm over the global batch. Running statistics are
    updated like PyTorch's (unbiased variance, ``momentum``). Without a process group it is ``BatchNorm2d``.
    """

    process_group: Any = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.BatchNorm2d's name
        use_batch = self.training or not self.track_running_stats
        if not (use_batch and dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        channels = input.shape[1]
        x = input.float()
        local_count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), local_count]), group=self.process_group)
        count = sums[channels]
        mean = sums[:channels] / count
        centered = x - mean[None, :, None, None]
        var = all_reduce((centered * centered).sum(dim=(0, 2, 3)), group=self.process_group) / count
        out = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = float(count)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return out.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, process_group: Any = None) -> nn.Module:
    """Make every ``BatchNorm2d`` of ``model`` synchronized across processes (in place; returns ``model``).

    On CUDA this is ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``; elsewhere the modules become
    :class:`SyncBatchNorm2d` (same tensors, same keys). A no-op outside a process group of size > 1.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return model
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group)
    group = process_group if process_group is not None else dist.new_group(backend="gloo")
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = SyncBatchNorm2d
            module.process_group = group
    return model


def _all_reduce_mean(value: float, context: DistributedContext) -> float:
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


# ---------------------------------------------------------------------------------------------- optimizer


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
    """``AdamW(betas, eps, weight_decay)`` over :func:`build_param_groups` (decoupled decay, as mmcv/PyTorch)."""
    return torch.optim.AdamW(build_param_groups(model, config), lr=config.lr, betas=config.betas, eps=config.eps,
                             weight_decay=config.weight_decay)


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
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = True
) -> dict[str, Any]:
    """Load what :func:`save_training_state` wrote into ``model`` (and ``optimizer``); returns the whole dict.

    The file is read with ``torch.load(weights_only=True)`` (no code from it runs). A damaged file, or one
    that is not a segformer PyTorch training state, is a :class:`~segformer.common.checkpoint.CheckpointError`
    naming it.
    """
    from ..common.checkpoint import CheckpointError, check_torch_version, torch_load_error

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {os.fspath(path)!r}; train without --resume first")
    check_torch_version(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip / pickle / truncation errors come in many types
        raise torch_load_error(path, err) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{os.fspath(path)!r} is not a segformer PyTorch training state (format {str(found)[:80]!r}, expected "
            f"{STATE_FORMAT!r}; states written before weights_only loading cannot be resumed)"
        )
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
        raise CheckpointError(
            f"{os.fspath(path)!r}: damaged training state or one saved for another model ({type(err).__name__} "
            "while restoring model / optimizer / RNG)"
        ) from None
    return state


# ---------------------------------------------------------------------------------------------- evaluation


def predict_labels(model: nn.Module, pixel_values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Whole-image inference: logits upsampled (bilinear, align_corners=False) to ``size``, argmax -> (B, H, W)."""
    logits = model(pixel_values=pixel_values, return_dict=True).logits
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)


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
    """Dataset-level confusion matrix of ``model`` on ``dataset`` (items ``pixel_values`` (3, h, w) and
    ``labels`` (H, W) at the original size, as ``EvalTransform`` gives them).

    Under a process group every rank evaluates its share and the int64 matrices are summed, so every rank
    returns the metric of the whole dataset. ``predict(model, pixel_values, (H, W)) -> (1, H, W)`` replaces
    whole-image inference (e.g. sliding windows).
    """
    context = context or DistributedContext()
    inner = _unwrap(model)
    num_labels = int(num_labels if num_labels is not None else inner.config.num_labels)
    metric = SegmentationMetric(num_labels, ignore_index=ignore_index)
    predict = predict or predict_labels
    was_training = inner.training
    inner.eval()
    loader = make_eval_loader(dataset, context.rank, context.world_size)
    iterator: Iterable = loader
    if progress and context.is_main:
        from tqdm import tqdm

        iterator = tqdm(loader, desc="eval", unit="img", leave=False)
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for batch in iterator:
            pixel_values = batch["pixel_values"].to(context.device)
            labels = batch["labels"]
            pred = predict(inner, pixel_values, tuple(labels.shape[-2:]))
            metric.update(pred.cpu().numpy(), labels.numpy())
    if was_training:
        inner.train()
    if context.distributed:
        matrix = torch.from_numpy(metric.state()).to(context.device)
        dist.all_reduce(matrix)
        metric = SegmentationMetric.from_state(matrix.cpu().numpy(), ignore_index=ignore_index)
    return metric


# ---------------------------------------------------------------------------------------------- trainer


class Trainer:
    """Fine-tunes a ``SegformerForSemanticSegmentation`` with :class:`~segformer.common.training.TrainConfig`.

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
        self.step = 0
        if resume:
            if self.out_dir is None:
                raise ValueError("resume=True needs out_dir (where the training state was saved)")
            state = load_training_state(self.out_dir / "last" / STATE_NAME, inner, self.optimizer)
            self.step = int(state["step"])
            if self.context.is_main:
                truncate_log(self.out_dir / "train_log.jsonl", self.step)
        if self.context.distributed:
            device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            self.model: nn.Module = nn.parallel.DistributedDataParallel(inner, device_ids=device_ids)
        else:
            self.model = inner
        log_path = None
        if self.out_dir is not None and self.context.is_main:
            log_path = self.out_dir / "train_log.jsonl"
        self.log = JsonlLog(log_path, echo=echo and self.context.is_main)
        self.history: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] | None = None

    # ------------------------------------------------------------------ pieces
    def _autocast(self) -> Any:
        if self.config.bf16:
            return torch.autocast(self.context.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, micro_batches: list[dict[str, Any]]) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss (over all ranks).

        A micro-batch whose labels are all ``ignore_index`` contributes loss 0 and zero gradients (as the
        original recipe and the TF trainer). A NaN / Inf loss or gradient on any rank raises
        ``FloatingPointError`` naming the step before the optimizer applies anything (the BatchNorm running
        statistics of the failed step are rolled back too).
        """
        set_learning_rate(self.optimizer, self.config, self.step)
        buffers = [(b, b.detach().clone()) for b in self.inner.buffers()]  # BatchNorm statistics, restored on NaN
        total = 0.0
        count = len(micro_batches)
        for index, batch in enumerate(micro_batches):
            last = index == count - 1
            sync = contextlib.nullcontext()
            if self.context.distributed and not last:
                sync = self.model.no_sync()
            labels = batch["labels"].to(self.context.device)
            with sync:
                with self._autocast():
                    outputs = self.model(
                        pixel_values=batch["pixel_values"].to(self.context.device), labels=labels, return_dict=True,
                    )
                loss = outputs.loss
                if bool((labels == self.config.ignore_index).all()):
                    loss = outputs.logits.float().sum() * 0.0  # nothing to learn from: zero loss, zero gradients
                (loss / count).backward()
            total += float(loss.detach())
        grads = [p.grad for p in self.inner.parameters() if p.grad is not None]
        finite = math.isfinite(total)
        if finite and grads:
            finite = bool(torch.stack([g.float().abs().sum() for g in grads]).sum().isfinite())
        if self.context.distributed:
            flag = torch.tensor([0.0 if finite else 1.0], device=self.context.device)
            dist.all_reduce(flag)
            finite = bool(flag.item() == 0.0)
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            raise FloatingPointError(nonfinite_loss_message(self.step + 1, total / count, self.out_dir))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return _all_reduce_mean(total / count, self.context)

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

    # ------------------------------------------------------------------ loop
    def train(self, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Run until ``config.total_steps`` (or ``stop_at``: save the state there and return, as if
        interrupted; ``resume=True`` continues). Returns the per-step records of this call."""
        config = self.config
        end = config.total_steps if stop_at is None else min(int(stop_at), config.total_steps)
        accum = config.grad_accum
        loader = make_train_loader(
            self.train_dataset, config.batch_size, seed=config.seed, rank=self.context.rank,
            world_size=self.context.world_size, start=self.step * accum, num_workers=config.num_workers,
        )
        iterator = iter(loader)
        bar = None
        if self.progress and self.context.is_main:
            from tqdm import tqdm

            bar = tqdm(total=config.total_steps, initial=self.step, desc="train (pt)", unit="step")
        start = time.perf_counter()
        images = config.batch_size * accum * self.context.world_size
        with StopSignals() as stop:
            while self.step < end:
                self._one_step(iterator, start, images, bar)
                if self._stop_requested(stop):
                    if bar is not None:
                        bar.close()
                    self.save_state()
                    raise KeyboardInterrupt(
                        f"stopped by a signal after step {self.step}; the training state is saved"
                        + (f" in {self.out_dir / 'last'} (continue with --resume)" if self.out_dir is not None else "")
                    )
        if bar is not None:
            bar.close()
        self.save_state()
        if self.step == config.total_steps:
            self.save_model()
        return self.history

    def _stop_requested(self, stop: StopSignals) -> bool:
        requested = stop.signal is not None
        if self.context.distributed:  # every rank stops after the same step
            flag = torch.tensor([1.0 if requested else 0.0], device=self.context.device)
            dist.all_reduce(flag)
            requested = bool(flag.item() > 0)
        return requested

    def _one_step(self, iterator: Any, start: float, images: int, bar: Any) -> None:
        """Train, log, evaluate and checkpoint one optimizer step."""
        config = self.config
        accum = config.grad_accum
        lr = config.lr_at(self.step)
        lr_head = config.lr_at(self.step, config.custom_keys.get("head", {}).get("lr_mult", 1.0))
        micro_batches = [next(iterator) for _ in range(accum)]
        loss = self.train_step(micro_batches)
        record: dict[str, Any] = {"step": self.step, "loss": loss, "lr": lr, "lr_head": lr_head,
                                  "images": self.step * images, "time": round(time.perf_counter() - start, 3)}
        self.history.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        evaluate_now = (config.eval_every and self.step % config.eval_every == 0) or self.step == config.total_steps
        if self.eval_dataset is not None and evaluate_now:
            result = self.evaluate()
            self.last_eval = result
            record.update(mIoU=result["mean_iou"], aAcc=result["overall_accuracy"], mAcc=result["mean_accuracy"])
        if self.step % config.log_every == 0 or "mIoU" in record or self.step == config.total_steps:
            self.log.write(record)
        elif self.log.path is not None:
            JsonlLog(self.log.path, echo=False).write(record)
        if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < config.total_steps:
            self.save_state()


def build_model(
    model: str | os.PathLike,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    **config_overrides: Any,
) -> nn.Module:
    """A ``SegformerForSemanticSegmentation`` to fine-tune, in training mode.

    ``model`` is resolved by :func:`segformer.common.model_source.resolve_model_source` (a variant name or a
    ``config.json``: random weights drawn with ``torch.manual_seed(seed)``; or a checkpoint folder / file).
    ``id2label`` (from the dataset) names the classes; ``config_overrides`` change config fields
    (e.g. ``drop_path_rate=0.0``).
    """
    from ..common.model_source import resolve_model_source
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
