"""Resolve a Hugging Face Hub model id to a local folder through ``huggingface_hub`` (optional extra ``[hub]``).

The library never downloads anything by itself: this goes through ``huggingface_hub``, which honours its
cache (``HF_HUB_CACHE`` / ``HF_HOME``) and offline mode (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["resolve_model_dir", "looks_like_repo_id"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.h5", "*.keras", "*.txt"]


def looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and not name.startswith((".", "/")) and "\\" not in name


def resolve_model_dir(name: str, filenames: list[str] | None = None, revision: str | None = None) -> Path:
    """Return a local folder for ``name``: an existing folder, or a Hub repo id resolved by huggingface_hub."""
    path = Path(name)
    if path.is_dir():
        return path
    if not looks_like_repo_id(name):
        raise FileNotFoundError(f"{name!r} is neither an existing folder/file nor a Hugging Face Hub model id")
    from .deps import require

    huggingface_hub = require(
        "huggingface_hub", f"loading {name!r} from the Hugging Face Hub (it is not a local folder)",
        "or download the model and pass its folder",
    )
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id=name, revision=revision, allow_patterns=filenames or _WEIGHT_PATTERNS
        )
    except Exception as err:  # huggingface_hub raises many kinds (offline, not found, network)
        raise FileNotFoundError(
            f"could not resolve {name!r} through huggingface_hub ({type(err).__name__}: {err}); "
            "in offline mode (HF_HUB_OFFLINE=1) the model must already be in the cache"
        ) from err
    return Path(folder)
