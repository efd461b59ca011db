"""The exceptions the library raises on bad input, documented in one place.

Every error caused by what a caller passed (arguments, images, labels, configs, files) is one of
:data:`DOCUMENTED_ERRORS`; the message names the argument or file, the value seen, and what is allowed.
Anything else escaping the public API is a bug (the fuzzing suite checks this).

* ``ValueError`` - a value out of range / wrong shape / inconsistent (and :class:`CheckpointError`, a
  ``ValueError`` subclass, for files that are not readable checkpoints: truncated, corrupted, wrong kind;
  :class:`ResourceLimitError`, also a ``ValueError``, for a request refused before any work because it would need
  more memory than this process can have, or more sliding windows than allowed: the message says how much).
* ``TypeError`` - a wrong type or dtype (integer pixel values, float labels, ...).
* ``FileNotFoundError`` / ``NotADirectoryError`` - a path that does not exist / is not a folder.
* ``FileExistsError`` - a destination exists and overwriting was not asked for.
* ``ImportError`` - an optional dependency (torch, tensorflow, huggingface_hub, onnxruntime) is needed.

Environment faults while writing (disk full, read-only destination, a file where a folder should be) are
``OSError``s; :class:`WriteError` is one whose message already names the destination. The command line
turns every one of these into one ``error:`` line (``segformer.cli.main``).
"""

from __future__ import annotations

__all__ = ["CheckpointError", "DOCUMENTED_ERRORS", "ResourceLimitError", "WriteError"]

DOCUMENTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    FileExistsError,
    ImportError,
)


class CheckpointError(ValueError):
    """A file is not a readable checkpoint (truncated, corrupted, wrong kind). The message names the file."""


class WriteError(OSError):
    """An output could not be written; the message names it and says what was left as it was."""


class ResourceLimitError(ValueError):
    """A request refused before any work: it would need more memory than this process can have (or more sliding
    windows than allowed). The message names the argument, what it would need and what is available."""
