"""The original SegFormer optimization recipe as framework-agnostic data and pure functions (stdlib only).

NVlabs ``local_configs/segformer/*`` (mmseg + mmcv 1.x), reproduced here and used by both trainers
(``segformer.pt.training``, ``segformer.tf.training``)::

    optimizer = AdamW(lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
    paramwise_cfg.custom_keys = {"pos_block": decay_mult 0, "norm": decay_mult 0, "head": lr_mult 10}
    lr_config = poly(power=1.0, min_lr=0.0, by_epoch=False), warmup="linear", warmup_iters=1500, warmup_ratio=1e-6
    160k iterations, 2 images per GPU x 8 GPUs, SyncBN in the decode head

**Parameter groups** (:func:`param_group_rule`). mmcv's ``DefaultOptimizerConstructor`` sorts the custom
keys alphabetically, then by decreasing length (``pos_block``, ``head``, ``norm``), and the *first* key that
is a substring of a parameter's name decides both its lr and its weight decay; parameters matching no key
get ``lr`` and ``weight_decay`` unchanged. Applied to our canonical names (Hugging Face ``state_dict`` keys)
this selects exactly the tensors it selects in the original names:

* every encoder LayerNorm (``patch_embeddings.i.layer_norm``, ``layer_norm_1``, ``layer_norm_2``,
  ``attention.self.layer_norm``, ``encoder.layer_norm.i``; originally ``patch_embed.norm``, ``norm1``,
  ``norm2``, ``attn.norm``, ``norm1..4``) -> ``lr``, **no weight decay**;
* every ``decode_head.*`` tensor -> ``10 x lr``, weight decay 0.01 -- **including the decode head's
  BatchNorm** (``decode_head.batch_norm``; originally ``decode_head.linear_fuse.bn``, whose name has no
  ``norm``), because ``head`` is matched first;
* everything else, biases included (the recipe sets no ``bias_decay_mult``) -> ``lr``, weight decay 0.01;
* ``pos_block`` matches nothing in SegFormer (it is a PVT key kept by the config); it stays for fidelity.

**Schedule** (:func:`lr_at`): mmcv ``PolyLrUpdaterHook`` with linear warm-up, evaluated *before* each
iteration with the 0-based iteration counter ``step``::

    regular = (base_lr - min_lr) * (1 - step / total_steps) ** power + min_lr
    lr      = regular * (1 - (1 - step / warmup_steps) * (1 - warmup_ratio))   if step < warmup_steps
            = regular                                                           otherwise

Each parameter group runs this schedule on its own base lr (``lr x lr_mult``), as mmcv does with each
group's ``initial_lr``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..base.sizes import parse_size

__all__ = [
    "JsonlLog",
    "RECIPES",
    "StepTimer",
    "StopSignals",
    "format_duration",
    "quick_recipe",
    "recipe_settings",
    "nonfinite_loss_message",
    "truncate_log",
    "ORIGINAL_CUSTOM_KEYS",
    "TrainConfig",
    "ParamGroupRule",
    "build_eval_transform",
    "build_train_transform",
    "default_warmup_steps",
    "group_parameter_names",
    "lr_at",
    "param_group_rule",
    "parse_size",
    "read_jsonl",
    "sorted_custom_keys",
]

# The recipe's paramwise_cfg.custom_keys: key -> {"lr_mult": ..., "decay_mult": ...} (missing -> 1.0).
ORIGINAL_CUSTOM_KEYS: dict[str, dict[str, float]] = {
    "pos_block": {"decay_mult": 0.0},
    "norm": {"decay_mult": 0.0},
    "head": {"lr_mult": 10.0},
}


@dataclass(frozen=True)
class ParamGroupRule:
    """What the recipe does to one parameter: ``lr = base_lr * lr_mult``, ``wd = weight_decay * decay_mult``.

    ``key`` is the custom key that matched (``None``: no key matched, defaults apply).
    """

    lr_mult: float = 1.0
    decay_mult: float = 1.0
    key: str | None = None


def _check_custom_keys(custom_keys: Mapping[str, Mapping[str, float]]) -> None:
    if not isinstance(custom_keys, Mapping):
        raise TypeError(f"custom_keys must be a mapping key -> {{'lr_mult', 'decay_mult'}}, got {type(custom_keys).__name__}")
    for key, spec in custom_keys.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"custom_keys keys must be non-empty strings, got {key!r}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"custom_keys[{key!r}] must be a mapping with 'lr_mult' / 'decay_mult', got {spec!r}")
        unknown = sorted(set(spec) - {"lr_mult", "decay_mult"})
        if unknown:
            raise ValueError(f"custom_keys[{key!r}] has unknown fields {unknown}; valid fields are ['decay_mult', 'lr_mult']")
        for name, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"custom_keys[{key!r}][{name!r}] must be a finite number >= 0, got {value!r}")


def sorted_custom_keys(custom_keys: Mapping[str, Mapping[str, float]]) -> list[str]:
    """mmcv's matching order: alphabetical, then (stable) by decreasing length."""
    return sorted(sorted(custom_keys), key=len, reverse=True)


def param_group_rule(
    name: str, custom_keys: Mapping[str, Mapping[str, float]] = ORIGINAL_CUSTOM_KEYS
) -> ParamGroupRule:
    """The rule of the first custom key (mmcv order) that is a substring of the canonical ``name``."""
    _check_custom_keys(custom_keys)
    for key in sorted_custom_keys(custom_keys):
        if key in name:
            spec = custom_keys[key]
            return ParamGroupRule(float(spec.get("lr_mult", 1.0)), float(spec.get("decay_mult", 1.0)), key)
    return ParamGroupRule()


def group_parameter_names(
    names: Iterable[str], custom_keys: Mapping[str, Mapping[str, float]] = ORIGINAL_CUSTOM_KEYS
) -> dict[tuple[float, float], list[str]]:
    """Canonical names grouped by ``(lr_mult, decay_mult)``, in first-seen order (one optimizer group each)."""
    groups: dict[tuple[float, float], list[str]] = {}
    for name in names:
        rule = param_group_rule(name, custom_keys)
        groups.setdefault((rule.lr_mult, rule.decay_mult), []).append(name)
    return groups


def lr_at(
    step: int,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 1500,
    warmup_ratio: float = 1e-6,
    power: float = 1.0,
    min_lr: float = 0.0,
) -> float:
    """Learning rate of iteration ``step`` (0-based): mmcv poly decay with linear warm-up (module docstring).

    ``step`` may run past ``total_steps`` only as far as ``total_steps`` itself (lr ``min_lr``).
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if step > total_steps:
        raise ValueError(f"step must lie in [0, total_steps={total_steps}], got {step}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"warmup_ratio must lie in [0, 1], got {warmup_ratio!r}")
    if not power >= 0.0:
        raise ValueError(f"power must be >= 0, got {power!r}")
    regular = (base_lr - min_lr) * (1.0 - step / total_steps) ** power + min_lr
    if step < warmup_steps:
        k = (1.0 - step / warmup_steps) * (1.0 - warmup_ratio)
        return regular * (1.0 - k)
    return regular


def default_warmup_steps(total_steps: int, original: int = 1500) -> int:
    """The recipe's 1500 warm-up iterations, capped at a tenth of a (short) run: ``min(1500, total // 10)``."""
    return min(original, total_steps // 10)


@dataclass
class TrainConfig:
    """Every training hyper-parameter; the defaults are the original recipe (ADE20K, 512x512 crops).

    ``batch_size`` is per device (per process / per replica), as mmseg's ``samples_per_gpu``; one optimizer
    step sees ``batch_size * world_size * grad_accum`` images. ``total_steps`` counts optimizer steps.
    """

    # optimizer (AdamW)
    lr: float = 6e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    custom_keys: dict[str, dict[str, float]] = field(default_factory=lambda: json.loads(json.dumps(ORIGINAL_CUSTOM_KEYS)))
    # schedule (poly + linear warm-up)
    total_steps: int = 160_000
    warmup_steps: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0
    # data
    batch_size: int = 2
    grad_accum: int = 1
    crop_size: tuple[int, int] = (512, 512)
    img_scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    photometric: bool = True
    reduce_labels: bool = False
    ignore_index: int = 255
    num_workers: int = 0
    # bookkeeping
    seed: int = 0
    eval_every: int = 16_000
    checkpoint_every: int = 4000
    log_every: int = 50
    # numerics / memory
    bf16: bool = False
    gradient_checkpointing: bool = False
    sync_bn: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.crop_size = parse_size(self.crop_size, "crop_size")
        self.img_scale = parse_size(self.img_scale, "img_scale")
        self.ratio_range = tuple(float(r) for r in self.ratio_range)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, the value and what is allowed."""
        for name in ("lr", "eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "min_lr", "power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1], got {self.warmup_ratio!r}")
        for name, low in (("total_steps", 1), ("warmup_steps", 0), ("batch_size", 1), ("grad_accum", 1),
                          ("num_workers", 0), ("seed", 0), ("eval_every", 0), ("checkpoint_every", 0), ("log_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.ratio_range[0] <= 0 or self.ratio_range[0] > self.ratio_range[1]:
            raise ValueError(f"ratio_range must be (low, high) with 0 < low <= high, got {self.ratio_range!r}")
        if not 0.0 < self.cat_max_ratio <= 1.0:
            raise ValueError(f"cat_max_ratio must lie in (0, 1], got {self.cat_max_ratio!r}")
        _check_custom_keys(self.custom_keys)

    def lr_at(self, step: int, lr_mult: float = 1.0) -> float:
        """The schedule for a group with base lr ``lr * lr_mult`` (see :func:`lr_at`)."""
        return lr_at(step, self.lr * lr_mult, self.total_steps, self.warmup_steps, self.warmup_ratio,
                     self.power, self.min_lr)

    def rule(self, name: str) -> ParamGroupRule:
        return param_group_rule(name, self.custom_keys)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("betas", "crop_size", "img_scale", "ratio_range"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid fields are {sorted(known)}")
        return cls(**dict(data))


RECIPES = ("original", "quick")
QUICK_EPOCHS = 5
QUICK_CROP_MULTIPLE = 32  # the encoder's total stride


def quick_recipe(image_sizes: Sequence[tuple[int, int]], images_per_step: int) -> dict[str, Any]:
    """The small-data recipe for a training folder: ``total_steps``, ``crop_size`` and ``img_scale``.

    With ``S`` the smallest side (height or width) over ``image_sizes`` (``(height, width)`` of every training
    image), ``N`` the number of images and ``B`` the images per optimizer step:

    * crop ``C x C`` with ``C = min(512, S)`` rounded down to a multiple of 32 (``C = S`` when ``S < 32``):
      no crop is larger than an image, and 512 is the original recipe's crop;
    * random-resize scale ``(4 C, C)``: the original's proportions (2048, 512 for its 512 crop), so an image
      whose short side is ``C`` keeps its size at ratio 1;
    * ``QUICK_EPOCHS`` (5) epochs: ``5 * ceil(N / B)`` steps, at most the original's 160000.

    Everything else (optimizer, schedule shape, augmentation, ratio range) is the original recipe.
    """
    sizes = [tuple(size) for size in image_sizes]
    if not sizes:
        raise ValueError("quick_recipe needs the size of at least one training image, got none")
    for size in sizes:
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
            raise ValueError(f"image_sizes must be (height, width) pairs of integers >= 1, got {size!r}")
    if isinstance(images_per_step, bool) or not isinstance(images_per_step, int) or images_per_step < 1:
        raise ValueError(f"images_per_step must be an integer >= 1, got {images_per_step!r}")
    smallest = min(min(size) for size in sizes)
    original = TrainConfig()
    crop = min(original.crop_size[0], smallest)
    if crop >= QUICK_CROP_MULTIPLE:
        crop -= crop % QUICK_CROP_MULTIPLE
    long_over_short = original.img_scale[0] // original.img_scale[1]
    epoch = -(-len(sizes) // images_per_step)
    return {
        "total_steps": min(QUICK_EPOCHS * epoch, original.total_steps),
        "crop_size": (crop, crop),
        "img_scale": (long_over_short * crop, crop),
    }


def recipe_settings(
    recipe: str, image_sizes: Sequence[tuple[int, int]] | None = None, images_per_step: int | None = None
) -> dict[str, Any]:
    """``total_steps``, ``crop_size`` and ``img_scale`` of a named recipe (:data:`RECIPES`).

    ``"original"``: the :class:`TrainConfig` defaults (160000 steps, 512x512 crops, scale 2048x512);
    ``"quick"``: :func:`quick_recipe` of the training images (``image_sizes`` and ``images_per_step`` needed).
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {list(RECIPES)}, got {recipe!r}")
    if recipe == "original":
        original = TrainConfig()
        return {"total_steps": original.total_steps, "crop_size": original.crop_size, "img_scale": original.img_scale}
    if image_sizes is None or images_per_step is None:
        raise ValueError("recipe 'quick' needs image_sizes and images_per_step (it is sized to the training images)")
    return quick_recipe(image_sizes, images_per_step)


def format_duration(seconds: float, compact: bool = False) -> str:
    """``45 s``, ``12 min``, ``3.4 h``, ``2.1 days`` (``compact``: no space, ``12min``)."""
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        text = f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    elif seconds < 90 * 60:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 48 * 3600:
        text = f"{seconds / 3600:.1f} h"
    else:
        text = f"{seconds / 86400:.1f} days"
    return text.replace(" ", "") if compact else text


class StepTimer:
    """Time estimate of a training run from its steady-state step times (the log lines of both trainers).

    The first ``skip`` steps a run takes (counted again when it resumes) are not measured: they hold graph
    tracing (Keras), allocator warm-up and the first data loading. Seconds per step are the median of the
    last ``window`` measured steps; the first estimate is ready after ``first_after`` measured steps.
    Evaluations and checkpoint saves are not in the step times.
    """

    def __init__(self, total_steps: int, skip: int = 2, first_after: int = 3, window: int = 50) -> None:
        for name, value, low in (("total_steps", total_steps, 1), ("skip", skip, 0),
                                 ("first_after", first_after, 1), ("window", window, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.total_steps = total_steps
        self.skip = skip
        self.first_after = first_after
        self.taken = 0  # steps of this run seen by add()
        self.measured = 0
        self.skipped_seconds = 0.0
        self.first_measured_step: int | None = None
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, step: int, seconds: float) -> bool:
        """Record the time of ``step`` (the number of finished steps); True when the first estimate just became ready."""
        self.taken += 1
        if self.taken <= self.skip:
            self.skipped_seconds += float(seconds)
            return False
        if self.first_measured_step is None:
            self.first_measured_step = step
        self.recent.append(float(seconds))
        self.measured += 1
        return self.measured == self.first_after

    @property
    def ready(self) -> bool:
        return self.measured >= self.first_after

    def seconds_per_step(self) -> float | None:
        """Median of the recent measured step times (``None`` before the first estimate)."""
        if not self.ready:
            return None
        ordered = sorted(self.recent)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0

    def remaining(self, step: int) -> float | None:
        """Estimated seconds for the steps after ``step``."""
        per_step = self.seconds_per_step()
        return None if per_step is None else per_step * max(self.total_steps - step, 0)

    def summary(self, step: int) -> str:
        """The estimate as a sentence (printed once, when it becomes ready)."""
        per_step = self.seconds_per_step()
        if per_step is None:
            return ""
        last = self.first_measured_step + self.measured - 1 if self.first_measured_step is not None else step
        total = format_duration(per_step * self.total_steps)
        left = format_duration(per_step * max(self.total_steps - step, 0))
        return (
            f"time estimate: {per_step:.3g} s per step (median of steps {self.first_measured_step}-{last}; the first "
            f"{self.skip}, {format_duration(self.skipped_seconds)} in all, not counted) -> {self.total_steps} steps take "
            f"about {total} in all, {left} left (evaluations and checkpoint saves not included)"
        )

    def note(self, step: int) -> str:
        """``eta=3.4h`` for a log line (empty before the first estimate)."""
        left = self.remaining(step)
        return "" if left is None else f"eta={format_duration(left, compact=True)}"


def build_train_transform(config: TrainConfig) -> Any:
    """The original training augmentation (:class:`~segformer.common.images.transforms.TrainTransform`) for ``config``."""
    from ..images.transforms import TrainTransform

    return TrainTransform(
        crop_size=config.crop_size, img_scale=config.img_scale, ratio_range=config.ratio_range,
        cat_max_ratio=config.cat_max_ratio, photometric=config.photometric, ignore_index=config.ignore_index,
    )


def build_eval_transform(resize: str | None = None) -> Any:
    """Evaluation preprocessing: ``None`` keeps each image's size; ``"H,W"`` stretches to exactly that
    (Hugging Face style); ``"ade"`` is the original ADE20K test pipeline (fit in 2048x512 keeping the
    aspect ratio, then each side up to a multiple of 32). Labels always stay at their original size."""
    from ..images.transforms import EvalTransform

    if resize is None or resize == "none":
        return EvalTransform()
    if resize == "ade":  # the ADE20K presets' test-time rule, written once there
        from ..model.presets import get_preset

        ade = get_preset("b0-ade")
        return EvalTransform(size=ade.test_scale, keep_ratio=True, size_divisor=ade.size_divisor)
    return EvalTransform(size=parse_size(resize, "--eval-size"))


class JsonlLog:
    """Append one JSON object per line to ``path`` (``None``: print only); every line is flushed.

    The log is append-only, not atomic: a kill can leave a torn last line, which :func:`read_jsonl` skips and
    :func:`truncate_log` (run when training resumes) removes together with the steps being repeated.
    """

    def __init__(self, path: Any = None, echo: bool = True) -> None:
        from pathlib import Path

        self.path = None if path is None else Path(path)
        self.echo = echo
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any], note: str = "") -> None:
        """Append ``record``; the echoed line ends with ``note`` (not written to the file)."""
        clean = {k: (float(v) if isinstance(v, float) else v) for k, v in record.items()}
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(clean, sort_keys=False) + "\n")
        if self.echo:
            parts = []
            for key, value in clean.items():
                parts.append(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}")
            print(" ".join(parts + ([note] if note else [])), flush=True)


def read_jsonl(path: Any) -> list[dict[str, Any]]:
    """All records of a JSON-lines log (a torn line left by a kill is skipped)."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def truncate_log(path: Any, step: int) -> None:
    """Keep only the records of steps ``<= step`` (and torn lines out) in the log at ``path``, atomically.

    Run when training resumes from the state of ``step``: the steps after it are trained (and logged) again,
    so every step appears once in the log.
    """
    from pathlib import Path

    from ..base.atomic import atomic_write_text

    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if not isinstance(r.get("step"), int) or r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def nonfinite_loss_message(step: int, loss: float, out_dir: Any = None) -> str:
    """Why training stopped at a NaN / Inf loss, and what usually causes one."""
    resume = f"; the last saved state is in {out_dir}/last (continue with --resume)" if out_dir is not None else ""
    return (
        f"loss became {loss} at step {step}; stopped before applying its gradients{resume}. Likely causes: a learning "
        "rate too high for this model / batch size (lower --lr or lengthen --warmup-steps), float16/bfloat16 overflow "
        "(drop --bf16), NaN or Inf in the images or in the starting checkpoint, labels outside [0, num_labels)"
    )


class StopSignals:
    """Within ``with StopSignals() as stop:``, SIGINT / SIGTERM only set ``stop.signal`` (the main thread's
    handlers are restored on exit); a trainer checks it between steps, saves its state and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: Any) -> None:
        self.signal = number

    def __exit__(self, *exc: Any) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
