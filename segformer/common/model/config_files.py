"""The file and Hub side of :class:`~segformer.common.model.config.SegformerConfig`, as in transformers'
``PretrainedConfig``: ``config.json`` in and out (``from_json_file``, ``to_json_file``, ``from_pretrained``,
``save_pretrained``, ``push_to_hub``) and ``update_from_string``. Writes are atomic (temporary name, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..base.atomic import atomic_write_text

__all__ = ["CONFIG_NAME", "ConfigFiles"]

CONFIG_NAME = "config.json"


class ConfigFiles:
    """Mixin of :class:`~segformer.common.model.config.SegformerConfig` (which supplies ``to_dict``,
    ``from_dict``, ``to_json_string``, ``update``, ``field_names``, ``extra``)."""

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = False) -> None:
        """Write :meth:`to_json_string` to ``json_file_path`` (atomically)."""
        atomic_write_text(json_file_path, self.to_json_string(use_diff=use_diff))

    def update_from_string(self, update_str: str) -> None:
        """``"name=value,name=value"`` for existing bool / int / float / str fields (Hugging Face's rules:
        booleans as ``true/false/1/0/yes/no/y/n``); other keys or types raise ``ValueError`` / ``TypeError``."""
        changes: dict[str, Any] = {}
        for item in str(update_str).split(","):
            key, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"update_from_string: {item!r} is not of the form name=value")
            if key in self.extra:
                old = self.extra[key]
            elif key in self.field_names() and key not in ("dtype", "torch_dtype", "architectures"):
                old = getattr(self, key)
            else:
                raise ValueError(f"update_from_string: key {key!r} is not a field of this config")
            if isinstance(old, bool):
                lowered = text.lower()
                if lowered not in ("true", "1", "y", "yes", "false", "0", "n", "no"):
                    raise ValueError(f"update_from_string: can't parse {text!r} as a bool for {key}")
                changes[key] = lowered in ("true", "1", "y", "yes")
            elif isinstance(old, int):
                changes[key] = int(text)
            elif isinstance(old, float):
                changes[key] = float(text)
            elif isinstance(old, str) or old is None:
                changes[key] = text
            else:
                raise TypeError(f"update_from_string: only int, float, bool or string fields can be set, {key} is {old!r}")
        self.update(changes)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> "SegformerConfig":
        from ..base.json_io import read_json

        path = Path(path)
        data = read_json(path, "config file", error=ValueError)
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, return_unused_kwargs: bool = False, **kwargs: Any
    ) -> "SegformerConfig" | tuple["SegformerConfig", dict[str, Any]]:
        """Load ``config.json`` from a folder, a JSON file path, or a Hub model id (needs huggingface_hub).

        ``kwargs``: the download options of ``from_pretrained`` (``revision``, ``token``, ``cache_dir``,
        ``local_files_only``, ``force_download``, ``proxies``, ``subfolder``), which are never stored, and
        config fields to override. Any other keyword is a ``TypeError``, or, with
        ``return_unused_kwargs=True``, returned as ``(config, unused)`` as in Hugging Face.
        """
        from .hub import CONFIG_FILENAMES, pop_download_kwargs, resolve_model_dir

        hub = pop_download_kwargs(kwargs)
        fields = cls.field_names()
        unused = {k: kwargs.pop(k) for k in list(kwargs) if k not in fields}
        if unused and not return_unused_kwargs:
            raise TypeError(
                f"SegformerConfig.from_pretrained got unexpected keyword arguments {sorted(unused)}; config fields: "
                f"{list(fields)}"
            )
        source = Path(path)
        if source.is_file():
            if hub["subfolder"]:
                raise ValueError(f"subfolder={hub['subfolder']!r} needs a folder or Hub id, got the file {os.fspath(source)!r}")
            config_file = source
        else:
            config_file = resolve_model_dir(os.fspath(path), filenames=CONFIG_FILENAMES, **hub) / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} at {os.fspath(config_file)!r}")
        config = cls.from_json_file(config_file, **kwargs)
        config.name_or_path = os.fspath(path)
        return (config, unused) if return_unused_kwargs else config

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"save_directory {directory} exists and is not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CONFIG_NAME
        atomic_write_text(target, self.to_json_string())
        return target

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload ``config.json`` to the Hub repo ``repo_id`` through ``huggingface_hub`` (``token``,
        ``commit_message``, ``commit_description``, ``private``, ``create_pr``, ``revision``)."""
        from .hub import push_to_hub_with

        return push_to_hub_with(self.save_pretrained, repo_id, **kwargs)
