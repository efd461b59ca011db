"""SegformerConfig: typed, validated, JSON round trip, Hugging Face ``config.json`` compatible.

Every field of ``transformers.SegformerConfig`` (4.57.6) keeps its name and default, plus ``num_labels``,
``id2label``, ``label2id`` and ``problem_type``. Three fields are ours: ``patch_layer_norm_eps``,
``stage_layer_norm_eps`` and ``decode_head_type``.

Decode head (``decode_head_type``, one of :data:`DECODE_HEAD_TYPES`):

* ``"mlp"`` (the default; a config without the key): the original all-MLP head of SegFormer and Hugging
  Face: per stage a linear projection with bias, concatenation in stage order n..1, fuse conv + BatchNorm +
  ReLU, dropout, classifier.
* ``"mmseg"``: mmsegmentation's ``SegformerHead``: per stage a 1x1 conv without bias + BatchNorm + ReLU
  (mmcv ``ConvModule``), concatenation in stage order 1..n, fuse conv + BatchNorm + ReLU, channel dropout
  (``Dropout2d``), classifier (mmseg's ``conv_seg``).

LayerNorm epsilons (the one place where the sources disagree):

* ``layer_norm_eps`` is the epsilon of the block norms (``layer_norm_1``, ``layer_norm_2``) and of the
  stage norms (``encoder.layer_norm.{i}``). The original NVlabs code uses 1e-6 there (the default).
* ``patch_layer_norm_eps`` is the epsilon of the patch-embedding norms and of the sequence-reduction
  norms (``attention.self.layer_norm``). The original uses PyTorch's default 1e-5 there (the default).
* Hugging Face computes with 1e-5 in *every* norm although its files say ``layer_norm_eps: 1e-6``. A dict
  or file without the ``patch_layer_norm_eps`` key was written by Hugging Face (or by hand for it), so
  :meth:`SegformerConfig.from_dict` reads it with Hugging Face numerics: both epsilons 1e-5. Files we write
  carry both keys and load back unchanged; Hugging Face ignores the extra key.

* ``stage_layer_norm_eps`` (optional) is the epsilon of the stage norms alone; by default (``None``) it
  follows ``layer_norm_eps``, and it is written to ``config.json`` only when it differs. keras-hub's SegFormer
  uses 1e-5 there and 1e-6 in the block norms.

So ``SegformerConfig()`` reproduces the original code, ``from_pretrained`` of a Hub folder reproduces
Hugging Face, and both fields are read by the models in both frameworks.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import warnings
from typing import Any

from .config_files import CONFIG_NAME, ConfigFiles
from .config_generic import GENERIC_DEFAULTS, dtype_name
from .variants import variant_kwargs

__all__ = ["SegformerConfig", "HF_LAYER_NORM_EPS", "DECODE_HEAD_TYPES", "DEFAULT_DECODE_HEAD_TYPE", "ACTIVATIONS", "PROBLEM_TYPES", "CONFIG_NAME", "as_config", "patch_embed_size"]

MAX_LABELS = 1_000_000
# Bounds far above any SegFormer, low enough that a hostile config fails at validation, not in allocation.
MAX_STAGES = 16
MAX_LAYERS = 1024  # sum(depths)
MAX_WIDTH = 1 << 16  # hidden sizes, decoder width, channels, heads, Mix-FFN width
MAX_KERNEL = 1 << 10  # patch sizes, strides, sequence-reduction ratios
MAX_INITIALIZER_RANGE = 1.0
MAX_INPUT_SIDE = 1 << 16  # the smallest input a config accepts must be below this
HF_LAYER_NORM_EPS = 1e-5
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "selu", "silu", "swish", "tanh")
DEFAULT_DECODE_HEAD_TYPE = "mlp"
DECODE_HEAD_TYPES = (DEFAULT_DECODE_HEAD_TYPE, "mmseg")  # see the module docstring
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")

_LIST_FIELDS = (
    "depths",
    "sr_ratios",
    "hidden_sizes",
    "patch_sizes",
    "strides",
    "num_attention_heads",
    "mlp_ratios",
)

# Keys that HF's PretrainedConfig writes but that carry no meaning for this model family; they are kept
# (round trip) in ``extra`` together with any unknown key.
_VERSION_KEY = "segformer_version"


def patch_embed_size(size: Any, kernel: int, stride: int) -> Any:
    """One side after an overlapping patch embedding (conv, kernel k, stride s, padding k // 2):
    ``(size + 2 * (k // 2) - k) // s + 1``; ``size`` may be an int or a framework's integer scalar."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _check_epsilon(name: str, value: Any) -> None:
    """A positive finite number (LayerNorm epsilons, the initializer range); ``ValueError`` naming ``name``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive number (finite, not NaN), got {value!r:.100}")


def _as_list(name: str, value: Any) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a list with one number per stage, got {value!r}")
    return list(value)


class SegformerConfig(ConfigFiles):
    """Configuration of a SegFormer model (Hugging Face ``SegformerConfig`` compatible).

    Args mirror ``transformers.SegformerConfig``; see the module docstring for the two LayerNorm
    epsilons. Unknown keyword arguments are kept in :attr:`extra` and written back by :meth:`to_dict`.
    Invalid values raise ``ValueError`` naming the field, the value and what is allowed.
    """

    model_type = "segformer"

    def __init__(
        self,
        num_channels: int = 3,
        num_encoder_blocks: int = 4,
        depths: list[int] = (2, 2, 2, 2),
        sr_ratios: list[int] = (8, 4, 2, 1),
        hidden_sizes: list[int] = (32, 64, 160, 256),
        patch_sizes: list[int] = (7, 3, 3, 3),
        strides: list[int] = (4, 2, 2, 2),
        num_attention_heads: list[int] = (1, 2, 5, 8),
        mlp_ratios: list[float] = (4, 4, 4, 4),
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        classifier_dropout_prob: float = 0.1,
        initializer_range: float = 0.02,
        drop_path_rate: float = 0.1,
        layer_norm_eps: float = 1e-6,
        patch_layer_norm_eps: float = 1e-5,
        stage_layer_norm_eps: float | None = None,
        decoder_hidden_size: int = 256,
        decode_head_type: str = DEFAULT_DECODE_HEAD_TYPE,
        semantic_loss_ignore_index: int = 255,
        reshape_last_stage: bool = True,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        problem_type: str | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        return_dict: bool = True,
        **extra: Any,
    ) -> None:
        self.num_channels = num_channels
        self.num_encoder_blocks = num_encoder_blocks
        self.depths = _as_list("depths", depths)
        self.sr_ratios = _as_list("sr_ratios", sr_ratios)
        self.hidden_sizes = _as_list("hidden_sizes", hidden_sizes)
        self.patch_sizes = _as_list("patch_sizes", patch_sizes)
        self.strides = _as_list("strides", strides)
        self.num_attention_heads = _as_list("num_attention_heads", num_attention_heads)
        self.mlp_ratios = _as_list("mlp_ratios", mlp_ratios)
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.classifier_dropout_prob = classifier_dropout_prob
        self.initializer_range = initializer_range
        self.drop_path_rate = drop_path_rate
        self.layer_norm_eps = layer_norm_eps
        self.patch_layer_norm_eps = patch_layer_norm_eps
        self.stage_layer_norm_eps = layer_norm_eps if stage_layer_norm_eps is None else stage_layer_norm_eps
        self.decoder_hidden_size = decoder_hidden_size
        self.decode_head_type = decode_head_type
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.reshape_last_stage = reshape_last_stage
        self.problem_type = problem_type
        self.output_hidden_states = output_hidden_states
        self.output_attentions = output_attentions
        self.return_dict = extra.pop("use_return_dict", return_dict)
        self._set_labels(num_labels, id2label, label2id)
        for key in ("model_type", "transformers_version", _VERSION_KEY):
            extra.pop(key, None)
        self.extra: dict[str, Any] = extra
        if "dtype" in extra or "torch_dtype" in extra:  # one spelling, a string, in files: "dtype" (transformers 4.57)
            self.dtype = extra.get("dtype", extra.get("torch_dtype"))
        if "pruned_heads" in extra:
            self.pruned_heads = extra["pruned_heads"]
        self.validate()

    # ------------------------------------------------------------------ labels
    def _set_labels(self, num_labels: int | None, id2label: dict | None, label2id: dict | None) -> None:
        if id2label is not None:
            try:
                id2label = {int(k): str(v) for k, v in dict(id2label).items()}
            except (TypeError, ValueError):
                raise ValueError(f"id2label must map integer class ids to names, got {id2label!r:.200}") from None
        if label2id is not None and not isinstance(label2id, dict):
            raise ValueError(f"label2id must be a dict of name -> id, got {type(label2id).__name__}")
        if num_labels is None:
            num_labels = len(id2label) if id2label else 2
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or not 1 <= num_labels <= MAX_LABELS:
            raise ValueError(f"num_labels must be an integer in [1, {MAX_LABELS}], got {num_labels!r}")
        if id2label and len(id2label) != num_labels:
            # As transformers does (4.57): the names win, with a warning; num_labels follows them.
            warnings.warn(
                f"num_labels={num_labels} does not match id2label, which names {len(id2label)} classes; id2label wins: "
                f"the config has {len(id2label)} classes (num_labels={len(id2label)})", UserWarning, stacklevel=4,
            )
            num_labels = len(id2label)
            if not 1 <= num_labels <= MAX_LABELS:
                raise ValueError(f"id2label must name between 1 and {MAX_LABELS} classes, got {num_labels}")
        if not id2label:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        if sorted(id2label) != list(range(num_labels)):
            raise ValueError(f"id2label keys must be 0..{num_labels - 1}, got {sorted(id2label)}")
        if label2id is None or len(label2id) != num_labels:
            label2id = {name: i for i, name in id2label.items()}
        self.id2label = id2label
        try:
            self.label2id = {str(k): int(v) for k, v in dict(label2id).items()}
        except (TypeError, ValueError):
            raise ValueError(f"label2id must map names to integer ids, got {label2id!r:.200}") from None

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        if value != self.num_labels:
            self._set_labels(value, None, None)

    def __getattr__(self, name: str) -> Any:
        # Unknown keys of a config.json stay reachable as attributes, as in Hugging Face.
        if name != "extra" and "extra" in self.__dict__ and name in self.__dict__["extra"]:
            return self.__dict__["extra"][name]
        if name in GENERIC_DEFAULTS:  # transformers' generic PretrainedConfig attributes (config_generic.py)
            return copy.deepcopy(GENERIC_DEFAULTS[name])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in GENERIC_DEFAULTS:  # kept with the unknown keys: written back, as transformers writes a set value
            if name == "pruned_heads" and isinstance(value, dict):  # JSON keys are strings; transformers reads ints
                value = {int(k): v for k, v in value.items()}
            self.extra[name] = value
        else:
            super().__setattr__(name, value)

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> "SegformerConfig":
        """This config (transformers' answer for a model without a text sub-config)."""
        return self

    @property
    def use_return_dict(self) -> bool:
        """Hugging Face's name for :attr:`return_dict`."""
        return self.return_dict

    @property
    def architectures(self) -> list[str] | None:
        """Model class names this config was saved with (``config.json``'s ``architectures``), or ``None``."""
        return self.extra.get("architectures")

    @architectures.setter
    def architectures(self, value: list[str] | None) -> None:
        if value is None:
            self.extra.pop("architectures", None)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            self.extra["architectures"] = list(value)
        else:
            raise ValueError(f"architectures must be a list of class names or None, got {value!r}")

    @property
    def dtype(self) -> str | None:
        """Weights dtype recorded in ``config.json`` (``"dtype"``, or the older ``"torch_dtype"``), or ``None``: always
        the name (``"float16"``), also when set as ``torch.float16`` / ``np.float16`` / ``tf.float16``, so the config
        stays JSON and framework-free (transformers returns ``torch.float16``: ``getattr(torch, config.dtype)``)."""
        return self.extra.get("dtype", self.extra.get("torch_dtype"))

    @dtype.setter
    def dtype(self, value: Any) -> None:
        self.extra.pop("torch_dtype", None)
        if value is None:
            self.extra.pop("dtype", None)
            return
        self.extra["dtype"] = dtype_name(value)

    torch_dtype = dtype

    @property
    def name_or_path(self) -> str:
        """The folder or Hub id this config was loaded from (``""`` when built in code); never written to a file."""
        return self.__dict__.get("_name_or_path", "")

    @name_or_path.setter
    def name_or_path(self, value: str | os.PathLike) -> None:
        self.__dict__["_name_or_path"] = os.fspath(value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keywords that set a config field (what ``from_pretrained(..., **kwargs)`` may override)."""
        names = [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        return tuple(n for n in names if n != "self") + ("architectures", "dtype", "torch_dtype")

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check every field; raise ``ValueError`` naming the field, the value and what is allowed."""
        n = self.num_encoder_blocks
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_STAGES:
            raise ValueError(f"num_encoder_blocks must be an integer in [1, {MAX_STAGES}], got {n!r:.100}")
        limits = {"depths": MAX_LAYERS, "hidden_sizes": MAX_WIDTH, "num_attention_heads": MAX_WIDTH, "mlp_ratios": MAX_WIDTH,
                  "patch_sizes": MAX_KERNEL, "strides": MAX_KERNEL, "sr_ratios": MAX_KERNEL}
        for name in _LIST_FIELDS:
            value = getattr(self, name)
            if len(value) != n:
                raise ValueError(
                    f"{name} must have num_encoder_blocks={n} entries (one per stage), got {len(value)}: {value!r:.200}"
                )
            for item in value:
                is_number = isinstance(item, (int, float)) and not isinstance(item, bool)
                if name != "mlp_ratios" and not isinstance(item, int):
                    raise ValueError(f"{name} must hold positive integers, got {value!r:.200}")
                if not is_number or not 0 < item <= limits[name]:
                    raise ValueError(f"{name} must hold positive numbers up to {limits[name]}, got {value!r:.200}")
        if sum(self.depths) > MAX_LAYERS:
            raise ValueError(f"depths must add up to at most {MAX_LAYERS} layers, got {sum(self.depths)}: {self.depths}")
        for i, (hidden, heads) in enumerate(zip(self.hidden_sizes, self.num_attention_heads)):
            if hidden % heads:
                raise ValueError(
                    f"hidden_sizes[{i}]={hidden} is not divisible by num_attention_heads[{i}]={heads}; "
                    f"allowed head counts for {hidden}: {[h for h in range(1, hidden + 1) if hidden % h == 0]}"
                )
        for i, (hidden, ratio) in enumerate(zip(self.hidden_sizes, self.mlp_ratios)):
            if not 1 <= int(hidden * ratio) <= MAX_WIDTH:
                raise ValueError(
                    f"mlp_ratios[{i}]={ratio} gives a Mix-FFN of width {int(hidden * ratio)} for hidden size {hidden}; "
                    f"allowed widths: 1..{MAX_WIDTH}"
                )
        for name in ("num_channels", "decoder_hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_WIDTH:
                raise ValueError(f"{name} must be an integer in [1, {MAX_WIDTH}], got {value!r:.100}")
        side = self.min_input_size()
        if side > MAX_INPUT_SIDE:
            raise ValueError(
                f"patch_sizes {self.patch_sizes}, strides {self.strides} and sr_ratios {self.sr_ratios} need inputs of at "
                f"least {side}x{side} pixels; no input below {MAX_INPUT_SIDE} pixels a side would be accepted"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob", "drop_path_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "patch_layer_norm_eps", "stage_layer_norm_eps", "initializer_range"):
            _check_epsilon(name, getattr(self, name))
        if self.initializer_range > MAX_INITIALIZER_RANGE:  # a larger std makes random weights overflow float32
            raise ValueError(f"initializer_range (the std of random initial weights; default 0.02) must be at most "
                             f"{MAX_INITIALIZER_RANGE:g}, got {self.initializer_range!r:.100}")
        if not isinstance(self.decode_head_type, str) or self.decode_head_type not in DECODE_HEAD_TYPES:
            raise ValueError(f"decode_head_type must be one of {list(DECODE_HEAD_TYPES)}, got {self.decode_head_type!r:.100}")
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {list(ACTIVATIONS)}, got {self.hidden_act!r}")
        if not (self.problem_type is None or isinstance(self.problem_type, str)) or self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {list(PROBLEM_TYPES)}, got {self.problem_type!r}")
        ignore = self.semantic_loss_ignore_index
        if not isinstance(ignore, int) or isinstance(ignore, bool) or not -(2**31) <= ignore < 2**31:
            raise ValueError(f"semantic_loss_ignore_index must be an integer in [-2**31, 2**31), got {ignore!r:.100}")
        for name in ("reshape_last_stage", "output_hidden_states", "output_attentions", "return_dict"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    # ------------------------------------------------------------ derived data
    def stage_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Spatial size (h, w) after each stage for an input of ``height x width``.

        Each overlapping patch embedding is a conv with kernel k, stride s and padding k // 2:
        ``out = (in + 2 * (k // 2) - k) // s + 1``.
        """
        sizes = []
        for k, s in zip(self.patch_sizes, self.strides):
            height, width = patch_embed_size(height, k, s), patch_embed_size(width, k, s)
            sizes.append((height, width))
        return sizes

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` if an input of ``height x width`` is too small for a sequence-reduction conv.

        Stage i reduces keys/values with a conv of kernel = stride = ``sr_ratios[i]``, so its map must be at
        least that large; the message gives the smallest input size that works.
        """
        for i, ((h, w), r) in enumerate(zip(self.stage_sizes(height, width), self.sr_ratios)):
            if r > 1 and (h < r or w < r):
                raise ValueError(
                    f"pixel_values of size {height}x{width} is too small: stage {i + 1} is {h}x{w}, smaller than its "
                    f"sequence-reduction ratio {r}; height and width must be at least {self.min_input_size()}"
                )

    def min_input_size(self) -> int:
        """The smallest height / width that every stage accepts, computed backwards through the stages.

        Stage i maps ``n`` to ``(n + 2 * (k // 2) - k) // s + 1``; it reaches at least ``t`` from
        ``n >= (t - 1) * s - (2 * (k // 2) - k)``, and its map must be at least ``sr_ratios[i]`` (when > 1).
        """
        need = 1
        for k, s, r in reversed(list(zip(self.patch_sizes, self.strides, self.sr_ratios))):
            need = max(need, r if r > 1 else 1)
            need = max(1, (need - 1) * s - (2 * (k // 2) - k))
        return need

    def drop_path_rates(self) -> list[list[float]]:
        """Stochastic-depth rate of every layer: ``linspace(0, drop_path_rate, sum(depths))`` split by stage."""
        total = sum(self.depths)
        flat = [self.drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        rates, start = [], 0
        for depth in self.depths:
            rates.append(flat[start : start + depth])
            start += depth
        return rates

    # -------------------------------------------------------------- factories
    @classmethod
    def from_variant(cls, name: str, **overrides: Any) -> "SegformerConfig":
        """A variant (:func:`~segformer.common.model.variants.parse_variant`: ``"b0"`` .. ``"b5"``, ``"tiny"``, also
        ``"mit-b0"`` / ``"mit_b0"`` / ``"segformer-b0"``) with overrides."""
        kwargs = variant_kwargs(name)
        kwargs.update(overrides)
        return cls(**kwargs)

    def layer_kwargs(self, stage: int, index: int) -> dict[str, Any]:
        """The constructor arguments of encoder layer ``index`` of ``stage`` (both frameworks' ``SegformerLayer``)."""
        return {
            "hidden_size": self.hidden_sizes[stage],
            "num_attention_heads": self.num_attention_heads[stage],
            "drop_path": self.drop_path_rates()[stage][index],
            "sequence_reduction_ratio": self.sr_ratios[stage],
            "mlp_ratio": self.mlp_ratios[stage],
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "layer_norm_eps": self.layer_norm_eps,
            "patch_layer_norm_eps": self.patch_layer_norm_eps,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the Hugging Face ``config.json`` layout (plus ``patch_layer_norm_eps``, and
        ``stage_layer_norm_eps`` where it differs from ``layer_norm_eps``)."""
        from ... import __version__

        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "model_type": self.model_type,
                "num_channels": self.num_channels,
                "num_encoder_blocks": self.num_encoder_blocks,
                "depths": list(self.depths),
                "sr_ratios": list(self.sr_ratios),
                "hidden_sizes": list(self.hidden_sizes),
                "patch_sizes": list(self.patch_sizes),
                "strides": list(self.strides),
                "num_attention_heads": list(self.num_attention_heads),
                "mlp_ratios": list(self.mlp_ratios),
                "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "classifier_dropout_prob": self.classifier_dropout_prob,
                "initializer_range": self.initializer_range,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_eps": self.layer_norm_eps,
                "patch_layer_norm_eps": self.patch_layer_norm_eps,
                "decoder_hidden_size": self.decoder_hidden_size,
                "semantic_loss_ignore_index": self.semantic_loss_ignore_index,
                "reshape_last_stage": self.reshape_last_stage,
                "num_labels": self.num_labels,
                "id2label": dict(self.id2label),
                "label2id": dict(self.label2id),
                "problem_type": self.problem_type,
                "output_hidden_states": self.output_hidden_states,
                "output_attentions": self.output_attentions,
                "return_dict": self.return_dict,
                _VERSION_KEY: __version__,
            }
        )
        if self.stage_layer_norm_eps != self.layer_norm_eps:
            out["stage_layer_norm_eps"] = self.stage_layer_norm_eps
        if self.decode_head_type != DEFAULT_DECODE_HEAD_TYPE:  # files of the default head stay as they were
            out["decode_head_type"] = self.decode_head_type
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "SegformerConfig":
        """Build from a ``config.json`` dict; a dict without ``patch_layer_norm_eps`` gets HF numerics."""
        data = dict(data)
        if data.get("model_type", "segformer") != "segformer":
            raise ValueError(f"model_type must be 'segformer', got {data['model_type']!r}")
        if "patch_layer_norm_eps" not in data:
            # Written by Hugging Face: its models compute with 1e-5 in every LayerNorm whatever the file says, but a
            # value that cannot be an epsilon (NaN, inf, negative, a string) is still refused, not replaced.
            if "layer_norm_eps" in data:
                _check_epsilon("layer_norm_eps", data["layer_norm_eps"])
            data["layer_norm_eps"] = HF_LAYER_NORM_EPS
            data["patch_layer_norm_eps"] = HF_LAYER_NORM_EPS
        if "num_labels" in overrides and "id2label" not in overrides:
            # transformers sets keyword overrides after building: a new num_labels replaces the file's names
            data.pop("id2label", None)
            data.pop("label2id", None)
        elif "id2label" in overrides and "num_labels" not in overrides:
            data.pop("num_labels", None)  # and new names bring their own count
        data.update(overrides)
        return cls(**data)

    def to_diff_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without what transformers' ``to_diff_dict`` leaves out: ``num_labels`` (``id2label``
        carries it) and the generic output switches / ``problem_type`` / label maps while they hold their defaults. Every
        architecture field stays (as in transformers), so does ``patch_layer_norm_eps``."""
        generic = {"output_hidden_states": False, "output_attentions": False, "return_dict": True, "problem_type": None,
                   "id2label": {0: "LABEL_0", 1: "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1}}
        return {
            k: v for k, v in self.to_dict().items() if k != "num_labels" and not (k in generic and generic[k] == v)
        }

    def to_json_string(self, use_diff: bool = False) -> str:
        """JSON text of :meth:`to_dict` (every field: what ``config.json`` holds), or of :meth:`to_diff_dict`."""
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def update(self, config_dict: dict[str, Any]) -> None:
        """Set fields from a dict (unknown keys go to :attr:`extra`, as attributes in Hugging Face). The result
        is validated first: an invalid value raises ``ValueError`` and leaves the config unchanged."""
        if not isinstance(config_dict, dict):
            raise TypeError(f"update takes a dict of field -> value, got {type(config_dict).__name__}")
        data = self.to_dict()
        if "num_labels" in config_dict and "id2label" not in config_dict:
            data.pop("id2label")
            data.pop("label2id")
        if "torch_dtype" in config_dict:
            data.pop("dtype", None)
        data.update(config_dict)
        updated = type(self).from_dict(data)
        self.__dict__.update({k: v for k, v in updated.__dict__.items() if k != "_name_or_path"})

    # --------------------------------------------------------------- helpers
    def copy(self, **overrides: Any) -> "SegformerConfig":
        data = self.to_dict()
        data.update(overrides)
        return type(self).from_dict(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SegformerConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SegformerConfig {self.to_json_string()}"


def as_config(config: Any, owner: str) -> SegformerConfig:
    """``config`` as a :class:`SegformerConfig`: one as is, a ``config.json`` dict (what Keras' ``get_config``
    stores) converted; anything else is a ``TypeError`` naming ``owner`` (the class that was given it)."""
    if isinstance(config, SegformerConfig):
        return config
    if isinstance(config, dict):
        return SegformerConfig.from_dict(config)
    raise TypeError(f"{owner}: config must be a SegformerConfig or a config dict, got {type(config).__name__}")
