"""Writing a converted folder (:func:`write_folder`) and reading it back bit for bit (:func:`read_folder_state`,
:func:`bit_exact_check`)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..common.checkpoints import SAFE_WEIGHTS_NAME, TF_WEIGHTS_NAME, load_state_dict, read_h5_counters
from ..common.model.config import SegformerConfig
from ..common.checkpoints.pretrained import read_canonical_state, save_pretrained_state
from ..common.model.weights import TASK_CLASSES, parameter_table
from .report import Check


def write_folder(
    folder: Path, config: SegformerConfig, task: str, state: Mapping[str, np.ndarray], framework: str
) -> list[Path]:
    """Write ``config.json`` + the weights of ``framework`` into ``folder`` (exists, empty); the files."""
    architecture = TASK_CLASSES[task].pt_class if framework == "pt" else TASK_CLASSES[task].tf_class
    save_pretrained_state(folder, config, state, task, framework, architecture)  # h5 carries the BN counters
    return sorted(p for p in folder.iterdir() if p.is_file())


def read_folder_state(folder: Path, config: SegformerConfig, task: str, framework: str) -> dict[str, np.ndarray]:
    """Read back what :func:`write_folder` wrote (canonical names, PyTorch layout, counters included)."""
    specs = parameter_table(config, task)
    if framework == "pt":
        return load_state_dict(folder / SAFE_WEIGHTS_NAME)
    state = read_canonical_state(folder / TF_WEIGHTS_NAME, specs)
    state.update(read_h5_counters(folder / TF_WEIGHTS_NAME))
    return state


def write_mmseg_checkpoint(path: Path, config: SegformerConfig, task: str, state: Mapping[str, np.ndarray]) -> None:
    """Write ``{"meta", "state_dict"}`` as mmsegmentation 1.x (mmengine) saves it to ``path`` (a temporary name: the
    caller renames it into place): ``meta.dataset_meta`` holds the class names and palette, ``meta.cfg`` the
    model part of an mmseg config (heads, widths, decoder width). Raises ``ValueError`` naming what mmseg's
    ``mit.py`` + ``SegformerHead`` cannot represent."""
    from .. import __version__
    from ..common.base.deps import require
    from ..common.images.labels import resolve_palette
    from .mmseg import mmseg_config_text, to_mmseg_state

    torch = require("torch", "writing an mmsegmentation checkpoint (--to mmseg)")
    tensors = {k: torch.from_numpy(v) for k, v in to_mmseg_state(config, task, state).items()}
    meta: dict = {"cfg": mmseg_config_text(config, task), "converted_by": f"segformer {__version__}"}
    if task == "semantic_segmentation":
        names = tuple(config.id2label[i] for i in range(config.num_labels))
        palette = resolve_palette(config.num_labels, id2label=config.id2label, palette=config.extra.get("palette"))[0]
        meta["dataset_meta"] = {"classes": names, "palette": palette[: config.num_labels].tolist()}
    torch.save({"meta": meta, "state_dict": tensors}, path)


def bit_exact_check(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> Check:
    names = sorted(set(expected) | set(got))
    worst = 0.0
    for name in names:
        if name not in expected or name not in got:
            return Check(f"written tensors bit-exact ({name} {'missing' if name not in got else 'extra'})", float("inf"), 0.0, "tensors")
        a, b = np.asarray(expected[name]), np.asarray(got[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            return Check(f"written tensors bit-exact ({name}: {a.dtype}{a.shape} vs {b.dtype}{b.shape})", float("inf"), 0.0, "tensors")
        if a.tobytes() != b.tobytes():
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) or float("inf"))
    return Check(f"written tensors bit-exact ({len(names)} tensors)", worst, 0.0, "tensors")
