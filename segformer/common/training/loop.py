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
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .recipe import JsonlLog, StepTimer, StopSignals, TrainConfig, truncate_log

__all__ = ["TrainLoop"]


class TrainLoop:
    """Base class of the trainers. Subclasses set ``config``, ``out_dir``, ``eval_dataset``, ``progress``,
    ``is_main`` and ``world_size``, call :meth:`_start` in ``__init__``, and implement the hooks
    :meth:`micro_batches`, :meth:`train_step`, :meth:`evaluate`, :meth:`save_state`, :meth:`save_model`."""

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

    def train_step(self, micro_batches: tuple[Any, ...]) -> float:
        """One optimizer step (increments ``self.step``); returns the mean loss."""
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
