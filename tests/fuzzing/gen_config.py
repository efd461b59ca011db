"""Config values at their edges: NaN, inf, negative, strings, huge; ``id2label`` of the wrong length; some
configs are built into a PyTorch model and run on a 32 x 32 input.

Oracle (independent of the library's rules): each field's allowed set is written here from its meaning
(an epsilon is a finite positive number, a dropout a probability in [0, 1), a width a positive integer);
an invalid value must be a clear error naming the field; a valid config must round-trip through
``to_dict`` / ``from_dict`` with the value kept, and a built model must give finite logits of shape
``(1, num_labels, 8, 8)``. ``id2label`` longer or shorter than ``num_labels`` may be refused, or accepted with
a warning and a consistent result (``len(id2label) == num_labels``).
"""

from __future__ import annotations

import math

import numpy as np

from fuzzing.cases import Case, require

EPS = ("layer_norm_eps", "patch_layer_norm_eps", "initializer_range")
PROBS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob", "drop_path_rate")
INTS = ("decoder_hidden_size", "num_labels", "num_channels")
LISTS = ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios")
SCALARS = [float("nan"), float("inf"), -float("inf"), -1.0, -1, 0, 0.0, 1e-12, 1e-6, 1e-5, 0.02, 0.5, 0.999, 1.0, 1, 2,
           3, 7, 16, 1e30, 10**9, 2**70, "1e-5", "abc", "", None, True, False, [1e-5], {"a": 1}]
TINY = dict(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 16, 16], num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16,
            num_labels=3, drop_path_rate=0.0, classifier_dropout_prob=0.0)


def setup(folder):
    return {}


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid(field: str, value) -> str:
    """'ok' / 'error' / 'either' for one scalar field."""
    if field in EPS:
        return "ok" if _real(value) and 0 < value <= 1 else ("either" if _real(value) and value > 1 else "error")
    if field in PROBS:
        return "ok" if _real(value) and 0 <= value < 1 else ("either" if value == 1 and _real(value) else "error")
    if field == "num_labels" and value is None:
        return "ok"  # as in transformers: no count given means the default (2 labels)
    if field in INTS:
        if isinstance(value, int) and not isinstance(value, bool):
            return "ok" if 1 <= value <= 64 else ("either" if value > 64 else "error")
        return "error"
    raise KeyError(field)


def _list_value(rng):
    kind = rng.choice(["tiny", "huge_width", "huge_depth", "negative", "short", "float", "nan", "string", "zero_sr"])
    return str(kind), {
        "tiny": {"hidden_sizes": [8, 8, 16, 16]},
        "huge_width": {"hidden_sizes": [16384] * 4, "num_attention_heads": [1, 1, 1, 1]},
        "huge_depth": {"depths": [200, 200, 200, 200]},
        "negative": {"depths": [1, -1, 1, 1]},
        "short": {"sr_ratios": [8, 4]},
        "float": {"hidden_sizes": [8.0, 8, 16, 16]},
        "nan": {"mlp_ratios": [float("nan"), 4, 4, 4]},
        "string": {"strides": ["4", 2, 2, 2]},
        "zero_sr": {"sr_ratios": [0, 4, 2, 1]},
    }[str(kind)]


def make_case(rng, context, folder):
    from segformer import SegformerConfig

    kwargs = dict(TINY)
    kind = rng.choice(["scalar", "scalar", "scalar", "list", "id2label"])
    build = bool(rng.random() < 0.3)
    if kind == "scalar":
        field = str(rng.choice(EPS + PROBS + INTS))
        value = SCALARS[int(rng.integers(len(SCALARS)))]
        kwargs[field] = value
        expect = _valid(field, value)
        names = (field,)
        description = {"field": field, "value": repr(value), "build": build}
    elif kind == "list":
        field, edit = _list_value(rng)
        kwargs.update(edit)
        expect = "ok" if field == "tiny" else ("either" if field in ("huge_width", "huge_depth") else "error")
        names = tuple(edit)
        description = {"lists": repr(edit), "build": build}
    else:
        count = int(rng.integers(1, 6))
        labels = int(rng.integers(1, 6))
        kwargs["id2label"] = {i: f"class{i}" for i in range(count)}
        kwargs["num_labels"] = labels
        expect = "ok" if count == labels else "either"
        names = ("id2label", "num_labels")
        description = {"id2label_len": count, "num_labels": labels, "build": build}

    def run():
        config = SegformerConfig(**kwargs)
        again = SegformerConfig.from_dict(config.to_dict())
        logits = None
        if build:
            import torch

            from segformer.pt import SegformerForSemanticSegmentation

            torch.manual_seed(0)
            model = SegformerForSemanticSegmentation(config).eval()
            with torch.no_grad():
                logits = model(torch.rand(1, config.num_channels, 32, 32)).logits.numpy()
        return config, again, logits

    def check(answer, caught):
        config, again, logits = answer
        require(again.to_dict() == config.to_dict() or _nan_equal(again.to_dict(), config.to_dict()),
                "to_dict / from_dict does not round-trip")
        for field, value in kwargs.items():
            if field in ("id2label", "num_labels") or isinstance(value, (list, dict)):
                continue
            kept = getattr(config, field)
            require(kept == value or (isinstance(value, float) and math.isnan(value) and math.isnan(kept)),
                    f"{field}={value!r} became {kept!r}")
        require(len(config.id2label) == config.num_labels, "id2label and num_labels disagree")
        if "id2label" in kwargs and len(kwargs["id2label"]) != kwargs["num_labels"]:
            require(any("id2label" in w or "num_labels" in w for w in caught),
                    f"id2label of {len(kwargs['id2label'])} names with num_labels={kwargs['num_labels']} accepted "
                    f"without a warning (kept {config.num_labels} classes: {list(config.id2label.values())[:5]})")
        if logits is not None:
            require(logits.shape == (1, config.num_labels, 8, 8), f"logits shape {logits.shape}")
            require(np.isfinite(logits).all(), "non-finite logits from an accepted config")

    return Case(description, run, expect=expect, names=names, check=check)


def _nan_equal(a, b) -> bool:
    return json_repr(a) == json_repr(b)


def json_repr(value) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)
