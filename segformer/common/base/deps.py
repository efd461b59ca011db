"""Optional packages: one message for every missing one, in every command and API.

``require("torch", "segformer predict --framework pt")`` imports and returns the module, or raises
:class:`MissingDependencyError` (an ``ImportError``) whose message names the package, the feature that
needs it, the pip command that installs it, and the extra of this project that includes it. The hint
names the packages themselves: ``segformer`` may have been installed from a clone, not from an index.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Iterator

__all__ = [
    "OPTIONAL_PACKAGES", "MissingDependencyError", "available", "missing_message", "native_noise_silenced", "require",
    "require_framework",
]

# import name -> (what it is, pip command, extra of this project)
OPTIONAL_PACKAGES: dict[str, tuple[str, str, str]] = {
    "torch": ("PyTorch", "pip install torch", "torch"),
    "tensorflow": ("TensorFlow", "pip install tensorflow keras", "tf"),
    "keras": ("Keras 3", "pip install tensorflow keras", "tf"),
    "huggingface_hub": ("huggingface_hub", "pip install huggingface_hub", "hub"),
    "onnx": ("ONNX", "pip install onnx onnxruntime", "onnx"),
    "onnxruntime": ("ONNX Runtime", "pip install onnx onnxruntime", "onnx"),
    "peft": ("PEFT", "pip install peft", "all"),
}


QUIET_IMPORTS = False  # the CLI sets it (unless --verbose): TensorFlow is imported with file descriptor 2 silenced


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def native_noise_silenced() -> Iterator[None]:
    """While the CLI runs quietly (:data:`QUIET_IMPORTS`, i.e. without ``--verbose``), native libraries' log
    lines (TFLite's "Created TensorFlow Lite XNNPACK delegate") go nowhere: file descriptor 2 is pointed at
    the null device for the block. Python exceptions are unaffected. Otherwise a no-op."""
    if not QUIET_IMPORTS:
        yield
        return
    with _native_stderr_silenced():
        yield


class MissingDependencyError(ImportError):
    """An optional package that a feature needs is not installed (an ``ImportError``)."""


def available(package: str) -> bool:
    """Whether ``package`` (an import name) can be imported, without importing it."""
    return importlib.util.find_spec(package) is not None


def missing_message(package: str, feature: str, alternative: str | None = None) -> str:
    """The one-line message for ``package`` missing when ``feature`` needs it."""
    if package not in OPTIONAL_PACKAGES:
        raise ValueError(f"package must be one of {sorted(OPTIONAL_PACKAGES)}, got {package!r}")
    name, command, extra = OPTIONAL_PACKAGES[package]
    text = (
        f"{feature} needs {name} (Python package {package!r}), which is not installed: {command} "
        f"(or, in a clone of segformer, pip install '.[{extra}]')"
    )
    return f"{text}; {alternative}" if alternative else text


def require(package: str, feature: str, alternative: str | None = None) -> ModuleType:
    """Import and return ``package``, or raise :class:`MissingDependencyError` naming ``feature``.

    ``alternative`` is appended to the message (e.g. ``"or use --framework tf (TensorFlow)"``).
    """
    message = missing_message(package, feature, alternative)
    try:
        if QUIET_IMPORTS and package in ("tensorflow", "keras") and "tensorflow" not in sys.modules:
            with _native_stderr_silenced():  # TensorFlow's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL
                return importlib.import_module(package)
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] != package:
            raise  # the package is there but one of its own dependencies is missing
        raise MissingDependencyError(message) from None


def require_framework(framework: str, feature: str) -> None:
    """Check that ``--framework`` ``pt`` (torch) or ``tf`` (tensorflow + keras) can run ``feature``;
    the message points to the other framework."""
    if framework == "pt":
        require("torch", f"{feature} --framework pt", "or use --framework tf (TensorFlow / Keras)")
    elif framework == "tf":
        for package in ("tensorflow", "keras"):
            require(package, f"{feature} --framework tf", "or use --framework pt (PyTorch)")
    else:
        raise ValueError(f"--framework must be one of ['pt', 'tf'], got {framework!r}")
