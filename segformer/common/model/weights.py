"""THE canonical parameter table.

Canonical names are the Hugging Face PyTorch ``state_dict`` keys (``SegformerForSemanticSegmentation``'s), so
``nvidia/segformer-*`` checkpoints load with an identity map. :func:`parameter_table` takes a config and
a task and yields every parameter with its PyTorch shape and its *kind*; each kind owns an exact pair of
inverse transforms between the PyTorch layout and the TensorFlow/Keras layout. The TF variable path of a
parameter is its module path joined with ``/`` (``segformer/encoder/block.0.1/attention/self/query/kernel``),
which is also the Hugging Face ``tf_model.h5`` weight name without its model-name prefix.

Other sources (original NVlabs keys, HF ``tf_model.h5`` names) are adapters onto this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .config import SegformerConfig

__all__ = [
    "TASKS",
    "TASK_ALIASES",
    "KINDS",
    "ParamSpec",
    "parameter_table",
    "canonical_task",
    "count_parameters",
    "check_model_memory",
    "to_tf_layout",
    "to_pt_layout",
    "BASE_MODEL_PREFIX",
    "base_prefix",
    "hf_tf_model_name",
    "check_state_keys",
    "TaskClasses",
    "TASK_CLASSES",
]

BASE = "base"
SEMANTIC_SEGMENTATION = "semantic_segmentation"
IMAGE_CLASSIFICATION = "image_classification"
TASKS = (BASE, SEMANTIC_SEGMENTATION, IMAGE_CLASSIFICATION)
# Hugging Face `base_model_prefix`: the task models hold the encoder under this name, the base model does not
BASE_MODEL_PREFIX = "segformer."


@dataclass(frozen=True)
class TaskClasses:
    """The classes of one task: ours in ``segformer.pt`` / ``segformer.tf``, and the Keras model name that
    Hugging Face's TF class puts in front of every ``tf_model.h5`` weight."""

    pt_class: str
    tf_class: str
    tf_model_name: str


# The one task table: task -> PT class, TF class, transformers' TF model name.
TASK_CLASSES: dict[str, TaskClasses] = {
    BASE: TaskClasses("SegformerModel", "TFSegformerModel", "tf_segformer_model"),
    SEMANTIC_SEGMENTATION: TaskClasses(
        "SegformerForSemanticSegmentation", "TFSegformerForSemanticSegmentation", "tf_segformer_for_semantic_segmentation"
    ),
    IMAGE_CLASSIFICATION: TaskClasses(
        "SegformerForImageClassification", "TFSegformerForImageClassification", "tf_segformer_for_image_classification"
    ),
}
TASK_ALIASES = {
    "base": BASE,
    "model": BASE,
    "segformermodel": BASE,
    "semantic_segmentation": SEMANTIC_SEGMENTATION,
    "segmentation": SEMANTIC_SEGMENTATION,
    "seg": SEMANTIC_SEGMENTATION,
    "segformerforsemanticsegmentation": SEMANTIC_SEGMENTATION,
    "image_classification": IMAGE_CLASSIFICATION,
    "classification": IMAGE_CLASSIFICATION,
    "cls": IMAGE_CLASSIFICATION,
    "segformerforimageclassification": IMAGE_CLASSIFICATION,
}

# kind -> (TF leaf name for "weight", for "bias"), and the PT -> TF axis permutation of the weight.
# linear: PT (out, in) <-> TF (in, out). conv / dwconv: PT (O, I/g, kh, kw) <-> TF (kh, kw, I/g, O).
# norm (LayerNorm / BatchNorm affine): identity, TF names gamma / beta. bn_stat / counter: identity.
KINDS = ("linear", "conv", "dwconv", "bias", "norm_weight", "norm_bias", "bn_mean", "bn_var", "counter")
_PT_TO_TF_AXES = {"linear": (1, 0), "conv": (2, 3, 1, 0), "dwconv": (2, 3, 1, 0)}
_TF_TO_PT_AXES = {"linear": (1, 0), "conv": (3, 2, 0, 1), "dwconv": (3, 2, 0, 1)}
_TF_LEAF = {
    "linear": "kernel",
    "conv": "kernel",
    "dwconv": "kernel",
    "bias": "bias",
    "norm_weight": "gamma",
    "norm_bias": "beta",
    "bn_mean": "moving_mean",
    "bn_var": "moving_variance",
    "counter": "num_batches_tracked",
}
_PT_LEAF = {
    "linear": "weight",
    "conv": "weight",
    "dwconv": "weight",
    "bias": "bias",
    "norm_weight": "weight",
    "norm_bias": "bias",
    "bn_mean": "running_mean",
    "bn_var": "running_var",
    "counter": "num_batches_tracked",
}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter (or buffer) of a SegFormer model.

    ``module`` is the module path in PyTorch (``("segformer", "encoder", "block", "0", "1", ...)`` is
    written with the list index folded into the segment: ``"block.0.1"``), ``shape`` the PyTorch shape.
    """

    module: tuple[str, ...]
    kind: str
    shape: tuple[int, ...]
    tf_module: tuple[str, ...]

    @property
    def name(self) -> str:
        """Canonical name = Hugging Face PyTorch ``state_dict`` key."""
        return ".".join(self.module + (_PT_LEAF[self.kind],))

    @property
    def tf_name(self) -> str:
        """Keras variable path, e.g. ``segformer/encoder/block.0.0/attention/self/query/kernel``."""
        return "/".join(self.tf_module + (_TF_LEAF[self.kind],))

    @property
    def tf_shape(self) -> tuple[int, ...]:
        axes = _PT_TO_TF_AXES.get(self.kind)
        return tuple(self.shape[a] for a in axes) if axes else self.shape

    @property
    def dtype(self) -> str:
        return "int64" if self.kind == "counter" else "float32"

    @property
    def trainable(self) -> bool:
        return self.kind not in ("bn_mean", "bn_var", "counter")


def canonical_task(task: str) -> str:
    key = str(task).lower().replace("-", "_").replace(" ", "_")
    if key not in TASK_ALIASES:
        raise ValueError(f"unknown task {task!r}; valid tasks: {list(TASKS)}")
    return TASK_ALIASES[key]


def base_prefix(task: str) -> str:
    """``""`` for the base model, ``"segformer."`` for the task models (Hugging Face ``base_model_prefix``)."""
    return "" if canonical_task(task) == BASE else BASE_MODEL_PREFIX


def hf_tf_model_name(task: str) -> str:
    """The Keras model name that Hugging Face's TF classes put in front of every ``tf_model.h5`` weight."""
    return TASK_CLASSES[canonical_task(task)].tf_model_name


def _encoder_specs(config: SegformerConfig, root: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], str, tuple]]:
    enc = root + ("encoder",)
    in_channels = config.num_channels
    for i in range(config.num_encoder_blocks):
        c, k = config.hidden_sizes[i], config.patch_sizes[i]
        m = enc + (f"patch_embeddings.{i}",)
        yield m + ("proj",), "conv", (c, in_channels, k, k)
        yield m + ("proj",), "bias", (c,)
        yield m + ("layer_norm",), "norm_weight", (c,)
        yield m + ("layer_norm",), "norm_bias", (c,)
        in_channels = c
    for i in range(config.num_encoder_blocks):
        c, r = config.hidden_sizes[i], config.sr_ratios[i]
        hidden = int(c * config.mlp_ratios[i])
        for j in range(config.depths[i]):
            m = enc + (f"block.{i}.{j}",)
            yield m + ("layer_norm_1",), "norm_weight", (c,)
            yield m + ("layer_norm_1",), "norm_bias", (c,)
            att = m + ("attention", "self")
            for proj in ("query", "key", "value"):
                yield att + (proj,), "linear", (c, c)
                yield att + (proj,), "bias", (c,)
            if r > 1:
                yield att + ("sr",), "conv", (c, c, r, r)
                yield att + ("sr",), "bias", (c,)
                yield att + ("layer_norm",), "norm_weight", (c,)
                yield att + ("layer_norm",), "norm_bias", (c,)
            yield m + ("attention", "output", "dense"), "linear", (c, c)
            yield m + ("attention", "output", "dense"), "bias", (c,)
            yield m + ("layer_norm_2",), "norm_weight", (c,)
            yield m + ("layer_norm_2",), "norm_bias", (c,)
            yield m + ("mlp", "dense1"), "linear", (hidden, c)
            yield m + ("mlp", "dense1"), "bias", (hidden,)
            yield m + ("mlp", "dwconv", "dwconv"), "dwconv", (hidden, 1, 3, 3)
            yield m + ("mlp", "dwconv", "dwconv"), "bias", (hidden,)
            yield m + ("mlp", "dense2"), "linear", (c, hidden)
            yield m + ("mlp", "dense2"), "bias", (c,)
    for i in range(config.num_encoder_blocks):
        c = config.hidden_sizes[i]
        yield enc + (f"layer_norm.{i}",), "norm_weight", (c,)
        yield enc + (f"layer_norm.{i}",), "norm_bias", (c,)


def _batch_norm_specs(module: tuple[str, ...], d: int) -> Iterable[tuple[tuple[str, ...], str, tuple]]:
    yield module, "norm_weight", (d,)
    yield module, "norm_bias", (d,)
    yield module, "bn_mean", (d,)
    yield module, "bn_var", (d,)
    yield module, "counter", ()


def _decode_head_specs(config: SegformerConfig) -> Iterable[tuple[tuple[str, ...], str, tuple]]:
    """The head of ``config.decode_head_type``: ``"mlp"`` has a bias on each stage's ``proj``; ``"mmseg"`` has
    none there but a BatchNorm ``linear_c.{i}.batch_norm`` after it (mmseg's ``convs.{i}.conv`` / ``.bn``)."""
    d = config.decoder_hidden_size
    head = ("decode_head",)
    for i in range(config.num_encoder_blocks):
        yield head + (f"linear_c.{i}", "proj"), "linear", (d, config.hidden_sizes[i])
        if config.decode_head_type == "mmseg":
            yield from _batch_norm_specs(head + (f"linear_c.{i}", "batch_norm"), d)
        else:
            yield head + (f"linear_c.{i}", "proj"), "bias", (d,)
    yield head + ("linear_fuse",), "conv", (d, d * config.num_encoder_blocks, 1, 1)
    yield from _batch_norm_specs(head + ("batch_norm",), d)
    yield head + ("classifier",), "conv", (config.num_labels, d, 1, 1)
    yield head + ("classifier",), "bias", (config.num_labels,)


def parameter_table(config: SegformerConfig, task: str = SEMANTIC_SEGMENTATION) -> list[ParamSpec]:
    """Every parameter and buffer of the model for ``task``, in Hugging Face ``state_dict`` order.

    ``task`` is one of :data:`TASKS` (``"base"``, ``"semantic_segmentation"``, ``"image_classification"``;
    aliases such as ``"seg"`` / ``"cls"`` / HF class names are accepted). The TF module path of a base-model
    parameter gains the ``segformer`` main-layer level that the TF classes have.
    """
    task = canonical_task(task)
    root: tuple[str, ...] = () if task == BASE else ("segformer",)
    raw = list(_encoder_specs(config, root))
    if task == SEMANTIC_SEGMENTATION:
        raw += list(_decode_head_specs(config))
    elif task == IMAGE_CLASSIFICATION:
        raw += [
            (("classifier",), "linear", (config.num_labels, config.hidden_sizes[-1])),
            (("classifier",), "bias", (config.num_labels,)),
        ]
    tf_root = ("segformer",) if task == BASE else ()
    return [ParamSpec(module, kind, tuple(shape), tf_root + module) for module, kind, shape in raw]


def count_parameters(config: SegformerConfig, task: str = SEMANTIC_SEGMENTATION) -> int:
    """Number of trainable scalars (what ``sum(p.numel() for p in model.parameters())`` counts)."""
    return sum(int(np.prod(s.shape)) for s in parameter_table(config, task) if s.trainable)


def check_model_memory(config: SegformerConfig, task: str = SEMANTIC_SEGMENTATION, what: str = "model") -> int:
    """Refuse, before any weight is allocated, a model whose float32 parameters and buffers (twice: each tensor
    and its initial values exist together while it is built) cannot fit in this process
    (:class:`~segformer.common.base.errors.ResourceLimitError` naming the widths); returns the bytes. A 1 KB
    config with ``hidden_sizes`` 16384 or a million labels is refused here from arithmetic, in both frameworks."""
    from ..base.resources import check_memory

    needed = 2 * 4 * sum(int(np.prod(s.shape)) for s in parameter_table(config, task))
    check_memory(
        needed,
        f"{what} config (hidden_sizes={config.hidden_sizes}, mlp_ratios={config.mlp_ratios}, depths={config.depths}, "
        f"decoder_hidden_size={config.decoder_hidden_size}, num_labels={config.num_labels})",
        f"building its {count_parameters(config, task):,} parameters",
    )
    return needed


def to_tf_layout(spec: ParamSpec, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> TF layout (exact; a transpose or the identity)."""
    array = np.asarray(array)
    if tuple(array.shape) != spec.shape:
        raise ValueError(f"{spec.name}: expected PyTorch shape {spec.shape}, got {tuple(array.shape)}")
    axes = _PT_TO_TF_AXES.get(spec.kind)
    return np.ascontiguousarray(array.transpose(axes)) if axes else array


def to_pt_layout(spec: ParamSpec, array: np.ndarray) -> np.ndarray:
    """TF layout -> PyTorch layout (exact inverse of :func:`to_tf_layout`)."""
    array = np.asarray(array)
    if tuple(array.shape) != spec.tf_shape:
        raise ValueError(f"{spec.tf_name}: expected TF shape {spec.tf_shape}, got {tuple(array.shape)}")
    axes = _TF_TO_PT_AXES.get(spec.kind)
    return np.ascontiguousarray(array.transpose(axes)) if axes else array


def check_state_keys(names: Iterable[str], expected: Iterable[str], strict: bool = True) -> None:
    """The key rule of both frameworks' ``load_state_dict_numpy``: a ``KeyError`` listing the unknown names
    (always) and the missing ones (with ``strict``)."""
    given, wanted = set(names), set(expected)
    unknown = sorted(given - wanted)
    missing = sorted(wanted - given)
    if unknown or (strict and missing):
        raise KeyError(f"load_state_dict_numpy: unknown keys {unknown}, missing keys {missing if strict else []}")
