"""The Hugging Face Hub through ``huggingface_hub`` (optional extra ``[hub]``): download and upload.

The library never talks to the network by itself: downloads go through ``huggingface_hub``, which honours
its cache (``HF_HUB_CACHE`` / ``HF_HOME``) and offline mode (``HF_HUB_OFFLINE=1``); uploads go through
``huggingface_hub.create_repo`` / ``huggingface_hub.upload_folder``.

The download options of ``from_pretrained`` (:data:`HUB_DOWNLOAD_KWARGS`) only steer where files come
from; they are never stored in a config, and a token is handed to ``huggingface_hub`` and nowhere else.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "HUB_DOWNLOAD_KWARGS",
    "HUB_UPLOAD_KWARGS",
    "CONFIG_FILENAMES",
    "resolve_model_dir",
    "looks_like_repo_id",
    "pop_download_kwargs",
    "pop_upload_kwargs",
    "push_folder_to_hub",
    "push_to_hub_with",
]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.h5", "*.keras", "*.txt"]
CONFIG_FILENAMES = ["config.json"]

# from_pretrained keyword -> its default (the same names and meaning as in transformers 4.57.6).
HUB_DOWNLOAD_KWARGS: dict[str, Any] = {
    "revision": None,
    "token": None,
    "cache_dir": None,
    "local_files_only": False,
    "force_download": False,
    "proxies": None,
    "subfolder": "",
}
# push_to_hub keyword -> its default.
HUB_UPLOAD_KWARGS: dict[str, Any] = {
    "token": None,
    "commit_message": None,
    "commit_description": None,
    "private": None,
    "create_pr": False,
    "revision": None,
}


def looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and not name.startswith((".", "/")) and "\\" not in name


def pop_download_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the download options from ``kwargs`` (in place) and return them, defaults filled in.

    ``use_auth_token`` (transformers' old name) is read as ``token``.
    """
    options = {name: kwargs.pop(name, default) for name, default in HUB_DOWNLOAD_KWARGS.items()}
    if "use_auth_token" in kwargs:
        legacy = kwargs.pop("use_auth_token")
        if options["token"] is not None and legacy is not None:
            raise ValueError("pass the Hub token as token= only, not as both token= and use_auth_token=")
        options["token"] = legacy if options["token"] is None else options["token"]
    subfolder = options["subfolder"]
    if subfolder is None:
        options["subfolder"] = ""
    elif not isinstance(subfolder, str) or Path(subfolder).is_absolute() or ".." in Path(subfolder).parts:
        raise ValueError(f"subfolder must be a relative path inside the model folder, got {subfolder!r}")
    return options


def pop_upload_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the ``push_to_hub`` options from ``kwargs`` (in place) and return them, defaults filled in."""
    options = {name: kwargs.pop(name, default) for name, default in HUB_UPLOAD_KWARGS.items()}
    if "use_auth_token" in kwargs:
        legacy = kwargs.pop("use_auth_token")
        options["token"] = legacy if options["token"] is None else options["token"]
    return options


def pop_save_kwargs(owner: str, kwargs: dict[str, Any], accepted: str) -> tuple[str | None, dict[str, Any]]:
    """``(repo_id, upload options)`` taken out of ``save_pretrained``'s extra keywords; anything left is a
    ``TypeError`` naming it and listing ``accepted`` plus the upload keywords (nothing is silently ignored)."""
    repo_id = kwargs.pop("repo_id", None)
    upload = pop_upload_kwargs(kwargs)
    if kwargs:
        raise TypeError(
            f"{owner}.save_pretrained got unexpected keyword arguments {sorted(kwargs)}; accepted: {accepted}, "
            f"repo_id, {', '.join(HUB_UPLOAD_KWARGS)}"
        )
    return repo_id, upload


def _import_hub(purpose: str):
    from ..base.deps import require

    return require("huggingface_hub", purpose, "or download the model and pass its folder")


def download_file(name: str, filename: str, hub: dict[str, Any]) -> Path:
    """One file of a Hub repo (``huggingface_hub.hf_hub_download``, its cache honoured), for a repo id or a
    preset name; ``hub``: the options of :func:`pop_download_kwargs`."""
    from .presets import find_preset, preset_unavailable_message

    preset = find_preset(name)
    if preset is not None:
        try:
            return download_file(preset.hub_id, filename, hub)
        except (ImportError, OSError, ValueError) as error:  # huggingface_hub's errors are OSError / ValueError kinds
            raise FileNotFoundError(preset_unavailable_message(preset, error)) from None
    if name.count("/") != 1 or not looks_like_repo_id(name):  # a single file is looked up in an owner/name repo only
        raise FileNotFoundError(f"{name!r} is neither a folder with {filename} nor a JSON file")
    from ..base.deps import require

    huggingface_hub = require("huggingface_hub", f"fetching {name!r} from the Hugging Face Hub", "or pass a local folder")
    return Path(huggingface_hub.hf_hub_download(name, filename, **{k: v for k, v in hub.items() if k != "subfolder"},
                                                subfolder=hub["subfolder"] or None))


def resolve_model_dir(
    name: str,
    filenames: list[str] | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    proxies: dict | None = None,
    subfolder: str = "",
) -> Path:
    """Return a local folder for ``name``: an existing folder (``/subfolder``), or a Hub repo id resolved by
    ``huggingface_hub.snapshot_download`` (only ``filenames`` patterns, inside ``subfolder``). A preset name
    (``"b0-ade"``, keras-hub's ``"segformer_b0_ade20k_512"``; see ``segformer presets``) stands for its Hub id."""
    from .presets import find_preset, preset_unavailable_message

    path = Path(name)
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not folder.is_dir():
            raise FileNotFoundError(f"{os.fspath(path)!r} has no subfolder {subfolder!r}")
        return folder
    preset = find_preset(name)
    if preset is not None:
        try:
            return resolve_model_dir(preset.hub_id, filenames, revision, token, cache_dir, local_files_only,
                                     force_download, proxies, subfolder)
        except (FileNotFoundError, ImportError) as error:
            raise FileNotFoundError(preset_unavailable_message(preset, error)) from None
    if not looks_like_repo_id(name):
        raise FileNotFoundError(f"{name!r} is neither an existing folder/file nor a Hugging Face Hub model id")
    huggingface_hub = _import_hub(f"loading {name!r} from the Hugging Face Hub (it is not a local folder)")
    patterns = filenames or _WEIGHT_PATTERNS
    if subfolder:
        patterns = [f"{subfolder}/{pattern}" for pattern in patterns]
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id=name,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
            proxies=proxies,
            allow_patterns=patterns,
        )
    except Exception as err:  # huggingface_hub raises many kinds (offline, not found, network)
        raise FileNotFoundError(
            f"could not resolve {name!r} through huggingface_hub ({type(err).__name__}: {err}); "
            "in offline mode (HF_HUB_OFFLINE=1) the model must already be in the cache"
        ) from err
    return Path(folder) / subfolder if subfolder else Path(folder)


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | bool | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    create_pr: bool = False,
    revision: str | None = None,
) -> Any:
    """Upload every file of ``folder`` to the Hub model repo ``repo_id`` (created if missing); returns
    ``huggingface_hub.upload_folder``'s commit info."""
    if not isinstance(repo_id, str) or not looks_like_repo_id(repo_id):
        raise ValueError(f"repo_id must be a Hub repo id like 'user/name', got {repo_id!r}")
    hub = _import_hub("push_to_hub")
    hub.create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model")
    return hub.upload_folder(
        repo_id=repo_id,
        folder_path=os.fspath(folder),
        commit_message=commit_message or "Upload model",
        commit_description=commit_description,
        token=token,
        repo_type="model",
        create_pr=create_pr,
        revision=revision,
    )


def push_to_hub_with(save: Callable[[Path], Any], repo_id: str, **kwargs: Any) -> Any:
    """``push_to_hub(repo_id, ...)`` of models and processors: ``save(folder)`` into a fresh temporary folder,
    upload it, remove it. ``kwargs`` are :data:`HUB_UPLOAD_KWARGS`; anything else is a ``TypeError``."""
    options = pop_upload_kwargs(kwargs)
    if kwargs:
        raise TypeError(
            f"push_to_hub got unexpected keyword arguments {sorted(kwargs)}; accepted: {['repo_id', *HUB_UPLOAD_KWARGS]}"
        )
    with tempfile.TemporaryDirectory(prefix="segformer-push-") as tmp:
        save(Path(tmp))
        return push_folder_to_hub(tmp, repo_id, **options)
