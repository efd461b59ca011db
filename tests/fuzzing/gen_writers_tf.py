"""Environment faults in the Keras writers: ``.keras`` files, Keras ``save_pretrained`` (``tf_model.h5`` and
safetensors) and ``segformer convert --to tf``; the faults and the oracle are ``gen_writers``'s."""

from __future__ import annotations

from fuzzing import gen_writers


def setup(folder):
    from randomize import random_state
    from segformer.tf import TFSegformerForSemanticSegmentation

    context = gen_writers.setup(folder)
    context["tf_models"] = []
    for seed in (1, 2):
        model = TFSegformerForSemanticSegmentation(context["config"])
        model.load_state_dict_numpy(random_state(context["config"], "seg", seed=seed))
        context["tf_models"].append(model)
    return context


def make_case(rng, context, folder):
    return gen_writers.make_case(rng, context, folder, writers=gen_writers.TF_WRITERS)
