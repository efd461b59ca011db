"""The Keras eval fast path (folded decode head) equals the plain path for every variant."""

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
