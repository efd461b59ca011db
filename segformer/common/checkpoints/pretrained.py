"""The framework-agnostic half of ``from_pretrained`` / ``save_pretrained``.

Both frameworks go through here: locate the config and weights, read any supported file into the
canonical names in PyTorch layout (numpy), match them with the canonical table, and report. The
framework code only copies numpy arrays into its variables (TF: after :func:`weights.to_tf_layout`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..base.atomic import atomic_write_text
from . import (
    PT_WEIGHTS_INDEX_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    CheckpointError,
    LoadReport,
    PT_LAYOUT_KINDS,
    RawCheckpoint,
    find_weights_file,
    check_sr_ratios,
    match_state_dict,
    read_checkpoint,
    save_safetensors,
    write_tf_h5,
)
from ..model.config import CONFIG_NAME, SegformerConfig
from .keras_hub_io import keras_hub_preset_folder
from ..model.weights import ParamSpec, hf_tf_model_name, parameter_table, to_pt_layout, to_tf_layout

__all__ = [
    "WEIGHT_DTYPES",
    "SAVED_WEIGHTS_DTYPE",
    "weights_preference",
    "weights_dtype",
    "state_dict_to_numpy",
    "check_switch",
    "resolve_pretrained",
    "split_from_pretrained_kwargs",
    "read_canonical_state",
    "canonical_state",
    "prepare_state",
    "save_pretrained_state",
    "parse_shard_size",
    "plan_shards",
]


# ------------------------------------------------------------------- options both frameworks share
WEIGHT_DTYPES = ("float32", "float16", "bfloat16", "float64")
"""The ``dtype=`` values ``from_pretrained`` casts the weights to (PyTorch and Keras alike)."""

SAVED_WEIGHTS_DTYPE = "float32"
"""The dtype of every weights file ``save_pretrained`` writes (weights are saved as float32 whatever the model's
dtype); recorded as ``"dtype"`` in the saved ``config.json``, as transformers records its saved weights' dtype."""

_NATIVE_FORMATS = {"pt": ("safetensors", "torch", "h5"), "tf": ("h5", "safetensors", "torch")}
_OTHER_FORMATS = {"pt": ("h5",), "tf": ("safetensors", "torch")}  # from_tf=True / from_pt=True
_FROM_OTHER = {"pt": "from_tf", "tf": "from_pt"}


def weights_preference(framework: str, use_safetensors: bool | None = None, from_other: bool | None = None) -> tuple[str, ...]:
    """The weights-file formats ``from_pretrained`` looks for, in order: one rule for both frameworks.

    Start from the framework's own order (PyTorch: ``model.safetensors``, ``pytorch_model.bin``, ``tf_model.h5``;
    Keras: ``tf_model.h5``, ``model.safetensors``, ``pytorch_model.bin``). ``from_other`` (``from_tf=True`` in
    PyTorch, ``from_pt=True`` in Keras) keeps only the other framework's files (``tf_model.h5``; the PyTorch
    files, safetensors first). Then ``use_safetensors=True`` keeps only safetensors and ``False`` drops it. The
    flags combine, none overrides another: a combination that leaves no format (``from_tf=True`` with
    ``use_safetensors=True``) is a ``ValueError``.
    """
    if framework not in _NATIVE_FORMATS:
        raise ValueError(f"framework must be one of {sorted(_NATIVE_FORMATS)}, got {framework!r}")
    flag = _FROM_OTHER[framework]
    if use_safetensors is not None and not isinstance(use_safetensors, (bool, np.bool_)):
        raise TypeError(f"use_safetensors must be True, False or None, got {use_safetensors!r:.100}")
    if from_other is not None and not isinstance(from_other, (bool, np.bool_)):
        raise TypeError(f"{flag} must be True, False or None, got {from_other!r:.100}")
    prefer = _OTHER_FORMATS[framework] if from_other else _NATIVE_FORMATS[framework]
    if use_safetensors is not None:
        prefer = tuple(f for f in prefer if (f == "safetensors") == bool(use_safetensors))
    if not prefer:
        raise ValueError(
            f"{flag}=True reads only {', '.join(_OTHER_FORMATS[framework])} files, which use_safetensors="
            f"{bool(use_safetensors)} rules out; pass one of the two"
        )
    return prefer


def weights_dtype(dtype: Any = None, torch_dtype: Any = None, config: SegformerConfig | None = None) -> str | None:
    """``from_pretrained``'s ``dtype=`` (or transformers' older ``torch_dtype=``) as one of :data:`WEIGHT_DTYPES`,
    or ``None`` (keep float32).

    Accepted: a name (``"float16"``, ``"torch.float16"``), a torch / numpy / TensorFlow dtype of one of those
    names, ``"auto"`` (the dtype recorded in ``config.json``, if it is one of them) or ``None``. The value only
    steers the cast of the weights; it is never stored in the config.
    """
    if dtype is not None and torch_dtype is not None and _dtype_text(dtype) != _dtype_text(torch_dtype):
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass dtype only")
    value = dtype if dtype is not None else torch_dtype
    if value is None:
        return None
    name = _dtype_text(value)
    if name == "auto":
        recorded = None if config is None else config.dtype
        return recorded if recorded in WEIGHT_DTYPES else None
    if name not in WEIGHT_DTYPES:
        raise ValueError(
            f"dtype must be one of {list(WEIGHT_DTYPES)}, 'auto' or None (names, or torch / numpy / TensorFlow "
            f"dtypes of those names), got {value!r:.100}"
        )
    return name


def _dtype_text(value: Any) -> str:
    if isinstance(value, str):
        return value.removeprefix("torch.")
    name = getattr(value, "name", None)  # numpy / TensorFlow dtypes
    if isinstance(name, str):
        return name
    if isinstance(value, type):  # np.float16
        try:
            return np.dtype(value).name
        except TypeError:
            return repr(value)
    return str(value).removeprefix("torch.")  # torch.float16


def state_dict_to_numpy(state_dict: Any, owner: str = "state_dict") -> dict[str, np.ndarray]:
    """A ``state_dict=`` of either framework as ``{name: numpy array}`` (canonical names, PyTorch layout).

    Values may be numpy arrays, torch tensors (any device, ``requires_grad`` or not), TensorFlow tensors or Keras
    variables; floating-point values become float32 (bfloat16 included), integers keep their dtype.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{owner} must be a dict of name -> tensor, got {type(state_dict).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"{owner} keys must be parameter names (str), got {name!r:.100}")
        if hasattr(value, "detach") and hasattr(value, "is_floating_point"):  # torch.Tensor
            value = value.detach().cpu()
            value = value.float() if value.is_floating_point() else value
            array = value.numpy()
        elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # tf.Tensor / keras.Variable
            array = np.asarray(value.numpy())
        else:
            array = np.asarray(value)
        if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
            array = array.astype(np.float32, copy=False)
        elif array.dtype.kind not in "iub":
            raise TypeError(f"{owner}[{name!r}] must be a numeric tensor or array, got dtype {array.dtype}")
        out[name] = array
    return out


def check_switch(name: str, value: Any) -> bool:
    """A model switch (``check_finite``): ``True`` or ``False``; anything else is a ``TypeError`` naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r:.100}")
    return bool(value)


def resolve_pretrained(
    path: str | os.PathLike,
    prefer: tuple[str, ...] = ("safetensors", "torch", "h5"),
    hub: Mapping[str, Any] | None = None,
) -> tuple[Path | None, Path]:
    """``(config_json_or_None, weights_file)`` for a folder, a weights file, or a Hub model id.

    ``hub``: the download options of :func:`segformer.common.model.hub.pop_download_kwargs` (``subfolder`` applies to
    local folders too).
    """
    from ..model.hub import HUB_DOWNLOAD_KWARGS, resolve_model_dir

    hub = dict(HUB_DOWNLOAD_KWARGS, **(hub or {}))
    source = Path(path)
    if source.is_file():
        if hub["subfolder"]:
            raise ValueError(f"subfolder={hub['subfolder']!r} needs a folder or Hub id, got the file {os.fspath(source)!r}")
        config = source.parent / CONFIG_NAME
        return (config if config.is_file() else None), source
    folder = resolve_model_dir(os.fspath(path), **hub)
    config = folder / CONFIG_NAME
    if keras_hub_preset_folder(folder) is not None:
        raise CheckpointError(f"{folder} is a keras-hub preset; convert it first: segformer convert {folder} OUT --to pt "
                              "(or --to tf)")
    return (config if config.is_file() else None), find_weights_file(folder, prefer)


def split_from_pretrained_kwargs(owner: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``from_pretrained``'s remaining keywords -> ``(download options, config overrides)``.

    Download options never reach the config (a token is never written anywhere); config overrides must be
    :meth:`SegformerConfig.field_names`; anything else is a ``TypeError`` naming it (a misspelt ``num_label=``
    must not vanish into the config).
    """
    from ..model.hub import HUB_DOWNLOAD_KWARGS, pop_download_kwargs

    hub = pop_download_kwargs(kwargs)
    fields = SegformerConfig.field_names()
    for name in kwargs:
        if name in _UNSUPPORTED_LOAD_KWARGS:
            raise TypeError(f"{owner}.from_pretrained does not support {name}=: {_UNSUPPORTED_LOAD_KWARGS[name]}")
        if name not in fields:
            raise TypeError(
                f"{owner}.from_pretrained got an unexpected keyword argument {name!r}: it is neither a download option "
                f"({', '.join(HUB_DOWNLOAD_KWARGS)}) nor a SegformerConfig field ({', '.join(fields)})"
            )
    return hub, dict(kwargs)


_UNSUPPORTED_LOAD_KWARGS = {
    "device_map": "accelerate's dispatching is not implemented; load, then call model.to(device)",
    "low_cpu_mem_usage": "models are built on the CPU and filled in place; there is no meta-device loading",
    "max_memory": "accelerate's dispatching is not implemented",
    "offload_folder": "accelerate's offloading is not implemented",
    "offload_state_dict": "accelerate's offloading is not implemented",
    "quantization_config": "quantized loading (bitsandbytes, GPTQ, ...) is not implemented",
    "load_in_8bit": "quantized loading (bitsandbytes) is not implemented",
    "load_in_4bit": "quantized loading (bitsandbytes) is not implemented",
    "attn_implementation": "the attention kernel is chosen by the model (fused SDPA in eval mode, use_fast_path)",
    "trust_remote_code": "no code is ever loaded from a checkpoint folder",
    "variant": "weights variants (model.<variant>.safetensors) are not read; pass the file path instead",
    "gguf_file": "GGUF files are not read",
    "from_flax": "Flax checkpoints are not read",
    "tp_plan": "tensor parallelism is not implemented",
    "key_mapping": "checkpoint names are mapped by the canonical table; convert other layouts with `segformer convert`",
}


def read_canonical_state(weights: str | os.PathLike, specs: list[ParamSpec]) -> dict[str, np.ndarray]:
    """Read any supported weights file into ``{name: array}`` in PyTorch layout (:func:`canonical_state`)."""
    return canonical_state(read_checkpoint(weights), specs)


def canonical_state(raw: RawCheckpoint, specs: list[ParamSpec]) -> dict[str, np.ndarray]:
    """The tensors of a read checkpoint under their canonical names, in PyTorch layout.

    safetensors / ``.bin`` / sharded index keep their (PyTorch) names. A Hugging Face ``tf_model.h5``
    is mapped onto ``specs`` by TF path (every task's TF paths share the ``segformer/encoder/...``
    spelling); TF entries that match no spec are kept under their TF path so they show up as unexpected.
    """
    weights = raw.path
    if raw.kind in PT_LAYOUT_KINDS:
        if raw.kind == "torch" and not isinstance(raw.obj, Mapping):
            raise CheckpointError(f"{weights}: expected a dict of tensors, got {type(raw.obj).__name__}")
        state = raw.tensors
        if "state_dict" in state and isinstance(state["state_dict"], dict):
            raise CheckpointError(
                f"{weights}: this is an mmcv/original checkpoint ({{'state_dict': ...}}); convert it with "
                "`segformer convert` (segformer.convert) first"
            )
        return state
    if raw.kind == "h5":
        state: dict[str, np.ndarray] = dict(raw.counters)  # segformer-written files carry them
        by_tf = {s.tf_name: s for s in specs}
        for tf_name, array in raw.tensors.items():
            spec = by_tf.get(tf_name)
            if spec is None:
                state[tf_name] = array  # reported as unexpected
            elif tuple(array.shape) == spec.tf_shape:
                state[spec.name] = to_pt_layout(spec, array)
            else:  # same tensor, other size (e.g. a new head): keep the name so it is reported as mismatched
                state[spec.name] = array.transpose(tuple(reversed(range(array.ndim)))) if spec.kind == "linear" else (
                    array.transpose(3, 2, 0, 1) if array.ndim == 4 else array
                )
        return state
    raise CheckpointError(
        f"{weights}: a .keras archive; load it with keras.models.load_model or convert it with `segformer convert`"
    )


def prepare_state(
    path: str | os.PathLike | None,
    task: str,
    config: SegformerConfig | None = None,
    prefer: tuple[str, ...] = ("safetensors", "torch", "h5"),
    ignore_mismatched_sizes: bool = False,
    hub: Mapping[str, Any] | None = None,
    state_dict: Mapping[str, np.ndarray] | None = None,
    **config_overrides: Any,
) -> tuple[SegformerConfig, dict[str, np.ndarray], LoadReport]:
    """Everything ``from_pretrained`` needs: ``(config, tensors to load (PT layout), report)``.

    ``state_dict`` (canonical names, PT layout, numpy) replaces the weights file; ``path`` may then be
    ``None`` when ``config`` is given. Raises ``ValueError`` for NaN / Inf tensors and for shape mismatches
    (unless ignored).
    """
    if path is None:
        if state_dict is None or config is None:
            raise ValueError("from_pretrained(None, ...) needs both config= and state_dict=")
        config_path, weights = None, "state_dict"
    else:
        config_path, weights = resolve_pretrained(path, prefer, hub)
    if config is None:
        if config_path is None:
            raise FileNotFoundError(f"no {CONFIG_NAME} next to {weights}; pass config=SegformerConfig(...)")
        config = SegformerConfig.from_json_file(config_path, **config_overrides)
        config.name_or_path = os.fspath(path)
    elif config_overrides:
        config = config.copy(**config_overrides)
    specs = parameter_table(config, task)
    state = dict(state_dict) if state_dict is not None else read_canonical_state(weights, specs)
    check_sr_ratios(state, config.sr_ratios, weights)
    tensors, report = match_state_dict(state, specs, ignore_mismatched_sizes=ignore_mismatched_sizes)
    if report.nonfinite_keys:
        raise ValueError(f"{weights}: tensors with NaN or Inf values: {report.nonfinite_keys}")
    noisy = [k for k in report.missing_keys if not k.endswith("num_batches_tracked")]
    if noisy or report.unexpected_keys or report.mismatched_keys:
        warnings.warn(f"loading {weights} into a {task} model:\n{report.summary()}", stacklevel=3)
    return config, tensors, report


def parse_shard_size(max_shard_size: int | str | None) -> int | None:
    """``max_shard_size`` as bytes: an int, or a string like ``"5GB"`` / ``"200MB"`` / ``"1GiB"`` (transformers'
    units: KB / MB / GB = 10^3 / 10^6 / 10^9, KiB / MiB / GiB = 2^10 / 2^20 / 2^30); ``None``: no sharding."""
    if max_shard_size is None:
        return None
    if isinstance(max_shard_size, int) and not isinstance(max_shard_size, bool):
        value = max_shard_size
    elif isinstance(max_shard_size, str):
        units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
        text = max_shard_size.strip().upper()
        unit = next((u for u in units if text.endswith(u)), None)
        try:
            value = int(float(text[: -len(unit)] if unit else text) * (units[unit] if unit else 1))
        except ValueError:
            value = 0
    else:
        value = 0
    if value < 1:
        raise ValueError(f"max_shard_size must be a positive int (bytes) or a size like '5GB' / '500MB', got {max_shard_size!r}")
    return value


def plan_shards(sizes: Mapping[str, int], max_bytes: int | None) -> list[list[str]]:
    """Split names (in order) into shards of at most ``max_bytes`` (a larger tensor gets a shard of its own),
    the greedy rule of transformers / huggingface_hub."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if max_bytes is not None and shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


_WEIGHTS_NAMES = {"safetensors": (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME), "torch": (PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME)}


def replaced_by_save(weights_format: str, write_config: bool = True) -> Callable[[str], bool]:
    """``name -> bool``: whether a file of an existing folder is replaced by a ``weights_format`` save: the
    weights of EVERY format (``model.safetensors``, ``pytorch_model.bin``, ``tf_model.h5``, their indexes and
    shards of any count), and ``config.json`` when the save writes one. ``atomic_folder`` does not carry those
    over, so a save leaves exactly one current set of weights: no loader finds a stale file of another
    format (``from_pretrained`` prefers safetensors), shard or index next to the new weights."""
    if weights_format not in (*_WEIGHTS_NAMES, "h5"):
        raise ValueError(f"weights_format must be one of {[*_WEIGHTS_NAMES, 'h5']}, got {weights_format!r}")
    config = (CONFIG_NAME,) if write_config else ()
    names = {*config, TF_WEIGHTS_NAME, f"{TF_WEIGHTS_NAME}.index.json"}
    patterns = ["tf_model-*-of-*.h5"]
    for single, index_name in _WEIGHTS_NAMES.values():
        stem, suffix = single.rsplit(".", 1)
        names.update((single, index_name))
        patterns.append(f"{stem}-*-of-*.{suffix}")
    return lambda name: name in names or any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def save_pretrained_state(
    save_directory: str | os.PathLike,
    config: SegformerConfig,
    state: Mapping[str, np.ndarray],
    task: str,
    framework: str,
    architecture: str,
    weights_format: str | None = None,
    max_shard_size: int | str | None = None,
    write_config: bool = True,
    save_torch: Callable[[dict[str, np.ndarray], Path], None] | None = None,
) -> Path:
    """Write ``config.json`` plus the weights: ``model.safetensors`` (``framework="pt"``), ``tf_model.h5``
    (``"tf"``), or ``weights_format`` (``"safetensors"``, ``"torch"`` through ``save_torch(tensors, path)``, which writes ``path`` atomically,
    ``"h5"``).

    ``state`` is canonical names in PyTorch layout. Weights larger than ``max_shard_size`` are split into
    ``model-00001-of-0000N.safetensors`` (``pytorch_model-...bin``) shards plus the Hugging Face index, which
    both our and transformers' loaders read; weight files of this format left by an earlier save that the new
    one does not use are removed, so no loader picks a stale file. ``write_config=False`` writes the weights
    only (``is_main_process=False``). Every file is written atomically.
    """
    if framework not in ("pt", "tf"):
        raise ValueError(f"framework must be 'pt' or 'tf', got {framework!r}")
    weights_format = weights_format or ("safetensors" if framework == "pt" else "h5")
    if weights_format not in ("safetensors", "torch", "h5"):
        raise ValueError(f"weights_format must be 'safetensors', 'torch' or 'h5', got {weights_format!r}")
    directory = Path(save_directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_directory {directory} exists and is not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    config = config.copy(architectures=[architecture])
    config.dtype = SAVED_WEIGHTS_DTYPE  # what the files below hold (the state is cast to it)
    state = state_dict_to_numpy(state)
    specs = parameter_table(config, task)
    missing = [s.name for s in specs if s.name not in state]
    if missing:
        raise ValueError(f"cannot save: the model state lacks {missing}")
    unexpected = sorted(set(state) - {s.name for s in specs})
    if unexpected:
        raise ValueError(f"cannot save: the state has tensors that are not part of a {task} model: {unexpected[:10]}")
    if weights_format == "h5":
        tensors = {s.tf_name: to_tf_layout(s, state[s.name]) for s in specs if s.kind != "counter"}
        counters = {s.name: int(np.asarray(state[s.name])) for s in specs if s.kind == "counter"}
        if max_shard_size is not None and sum(t.nbytes for t in tensors.values()) > parse_shard_size(max_shard_size):
            raise ValueError(
                f"the weights exceed max_shard_size={max_shard_size!r}; sharded tf_model.h5 files are not written: "
                "pass safe_serialization=True (sharded model.safetensors) or a larger max_shard_size"
            )
        write_tf_h5(directory / TF_WEIGHTS_NAME, hf_tf_model_name(task), tensors, counters=counters)
    else:
        if weights_format == "torch" and save_torch is None:
            raise ValueError("weights_format='torch' needs save_torch (the PyTorch side writes .bin files)")
        tensors = {s.name: np.asarray(state[s.name]) for s in specs}
        single, index_name = _WEIGHTS_NAMES[weights_format]
        stem, suffix = single.rsplit(".", 1)
        shards = plan_shards({n: int(t.nbytes) for n, t in tensors.items()}, parse_shard_size(max_shard_size))
        names = [single] if len(shards) == 1 else [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{suffix}" for i in range(len(shards))]
        for file_name, shard in zip(names, shards):
            part = {n: tensors[n] for n in shard}
            if weights_format == "safetensors":
                save_safetensors(part, directory / file_name)
            else:
                save_torch(part, directory / file_name)
        if len(shards) > 1:
            index = {
                "metadata": {"total_size": int(sum(t.nbytes for t in tensors.values()))},
                "weight_map": {n: file_name for file_name, shard in zip(names, shards) for n in shard},
            }
            atomic_write_text(directory / index_name, json.dumps(index, indent=2, sort_keys=True) + "\n")
        written = set(names) | ({index_name} if len(shards) > 1 else set())
        for name in [single, index_name, *(p.name for p in directory.glob(f"{stem}-*-of-*.{suffix}"))]:
            if name not in written and (directory / name).is_file():
                (directory / name).unlink()
    if write_config:
        config.save_pretrained(directory)
    return directory
