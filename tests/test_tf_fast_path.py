"""The Keras fast paths equal the plain path: the eval fast path (folded decode head) for every variant, the
training fast path (linear_fuse folded, BatchNorm live) in values, loss, gradients and mixed-precision dtypes,
and the cached inference graph's LayerNorm formulation: where it runs, and its numbers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from randomize import random_state  # noqa: E402
from segformer import SegformerConfig  # noqa: E402
from segformer.tf import TFSegformerForSemanticSegmentation  # noqa: E402


@pytest.mark.parametrize("variant", ["b0", pytest.param("b1", marks=pytest.mark.slow), pytest.param("b2", marks=pytest.mark.slow),
                                     pytest.param("b3", marks=pytest.mark.slow), pytest.param("b4", marks=pytest.mark.slow),
                                     pytest.param("b5", marks=pytest.mark.slow)])
def test_tf_fast_path_equals_plain_path(variant):
    config = SegformerConfig.from_variant(variant, num_labels=19)
    model = TFSegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "seg", seed=1))
    x = np.random.default_rng(0).normal(size=(1, 3, 97, 131)).astype(np.float32)
    model.use_fast_path = True
    fast = np.asarray(model(x).logits)
    model.use_fast_path = False
    plain = np.asarray(model(x).logits)
    diff = float(np.abs(fast - plain).max())
    print(variant, "TF fast vs plain max|diff|", diff)
    assert diff <= 1e-4


def _tiny_seg_model(seed=3):
    config = SegformerConfig.from_variant("b0", num_labels=5, hidden_sizes=[16, 32, 40, 64], num_attention_heads=[1, 2, 2, 4],
                                          decoder_hidden_size=32)
    model = TFSegformerForSemanticSegmentation(config)
    model.load_state_dict_numpy(random_state(config, "seg", seed=seed))
    return model


def test_eager_inference_calls_run_as_one_cached_graph():
    """From the 2nd eager inference call on, the model runs as a cached tf.function: same numbers as op by op
    (``run_eagerly=True``), at most two traces over several input sizes, eager errors kept."""
    import tensorflow as tf

    model = _tiny_seg_model()
    reference = _tiny_seg_model()
    reference.run_eagerly = True
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=shape).astype(np.float32) for shape in ((1, 3, 64, 64), (2, 3, 97, 131), (1, 3, 75, 64), (2, 3, 64, 64))]
    outputs = []
    for x in inputs:
        outputs.append(model(x, output_hidden_states=True, output_attentions=True))
        if len(outputs) == 1:
            assert model._graphs.functions == {}  # the first call stays op by op (no tracing)
    functions = list(model._graphs.functions.values())
    assert len(functions) == 1 and reference._graphs.functions == {}
    assert functions[0].experimental_get_tracing_count() <= 2
    for x, out in zip(inputs, outputs):
        want = reference(x, output_hidden_states=True, output_attentions=True)
        assert type(out) is type(want) and list(out.keys()) == list(want.keys())
        for got_tensor, want_tensor in zip(tf.nest.flatten(out.to_tuple()), tf.nest.flatten(want.to_tuple())):
            assert got_tensor.shape == want_tensor.shape
            assert float(np.abs(np.asarray(got_tensor) - np.asarray(want_tensor)).max()) <= 1e-5
    as_tuple = model(inputs[0], return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert float(np.abs(np.asarray(as_tuple[0]) - np.asarray(outputs[0].logits)).max()) <= 1e-5
    with pytest.raises(ValueError, match="channels"):
        model(np.zeros((1, 4, 64, 64), np.float32))
    model.check_finite = True
    with pytest.raises(ValueError, match="NaN"):
        model(np.full((1, 3, 64, 64), np.nan, np.float32))
    model.use_fast_path = False  # the plain path is the op-by-op reference path
    plain = model(inputs[1]).logits
    assert float(np.abs(np.asarray(plain) - np.asarray(outputs[1].logits)).max()) <= 1e-4


def _numpy_bilinear(x, out_h, out_w):
    """Half-pixel bilinear resize of (B, h, w, C), no antialias (PyTorch align_corners=False), in float64."""
    x = x.astype(np.float64)
    for axis, out in ((1, out_h), (2, out_w)):
        size = x.shape[axis]
        src = np.maximum((np.arange(out) + 0.5) * size / out - 0.5, 0.0)
        low = np.minimum(np.floor(src).astype(int), size - 1)
        high = np.minimum(low + 1, size - 1)
        frac = (src - low).reshape([-1 if a == axis else 1 for a in range(4)])
        x = np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac
    return x


def test_xla_forward_equals_op_by_op():
    """Under jit_compile=True the depthwise conv runs as shifted multiply-adds (XLA's CPU depthwise conv is
    slow) and the bilinear resize as gathers (XLA's is wrong for some factors); both equal numpy; the
    compiled model gives the op-by-op numbers on an odd size (it did not before: max |diff| 0.52)."""
    import tensorflow as tf

    from segformer.tf.layers import depthwise_conv3x3_shifted, in_xla_context, resize_bilinear

    rng = np.random.default_rng(2)
    maps = tf.constant(rng.normal(size=(2, 9, 14, 6)).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(3, 3, 6)).astype(np.float32))
    want = np.zeros((2, 9, 14, 6), np.float32)  # independent numpy 3x3 depthwise conv, zero padding 1
    padded = np.pad(maps.numpy(), ((0, 0), (1, 1), (1, 1), (0, 0)))
    for dy in range(3):
        for dx in range(3):
            want += padded[:, dy : dy + 9, dx : dx + 14, :] * kernel.numpy()[dy, dx]
    assert float(np.abs(depthwise_conv3x3_shifted(maps, kernel).numpy() - want).max()) <= 1e-5
    seen = []
    tf.function(lambda: seen.append(in_xla_context()) or tf.constant(0), jit_compile=True)()
    tf.function(lambda: seen.append(in_xla_context()) or tf.constant(0))()
    assert seen == [True, False] and not in_xla_context()

    for h, w, out_h, out_w in ((4, 5, 25, 33), (7, 9, 25, 33), (16, 16, 64, 64), (5, 5, 3, 3)):
        small = rng.normal(size=(2, h, w, 3)).astype(np.float32)
        want = _numpy_bilinear(small, out_h, out_w)
        for compile_xla in (False, True):  # XLA's own bilinear resize is wrong for the first two cases
            got = tf.function(lambda: resize_bilinear(tf.constant(small), (out_h, out_w)), jit_compile=compile_xla)()
            assert float(np.abs(got.numpy() - want).max()) <= 1e-5, (h, w, out_h, out_w, compile_xla)

    model = _tiny_seg_model(seed=4)
    model.run_eagerly = True
    x = rng.normal(size=(1, 3, 97, 131)).astype(np.float32)
    compiled = tf.function(lambda v: model(v).logits, jit_compile=True)(tf.constant(x))
    eager = model(x).logits
    assert float(np.abs(np.asarray(compiled) - np.asarray(eager)).max()) <= 1e-4


def test_model_jit_compile_makes_the_cached_graph_xla(xla_traces):
    """``model.jit_compile = True`` (Keras' attribute) makes the cached inference graph an XLA one: traced in an
    XLA context, the op-by-op numbers on an odd size; setting it back to False goes back to the plain graph."""
    seen = xla_traces
    model = _tiny_seg_model(seed=5)
    reference = _tiny_seg_model(seed=5)
    reference.run_eagerly = True
    x = np.random.default_rng(3).normal(size=(1, 3, 97, 131)).astype(np.float32)
    want = np.asarray(reference(x).logits)
    model(x)  # the first call stays op by op
    assert getattr(model, "_jit_compile", None) is not True and not any(seen)
    model.jit_compile = True
    assert model._jit_compile is True
    seen.clear()
    for _ in range(2):
        got = np.asarray(model(x).logits)
        assert float(np.abs(got - want).max()) <= 1e-4
    assert seen and all(seen)  # traced once, under XLA
    assert [key[-1] for key in model._graphs.functions] == [True]
    model.jit_compile = False
    seen.clear()
    got = np.asarray(model(x).logits)
    assert seen and not any(seen)
    assert float(np.abs(got - want).max()) <= 1e-4
    assert sorted(key[-1] for key in model._graphs.functions) == [False, True]


def _training_pass(model, state, pixels, labels):
    """One training-mode forward with labels from ``state`` (BatchNorm's moving statistics and counter are
    updated by the pass, so every pass starts from the same state): logits, loss, gradients, BatchNorm after."""
    import tensorflow as tf

    model.load_state_dict_numpy(state)
    with tf.GradientTape() as tape:
        out = model(pixels, labels=labels, training=True)
    grads = tape.gradient(out.loss, model.trainable_variables)
    assert all(g is not None for g in grads), "a variable gets no gradient"
    bn = model.decode_head.batch_norm
    return (np.asarray(out.logits), np.asarray(out.loss), [np.asarray(g) for g in grads],
            [bn.moving_mean.numpy(), bn.moving_variance.numpy(), int(bn.num_batches_tracked.numpy())])


def test_tf_training_fast_head_equals_the_plain_head_values_and_gradients():
    """Training with ``use_fast_path`` (linear_fuse folded into the projections, ``_fused_folded``) == the
    textbook head (concatenation + 1x1 conv, ``_fused_plain``): logits, loss, every trainable variable's
    gradient and BatchNorm's moving-statistics update (randomized weights and statistics, float32: the
    model's BatchNorm and bilinear resize compute in float32, so a float64 policy is not a float64 model)."""
    from randomize import tiny_config

    config = tiny_config(num_labels=4)  # dropout and drop path 0: the two passes are deterministic
    model = TFSegformerForSemanticSegmentation(config)
    state = random_state(config, "semantic_segmentation", seed=3)
    rng = np.random.default_rng(2)
    pixels = rng.normal(size=(2, 3, 45, 61)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 45, 61))
    labels[0, :5] = 255  # ignored rows
    results = {}
    for fast in (True, False):
        model.use_fast_path = fast
        assert model.decode_head.fast_path_enabled is fast
        results[fast] = _training_pass(model, state, pixels, labels)
    (fast_logits, fast_loss, fast_grads, fast_bn), (plain_logits, plain_loss, plain_grads, plain_bn) = results[True], results[False]
    assert fast_logits.shape == plain_logits.shape == (2, 4, 12, 16)
    logits_diff = float(np.abs(fast_logits - plain_logits).max())
    loss_diff = float(np.abs(fast_loss - plain_loss).max())
    # relative to the largest gradient (linear_c.*.proj.bias has a true gradient of zero: BatchNorm follows)
    scale = max(float(np.abs(g).max()) for g in plain_grads)
    grad_diff = max(float(np.abs(a - b).max()) for a, b in zip(fast_grads, plain_grads)) / scale
    stats_diff = max(float(np.abs(a - b).max()) for a, b in zip(fast_bn[:2], plain_bn[:2]))
    print(f"TF training fast vs plain: logits {logits_diff:.2e}, loss {loss_diff:.2e}, gradients (relative) {grad_diff:.2e}, "
          f"BatchNorm statistics {stats_diff:.2e}")
    assert logits_diff <= 1e-5, "training logits fast vs plain"
    assert loss_diff <= 1e-5, "loss fast vs plain"
    assert grad_diff <= 1e-4, f"gradients fast vs plain, max |diff| / max |gradient| {grad_diff:.2e}"
    assert stats_diff <= 1e-5 and fast_bn[2] == plain_bn[2] == int(state["decode_head.batch_norm.num_batches_tracked"]) + 1
    # the head's variables get real gradients on both paths (the fold does not cut linear_fuse or proj off)
    names = [v.path for v in model.trainable_variables]
    fuse = next(i for i, name in enumerate(names) if "linear_fuse" in name)
    projs = [i for i, name in enumerate(names) if "proj" in name and "kernel" in name and "linear_c" in name]
    assert len(projs) == config.num_encoder_blocks
    for i in [fuse, *projs]:
        assert float(np.abs(fast_grads[i]).max()) > 1e-3 * scale, names[i]


def test_tf_training_fast_head_keeps_mixed_precision_dtypes():
    """Under ``mixed_float16`` the folded training head computes in the plain head's dtypes (float16 fused map
    into the float32 BatchNorm, float32 logits) and gives its numbers within float16 rounding."""
    import keras
    import tensorflow as tf

    from randomize import tiny_config
    from segformer.tf import TFSegformerDecodeHead

    config = tiny_config(num_labels=4)
    rng = np.random.default_rng(5)
    maps = [tf.constant(rng.normal(size=(2, 24 // 2**i, 30 // 2**i, c)).astype(np.float32))
            for i, c in enumerate(config.hidden_sizes)]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        head = TFSegformerDecodeHead(config)
        head.build()
        for variable in head.trainable_variables:  # away from the initializer's small values
            variable.assign(rng.normal(0.0, 0.2, variable.shape).astype(np.float32))
        compute = [tf.cast(m, "float16") for m in maps]
        folded, plain = head._fused_folded(compute), head._fused_plain(compute)
        assert folded.dtype == plain.dtype == tf.float16 and folded.shape == plain.shape
        assert float(tf.reduce_max(tf.abs(tf.cast(folded - plain, tf.float32)))) <= 2e-2 * float(tf.reduce_max(tf.abs(plain)))
        outputs = {}
        for fast in (True, False):
            head.fast_path_enabled = fast
            with tf.GradientTape() as tape:
                logits = head(compute, training=True)
                loss = tf.reduce_mean(tf.square(logits))
            grads = tape.gradient(loss, head.trainable_variables)
            assert logits.dtype == tf.float32 and all(g is not None and g.dtype == tf.float32 for g in grads)
            outputs[fast] = logits.numpy()
        scale = float(np.abs(outputs[False]).max())
        assert float(np.abs(outputs[True] - outputs[False]).max()) <= 2e-2 * scale
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.slow  # about 10 s (graph tracing, an eager training step); the TF path keeps no fold to go stale
def test_tf_eval_fast_path_follows_every_weight_update():
    """The Keras eval fast path folds the head's variables inside each call (the cached graph reads the
    variables, no folded copy is kept): after a Keras optimizer step (BatchNorm statistics move too), variable
    assignments, a BatchNorm statistics edit and a state load, cached-graph fast calls == the plain path."""
    import keras
    import tensorflow as tf

    model = _tiny_seg_model()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 64, 64)).astype(np.int32)
    head = model.decode_head

    def fast_and_plain():
        model.use_fast_path = True
        fast = np.asarray(model(x).logits)
        model.use_fast_path = False
        plain = np.asarray(model(x).logits)
        model.use_fast_path = True
        return fast, plain

    def optimizer_step():  # eager (tracing a Keras train_step would take minutes here)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, labels=labels, training=True).loss)
        variables = model.trainable_variables
        keras.optimizers.AdamW(learning_rate=1e-2).apply_gradients(zip(tape.gradient(loss, variables), variables))

    def assign_kernels():
        for variable in [head.linear_fuse.kernel] + [mlp.proj.kernel for mlp in head.mlps]:
            variable.assign(variable * 1.5)

    def edit_statistics():
        head.batch_norm.moving_mean.assign_add(tf.fill(head.batch_norm.moving_mean.shape, 0.5))
        head.batch_norm.moving_variance.assign(head.batch_norm.moving_variance * 2.0)

    def load_state():
        model.load_state_dict_numpy(random_state(model.config, "seg", seed=9))

    previous, _ = fast_and_plain()
    fast_and_plain()  # from here on the eval calls run as the cached graph
    for update in (optimizer_step, assign_kernels, edit_statistics, load_state):
        update()
        fast, plain = fast_and_plain()
        assert float(np.abs(fast - plain).max()) <= 1e-5, update.__name__
        assert float(np.abs(plain - previous).max()) > 1e-3, f"{update.__name__} changed nothing"
        previous = plain


def test_short_layer_norm_equals_an_independent_numpy_layer_norm():
    """The cached graph's LayerNorm formulation against numpy (float64), on tokens off zero mean with spreads from
    0.1 to 5, at the model's epsilon."""
    import tensorflow as tf

    import segformer.tf.layers as layers

    rng = np.random.default_rng(11)
    x = (rng.normal(size=(2, 300, 40)) * rng.uniform(0.1, 5.0, size=(2, 300, 1)) + 10.0).astype(np.float32)
    gamma, beta = rng.normal(size=40).astype(np.float32), rng.normal(size=40).astype(np.float32)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-6) * gamma + beta
    got = np.asarray(layers._normalize(tf.constant(x), tf.constant(gamma), tf.constant(beta), 1e-6))
    assert float(np.abs(got - want).max()) <= 1e-4


def test_cached_graph_runs_the_short_layer_norm_exactly_where_it_applies(monkeypatch):
    """The cached inference graph's float32 LayerNorms are ``_normalize``'s operators (no Keras
    ``SquaredDifference``), and equal op by op; with ``_normalize`` replaced by one that zeroes its input
    (before tracing) the cached graph changes and op-by-op calls do not. Other graphs and float16 keep Keras'
    LayerNorm."""
    import keras
    import tensorflow as tf

    import segformer.tf.layers as layers

    x = np.random.default_rng(5).normal(size=(1, 3, 64, 80)).astype(np.float32)
    model = _tiny_seg_model()
    plain = np.asarray(model(x).logits)  # op by op
    cached = np.asarray(model(x).logits)  # traces and runs the cached graph
    assert float(np.abs(cached - plain).max()) <= 1e-5
    (function,) = model._graphs.functions.values()
    ops = [op.type for op in function.get_concrete_function(tf.TensorSpec((1, 3, 64, 80), tf.float32)).graph.get_operations()]
    # stages 1-3: patch embedding, 2 blocks x 2, 2 reduced-sequence norms, the stage's own; stage 4 has no reduction
    norms = 3 * (1 + 2 * 2 + 2 + 1) + (1 + 2 * 2 + 1)
    assert ops.count("Rsqrt") == norms and "SquaredDifference" not in ops

    monkeypatch.setattr(layers, "_normalize", lambda x, gamma, beta, epsilon: x * 0.0)
    sabotaged = _tiny_seg_model()
    assert float(np.abs(np.asarray(sabotaged(x).logits) - plain).max()) <= 1e-5  # op by op: Keras' LayerNorm
    assert float(np.abs(np.asarray(sabotaged(x).logits) - plain).max()) > 1e-2  # the cached graph: the zeroing one

    norm = keras.layers.LayerNormalization(epsilon=1e-5)
    norm.build((None, 8))
    half = keras.layers.LayerNormalization(epsilon=1e-5, dtype="float16")
    half.build((None, 8))

    def graph_ops(inside):
        @tf.function
        def graph(t):
            if not inside:
                return layers.layer_norm(norm, t), layers.layer_norm(half, tf.cast(t, tf.float16))
            with layers.inference_graph():
                return layers.layer_norm(norm, t), layers.layer_norm(half, tf.cast(t, tf.float16))

        return [op.type for op in graph.get_concrete_function(tf.TensorSpec((2, 8), tf.float32)).graph.get_operations()]

    assert graph_ops(inside=False).count("SquaredDifference") == 2  # any other graph: Keras' LayerNorms
    assert graph_ops(inside=True).count("SquaredDifference") == 1  # the float16 one stays Keras'
