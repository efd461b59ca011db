"""``TFSegformerPreTrainedModel``: config, data format, variables <-> canonical table, loading, saving, Keras fit.

Mirror of ``segformer/pt/pretrained.py``; the framework-agnostic half is ``segformer.common.checkpoints.pretrained``.
"""

from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..common.base.allocator import tune_allocator
from ..common.base.atomic import atomic_folder, atomic_path, atomic_write_into, os_errors_from
from ..common.model.switches import fast_path_enabled, set_fast_path
from ..common.model.config import SegformerConfig, as_config
from ..common.model.outputs import ModelOutput
from ..common.model.pixel_values import DATA_FORMATS
from ..common.model.hub import pop_save_kwargs, push_folder_to_hub, push_to_hub_with
from ..common.checkpoints.pretrained import (
    check_switch,
    prepare_state,
    replaced_by_save,
    save_pretrained_state,
    split_from_pretrained_kwargs,
    state_dict_to_numpy,
    weights_dtype,
    weights_preference,
)
from ..common.model.weights import check_model_memory, check_state_keys, parameter_table, to_pt_layout, to_tf_layout

__all__ = ["TFSegformerPreTrainedModel", "DATA_FORMATS"]



def _built_in_dtype(cls: type, dtype: str, config: SegformerConfig, *args: Any, **kwargs: Any) -> "TFSegformerPreTrainedModel":
    """A built ``cls(config, ...)`` whose layers hold their variables in ``dtype`` (Keras 3 layers take the
    global dtype policy when made: it is set for the moment of construction and put back)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        model = cls(config, *args, **kwargs)
        model.build()
    finally:
        keras.config.set_dtype_policy(previous)
    return model


class _GraphCache:
    """Cached inference graphs of one model: a plain object, so neither Keras nor ``tf.saved_model`` track
    (or export) the functions by themselves; copies and pickles start empty."""

    def __init__(self) -> None:
        self.functions: dict[tuple, Any] = {}
        self.eager_calls = 0
        self.serving: Any = None  # the default SavedModel signature, once made
        self.serving_inputs: Any = None  # ``model.serving`` (transformers' input-dict serving function), once made

    def __deepcopy__(self, memo: dict) -> "_GraphCache":
        return _GraphCache()

    def __reduce__(self):
        return (_GraphCache, ())


class TFSegformerPreTrainedModel(keras.Model):
    """Base of the Keras models (twin of ``SegformerPreTrainedModel``).

    ``data_format="channels_first"`` (default, like Hugging Face) takes NCHW ``pixel_values`` and returns NCHW
    logits / hidden states; ``"channels_last"`` takes and returns NHWC for Keras-native pipelines.
    ``compile(optimizer)`` without a loss trains on the model's own loss: feed ``{"pixel_values", "labels"}``.
    """

    base_model_prefix = "segformer"
    main_input_name = "pixel_values"
    _task: str | None = None
    _hf_name: str = "tf_segformer_model"

    def __init__(self, config: SegformerConfig | dict, data_format: str = "channels_first", **kwargs: Any) -> None:
        config = as_config(config, type(self).__name__)
        config.validate()
        if self._task is not None:
            check_model_memory(config, self._task, type(self).__name__)  # refused before any weight is allocated
        if data_format not in DATA_FORMATS:
            raise ValueError(f"data_format must be one of {list(DATA_FORMATS)}, got {data_format!r}")
        tune_allocator()  # glibc malloc thresholds, once per process (segformer.common.base.allocator)
        kwargs.setdefault("name", self._hf_name)
        super().__init__(**kwargs)
        self.config = config
        self.data_format = data_format
        self._check_finite = False
        self._graphs = _GraphCache()  # eager inference calls -> cached tf.function graphs (see _graph_call)

    framework = "tf"

    @classmethod
    def can_generate(cls) -> bool:
        """``False``: no text generation (transformers' ``generate`` API)."""
        return False

    # ---------------------------------------------------------------------------- building
    @property
    def dummy_inputs(self) -> dict[str, tf.Tensor]:
        """``{"pixel_values": zeros}`` of the smallest size every stage accepts (the sequence-reduction convs
        need h_i >= sr_i), in the model's data format, as transformers' TF property."""
        side = 32
        while True:
            try:
                self.config.check_input_size(side, side)
                break
            except ValueError:
                side += 32
        shape = (1, self.config.num_channels, side, side) if self.data_format == "channels_first" else (1, side, side, self.config.num_channels)
        return {"pixel_values": tf.zeros(shape, tf.float32)}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Keras' ``__call__``; flags packed with the tensors in the first argument (transformers' TF form
        ``model({"pixel_values": x, "output_hidden_states": True})``) become keywords first: Keras 3 refuses a
        nested argument that mixes tensors and Python values. The task models' ``call`` unpacks the rest."""
        if args and isinstance(args[0], (dict, tuple, list)) and args[0]:
            packed = args[0]
            if not isinstance(packed, dict) and len(getattr(packed[0], "shape", ())) == 4:
                names = [n for n in inspect.signature(self.call).parameters if n != "training"]
                packed = dict(zip(names, packed)) if len(packed) <= len(names) else packed
            if isinstance(packed, dict):
                flags = {k: v for k, v in packed.items() if k != "pixel_values" and (v is None or isinstance(v, bool))}
                clash = sorted(set(flags) & set(kwargs))
                if clash:
                    raise TypeError(f"{type(self).__name__}: {clash} given both in the packed inputs and as keywords")
                args = ({k: v for k, v in packed.items() if k not in flags},) + args[1:]
                kwargs.update(flags)
        return super().__call__(*args, **kwargs)

    @property
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        """``{"pixel_values": TensorSpec}``, as transformers' TF property: float32, ``num_channels`` in the model's data
        format; batch, height and width free (transformers fixes 512 x 512; any size works here)."""
        channels = self.config.num_channels
        shape = (None, channels, None, None) if self.data_format == "channels_first" else (None, None, None, channels)
        return {"pixel_values": tf.TensorSpec(shape, tf.float32, name="pixel_values")}

    @property
    def serving(self) -> Any:
        """transformers' TF ``serving``: a ``tf.function`` of an input dict (``{"pixel_values": x}``) returning
        :meth:`serving_output` of the call; ``model.serving.get_concrete_function(model.input_signature)`` gives a
        SavedModel signature."""
        if self._graphs.serving_inputs is None:

            def serving(inputs: Any) -> Any:
                return self.serving_output(self.call(inputs, training=False))

            self._graphs.serving_inputs = tf.function(serving, reduce_retracing=True)
        return self._graphs.serving_inputs

    def serving_output(self, output: Any) -> Any:
        """transformers' TF ``serving_output``: ``hidden_states`` / ``attentions`` dropped unless the config asks for
        them, tuples of tensors stacked into one tensor where their shapes agree (SegFormer's stages differ: kept)."""
        if not isinstance(output, ModelOutput):
            return output
        fields = {}
        for key, value in output.items():
            if (key.endswith("hidden_states") and not self.config.output_hidden_states) or (
                    key.endswith("attentions") and not self.config.output_attentions):
                continue
            if isinstance(value, (tuple, list)):
                try:
                    value = tf.convert_to_tensor(value)
                except (ValueError, tf.errors.InvalidArgumentError):
                    pass  # stages of different sizes
            fields[key] = value
        return type(output)(**fields)

    def build(self, input_shape: Any = None) -> None:
        """Create every variable from the config alone (no forward pass; any input size works afterwards)."""
        if self.built:
            return
        self._build_layers()
        self.built = True

    def _build_layers(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define _build_layers")

    # --------------------------------------------------------------------------- switches
    @property
    def use_fast_path(self) -> bool:
        """Eval-mode fast path (folded decode head, cached graphs); ``False`` forces the plain path."""
        return fast_path_enabled(self._flatten_layers())

    @use_fast_path.setter
    def use_fast_path(self, value: bool) -> None:
        set_fast_path(self._flatten_layers(), value)

    @property
    def check_finite(self) -> bool:
        """Reject NaN / Inf pixel values with a ValueError (one pass over the input, eager calls; off by default
        for speed, on in ``segformer predict``)."""
        return self._check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        self._check_finite = check_switch("check_finite", value)

    # -------------------------------------------------------------- canonical <-> variables
    def _variables_by_tf_name(self) -> dict[str, keras.Variable]:
        if not self.built:
            self.build()
        out = {}
        for variable in self.weights:
            parts = variable.path.split("/")
            while parts and parts[0] == self.name:
                parts = parts[1:]
            out["/".join(parts)] = variable
        return out

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """Canonical names -> numpy arrays in the PyTorch layout (what ``SegformerPreTrainedModel`` holds)."""
        variables = self._variables_by_tf_name()
        return {s.name: to_pt_layout(s, np.asarray(variables[s.tf_name].numpy())) for s in parameter_table(self.config, self._task)}

    def load_state_dict_numpy(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Assign numpy arrays (canonical names, PyTorch layout) to the model's variables."""
        specs = {s.name: s for s in parameter_table(self.config, self._task)}
        check_state_keys(state, specs, strict)
        variables = self._variables_by_tf_name()
        for name, array in state.items():
            spec = specs[name]
            value = to_tf_layout(spec, np.asarray(array))
            variables[spec.tf_name].assign(value.astype(spec.dtype))

    def num_parameters(self, only_trainable: bool = False) -> int:
        """Number of weights (trainable ones only with ``only_trainable=True``), as transformers' TF models."""
        if not self.built:
            self.build()
        variables = self.trainable_weights if only_trainable else self.weights
        return int(sum(np.prod(v.shape) for v in variables))

    # -------------------------------------------------------------------------- load / save
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args: Any,
        config: SegformerConfig | str | os.PathLike | None = None,
        state_dict: dict[str, Any] | None = None,
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        dtype: Any = None,
        torch_dtype: Any = None,
        use_safetensors: bool | None = None,
        from_pt: bool = False,
        data_format: str = "channels_first",
        **kwargs: Any,
    ):
        """Load ``tf_model.h5`` (preferred), ``model.safetensors`` (numpy, no torch) or ``pytorch_model.bin``;
        the keywords of ``SegformerPreTrainedModel.from_pretrained`` (``from_pt`` for its ``from_tf``) plus
        ``data_format``.

        ``kwargs``: the download options (``revision``, ``token``, ``cache_dir``, ``local_files_only``,
        ``force_download``, ``proxies``, ``subfolder``), never stored, and config fields to change first; any
        other keyword is a ``TypeError`` naming it. ``state_dict``: arrays by canonical name (PyTorch layout;
        numpy, TensorFlow or torch) instead of a weights file. Which file is read:
        :func:`segformer.common.checkpoints.pretrained.weights_preference` (``from_pt=True`` reads the PyTorch files,
        ``use_safetensors`` as in PyTorch). ``dtype`` (or ``torch_dtype``): ``"float32"``, ``"float16"``,
        ``"bfloat16"``, ``"float64"`` (or such a dtype), or ``"auto"`` (the dtype ``config.json`` records): the
        model's variables are created in it (its Keras dtype policy; the classifier stays float32); the config is
        not changed. BatchNorm running statistics are loaded in every direction. Returns the model (and the
        :class:`~segformer.common.checkpoints.LoadReport` with ``output_loading_info=True``).
        """
        prefer = weights_preference("tf", use_safetensors, from_pt)
        weights_dtype(dtype, torch_dtype)  # a bad dtype fails before anything is read
        hub, config_overrides = split_from_pretrained_kwargs(cls.__name__, kwargs)
        if isinstance(config, (str, os.PathLike)):
            config = SegformerConfig.from_pretrained(config, **hub)
        numpy_state = None if state_dict is None else state_dict_to_numpy(state_dict)
        config, tensors, report = prepare_state(
            pretrained_model_name_or_path, cls._task, config=config, prefer=prefer,
            ignore_mismatched_sizes=ignore_mismatched_sizes, hub=hub, state_dict=numpy_state, **config_overrides,
        )
        wanted = weights_dtype(dtype, torch_dtype, config)
        if wanted is None:
            model = cls(config, *model_args, data_format=data_format)
            model.build()
        else:
            model = _built_in_dtype(cls, wanted, config, *model_args, data_format=data_format)
        model.load_state_dict_numpy(tensors, strict=False)
        return (model, report) if output_loading_info else model

    @classmethod
    def from_preset(cls, preset: str, **kwargs: Any):
        """keras-hub's spelling of :meth:`from_pretrained`: a preset name (``"segformer_b0_ade20k_512"``,
        ``"b0-ade"``; ``segformer presets`` lists them), a Hub id or a folder; keywords as ``from_pretrained``."""
        return cls.from_pretrained(preset, **kwargs)

    def save(self, filepath: Any, overwrite: bool = True, **kwargs: Any) -> None:
        """Keras ``Model.save``; a ``.keras`` file is written atomically: Keras writes the archive into a temporary
        folder next to ``filepath``, which is then renamed into place, so a failed save (disk full, no permission)
        raises its ``OSError`` and leaves any previous file as it was. ``overwrite=False`` raises
        ``FileExistsError`` for an existing file (Keras would ask on the terminal). Other targets are Keras's own."""
        if not (isinstance(filepath, (str, os.PathLike)) and os.fspath(filepath).endswith(".keras")):
            return super().save(filepath, overwrite=overwrite, **kwargs)
        with atomic_path(filepath, overwrite=overwrite) as tmp:
            tmp.unlink()
            tmp.mkdir()  # a folder of the temporary's name: a killed save leaves nothing the next save keeps
            try:
                super().save(tmp / Path(filepath).name, overwrite=True, **kwargs)
                data = (tmp / Path(filepath).name).read_bytes()
            except OSError as err:  # Keras' zip writer names no file: name the one being saved
                raise OSError(err.errno, err.strerror or str(err), os.fspath(filepath)) from err
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            atomic_write_into(tmp, data)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        saved_model: bool = False,
        version: int = 1,
        push_to_hub: bool = False,
        signatures: Any = None,
        max_shard_size: int | str = "10GB",
        safe_serialization: bool = False,
        state_dict: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Write ``config.json`` + ``tf_model.h5`` in the Hugging Face layout (their TF classes load it), atomically.

        ``safe_serialization=True`` writes ``model.safetensors`` instead (PyTorch layout and names: every loader of
        both frameworks, ours and transformers', reads it; sharded above ``max_shard_size``). ``saved_model=True``
        also exports a SavedModel to ``saved_model/<version>`` (``signatures``: as ``tf.saved_model.save``; by
        default ``serving_default(pixel_values)`` with free batch / height / width). ``push_to_hub=True`` then
        uploads the folder through ``huggingface_hub`` to ``repo_id`` (default: the folder's name) with ``token``,
        ``commit_message``, ``commit_description``, ``private``, ``create_pr``, ``revision``. Any other keyword is
        a ``TypeError`` naming it. ``state_dict`` (canonical names, PyTorch layout; numpy, TensorFlow or torch):
        saved instead of the model's own, as in PyTorch. Weights are written as float32 whatever the model's dtype,
        and ``config.json`` records ``"dtype": "float32"``.
        """
        repo_id, upload = pop_save_kwargs(
            type(self).__name__, kwargs,
            "saved_model, version, push_to_hub, signatures, max_shard_size, safe_serialization, state_dict",
        )
        if saved_model and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            raise ValueError(f"version must be an integer >= 0 (the SavedModel subfolder), got {version!r}")
        state = self.state_dict_numpy() if state_dict is None else state_dict_to_numpy(state_dict)
        weights_format = "safetensors" if safe_serialization else "h5"
        with atomic_folder(save_directory, discard=replaced_by_save(weights_format)) as folder:  # old or new, never a mix
            save_pretrained_state(
                folder, self.config, state, self._task, "tf", type(self).__name__,
                weights_format=weights_format, max_shard_size=max_shard_size,
            )
            if saved_model:
                export_dir = folder / "saved_model" / str(version)
                with os_errors_from(Path(save_directory) / "saved_model", tf.errors.OpError):  # a full disk
                    if signatures is None:
                        tf.saved_model.save(self, str(export_dir))
                    else:
                        tf.saved_model.save(self, str(export_dir), signatures=signatures)
        directory = Path(save_directory)
        if push_to_hub:
            push_folder_to_hub(directory, repo_id or Path(save_directory).resolve().name, **upload)
        return directory

    def push_to_hub(self, repo_id: str, safe_serialization: bool = False, max_shard_size: int | str = "10GB", **kwargs: Any) -> Any:
        """Save into a temporary folder and upload it to the Hub repo ``repo_id`` through ``huggingface_hub``
        (``token``, ``commit_message``, ``commit_description``, ``private``, ``create_pr``, ``revision``)."""
        return push_to_hub_with(
            lambda folder: self.save_pretrained(folder, safe_serialization=safe_serialization, max_shard_size=max_shard_size),
            repo_id, **kwargs,
        )

    # ------------------------------------------------------------------------ Keras plumbing
    def get_config(self) -> dict:
        return {"config": self.config.to_dict(), "data_format": self.data_format, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config: SegformerConfig | dict, **kwargs: Any) -> "TFSegformerPreTrainedModel":
        """A fresh model from a :class:`SegformerConfig`, a ``config.json`` dict (as transformers' TF
        ``from_config``), or this class's Keras ``get_config()`` dict (``.keras`` files, ``keras.models.clone_model``)."""
        if isinstance(config, SegformerConfig):
            return cls(config, **kwargs)
        if not isinstance(config, dict):
            raise TypeError(f"from_config takes a SegformerConfig or a dict, got {type(config).__name__}")
        if "config" in config:
            config = dict(config)
            return cls(SegformerConfig.from_dict(config.pop("config")), **{**config, **kwargs})
        return cls(SegformerConfig.from_dict(config), **kwargs)

    def _trackable_children(self, save_type: str = "checkpoint", **kwargs: Any) -> dict:
        """For ``tf.saved_model.save``: our serving function is the root's ``_default_save_signature`` child,
        which TensorFlow exports as ``serving_default`` when no ``signatures`` are given."""
        children = super()._trackable_children(save_type, **kwargs)
        children.pop("serving", None)  # the input-dict serving function is exported only where asked for (signatures)
        if save_type == "savedmodel":
            children["_default_save_signature"] = self._default_save_signature()
        return children

    def _default_save_signature(self) -> Any:
        """``tf.saved_model.save(model, path)`` without ``signatures``: ``serving_default(pixel_values)`` with free
        batch, height and width (Keras' default fixes the first call's shape, or has none after ``build()``)
        -> ``{"logits"}`` (``{"last_hidden_state"}`` for the bare encoder), in the model's data format."""
        if self._graphs.serving is not None:
            return self._graphs.serving
        channels = self.config.num_channels
        shape = [None, channels, None, None] if self.data_format == "channels_first" else [None, None, None, channels]

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="pixel_values")])
        def serving_default(pixel_values: tf.Tensor) -> dict:
            output = self(pixel_values, training=False, return_dict=True)
            key = "logits" if "logits" in output else "last_hidden_state"
            return {key: output[key]}

        self._graphs.serving = serving_default
        return serving_default

    def get_build_config(self) -> dict:
        return {"input_shape": None}

    def build_from_config(self, config: dict) -> None:
        self.build()

    @staticmethod
    def _split_inputs(data: Any) -> tuple[Any, Any, Any]:
        """A Keras batch -> ``(pixel_values, labels, sample_weight)``. Accepted: ``(x, y[, sample_weight])`` where
        ``x`` is the pixels or ``{"pixel_values"[, "labels"]}`` and ``y`` the labels or ``{"labels"}``."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels = y
        if isinstance(x, dict):
            if "pixel_values" not in x:
                raise ValueError(f"the input dict needs a 'pixel_values' entry, got keys {sorted(x)}")
            unknown = sorted(set(x) - {"pixel_values", "labels"})
            if unknown:
                raise ValueError(f"the input dict may hold 'pixel_values' and 'labels', got also {unknown}")
            labels = x.get("labels", y)
            x = x["pixel_values"]
        if isinstance(labels, dict):
            if sorted(labels) != ["labels"]:
                raise ValueError(f"the target dict must hold exactly 'labels', got keys {sorted(labels)}")
            labels = labels["labels"]
        return x, labels, sample_weight

    def _fit_loss(self, logits: tf.Tensor, labels: Any, sample_weight: Any) -> tf.Tensor:
        """The scalar loss ``fit`` / ``evaluate`` use; defined by the task models."""
        raise NotImplementedError

    def _check_has_loss(self) -> None:
        if type(self)._fit_loss is TFSegformerPreTrainedModel._fit_loss:
            raise TypeError(
                f"{type(self).__name__} has no loss to train or evaluate on; use TFSegformerForSemanticSegmentation "
                "or TFSegformerForImageClassification"
            )

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """``keras.Model.fit``, after creating the model's and the optimizer's variables eagerly (without a
        distribution strategy Keras creates the optimizer's inside the first traced step: ~15 s more on CPU)."""
        if not self.built:
            self.build()
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            with self.distribute_strategy.scope():
                optimizer.build(self.trainable_variables)
        return super().fit(*args, **kwargs)

    def train_step(self, data: Any) -> dict:
        """One optimizer step on the model's own loss (``compile(optimizer)`` needs no loss).

        ``sample_weight`` scales each example's (or pixel's) term of the loss; compiled ``metrics`` are updated
        from the labels and the logits (in the model's data format)."""
        self._check_has_loss()
        pixel_values, labels, sample_weight = self._split_inputs(data)
        if labels is None:
            raise ValueError("fit needs labels: feed {'pixel_values': ..., 'labels': ...} or (pixel_values, labels)")
        with tf.GradientTape() as tape:
            logits = self(pixel_values, training=True, return_dict=True).logits
            loss = self._fit_loss(logits, labels, sample_weight)
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._logs(loss, labels, logits, sample_weight)

    def test_step(self, data: Any) -> dict:
        self._check_has_loss()
        pixel_values, labels, sample_weight = self._split_inputs(data)
        if labels is None:
            raise ValueError("evaluate needs labels: feed {'pixel_values': ..., 'labels': ...} or (pixel_values, labels)")
        logits = self(pixel_values, training=False, return_dict=True).logits
        return self._logs(self._fit_loss(logits, labels, sample_weight), labels, logits, sample_weight)

    def _logs(self, loss: tf.Tensor, labels: Any, logits: tf.Tensor, sample_weight: Any) -> dict:
        """Keras reports its loss tracker's running mean as ``loss`` in the logs: feed it our loss, update the
        compiled metrics, return every metric's result."""
        tracker = getattr(self, "_loss_tracker", None)
        if tracker is None:
            return {"loss": loss}
        tracker.update_state(loss)
        return self.compute_metrics(None, tf.convert_to_tensor(labels), logits, sample_weight)

    def predict_step(self, data: Any) -> Any:
        pixel_values, _, _ = self._split_inputs(data)
        out = self(pixel_values, training=False, return_dict=True)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state
