"""``segformer/pt`` and ``segformer/tf`` mirror each other: a mechanical check of the public signatures.

Compared: the public functions of ``pt/<module>.py`` and ``tf/<module>.py`` with the same name, and for every
PT class ``SegformerX`` with a TF twin ``TFSegformerX`` in the same-named module, ``__init__``, ``forward`` /
``call``, ``from_pretrained``, ``save_pretrained`` and ``from_preset``: the parameter names, kinds and defaults.
A keyword that one side gains fails this test until the other side has it too, or until it is written in
``DELIBERATE`` below with its reason.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

import segformer.pt  # noqa: E402
import segformer.tf  # noqa: E402

METHODS = (("__init__", "__init__"), ("forward", "call"), ("from_pretrained", "from_pretrained"),
           ("save_pretrained", "save_pretrained"), ("from_preset", "from_preset"))

# Framework rules, the same for every pair: a Keras layer's ``call`` takes ``training`` (PyTorch reads
# ``module.training``) and its ``__init__`` passes ``**kwargs`` (``name``, ``dtype``, ...) to ``keras.layers.Layer``;
# Keras layers take their initializer when made (``initializer_range``), PyTorch modules get it from the model's
# ``post_init``; Keras models and functions take NCHW or NHWC (``data_format``), PyTorch ones NCHW only.
TF_ONLY_EVERYWHERE = {"__init__": {"kwargs", "initializer_range", "data_format"}, "call": {"training"},
                      "from_pretrained": {"data_format"}}
TF_ONLY_FUNCTIONS = {"data_format"}

# Deliberate differences: (subject) -> {"pt": names only PT has, "tf": names only TF has, "defaults": names whose
# default differs}, each with its reason.
DELIBERATE: dict[str, dict[str, set[str]]] = {
    # transformers' names: TFSegformerDropPath(drop_path).call(x) and SegformerDropPath(drop_prob).forward(hidden_states);
    # .keras files store the TF keyword in the layer config, so renaming it would break saved models
    "layers.SegformerDropPath.__init__": {"pt": {"drop_prob"}, "tf": {"drop_path"}},
    "layers.SegformerDropPath.forward": {"pt": {"hidden_states"}, "tf": {"x"}},
    # Keras infers input widths when the layer is built; PyTorch needs them to make the weights
    "layers.SegformerOverlapPatchEmbeddings.__init__": {"pt": {"num_channels"}},
    "decode_head.SegformerMLP.__init__": {"pt": {"input_dim"}},
    # the Keras encoder layer returns the plain tuple; the Keras models build the output objects (return_dict)
    "encoder.SegformerEncoder.forward": {"pt": {"return_dict"}},
    # PyTorch's decode head is a SegformerPreTrainedModel as in transformers (its loaders refuse with a TypeError:
    # it is not loadable on its own); the Keras one is a plain layer, as in transformers
    "decode_head.SegformerDecodeHead.from_pretrained": {"pt": {"*"}},
    "decode_head.SegformerDecodeHead.save_pretrained": {"pt": {"*"}},
    "decode_head.SegformerDecodeHead.from_preset": {"pt": {"*"}},
    # the base classes' own forward / call are the frameworks' (nn.Module.forward(*input), keras.Model.call);
    # transformers' PreTrainedModel.__init__(config, *inputs, **kwargs)
    "pretrained.SegformerPreTrainedModel.forward": {"pt": {"input"}, "tf": {"args", "kwargs"}},
    "pretrained.SegformerPreTrainedModel.__init__": {"pt": {"args"}},
    # the flag that reads the other framework's files has transformers' name on each side (one rule:
    # segformer.common.checkpoints.pretrained.weights_preference)
    "*.from_pretrained": {"pt": {"from_tf"}, "tf": {"from_pt"}},
    # transformers' own save_pretrained keywords and defaults: PyTorch (is_main_process, save_function; shards of
    # 5GB, safetensors by default), Keras (saved_model, version, signatures; 10GB, tf_model.h5 by default)
    "*.save_pretrained": {"pt": {"is_main_process", "save_function"}, "tf": {"saved_model", "version", "signatures"},
                          "defaults": {"max_shard_size", "safe_serialization"}},
    # Keras' fit passes sample_weight into the loss; PyTorch callers weight the loss themselves
    "losses.classification_loss": {"tf": {"sample_weight"}},
    "losses.semantic_segmentation_loss": {"tf": {"sample_weight"}},
    # TF checks labels against the static batch size (None inside some graphs), PyTorch against the logits
    "losses.check_segmentation_labels": {"pt": {"logits"}, "tf": {"batch"}},
    # Keras creates its variables by calling the model once, on one crop of this size
    "training.build_model": {"tf": {"crop_size"}},
    # bfloat16 autocast is a PyTorch context; Keras runs mixed precision through its global dtype policy
    "training.evaluate": {"pt": {"bf16"}},
}


def _params(function) -> dict[str, tuple[str, object]]:
    return {n: (p.kind.name, p.default) for n, p in inspect.signature(function).parameters.items() if n not in ("self", "cls")}


def _modules() -> list[str]:
    pt = {m.name for m in pkgutil.iter_modules(segformer.pt.__path__)}
    tf = {m.name for m in pkgutil.iter_modules(segformer.tf.__path__)}
    return sorted(pt & tf)


def _own(module, kind):
    return {n: o for n, o in vars(module).items()
            if kind(o) and o.__module__ == module.__name__ and not n.startswith("_")}


def _differences() -> dict[str, dict[str, set[str]]]:
    found: dict[str, dict[str, set[str]]] = {}

    def compare(subject: str, pt, tf, tf_only: set[str]) -> None:
        if pt is None or tf is None:
            if pt is not None or tf is not None:
                found[subject] = {"pt" if tf is None else "tf": {"*"}}
            return
        a, b = _params(pt), _params(tf)
        entry = {"pt": set(a) - set(b), "tf": set(b) - set(a) - tf_only,
                 "defaults": {n for n in set(a) & set(b) if a[n] != b[n]}}
        entry = {k: v for k, v in entry.items() if v}
        if entry:
            found[subject] = entry

    for name in _modules():
        pt_module = importlib.import_module(f"segformer.pt.{name}")
        tf_module = importlib.import_module(f"segformer.tf.{name}")
        pt_functions, tf_functions = _own(pt_module, inspect.isfunction), _own(tf_module, inspect.isfunction)
        for function in sorted(set(pt_functions) & set(tf_functions)):
            compare(f"{name}.{function}", pt_functions[function], tf_functions[function], TF_ONLY_FUNCTIONS)
        tf_classes = _own(tf_module, inspect.isclass)
        for class_name, pt_class in sorted(_own(pt_module, inspect.isclass).items()):
            tf_class = tf_classes.get("TF" + class_name)
            if tf_class is None:
                continue
            for pt_method, tf_method in METHODS:
                compare(f"{name}.{class_name}.{pt_method}", getattr(pt_class, pt_method, None),
                        getattr(tf_class, tf_method, None), TF_ONLY_EVERYWHERE.get(tf_method, set()))
    return found


def _allowed(subject: str) -> dict[str, set[str]]:
    method = subject.rsplit(".", 1)[-1]
    return DELIBERATE.get(subject) or DELIBERATE.get(f"*.{method}", {})


def test_mirrored_signatures_are_equal():
    found = _differences()
    unexplained = {s: d for s, d in found.items() if d != _allowed(s)}
    assert not unexplained, (
        "PT / TF signatures differ (names only one side has, or defaults that differ); give the other side the same "
        f"keywords, or add the difference with its reason to DELIBERATE: {unexplained}"
    )


def test_every_deliberate_difference_still_exists():
    found = _differences()
    stale = [s for s in DELIBERATE if not s.startswith("*.") and s not in found]
    assert not stale, f"these entries of DELIBERATE no longer differ; remove them: {stale}"
    for wildcard in (s for s in DELIBERATE if s.startswith("*.")):
        assert any(s.endswith(wildcard[1:]) for s in found), f"{wildcard} matches no difference; remove it"


def test_the_check_sees_a_new_keyword(monkeypatch):
    """The check fails when one side gains a keyword (here: PT from_pretrained gets an extra one)."""
    from segformer.pt import pretrained

    real = pretrained.SegformerPreTrainedModel.from_pretrained.__func__

    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, state_dict=None,
                        ignore_mismatched_sizes=False, output_loading_info=False, dtype=None, torch_dtype=None,
                        use_safetensors=None, from_tf=False, new_option=None, **kwargs):
        return real(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    monkeypatch.setattr(pretrained.SegformerPreTrainedModel, "from_pretrained", classmethod(from_pretrained))
    found = _differences()
    assert found["pretrained.SegformerPreTrainedModel.from_pretrained"] == {"pt": {"from_tf", "new_option"}, "tf": {"from_pt"}}
    with pytest.raises(AssertionError, match="new_option"):
        test_mirrored_signatures_are_equal()
