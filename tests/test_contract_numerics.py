"""Numerics the config chooses, in both frameworks: every ``hidden_act`` is transformers' ``ACT2FN`` function
(checked against numpy formulas), and ``stage_layer_norm_eps`` is the epsilon of the stage norms alone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from randomize import random_state, tiny_config
from segformer.common.model.config import ACTIVATIONS, SegformerConfig

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")

X = np.linspace(-6.0, 6.0, 2001)
_ERF = np.vectorize(math.erf)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
# transformers' ACT2FN, written out: gelu = GELUActivation (erf), gelu_new = NewGELUActivation and
# gelu_pytorch_tanh = PytorchGELUTanh (both the tanh approximation), relu, selu, silu / swish (SiLU), tanh.
REFERENCE = {
    "gelu": lambda x: 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0))),
    "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "gelu_pytorch_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "relu": lambda x: np.maximum(x, 0.0),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1.0)),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def test_reference_covers_every_activation_and_gelus_differ():
    assert set(REFERENCE) == set(ACTIVATIONS)
    assert np.max(np.abs(REFERENCE["gelu"](X) - REFERENCE["gelu_new"](X))) > 1e-4  # a swap would be seen


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_is_transformers_function_in_both_frameworks(name):
    from segformer.pt.layers import ACT2FN as PT_ACT
    from segformer.tf.layers import ACT2FN as TF_ACT

    expected = REFERENCE[name](X)
    x32 = X.astype(np.float32)
    pt = PT_ACT[name](torch.from_numpy(x32)).numpy()
    keras_out = np.asarray(TF_ACT[name](tf.constant(x32)))
    for framework, got in (("pt", pt), ("tf", keras_out)):
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        assert diff <= 2e-6, (name, framework, diff)


@pytest.mark.parametrize("name", ["gelu", "gelu_new", "relu"])
def test_hidden_act_reaches_the_mix_ffn(name):
    from segformer.pt import SegformerModel
    from segformer.pt.layers import ACT2FN as PT_ACT
    from segformer.tf import TFSegformerModel
    from segformer.tf.layers import ACT2FN as TF_ACT

    config = tiny_config(hidden_act=name)
    assert SegformerModel(config).encoder.block[2][0].mlp.intermediate_act_fn is PT_ACT[name]
    assert TFSegformerModel(config).segformer.encoder.block[2][0].mlp.intermediate_act_fn is TF_ACT[name]


# ---------------------------------------------------------------------------------- stage LayerNorm eps
def test_stage_eps_defaults_to_layer_norm_eps_and_is_written_only_when_it_differs():
    assert SegformerConfig().stage_layer_norm_eps == 1e-6
    assert "stage_layer_norm_eps" not in SegformerConfig().to_dict()
    hf_style = {k: v for k, v in SegformerConfig().to_dict().items() if k != "patch_layer_norm_eps"}
    assert SegformerConfig.from_dict(hf_style).stage_layer_norm_eps == 1e-5  # follows HF's 1e-5 everywhere
    config = SegformerConfig(stage_layer_norm_eps=1e-5)
    data = json.loads(config.to_json_string())
    assert data["stage_layer_norm_eps"] == 1e-5 and SegformerConfig.from_dict(data) == config
    assert config.copy(layer_norm_eps=1e-5).to_dict().get("stage_layer_norm_eps") is None  # equal again
    with pytest.raises(ValueError, match="stage_layer_norm_eps must be a positive number"):
        SegformerConfig(stage_layer_norm_eps=0.0)


def test_stage_eps_is_the_stage_norms_epsilon_in_both_frameworks():
    from segformer.pt import SegformerModel
    from segformer.tf import TFSegformerModel

    config = tiny_config(stage_layer_norm_eps=0.25)
    pt = SegformerModel(config).encoder
    keras_encoder = TFSegformerModel(config).segformer.encoder
    assert [norm.eps for norm in pt.layer_norm] == [0.25] * 4
    assert [norm.epsilon for norm in keras_encoder.layer_norms] == [0.25] * 4
    assert pt.block[0][0].layer_norm_1.eps == config.layer_norm_eps == 1e-6  # block norms keep theirs
    assert keras_encoder.block[0][0].layer_norm_1.epsilon == 1e-6


def test_stage_eps_changes_the_stage_output_as_a_numpy_layer_norm_says():
    """With a large stage epsilon the PT stage output equals a numpy LayerNorm of the same tokens with it."""
    from segformer.pt import SegformerModel

    config = tiny_config(stage_layer_norm_eps=0.5)
    model = SegformerModel(config).eval()
    model.load_state_dict_numpy(random_state(config, "base"))
    captured = {}
    norm = model.encoder.layer_norm[0]
    norm.register_forward_hook(lambda module, args, out: captured.update(tokens=args[0].detach().numpy(), out=out.detach().numpy()))
    with torch.no_grad():
        model(torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)))
    tokens = captured["tokens"].astype(np.float64)
    mean, var = tokens.mean(-1, keepdims=True), tokens.var(-1, keepdims=True)
    expected = (tokens - mean) / np.sqrt(var + 0.5) * norm.weight.detach().numpy() + norm.bias.detach().numpy()
    assert np.max(np.abs(captured["out"] - expected)) < 1e-5
    assert np.max(np.abs(captured["out"] - ((tokens - mean) / np.sqrt(var + 1e-6) * norm.weight.detach().numpy()
                                            + norm.bias.detach().numpy()))) > 1e-2
