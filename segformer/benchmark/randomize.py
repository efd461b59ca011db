"""Seeded random values for every weight of a benchmarked model, ours or the reference's, PT or TF.

A freshly built model has zero biases, identity LayerNorms (gamma 1, beta 0) and identity BatchNorm
statistics (mean 0, variance 1). A converter or a graph optimizer that sees them as constants (TFLite, ONNX
Runtime, ``torch.compile`` with freezing) may drop those multiplications and additions, which makes files
smaller (b0 TFLite int8 with 150 classes: 3.49 MB, against 4.14 MB with every weight random) and could make
them faster than a trained model. So every benchmarked model gets random values first, by these rules:

* BatchNorm running / moving variance: uniform in [0.5, 1.5];
* LayerNorm / BatchNorm scale (``weight`` of a norm module, Keras ``gamma``): 1 + N(0, 0.1);
* every other 1-D tensor (biases, norm shifts, running means): N(0, 0.1);
* kernels (2-D and more): N(0, s) with s = 1 / sqrt(fan_in) clipped to [0.02, 0.2];
* integer tensors (BatchNorm's batch counter, seed generators) are left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["random_value", "role_of", "randomize_torch", "randomize_keras"]


def random_value(rng: np.random.Generator, shape: tuple[int, ...], role: str, fan_in: int = 1) -> np.ndarray:
    """float32 values of ``shape`` for a tensor of ``role``: ``"variance"``, ``"scale"``, ``"shift"`` (1-D) or
    ``"kernel"`` (``fan_in``: inputs per output)."""
    if role == "variance":
        value = rng.uniform(0.5, 1.5, shape)
    elif role == "scale":
        value = 1.0 + rng.normal(0.0, 0.1, shape)
    elif role == "shift":
        value = rng.normal(0.0, 0.1, shape)
    elif role == "kernel":
        value = rng.normal(0.0, float(np.clip(1.0 / np.sqrt(max(fan_in, 1)), 0.02, 0.2)), shape)
    else:
        raise ValueError(f"role must be one of ['variance', 'scale', 'shift', 'kernel'], got {role!r}")
    return value.astype(np.float32)


def role_of(shape: tuple[int, ...], variance: bool, scale: bool) -> str:
    """The :func:`random_value` role of a float tensor: a BatchNorm variance, a norm scale, else by rank
    (1-D: shift, more: kernel)."""
    if variance:
        return "variance"
    if scale:
        return "scale"
    return "shift" if len(shape) <= 1 else "kernel"


def randomize_torch(model: Any, seed: int = 0) -> Any:
    """Every floating parameter and buffer of a ``torch.nn.Module`` (in ``named_modules`` order), in place;
    returns the model. PyTorch kernels are (out, in, ...): ``fan_in`` is the product of ``shape[1:]``."""
    import torch

    rng = np.random.default_rng(seed)
    norms = (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)
    with torch.no_grad():
        for module in model.modules():
            is_norm = isinstance(module, norms)
            tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
            for name, tensor in tensors:
                if tensor is None or not tensor.is_floating_point():
                    continue
                shape = tuple(tensor.shape)
                role = role_of(shape, name == "running_var", is_norm and name == "weight")
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                tensor.copy_(torch.from_numpy(random_value(rng, shape, role, fan_in)).to(tensor.dtype))
    return model


def randomize_keras(model: Any, seed: int = 0) -> Any:
    """Every floating variable of a built Keras model (Keras 3 or tf-keras 2; in ``model.weights`` order), in
    place; returns the model. Keras kernels are (..., in, out): ``fan_in`` is the product of ``shape[:-1]``;
    roles by variable name (``moving_variance``, ``gamma``)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        dtype = str(getattr(variable.dtype, "name", variable.dtype))
        if "float" not in dtype:
            continue
        name = str(getattr(variable, "path", None) or variable.name).split("/")[-1].split(":")[0]
        shape = tuple(int(d) for d in variable.shape)
        role = role_of(shape, name == "moving_variance", name == "gamma")
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        variable.assign(random_value(rng, shape, role, fan_in))  # cast to the variable's dtype by assign
    return model
