"""Segmenter options at their edges: crop_size, stride, size_divisor, scales, resize, palette, device strings,
mode, flip, batch_size; call options return_probabilities / keep_confidence / labels_out (dtype, shape,
writeability) / top_k / min_area; odd image layouts (3-row HWC, grey); the model switched to ``train()``
after the Segmenter was built; a model with 300 classes and one with duplicate class names.

Oracle: each option's allowed set is written here from its meaning; one invalid option makes the case
invalid (a clear error naming one of the invalid options is the only right answer). A valid answer must
have labels of the image's size in ``[0, K)``, ``labels_out`` holding exactly those labels, probabilities
summing to 1 whose argmax is the label, colours from the palette given, ``mask(name)`` covering every class
of that name; in whole mode without augmentation the labels must equal an independent reference
(transformers' image processor with ``input_data_format="channels_last"``, the model in eval mode, torch's
bilinear upsampling straight to the image size, argmax) wherever the reference's top-2 margin is clear.
"""

from __future__ import annotations


import numpy as np

from fuzzing.cases import Case, Wrong, require

VALID_SHARE = [0.75]  # per case: half the cases draw only valid values


def setup(folder):
    import torch

    from randomize import random_state, tiny_config
    from segformer.pt import SegformerForSemanticSegmentation

    torch.manual_seed(0)
    models = {}
    for key, overrides in {
        "k3": dict(hidden_dropout_prob=0.3, classifier_dropout_prob=0.3, drop_path_rate=0.3),
        "k300": dict(num_labels=300),
        "dup": dict(id2label={0: "x", 1: "x", 2: "y"}, num_labels=3),
    }.items():
        config = tiny_config(**overrides)
        model = SegformerForSemanticSegmentation(config).eval()
        model.load_state_dict_numpy(random_state(config, "seg", seed=len(models)))
        models[key] = model
    return {"models": models}


def _pick(rng, options):
    """``(value, valid)`` from ``[(value, valid), ...]``; valid is True / False / None (either). Valid values
    are drawn three times out of four, so most cases get past validation."""
    good = [o for o in options if o[1] is True]
    other = [o for o in options if o[1] is not True]
    pool = good if good and (not other or rng.random() < VALID_SHARE[0]) else other
    return pool[int(rng.integers(len(pool)))]


def _options(rng, num_labels):
    nan = float("nan")
    chosen = {}
    if rng.random() < 0.5:
        chosen["mode"] = _pick(rng, [("whole", True), ("slide", True), ("bogus", False), ("Slide", False), (None, True)])
    if rng.random() < 0.3:
        chosen["crop_size"] = _pick(rng, [(32, True), (48, True), ((32, 40), True), (64, True), (0, False), (-4, False),
                                          (32.5, False), ("32", False), ((0, 32), False), ((32,), False), (True, False)])
    if rng.random() < 0.3:
        chosen["stride"] = _pick(rng, [(16, True), (24, True), ((16, 20), True), (32, True), (0, False), (-1, False),
                                       (16.5, False), ("16", False)])
    if rng.random() < 0.2:
        chosen["size_divisor"] = _pick(rng, [(1, True), (8, True), (32, True), (0, False), (-1, False), (2.5, False),
                                             ("8", False)])
    if rng.random() < 0.25:
        chosen["scales"] = _pick(rng, [((1.0,), True), ((1.0, 1.25), True), (1.5, True), ((1.0, 1.5), True),
                                       ((), False), ((0,), False), ((-1.0,), False), ((nan,), False),
                                       ((float("inf"),), False), ("1.0", False)])
    if rng.random() < 0.2:
        chosen["flip"] = _pick(rng, [(True, True), (False, True), ("yes", False), (1, None)])
    slide = chosen.get("mode", (None,))[0] == "slide"
    if slide or rng.random() < 0.3:  # slide windows over a 512 x 512 input would make the case slow
        chosen["resize"] = _pick(rng, [("none", True), (48, True), ((40, 56), True), ("processor", not slide),
                                       (0, False), (-3, False), ("bogus", False), ((40, 0), False), ("keep-ratio", False)])
    if rng.random() < 0.15:
        chosen["batch_size"] = _pick(rng, [(1, True), (2, True), (0, False), (-1, False), (1.5, False), (True, False)])
    if rng.random() < 0.3:
        base = np.random.default_rng(7).integers(0, 256, size=(max(num_labels, 3), 3))
        chosen["palette"] = _pick(rng, [
            (base.astype(np.uint8), True), (base.tolist(), True), ((base / 255.0), False),
            (base.astype(np.uint8)[: num_labels - 1], False), (base.astype(np.int64) + 300, False),
            (np.concatenate([base, base[:, :1]], 1).astype(np.uint8), None), ("ade20k", num_labels <= 150),
            ("nope", False), (base.astype(np.float64), None),
        ])
    if rng.random() < 0.25:
        chosen["device"] = _pick(rng, [("cpu", True), ("cpu:0", True), ("DEVICE:cpu", True), ("cuda", False),
                                       ("cuda:0", False), ("bogus", False), ("mps", False), ("/GPU:0", False),
                                       (5, False)])
    return chosen


def _labels_out(rng, shape, num_labels):
    kind = str(rng.choice(["int32", "int64", "uint16", "uint8", "int8", "float32", "bool", "wrong_shape",
                           "read_only", "transposed"] if VALID_SHARE[0] < 1 else ["int32", "int64", "uint16", "transposed"]))
    if kind == "wrong_shape":
        return kind, np.zeros((shape[0] + 1, shape[1]), np.int32), False
    if kind == "read_only":
        array = np.zeros(shape, np.int32)
        array.flags.writeable = False
        return kind, array, False
    if kind == "transposed":
        return kind, np.zeros(shape[::-1], np.int32).T, None
    dtype = np.dtype(kind)
    if dtype.kind not in "iu":
        return kind, np.zeros(shape, dtype), False
    fits = np.iinfo(dtype).max >= num_labels - 1
    return kind, np.zeros(shape, dtype), fits


def _image(rng):
    kind = str(rng.choice(["rgb", "rgb", "rgb", "three_rows", "grey", "rgba", "float"] if VALID_SHARE[0] < 1 else
                          ["rgb", "rgb", "three_rows", "grey", "rgba"]))
    h, w = int(rng.integers(3, 41)), int(rng.integers(3, 41))
    if rng.random() < 0.7:
        h, w = int(rng.integers(32, 49)), int(rng.integers(32, 49))
    if kind == "three_rows":
        h = 3
    shape = {"grey": (h, w), "rgba": (h, w, 4)}.get(kind, (h, w, 3))
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    if kind == "float":
        return kind, image.astype(np.float32), False
    return kind, image, True


def make_case(rng, context, folder):
    import torch

    from segformer import Segmenter

    VALID_SHARE[0] = 1.0 if rng.random() < 0.5 else 0.7
    key = str(rng.choice(["k3", "k3", "k300", "dup"]))
    model = context["models"][key]
    num_labels = model.config.num_labels
    chosen = _options(rng, num_labels)
    kwargs = {name: value for name, (value, _) in chosen.items()}
    if kwargs.get("device") == "DEVICE:cpu":
        kwargs["device"] = torch.device("cpu")
    image_kind, image, image_ok = _image(rng)
    call = {}
    call_valid = {}
    if rng.random() < 0.3:
        call["return_probabilities"], call_valid["return_probabilities"] = _pick(
            rng, [(True, True), (False, True), ("yes", False), (1, None), (None, None)])
    if rng.random() < 0.2:
        call["keep_confidence"], call_valid["keep_confidence"] = _pick(rng, [(True, True), (False, True), ("no", False)])
    labels_kind = None
    if rng.random() < 0.35:
        labels_kind, call["labels_out"], call_valid["labels_out"] = _labels_out(rng, image.shape[:2], num_labels)
    if rng.random() < 0.2:
        call["top_k"], call_valid["top_k"] = _pick(rng, [(1, True), (2, True), (0, None), (-1, False), (1.5, False)])
    if rng.random() < 0.2:
        call["min_area"], call_valid["min_area"] = _pick(rng, [(0.0, True), (0.5, True), (-1.0, False),
                                                              (float("nan"), False), (2.0, None)])
    train_after = bool(rng.random() < 0.2)
    validity = {name: valid for name, (_, valid) in chosen.items()} | call_valid
    # a stride larger than the crop leaves gaps: invalid (the defaults are 512 / 341)
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    crop = chosen["crop_size"][0] if validity.get("crop_size") else 512
    stride = chosen["stride"][0] if validity.get("stride") else 341
    if any(s > c for s, c in zip(pair(stride), pair(crop))):
        validity["stride" if "stride" in chosen else "crop_size"] = False
    invalid = sorted(name for name, valid in validity.items() if valid is False)
    if not image_ok:
        invalid.append("image")
    either = [name for name, valid in validity.items() if valid is None] + (["key"] if key == "dup" else [])
    # the tiny model needs inputs of at least 29 pixels a side: smaller ones may be refused
    side = {"none": min(image.shape[:2])}.get(kwargs.get("resize"), 32)
    if side < 29:
        either.append("size")
        names_small = ("too small", "at least")
    else:
        names_small = ()
    expect = "error" if invalid else ("either" if either or train_after else "ok")
    named = invalid + [n for n in either if n in validity]  # refusing an either-option clearly is right too
    names = tuple(named) + tuple(n.replace("_", " ") for n in named) + (("crop_size",) if "stride" in named else ()) + (("dtype", "uint8", "float") if not image_ok else ())
    names += names_small
    if train_after:  # refusing a model switched to train() is right too (the other answer: run it in eval mode)
        names += ("train", "eval")
    if "device" in invalid:
        names += (str(kwargs["device"]),)
    description = {"model": key, "options": {k: _describe(v) for k, v in kwargs.items()},
                   "call": {k: _describe(v) for k, v in call.items()}, "image": [image_kind, list(image.shape)],
                   "train_after": train_after, "invalid": invalid}

    def run():
        model.eval()
        segmenter = Segmenter(model, **kwargs)
        if train_after:
            model.train()
        return segmenter, segmenter(image, **call)

    def check(answer, caught):
        segmenter, result = answer
        model.eval()
        try:
            _check_result(segmenter, result, model, image, kwargs, call, labels_kind)
        except Wrong as wrong:
            raise Wrong(f"{wrong}; model switched to train() after the Segmenter was built" if train_after else str(wrong))

    def after(error):
        model.eval()

    return Case(description, run, expect=expect, names=names, check=check, after=after)


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)} {value.dtype}" + ("" if value.flags.writeable else " read-only")
    if isinstance(value, list) and value and isinstance(value[0], list):
        return f"list of {len(value)} colours"
    return repr(value)


def _check_result(segmenter, result, model, image, kwargs, call, labels_kind):
    num_labels = model.config.num_labels
    height, width = image.shape[:2]
    labels = np.asarray(result.label_map)
    require(labels.shape == (height, width), f"labels {labels.shape} for an image of {height}x{width}")
    require(labels.dtype.kind in "iu", f"labels dtype {labels.dtype}")
    require(labels.min() >= 0 and labels.max() < num_labels, f"labels outside [0, {num_labels}): {labels.min()}..{labels.max()}")
    out = call.get("labels_out")
    if out is not None:
        require(np.array_equal(out.astype(np.int64), labels.astype(np.int64)),
                f"labels_out ({labels_kind}) does not hold the labels (max label {labels.max()}, stored max {out.max()})")
    if call.get("return_probabilities") is True:
        probs = np.asarray(result.probabilities, dtype=np.float64)
        require(probs.shape == (num_labels, height, width), f"probabilities shape {probs.shape}")
        require(np.isfinite(probs).all() and np.allclose(probs.sum(0), 1.0, atol=1e-3), "probabilities do not sum to 1")
        top2 = np.sort(probs, axis=0)[-2:]
        clear = top2[1] - top2[0] > 1e-4
        require(np.array_equal(probs.argmax(0)[clear], labels[clear]), "labels are not the argmax of the probabilities")
    if result.confidence is not None:
        confidence = np.asarray(result.confidence)
        require(confidence.shape == (height, width) and np.all((confidence >= 0) & (confidence <= 1 + 1e-6)),
                "confidence outside [0, 1] or of the wrong shape")
    palette = kwargs.get("palette")
    if isinstance(palette, (np.ndarray, list)) and np.asarray(palette).ndim == 2:
        expected = np.asarray(palette)[:, :3].astype(np.uint8)[labels]
        require(np.array_equal(result.colorize(), expected), "colorize() does not use the palette given")
    names = {}
    for class_id, name in model.config.id2label.items():
        names.setdefault(name, []).append(int(class_id))
    for name, ids in names.items():
        try:
            mask = result.mask(name)
        except ValueError as err:  # an ambiguous name may be refused, naming it
            require(name in str(err), f"mask({name!r}) refused without naming it: {err}")
            continue
        require(np.array_equal(mask, np.isin(labels, ids)),
                f"mask({name!r}) covers {mask.mean():.1%}, classes named {name!r} cover {np.isin(labels, ids).mean():.1%}")
    settings = segmenter.settings
    if settings.mode == "whole" and not settings.augmented and settings.scales[0] == 1.0:
        reference = _reference(model, image, kwargs.get("resize"))
        if reference is not None:
            top2 = np.sort(reference, axis=0)[-2:]
            clear = (top2[1] - top2[0]) > 1e-3 * np.maximum(1.0, np.abs(top2[1]))
            wrong = (reference.argmax(0) != labels) & clear
            require(not wrong.any(), f"{int(wrong.sum())} of {labels.size} labels differ from the reference "
                                     f"(whole mode, resize={kwargs.get('resize', 'processor')!r}, image "
                                     f"{'x'.join(map(str, image.shape))})")


def _reference(model, image, resize):
    """float ``(K, H, W)`` logits at the image's size, computed without the Segmenter."""
    import torch
    import torch.nn.functional as F
    from transformers import SegformerImageProcessor as Reference

    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
    if resize in (None, "processor"):
        processor = Reference()
    elif resize == "none":
        processor = Reference(do_resize=False)
    elif isinstance(resize, int):
        processor = Reference(size={"height": resize, "width": resize})
    elif isinstance(resize, tuple):
        processor = Reference(size={"height": resize[0], "width": resize[1]})
    else:
        return None
    pixels = processor(rgb, input_data_format="channels_last", return_tensors="np")["pixel_values"]
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(np.asarray(pixels, np.float32))).logits
        up = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    return up[0].double().numpy()
