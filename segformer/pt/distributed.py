"""Distributed PyTorch training: joining the process group of ``torchrun`` and synchronized BatchNorm.
Used by ``segformer.pt.training`` (the TF twin is :mod:`segformer.tf.distributed`).

Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set) :func:`init_distributed` joins the
process group (``gloo`` on CPU, ``nccl`` on GPU). The decode head's BatchNorm is synchronized (the original
trained with SyncBN): batch statistics are those of the global batch, so a W-process run with per-process
batch b computes the same losses as one process with batch ``W * b``. ``torch.nn.SyncBatchNorm`` only runs
on accelerators; on CPU :class:`SyncBatchNorm2d` does the same with differentiable all-reduces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "SyncBatchNorm2d",
    "all_reduce_mean",
    "cleanup_distributed",
    "convert_sync_batchnorm",
    "init_distributed",
]


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


def all_reduce_mean(value: float, context: DistributedContext) -> float:
    """The mean of ``value`` over all processes (``value`` itself in a single process)."""
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


# ---------------------------------------------------------------------------------------------- optimizer
