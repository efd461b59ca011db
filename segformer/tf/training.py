"""Fine-tuning and evaluation in Keras 3 (TensorFlow backend) with the original SegFormer recipe.

TF twin of ``segformer/pt/training.py``:

* Optimizer: :class:`ParamGroupAdamW`, one Keras optimizer whose ``update_step`` applies, per variable,
  the recipe's lr multiplier (``decode_head.*`` x10) and weight-decay multiplier (encoder LayerNorms 0),
  chosen by the variable's canonical name with :func:`segformer.common.training.recipe.param_group_rule`. Why
  not the alternatives: Keras' ``AdamW(exclude_from_weight_decay=...)`` covers the decay half only;
  scaling gradients by 10 does nothing under Adam (it is invariant to gradient scale); two optimizers
  would double the bookkeeping of checkpoints. The update is PyTorch's ``AdamW`` formula exactly
  (``eps`` added to ``sqrt(v) / sqrt(1 - beta2^t)``, decoupled decay ``p -= lr * wd * p``), not Keras'
  Adam (which adds ``eps`` before the bias correction), so both frameworks take the same steps.
  It also works in ``model.compile(optimizer=...)``.
* Schedule: :class:`PolyWarmupSchedule`, a ``keras.optimizers.schedules.LearningRateSchedule`` computing
  :func:`segformer.common.training.lr_at` from the optimizer's iteration counter.
* The loop (record, progress, evaluation, log and checkpoint cadence, the NaN / Inf policy) is
  :class:`segformer.common.training.loop.TrainLoop`, shared with the PT trainer. The step here: one ``tf.function``
  sums the gradients of ``grad_accum`` micro-batches and reports whether they are finite on every replica; a
  second one runs ``apply_gradients`` -- called only for a finite step, so a NaN / Inf step changes neither
  weights nor optimizer moments nor the iteration counter the schedule reads. Checkpoints + resume in one
  atomically written ``.npz`` (model tensors by canonical name, optimizer variables, step, RNG states).
* Distribution: ``tf.distribute.MirroredStrategy`` over the visible devices, or
  ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set (:func:`make_strategy`). Each replica's loss
  is divided by the number of replicas and gradients are summed (Keras all-reduces them in
  ``apply_gradients``): the mean over replicas, like DDP. The decode head's BatchNorm is switched to
  ``synchronized=True`` (Keras' SyncBN: moments all-reduced across replicas; the original trained with
  SyncBN), so R replicas with batch b compute the losses of one device with batch ``R * b``.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from ..common.inference.memory import check_training_memory
from ..common.base.allocator import tune_allocator
from ..common.base.atomic import atomic_write_bytes
from ..common.training.metrics import SegmentationMetric
from ..common.base.random_state import host_rng_state, set_host_rng_state
from ..common.training.loop import (
    TrainLoop, check_state_format, damaged_state_error, evaluate_dataset, existing_state_file,
)
from ..common.checkpoints import CheckpointError
from ..common.training.recipe import (
    ORIGINAL_CUSTOM_KEYS,
    TrainConfig,
    lr_at,
    param_group_rule,
)
from .data import make_train_dataset
from .distributed import is_chief, make_strategy, set_sync_batchnorm, strategy_of
from .workers import WorkerGroup

__all__ = [
    "ParamGroupAdamW",
    "PolyWarmupSchedule",
    "Trainer",
    "build_model",
    "build_optimizer",
    "canonical_variable_name",
    "evaluate",
    "load_training_state",
    "make_strategy",
    "save_training_state",
    "set_sync_batchnorm",
]

STATE_NAME = "training_state.npz"
STATE_FORMAT = "segformer-tf-training-state-2"


# ---------------------------------------------------------------------------------------------- schedule


@keras.saving.register_keras_serializable(package="segformer")
class PolyWarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """mmcv poly decay with linear warm-up as a Keras schedule: ``lr(step) = lr_at(step, ...)`` (0-based)."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 1500, warmup_ratio: float = 1e-6,
                 power: float = 1.0, min_lr: float = 0.0) -> None:
        lr_at(0, base_lr, total_steps, warmup_steps, warmup_ratio, power, min_lr)  # validates
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_ratio = float(warmup_ratio)
        self.power = float(power)
        self.min_lr = float(min_lr)

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.minimum(tf.cast(step, tf.float64), float(self.total_steps))
        regular = (self.base_lr - self.min_lr) * tf.pow(1.0 - step / self.total_steps, self.power) + self.min_lr
        if self.warmup_steps == 0:
            return tf.cast(regular, tf.float32)
        k = (1.0 - step / self.warmup_steps) * (1.0 - self.warmup_ratio)
        warm = regular * (1.0 - k)
        return tf.cast(tf.where(step < self.warmup_steps, warm, regular), tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "warmup_ratio": self.warmup_ratio, "power": self.power, "min_lr": self.min_lr}


# ---------------------------------------------------------------------------------------------- optimizer


def canonical_variable_name(path: str, names: dict[str, str] | None = None) -> str:
    """The canonical (PyTorch) name of a Keras variable path, when ``names`` maps TF names to canonical ones;
    otherwise the path itself (the recipe's keys 'norm', 'head' match TF paths the same way)."""
    path = path.split(":")[0]
    if names:
        for tf_name, canonical in names.items():
            if path == tf_name or path.endswith("/" + tf_name):
                return canonical
    return path


@keras.saving.register_keras_serializable(package="segformer")
class ParamGroupAdamW(keras.optimizers.Optimizer):
    """AdamW with the recipe's per-parameter lr / weight-decay multipliers (see the module docstring).

    Args:
        learning_rate: base lr (float or schedule); a variable's lr is ``learning_rate * lr_mult``.
        weight_decay: decoupled decay; a variable's is ``weight_decay * decay_mult``.
        beta_1, beta_2, epsilon: Adam moments, PyTorch semantics (defaults 0.9, 0.999, 1e-8).
        custom_keys: the mmcv ``paramwise_cfg.custom_keys`` (default: the original recipe).
        names: ``{TF variable path suffix: canonical name}`` (e.g. from the canonical table); without it
            the rules match the Keras variable paths.
    """

    def __init__(
        self,
        learning_rate: Any = 6e-5,
        weight_decay: float = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        custom_keys: dict[str, dict[str, float]] | None = None,
        names: dict[str, str] | None = None,
        name: str = "param_group_adamw",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.decoupled_weight_decay = float(weight_decay)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.custom_keys = json.loads(json.dumps(custom_keys if custom_keys is not None else ORIGINAL_CUSTOM_KEYS))
        self.names = dict(names or {})
        self.lr_mults: list[float] = []
        self.decay_mults: list[float] = []

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])
        self.lr_mults = []
        self.decay_mults = []
        for variable in var_list:
            rule = param_group_rule(canonical_variable_name(variable.path, self.names), self.custom_keys)
            self.lr_mults.append(rule.lr_mult)
            self.decay_mults.append(rule.decay_mult)

    @tf.autograph.experimental.do_not_convert
    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype) * self.lr_mults[index]
        gradient = tf.cast(gradient, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        decay = self.decoupled_weight_decay * self.decay_mults[index]
        if decay:
            self.assign_sub(variable, variable * (lr * decay))
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign_add(m, (gradient - m) * (1.0 - self.beta_1))
        self.assign_add(v, (tf.square(gradient) - v) * (1.0 - self.beta_2))
        bias_correction1 = 1.0 - tf.pow(tf.cast(self.beta_1, dtype), step)
        bias_correction2 = 1.0 - tf.pow(tf.cast(self.beta_2, dtype), step)
        denominator = tf.sqrt(v) / tf.sqrt(bias_correction2) + self.epsilon
        self.assign_sub(variable, (lr / bias_correction1) * m / denominator)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(weight_decay=self.decoupled_weight_decay, beta_1=self.beta_1, beta_2=self.beta_2,
                      epsilon=self.epsilon, custom_keys=self.custom_keys, names=self.names)
        return config


def _canonical_names(model: Any) -> dict[str, str]:
    from ..common.model.weights import parameter_table

    return {spec.tf_name: spec.name for spec in parameter_table(model.config, "semantic_segmentation")}


def build_optimizer(model: Any, config: TrainConfig) -> ParamGroupAdamW:
    """:class:`ParamGroupAdamW` with the recipe's schedule and groups for ``model`` (built on its variables)."""
    tune_allocator(training=True)  # this process trains: larger glibc malloc thresholds (common.allocator)
    schedule = PolyWarmupSchedule(config.lr, config.total_steps, config.warmup_steps, config.warmup_ratio,
                                  config.power, config.min_lr)
    optimizer = ParamGroupAdamW(schedule, weight_decay=config.weight_decay, beta_1=config.betas[0],
                                beta_2=config.betas[1], epsilon=config.eps, custom_keys=config.custom_keys,
                                names=_canonical_names(model))
    optimizer.build(model.trainable_variables)
    return optimizer


# ---------------------------------------------------------------------------------------------- checkpoints


def save_training_state(path: str | os.PathLike, model: Any, optimizer: ParamGroupAdamW, step: int,
                        config: TrainConfig, extra: dict[str, Any] | None = None) -> Path:
    """Model tensors (canonical names), optimizer variables, step, config, RNG states and ``extra`` -> one
    ``.npz``, written atomically (TF twin of ``segformer.pt.training.save_training_state``, same arguments).
    ``extra`` must hold JSON values (numbers, strings, lists, dicts); it comes back as ``["extra"]`` of
    :func:`load_training_state`."""
    try:
        extra = json.loads(json.dumps(dict(extra or {})))
    except (TypeError, ValueError) as err:
        raise TypeError(f"extra must hold JSON values (numbers, strings, lists, dicts), got {extra!r:.200} ({err})") from None
    arrays: dict[str, np.ndarray] = {}
    for name, value in model.state_dict_numpy().items():
        arrays["model/" + name] = np.asarray(value)
    for i, variable in enumerate(_extra_variables(model)):
        arrays[f"extra/{i:05d}/{variable.path}"] = np.asarray(variable.numpy())
    for i, variable in enumerate(optimizer.variables):
        arrays[f"optimizer/{i}"] = np.asarray(variable.numpy())
    meta = {
        "format": STATE_FORMAT,
        "step": int(step),
        "train_config": config.to_dict(),
        "optimizer_paths": [v.path for v in optimizer.variables],
        "rng": host_rng_state(),
        "extra": extra,
    }
    arrays["meta"] = np.asarray(json.dumps(meta))
    path = Path(path)
    buffer = io.BytesIO()  # serialized in memory first (as the PyTorch twin does)
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_training_state(
    path: str | os.PathLike, model: Any, optimizer: ParamGroupAdamW | None = None, restore_rng: bool = True
) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote into ``model`` (and ``optimizer``; the host RNG states
    unless ``restore_rng=False``); returns its metadata (``step``, ``train_config``, ``extra`` ...). TF twin of
    ``segformer.pt.training.load_training_state`` (same arguments). A damaged file, or one that is not a
    segformer TF training state, is a :class:`~segformer.common.checkpoints.CheckpointError` naming it."""
    path = existing_state_file(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            check_state_format(path, meta, STATE_FORMAT, "TF")
            model.load_state_dict_numpy({k[len("model/"):]: data[k] for k in data.files if k.startswith("model/")})
            extra_keys = sorted(k for k in data.files if k.startswith("extra/"))
            extra = _extra_variables(model)
            if len(extra_keys) != len(extra):
                raise CheckpointError(
                    f"{os.fspath(path)!r} holds {len(extra_keys)} extra model variables (RNG states ...), the model "
                    f"has {len(extra)}; was it saved for another model?"
                )
            for variable, key in zip(extra, extra_keys):  # by position: Keras numbers seed generators per process
                variable.assign(data[key])
            if optimizer is not None:
                variables = optimizer.variables
                if len(variables) != len(meta["optimizer_paths"]):
                    raise CheckpointError(
                        f"{os.fspath(path)!r} holds {len(meta['optimizer_paths'])} optimizer variables, the optimizer "
                        f"has {len(variables)}; was it saved for another model?"
                    )
                for i, variable in enumerate(variables):
                    variable.assign(data[f"optimizer/{i}"])
        if restore_rng:
            set_host_rng_state(meta["rng"])
        meta.setdefault("extra", {})
    except CheckpointError:
        raise
    except Exception as err:  # zip / npy / JSON / shape errors come in many types
        raise damaged_state_error(path, err) from None
    return meta


def _batchnorm_statistics(model: Any) -> list[Any]:
    """The running statistics (and counters) of every ``BatchNormalization`` of ``model``: what a training-mode
    forward changes besides the dropout seed generators."""
    return [v for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization) for v in layer.non_trainable_variables]


def _extra_variables(model: Any) -> list[Any]:
    """Model variables outside the canonical table (seed generator states ...), in creation order."""
    canonical = set(_canonical_names(model))
    return [v for v in model.variables if not any(v.path.endswith(n) for n in canonical)]


# ---------------------------------------------------------------------------------------------- evaluation


def _whole_image_labels(model: Any, pixel_values: Any, size: tuple[int, int]) -> Any:
    from .inference import predict_labels

    return predict_labels(model, pixel_values, output_size=size)


def evaluate(
    model: Any,
    dataset: Any,
    num_labels: int | None = None,
    ignore_index: int = 255,
    predict: Callable[[Any, Any, tuple[int, int]], Any] | None = None,
    progress: bool = False,
    context: WorkerGroup | None = None,
) -> SegmentationMetric:
    """Dataset-level confusion matrix of ``model`` on ``dataset`` (TF twin of ``segformer.pt.training.evaluate``):
    :func:`segformer.common.training.loop.evaluate_dataset` over ``predict(model, pixel_values, (H, W)) -> (1, H, W)``
    (default :func:`segformer.tf.inference.predict_labels` at ``(H, W)``, banded, so the full-resolution
    logits are never held; e.g. sliding windows instead). With ``context`` (a
    :class:`~segformer.tf.workers.WorkerGroup`, as PT's ``context`` is its process group) every worker evaluates its share and the matrices are summed."""
    num_labels = int(num_labels if num_labels is not None else model.config.num_labels)
    predict = predict or _whole_image_labels
    rank, world, sum_counts = (0, 1, None) if context is None else (context.rank, context.world, context.sum)

    def labels_of(pixel_values: Any, size: tuple[int, int]) -> Any:
        return np.asarray(predict(model, tf.constant(pixel_values), size))

    return evaluate_dataset(labels_of, dataset, num_labels, ignore_index, rank, world,
                            sum_counts if world > 1 else None, progress=progress)


# ---------------------------------------------------------------------------------------------- trainer


class Trainer(TrainLoop):
    """Fine-tunes a ``TFSegformerForSemanticSegmentation`` (TF twin of ``segformer.pt.training.Trainer``).

    Args:
        model: the Keras model, built, created under ``strategy.scope()``.
        config: :class:`~segformer.common.training.recipe.TrainConfig` (``batch_size`` per replica).
        train_dataset / eval_dataset: as for the PT trainer.
        out_dir: ``train_log.jsonl``, ``last/training_state.npz`` and the final ``config.json`` + ``tf_model.h5``.
        strategy: from :func:`make_strategy` (default: the current strategy).
        resume: continue from ``out_dir/last``.
    """

    framework = "tf"

    def __init__(
        self,
        model: Any,
        config: TrainConfig,
        train_dataset: Any,
        eval_dataset: Any = None,
        out_dir: str | os.PathLike | None = None,
        strategy: tf.distribute.Strategy | None = None,
        resume: bool = False,
        progress: bool = True,
        echo: bool = True,
        predict: Callable | None = None,
    ) -> None:
        if config.bf16:
            raise ValueError("bf16=True is implemented for the PT trainer only; the TF trainer runs in float32")
        if config.gradient_checkpointing:
            raise ValueError("gradient_checkpointing=True is implemented for the PT trainer only")
        self.model = model
        self.config = config
        self.strategy = strategy or strategy_of(model)
        check_training_memory(model.config, config.crop_size, config.batch_size, "tf")  # before any step
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = progress
        self.predict = predict
        self.is_main = is_chief(self.strategy)
        self.workers = WorkerGroup(self.strategy)
        if self.replicas > 1 and config.sync_bn:
            set_sync_batchnorm(model, True)
        with self.strategy.scope():
            self.optimizer = build_optimizer(model, config)
        self._start(resume, lambda path: load_training_state(path, model, self.optimizer), STATE_NAME, echo)
        self._grads_fn: Any = None
        self._apply_fn: Any = None
        self._grads: Any = None
        self._saved_statistics: list[Any] = []

    @property
    def world_size(self) -> int:
        return self.replicas

    # ------------------------------------------------------------------ pieces
    def _replica_grads(self, micro_batches: tuple[dict[str, tf.Tensor], ...]) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        """This replica's summed gradients (each micro-batch's loss over ``count x replicas``), mean loss and
        non-finite flag (1.0 when the loss or a gradient is NaN / Inf)."""
        variables = self.model.trainable_variables
        count = len(micro_batches)
        total_grads: list[Any] | None = None
        loss_sum = tf.constant(0.0, tf.float32)
        for batch in micro_batches:
            with tf.GradientTape() as tape:
                outputs = self.model(batch["pixel_values"], labels=batch["labels"], training=True)
                loss = tf.reduce_mean(tf.cast(outputs.loss, tf.float32))
                scaled = loss / float(count * self.replicas)
            grads = tape.gradient(scaled, variables)
            grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
            total_grads = grads if total_grads is None else [a + g for a, g in zip(total_grads, grads)]
            loss_sum += loss
        finite = tf.math.is_finite(loss_sum) & tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in total_grads])
        return total_grads, loss_sum / float(count), 1.0 - tf.cast(finite, tf.float32)

    def _distributed_grads(self, micro_batches: tuple[dict[str, tf.Tensor], ...]) -> tuple[Any, tf.Tensor, tf.Tensor]:
        grads, loss, bad = self.strategy.run(self._replica_grads, args=(micro_batches,))
        return (grads, self.strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                self.strategy.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None))

    def _distributed_apply(self, grads: Any) -> None:
        def apply(replica_grads: list[tf.Tensor]) -> None:  # Keras sums the replicas' gradients here
            self.optimizer.apply_gradients(zip(replica_grads, self.model.trainable_variables))

        self.strategy.run(apply, args=(grads,))

    def forward_backward(self, micro_batches: tuple[dict[str, Any], ...]) -> tuple[float, bool]:
        """Gradients of one step over ``grad_accum`` micro-batches (distributed values, or plain tensors on one
        device), the BatchNorm statistics saved first; ``(mean loss over micro-batches and replicas, finite on
        every replica)``. The NaN / Inf policy and the update are
        :meth:`~segformer.common.training.loop.TrainLoop.train_step`'s."""
        if self._grads_fn is None:
            self._grads_fn = tf.function(self._distributed_grads)
            self._apply_fn = tf.function(self._distributed_apply)
        self._saved_statistics = [(v, tf.identity(v)) for v in _batchnorm_statistics(self.model)]
        self._grads, loss, bad = self._grads_fn(tuple(micro_batches))
        loss = float(loss)
        return loss, bool(float(bad) == 0.0) and math.isfinite(loss)

    def apply_step(self) -> None:
        self._apply_fn(self._grads)  # the schedule reads the optimizer's iteration counter: step self.step
        self._grads, self._saved_statistics = None, []

    def discard_step(self) -> None:
        for variable, saved in self._saved_statistics:
            variable.assign(saved)
        self._grads, self._saved_statistics = None, []

    def evaluate(self, dataset: Any = None) -> dict[str, Any]:
        metric = evaluate(self.model, dataset if dataset is not None else self.eval_dataset,
                          ignore_index=self.config.ignore_index, predict=self.predict, progress=self.progress,
                          context=self.workers)
        return metric.compute()

    def save_state(self) -> None:
        if self.out_dir is not None and self.is_main:
            save_training_state(self.out_dir / "last" / STATE_NAME, self.model, self.optimizer, self.step, self.config)

    def save_model(self) -> None:
        if self.out_dir is not None and self.is_main:
            self.model.save_pretrained(self.out_dir)

    def micro_batches(self, start: int) -> Any:
        """The distributed iterator of per-replica micro-batches (global batches of ``batch_size x replicas``)."""
        global_batch = self.config.batch_size * self.replicas

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return make_train_dataset(self.train_dataset, global_batch, self.config.crop_size, seed=self.config.seed,
                                      start=start, input_context=context)

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))


def build_model(
    model: str | os.PathLike,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    crop_size: tuple[int, int] = (64, 64),
    **config_overrides: Any,
) -> Any:
    """A built ``TFSegformerForSemanticSegmentation`` to fine-tune (TF twin of ``segformer.pt.training.build_model``):
    a variant name or ``config.json`` (random weights, ``keras.utils.set_random_seed(seed)``) or a
    checkpoint folder. Call it under ``strategy.scope()``."""
    from ..common.checkpoints.model_source import resolve_model_source
    from . import TFSegformerForSemanticSegmentation

    source = resolve_model_source(model, num_labels, id2label, **config_overrides)
    keras.utils.set_random_seed(seed)
    if source.config is not None:
        built = TFSegformerForSemanticSegmentation(source.config)
        built(np.zeros((1, source.config.num_channels, *crop_size), np.float32), training=False)
    else:
        built = TFSegformerForSemanticSegmentation.from_pretrained(
            source.checkpoint, ignore_mismatched_sizes=source.ignore_mismatched_sizes, **source.overrides
        )
    return built
