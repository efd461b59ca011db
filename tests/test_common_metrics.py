"""SegmentationMetric against an independent per-class mask computation (mmseg eval_metrics semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segformer.common.training.metrics import SegmentationMetric, format_iou_table, reduce_zero_label

IGNORE = 255


def reference(preds, labels, num_labels, ignore_index=IGNORE):
    """Direct per-class loop with boolean masks, summing areas over the whole dataset (mmseg)."""
    inter = np.zeros(num_labels)
    union = np.zeros(num_labels)
    pred_area = np.zeros(num_labels)
    label_area = np.zeros(num_labels)
    for pred, label in zip(preds, labels):
        valid = label != ignore_index
        for c in range(num_labels):
            p = (pred == c) & valid
            g = (label == c) & valid
            inter[c] += np.logical_and(p, g).sum()
            union[c] += np.logical_or(p, g).sum()
            pred_area[c] += p.sum()
            label_area[c] += g.sum()
    iou = np.array([inter[c] / union[c] if union[c] else np.nan for c in range(num_labels)])
    acc = np.array([inter[c] / label_area[c] if label_area[c] else np.nan for c in range(num_labels)])
    dice = np.array(
        [2 * inter[c] / (pred_area[c] + label_area[c]) if union[c] else np.nan for c in range(num_labels)]
    )
    defined_iou = [v for v in iou if not math.isnan(v)]
    defined_acc = [v for v in acc if not math.isnan(v)]
    return {
        "per_class_iou": iou,
        "per_class_accuracy": acc,
        "per_class_dice": dice,
        "mean_iou": sum(defined_iou) / len(defined_iou) if defined_iou else math.nan,
        "mean_accuracy": sum(defined_acc) / len(defined_acc) if defined_acc else math.nan,
        "overall_accuracy": inter.sum() / label_area.sum() if label_area.sum() else math.nan,
    }


def assert_matches(result, expected):
    for key in ("per_class_iou", "per_class_accuracy", "per_class_dice"):
        np.testing.assert_allclose(result[key], expected[key], rtol=0, atol=1e-12, equal_nan=True, err_msg=key)
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        got, want = result[key], expected[key]
        if math.isnan(want):
            assert math.isnan(got), key
        else:
            assert abs(got - want) < 1e-12, (key, got, want)


def random_batch(rng, num_labels, shape, ignore_fraction=0.2, absent=()):
    """Random predictions and labels with ignore pixels; classes in ``absent`` never occur in either."""
    present = [c for c in range(num_labels) if c not in absent]
    pred = rng.choice(present, size=shape)
    label = rng.choice(present, size=shape)
    label[rng.random(shape) < ignore_fraction] = IGNORE
    return pred, label


def test_matches_reference_with_ignore_and_empty_classes(rng):
    num_labels = 7
    metric = SegmentationMetric(num_labels)
    preds, labels = [], []
    for _ in range(4):
        pred, label = random_batch(rng, num_labels, (2, 13, 17), absent=(3,))
        # class 5 appears only in predictions: IoU 0 (counted), accuracy NaN
        label[label == 5] = 0
        metric.update(pred, label)
        preds.extend(pred)
        labels.extend(label)
    result = metric.compute()
    expected = reference(preds, labels, num_labels)
    assert_matches(result, expected)
    assert math.isnan(result["per_class_iou"][3]) and math.isnan(result["per_class_accuracy"][3])
    assert result["per_class_iou"][5] == 0.0 and math.isnan(result["per_class_accuracy"][5])
    # NaN classes excluded from the means, zero-IoU classes included
    assert result["mean_iou"] == pytest.approx(np.mean(np.delete(expected["per_class_iou"], 3)), abs=1e-12)
    matrix = result["confusion_matrix"]
    assert matrix.dtype == np.int64 and matrix.shape == (num_labels, num_labels)
    assert matrix.sum() == sum(int((label != IGNORE).sum()) for label in labels)


def test_known_small_example():
    pred = np.array([[0, 1], [1, 1]])
    label = np.array([[0, 1], [0, 255]])
    metric = SegmentationMetric(3)
    metric.update(pred, label)
    result = metric.compute()
    # class 0: inter 1, union 2; class 1: inter 1, union 2; class 2 absent
    np.testing.assert_allclose(result["per_class_iou"], [0.5, 0.5, np.nan], equal_nan=True)
    np.testing.assert_allclose(result["per_class_accuracy"], [0.5, 1.0, np.nan], equal_nan=True)
    assert result["mean_iou"] == 0.5
    assert result["mean_accuracy"] == 0.75
    assert result["overall_accuracy"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(result["confusion_matrix"], [[1, 1, 0], [0, 1, 0], [0, 0, 0]])


def test_reduce_labels(rng):
    num_labels = 5
    raw = rng.integers(0, num_labels + 1, size=(3, 9, 11))  # ADE-style: 0 = other, 1..5 = classes
    raw[0, 0, :4] = 255
    pred = rng.integers(0, num_labels, size=raw.shape)
    metric = SegmentationMetric(num_labels, reduce_labels=True)
    metric.update(pred, raw)
    reduced = np.where(raw == 0, IGNORE, np.where(raw == 255, IGNORE, raw - 1))
    assert_matches(metric.compute(), reference(list(pred), list(reduced), num_labels))
    np.testing.assert_array_equal(reduce_zero_label(np.array([0, 1, 5, 255])), [255, 0, 4, 255])


def test_merge_equals_single_accumulator_and_state_round_trip(rng):
    num_labels = 6
    whole = SegmentationMetric(num_labels)
    first, second = SegmentationMetric(num_labels), SegmentationMetric(num_labels)
    for i in range(6):
        pred, label = random_batch(rng, num_labels, (10, 12))
        whole.update(pred, label)
        (first if i % 2 else second).update(pred, label)
    merged = first.merge(second)
    np.testing.assert_array_equal(merged.confusion_matrix, whole.confusion_matrix)
    rebuilt = SegmentationMetric.from_state(first.state() * 0 + whole.state())
    assert_matches(rebuilt.compute(), whole.compute())
    state = whole.state()
    state[0, 0] += 1  # a copy: mutating it leaves the accumulator alone
    assert whole.confusion_matrix[0, 0] == state[0, 0] - 1
    whole.reset()
    assert whole.confusion_matrix.sum() == 0 and math.isnan(whole.compute()["mean_iou"])


def test_list_of_different_sizes(rng):
    metric = SegmentationMetric(4)
    a = random_batch(rng, 4, (5, 7))
    b = random_batch(rng, 4, (9, 3))
    metric.update([a[0], b[0]], [a[1], b[1]])
    assert_matches(metric.compute(), reference([a[0], b[0]], [a[1], b[1]], 4))


def test_errors():
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        metric.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[3\]"):
        metric.update(np.full((2, 2), 3), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"\[-1\]"):
        metric.update(np.full((2, 2), -1), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="references"):
        metric.update(np.zeros((2, 2), int), np.full((2, 2), 7))
    with pytest.raises(TypeError, match="dtype float"):
        metric.update(np.zeros((2, 2)), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, H, W\)"):
        metric.update(np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="num_labels"):
        SegmentationMetric(0)
    with pytest.raises(ValueError, match="ignore_index=1"):
        SegmentationMetric(3, ignore_index=1)
    with pytest.raises(ValueError, match="ignore_index must be 255"):
        SegmentationMetric(3, ignore_index=-100, reduce_labels=True)
    with pytest.raises(ValueError, match="different"):
        metric.merge(SegmentationMetric(4))
    with pytest.raises(ValueError, match="square"):
        SegmentationMetric.from_state(np.zeros((2, 3), np.int64))
    # predictions are checked everywhere, even on ignored pixels; an ignored label may be anything
    metric.update(np.zeros((2, 2), int), np.full((2, 2), 255))
    assert metric.confusion_matrix.sum() == 0


def test_ignore_index_negative():
    metric = SegmentationMetric(2, ignore_index=-100)
    metric.update(np.array([[0, 1]]), np.array([[-100, 1]]))
    assert metric.compute()["overall_accuracy"] == 1.0


def test_format_iou_table():
    metric = SegmentationMetric(3)
    metric.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 255]]))
    result = metric.compute()
    table = format_iou_table(result, {0: "wall", "1": "building"})
    lines = table.splitlines()
    assert lines[-1] == "mIoU: 0.5000"
    assert any(line.startswith("wall") for line in lines)
    assert any(line.startswith("building") for line in lines)
    assert any(line.startswith("2 ") and "nan" in line for line in lines)
    assert format_iou_table(result).splitlines()[-1] == "mIoU: 0.5000"
    empty = SegmentationMetric(2).compute()
    assert format_iou_table(empty).splitlines()[-1] == "mIoU: nan"
    assert "mIoU: 0.1235" == format_iou_table({**result, "mean_iou": 0.123456}).splitlines()[-1]


# ---------------------------------------------------------------------------------------------- properties


@st.composite
def datasets(draw):
    num_labels = draw(st.integers(1, 6))
    count = draw(st.integers(1, 4))
    samples = []
    for _ in range(count):
        h = draw(st.integers(1, 6))
        w = draw(st.integers(1, 6))
        pred = draw(st.lists(st.integers(0, num_labels - 1), min_size=h * w, max_size=h * w))
        label = draw(st.lists(st.sampled_from(list(range(num_labels)) + [IGNORE]), min_size=h * w, max_size=h * w))
        samples.append((np.array(pred).reshape(h, w), np.array(label).reshape(h, w)))
    return num_labels, samples


@settings(max_examples=50, deadline=None)
@given(datasets())
def test_property_matches_reference(data):
    num_labels, samples = data
    metric = SegmentationMetric(num_labels)
    for pred, label in samples:
        metric.update(pred, label)
    result = metric.compute()
    assert_matches(result, reference([p for p, _ in samples], [g for _, g in samples], num_labels))
    iou, acc = result["per_class_iou"], result["per_class_accuracy"]
    both = ~np.isnan(iou) & ~np.isnan(acc)
    assert np.all(iou[both] <= acc[both] + 1e-12)  # union >= label area
    finite = iou[~np.isnan(iou)]
    assert np.all((finite >= 0) & (finite <= 1))


@settings(max_examples=50, deadline=None)
@given(datasets(), st.integers(0, 2**32 - 1))
def test_property_merge_and_order_invariance(data, seed):
    num_labels, samples = data
    split = np.random.default_rng(seed).integers(0, 2, size=len(samples))
    parts = [SegmentationMetric(num_labels), SegmentationMetric(num_labels)]
    whole = SegmentationMetric(num_labels)
    for (pred, label), part in zip(samples, split):
        parts[part].update(pred, label)
    for pred, label in reversed(samples):
        whole.update(pred, label)
    merged = SegmentationMetric.from_state(parts[0].state() + parts[1].state())
    np.testing.assert_array_equal(merged.confusion_matrix, whole.confusion_matrix)
    np.testing.assert_array_equal(parts[0].merge(parts[1]).confusion_matrix, whole.confusion_matrix)
