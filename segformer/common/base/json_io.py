"""Reading JSON files that come from outside (configs, label files, indexes) without trusting them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CheckpointError

__all__ = ["MAX_JSON_BYTES", "read_json"]

MAX_JSON_BYTES = 100 * 1024 * 1024


def read_json(path: str | os.PathLike, what: str = "JSON file", error: type[ValueError] | None = None):
    """Parse a JSON file; invalid, deeply nested, oversized or non-UTF-8 content is a ``CheckpointError``
    (or ``error``) naming the file, never a ``RecursionError``, and never quoting the file's content."""
    path = Path(path)
    if error is None:
        error = CheckpointError
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise error(f"{path}: {what} of {size} bytes is larger than the {MAX_JSON_BYTES} bytes allowed")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path} is not valid JSON ({what} is not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise error(f"{path} is not valid JSON ({what}; line {err.lineno}, column {err.colno}: {err.msg})") from None
    except RecursionError:
        raise error(f"{path} is not valid JSON ({what} nested too deeply)") from None
