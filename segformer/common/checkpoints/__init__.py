"""The checkpoint layer (imports ``base``, ``model`` and ``images``). Checkpoint I/O in numpy: safetensors, PyTorch ``.bin`` (``weights_only``), HF-layout ``tf_model.h5``, shards.

Everything here reads and writes ``dict[str, np.ndarray]``; the framework packages convert to and from
their tensors. Formats are detected from the file's content, not its name. Every write is atomic.

* :func:`read_checkpoint` - the one format dispatcher: any supported file -> :class:`RawCheckpoint`
  (``reader.py``); :func:`load_state_dict` - a PyTorch-layout file (or a sharded index) -> ``{name: array}``.
* :func:`find_weights_file` - the weights of a model folder, by format preference (``files.py``, with the
  standard file names, :func:`detect_format` and :class:`CheckpointError`).
* :func:`save_safetensors` / :func:`read_safetensors` - safetensors (bf16 / f16 upcast to float32 on read;
  ``safetensors_io.py``, with the checksum our files carry).
* :func:`read_torch_bin` - ``torch.load(weights_only=True)`` into numpy, and the version floors of the
  unpickling readers (``torch_io.py``).
* :func:`read_tf_h5` / :func:`write_tf_h5` - the Keras-2 ``save_weights`` h5 layout Hugging Face's TF
  classes read and write (``layer_names`` / ``weight_names`` attributes, ``model_name/...:0`` datasets;
  ``h5_io.py``).
* :func:`~segformer.common.checkpoints.keras_hub_io.read_keras_hub_preset` /
  :func:`~segformer.common.checkpoints.keras_hub_io.write_keras_hub_preset` - keras-hub SegFormer preset folders
  (Keras 3 ``.weights.h5`` positional paths, one ordered name table; ``keras_hub_io.py``).
* :func:`match_state_dict` - compare a state dict with the canonical table: a :class:`LoadReport`
  (``matching.py``).
"""

from __future__ import annotations

from ..base.json_io import read_json
from .files import (
    PT_WEIGHTS_INDEX_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    TF_WEIGHTS_NAME,
    WEIGHTS_NAMES,
    CheckpointError,
    detect_format,
    find_weights_file,
)
from .h5_io import COUNTERS_ATTR, read_h5_counters, read_tf_h5, write_tf_h5
from .matching import LoadReport, check_sr_ratios, match_state_dict
from .reader import PT_LAYOUT_KINDS, RawCheckpoint, index_shard_path, load_state_dict, read_checkpoint
from .safetensors_io import CHECKSUM_KEY, read_safetensors, save_safetensors, tensors_digest
from .torch_io import (
    SAFE_KERAS_VERSION,
    SAFE_TORCH_VERSION,
    check_keras_version,
    check_torch_version,
    read_torch_bin,
    torch_load_error,
)

__all__ = [
    "CheckpointError",
    "LoadReport",
    "RawCheckpoint",
    "PT_LAYOUT_KINDS",
    "SAFE_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "PT_WEIGHTS_NAME",
    "PT_WEIGHTS_INDEX_NAME",
    "TF_WEIGHTS_NAME",
    "WEIGHTS_NAMES",
    "detect_format",
    "find_weights_file",
    "read_checkpoint",
    "load_state_dict",
    "index_shard_path",
    "read_json",
    "read_safetensors",
    "save_safetensors",
    "tensors_digest",
    "CHECKSUM_KEY",
    "read_torch_bin",
    "torch_load_error",
    "check_torch_version",
    "check_keras_version",
    "SAFE_TORCH_VERSION",
    "SAFE_KERAS_VERSION",
    "read_tf_h5",
    "write_tf_h5",
    "read_h5_counters",
    "COUNTERS_ATTR",
    "match_state_dict",
]
