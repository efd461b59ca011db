"""The training loop of both trainers (``segformer.pt.training.Trainer``, ``segformer.tf.training.Trainer``),
written once: resuming, the per-step record, the progress bar, evaluation, log and checkpoint cadence, and
stopping on a signal. The frameworks supply the tensor work as hooks.

Per optimizer step (``step`` counts finished steps, from 1):

1. ``grad_accum`` micro-batches from :meth:`TrainLoop.micro_batches`, one :meth:`TrainLoop.train_step`;
2. the record ``{"step", "loss", "lr", "lr_head", "images", "time"}`` (lr of the step just taken);
3. an evaluation every ``eval_every`` steps and at the last step (``mIoU`` / ``aAcc`` / ``mAcc`` added);
4. the record to ``train_log.jsonl`` always, echoed every ``log_every`` steps, at evaluations and at the end
   (the echo ends with ``eta=``, the time left by :class:`~segformer.common.training.StepTimer`, which also
   prints the estimated total time once, after the first few steady-state steps);
5. the training state every ``checkpoint_every`` steps (not at the last one: the end saves it anyway).

At the end (or at ``stop_at``) the state is saved, and the model too when ``total_steps`` is reached.

The per-framework step (hooks of the trainer, see :class:`TrainLoop`) is small: compute the gradients of one
step (:meth:`TrainLoop.forward_backward`), apply them (:meth:`TrainLoop.apply_step`) or throw them away
(:meth:`TrainLoop.discard_step`), save / load the training state, and the logits of one image for evaluation.

**NaN / Inf policy** (:meth:`TrainLoop.train_step`, both frameworks): when the loss or any gradient of a step is
not finite on any process, nothing of the step is applied -- no weight update, no optimizer state change (moments,
step counter), no learning-rate schedule advance -- the BatchNorm running statistics that the training-mode forward
moved are restored, and ``FloatingPointError`` (:func:`~segformer.common.training.nonfinite_loss_message`) stops
training; the training state saved last is the one to resume from.

**Evaluation** (:func:`evaluate_dataset`, both frameworks, train-time and ``segformer eval``): every process
takes the images ``rank, rank + world_size, ...``, labels each one with the framework's banded predictor (the
full-resolution logits of an image are never held), and the int64 confusion matrices are summed over processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .recipe import JsonlLog, StepTimer, StopSignals, TrainConfig, nonfinite_loss_message, truncate_log

__all__ = ["TrainLoop", "check_state_format", "damaged_state_error", "eval_indices", "evaluate_dataset", "existing_state_file"]


def existing_state_file(path: Any) -> Path:
    """``path`` as a ``Path`` when it is a file; else the ``FileNotFoundError`` of both trainers' resume."""
    import os

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {os.fspath(path)!r}; train without --resume first")
    return path


def check_state_format(path: Path, state: Any, expected: str, framework: str, note: str = "") -> None:
    """A :class:`~segformer.common.checkpoints.CheckpointError` naming ``path`` unless ``state`` is a dict whose
    ``format`` is ``expected`` (``framework``: "PyTorch" / "TF"; ``note`` is appended)."""
    import os

    from ..checkpoints import CheckpointError

    if not isinstance(state, dict) or state.get("format") != expected:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{os.fspath(path)!r} is not a segformer {framework} training state (format {str(found)[:80]!r}, "
            f"expected {expected!r}{note})"
        )


def damaged_state_error(path: Path, err: BaseException, doing: str = "") -> Exception:
    """The :class:`~segformer.common.checkpoints.CheckpointError` of both trainers for a state that does not load."""
    import os

    from ..checkpoints import CheckpointError

    return CheckpointError(f"{os.fspath(path)!r}: damaged training state or one saved for another model "
                           f"({type(err).__name__}{doing})")


def eval_indices(num_items: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Process ``rank``'s share ``rank, rank + W, ...`` of an evaluation set: every item exactly once overall
    (``DistributedSampler`` would pad with repeats and count them twice)."""
    for name, value, low in (("rank", rank, 0), ("world_size", world_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if rank >= world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    return list(range(rank, num_items, world_size))


def evaluate_dataset(
    predict: Callable[[np.ndarray, tuple[int, int]], Any],
    dataset: Any,
    num_labels: int,
    ignore_index: int = 255,
    rank: int = 0,
    world_size: int = 1,
    sum_counts: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = False,
) -> Any:
    """Dataset-level confusion matrix (a :class:`~segformer.common.training.metrics.SegmentationMetric`) of ``predict``.

    ``dataset`` items hold ``pixel_values`` (3, h, w) and ``labels`` (H, W) at the original size (as
    ``EvalTransform`` gives them). ``predict(pixel_values (1, 3, h, w) float32, (H, W))`` returns the (1, H, W)
    labels (anything ``numpy.asarray`` takes); the frameworks pass their banded ``predict_labels``. This process
    evaluates the items :func:`eval_indices` gives it (the next two load in a background thread meanwhile), and
    ``sum_counts`` (an all-reduce over processes) sums the int64 matrices, so every process returns the metric of
    the whole dataset.
    """
    from .metrics import SegmentationMetric
    from ..inference.prefetch import Prefetched

    metric = SegmentationMetric(int(num_labels), ignore_index=ignore_index)

    def load(index: int) -> tuple[np.ndarray, np.ndarray]:
        item = dataset[index]
        return np.asarray(item["pixel_values"], np.float32)[None], np.asarray(item["labels"], np.int64)

    items: Any = Prefetched(load, eval_indices(len(dataset), rank, world_size), ahead=2, workers=1)
    if progress and rank == 0:
        from tqdm import tqdm

        items = tqdm(items, desc="eval", unit="img", leave=False)
    for pixel_values, labels in items:
        pred = np.asarray(predict(pixel_values, (int(labels.shape[-2]), int(labels.shape[-1]))))
        metric.update(pred.reshape((1, *labels.shape[-2:])), labels[None])
    if sum_counts is not None:
        metric = SegmentationMetric.from_state(np.asarray(sum_counts(metric.state()), np.int64), ignore_index=ignore_index)
    return metric


class TrainLoop:
    """Base class of the trainers. Subclasses set ``config``, ``out_dir``, ``eval_dataset``, ``progress``,
    ``is_main`` and ``world_size``, call :meth:`_start` in ``__init__``, and implement the hooks
    :meth:`micro_batches`, :meth:`forward_backward`, :meth:`apply_step`, :meth:`discard_step`, :meth:`evaluate`,
    :meth:`save_state`, :meth:`save_model`."""

    framework = ""  # the progress bar's label
    config: TrainConfig
    out_dir: Path | None
    eval_dataset: Any
    progress: bool
    is_main: bool
    world_size: int

    # ------------------------------------------------------------------ hooks
    def micro_batches(self, start: int) -> Iterator[Any]:
        """Endless training micro-batches, skipping the first ``start`` of them (resuming)."""
        raise NotImplementedError

    def forward_backward(self, micro_batches: tuple[Any, ...]) -> tuple[float, bool]:
        """The gradients of one optimizer step over ``micro_batches`` (``grad_accum`` of them), held for
        :meth:`apply_step`; snapshots what the training-mode forward changes (BatchNorm running statistics) for
        :meth:`discard_step`. Returns ``(loss, finite)``: the mean loss over micro-batches and processes, and
        whether the loss and every gradient are finite on every process (all processes get the same answer)."""
        raise NotImplementedError

    def apply_step(self) -> None:
        """Apply the held gradients: the optimizer update of step ``self.step`` (0-based) at its learning rate."""
        raise NotImplementedError

    def discard_step(self) -> None:
        """Drop the held gradients and restore the snapshot of :meth:`forward_backward`; the optimizer is untouched."""
        raise NotImplementedError

    def evaluate(self, dataset: Any = None) -> dict[str, Any]:
        raise NotImplementedError

    def save_state(self) -> None:
        raise NotImplementedError

    def save_model(self) -> None:
        raise NotImplementedError

    def stop_requested(self, stop: StopSignals) -> bool:
        """Whether to stop after this step (distributed trainers agree over all processes)."""
        return stop.signal is not None

    # ------------------------------------------------------------------ shared
    def train_step(self, micro_batches: Any) -> float:
        """One optimizer step over ``grad_accum`` micro-batches (increments ``self.step``); returns the mean loss.

        A NaN / Inf loss or gradient on any process applies nothing (module docstring) and raises
        ``FloatingPointError`` naming the step.
        """
        loss, finite = self.forward_backward(tuple(micro_batches))
        if not finite:
            self.discard_step()
            raise FloatingPointError(nonfinite_loss_message(self.step + 1, loss, self.out_dir))
        self.apply_step()
        self.step += 1
        return loss

    def _start(self, resume: bool, load_state: Callable[[Path], dict[str, Any]], state_name: str, echo: bool) -> None:
        """Step 0, or the saved step of ``out_dir/last/<state_name>`` (read by ``load_state``) with the log cut
        there; the JSONL log (main process only)."""
        self.step = 0
        if resume:
            if self.out_dir is None:
                raise ValueError("resume=True needs out_dir (where the training state was saved)")
            self.step = int(load_state(self.out_dir / "last" / state_name)["step"])
            if self.is_main:
                truncate_log(self.out_dir / "train_log.jsonl", self.step)
        log_path = self.out_dir / "train_log.jsonl" if (self.out_dir is not None and self.is_main) else None
        self.log = JsonlLog(log_path, echo=echo and self.is_main)
        self.history: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] | None = None

    def train(self, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Run until ``config.total_steps`` (or ``stop_at``: save the state there and return, as if
        interrupted; ``resume=True`` continues). Returns the per-step records of this call."""
        config = self.config
        end = config.total_steps if stop_at is None else min(int(stop_at), config.total_steps)
        iterator = self.micro_batches(self.step * config.grad_accum)
        bar = None
        if self.progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=config.total_steps, initial=self.step, desc=f"train ({self.framework})", unit="step")
        self.timer = StepTimer(config.total_steps)
        clock = time.perf_counter()
        with StopSignals() as stop:
            while self.step < end:
                self._one_step(iterator, clock, bar)
                if self.stop_requested(stop):
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

    def _one_step(self, iterator: Iterator[Any], clock: float, bar: Any) -> None:
        """Train, record, evaluate, log and checkpoint one optimizer step."""
        config = self.config
        lr = config.lr_at(self.step)
        lr_head = config.lr_at(self.step, config.custom_keys.get("head", {}).get("lr_mult", 1.0))
        started = time.perf_counter()
        loss = self.train_step(tuple(next(iterator) for _ in range(config.grad_accum)))
        if self.timer.add(self.step, time.perf_counter() - started) and self.log.echo:
            print(self.timer.summary(self.step), flush=True)
        images = config.batch_size * config.grad_accum * self.world_size
        record: dict[str, Any] = {"step": self.step, "loss": loss, "lr": lr, "lr_head": lr_head,
                                  "images": self.step * images, "time": round(time.perf_counter() - clock, 3)}
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
            self.log.write(record, note=self.timer.note(self.step))
        elif self.log.path is not None:
            JsonlLog(self.log.path, echo=False).write(record)
        if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < config.total_steps:
            self.save_state()
