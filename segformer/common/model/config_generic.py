"""The generic attributes every transformers ``PretrainedConfig`` carries, with their transformers 4.57 defaults.

transformers' tests and tools read them from any config (``config.is_encoder_decoder``, ``config.pruned_heads``,
``config.chunk_size_feed_forward``, ``config.tie_word_embeddings`` ...); none of them changes a SegFormer, so
:class:`~segformer.common.model.config.SegformerConfig` answers them from this table without storing them. A value
set on a config (or read from a ``config.json`` that holds the key) is kept and written back, as transformers does;
a default is never written to a file (transformers' ``save_pretrained`` leaves defaults out too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GENERIC_DEFAULTS", "dtype_name"]

GENERIC_DEFAULTS: dict[str, object] = {
    # model structure flags
    "is_encoder_decoder": False, "is_decoder": False, "add_cross_attention": False, "cross_attention_hidden_size": None,
    "tie_word_embeddings": True, "tie_encoder_decoder": False, "pruned_heads": {}, "chunk_size_feed_forward": 0,
    "torchscript": False, "use_bfloat16": False, "tf_legacy_loss": False, "attribute_map": {}, "sub_configs": {},
    "base_config_key": "", "base_model_tp_plan": None, "base_model_pp_plan": None, "base_model_ep_plan": None,
    "has_no_defaults_at_init": False, "transformers_version": None,
    # task / tokenizer fields
    "finetuning_task": None, "tokenizer_class": None, "prefix": None, "task_specific_params": None,
    "bos_token_id": None, "pad_token_id": None, "eos_token_id": None, "sep_token_id": None,
    "decoder_start_token_id": None,
    # text generation defaults (no SegFormer generates; read by generic tools)
    "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
    "num_beam_groups": 1, "diversity_penalty": 0.0, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0,
    "repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None, "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
}


def dtype_name(value: Any) -> str:
    """The name a config stores for a weights dtype (``"float16"``) from a name, ``torch.float16``, ``np.float16`` or
    ``tf.float16``; anything else is a ``ValueError``."""
    name = value if isinstance(value, str) else getattr(value, "name", None)  # a tf.DType or np.dtype has a name
    if not isinstance(name, str) and str(value).startswith("torch."):  # str(torch.float16) == "torch.float16"
        name = str(value)
    elif not isinstance(name, str):
        try:  # np.float16
            name = np.dtype(value).name
        except TypeError:
            name = ""
    if not name.removeprefix("torch.").isidentifier():
        raise ValueError(f"dtype must be a dtype name such as 'float16' or a torch / numpy dtype, got {value!r:.100}")
    return name.removeprefix("torch.")
