"""Model cards: the ``README.md`` of a checkpoint folder, with the Hugging Face Hub metadata header.

``segformer train`` and ``segformer convert`` write one next to ``config.json`` and
``preprocessor_config.json``, so the folder loads in transformers' ``pipeline("image-segmentation")``
and can be uploaded to the Hub as it is. The header is YAML (strings written as JSON strings, which
YAML reads unchanged): ``library_name``, ``pipeline_tag``, ``tags``, ``datasets``, ``metrics`` and a
``model-index`` with the last evaluation's results, ``base_model`` (when it is a Hub model id; a local
starting point is named in the body); the body lists the architecture
and the labels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..base.atomic import atomic_write_text
from ..model.config import SegformerConfig
from ..model.hub import looks_like_repo_id

__all__ = ["MODEL_CARD_NAME", "model_card", "write_inference_files", "write_model_card"]

MODEL_CARD_NAME = "README.md"
_METRIC_KEYS = (("mean_iou", "mean_iou", "mIoU"), ("overall_accuracy", "accuracy", "pixel accuracy"),
                ("mean_accuracy", "mean_accuracy", "mean accuracy"))


def _q(text: Any) -> str:
    return json.dumps(str(text), ensure_ascii=False)


def model_card(
    config: SegformerConfig,
    *,
    framework: str,
    how: str,
    base_model: str | None = None,
    dataset: str | None = None,
    results: Mapping[str, Any] | None = None,
) -> str:
    """The card's text. ``how`` is one sentence on how the weights were made; ``results`` the last
    evaluation (``SegmentationMetric.compute()``: ``mean_iou``, ``overall_accuracy``, ``mean_accuracy``) or ``None``."""
    if framework not in ("pt", "tf"):
        raise ValueError(f"framework must be 'pt' or 'tf', got {framework!r}")
    metrics = [(key, hub, label, float(results[key])) for key, hub, label in _METRIC_KEYS
               if results is not None and results.get(key) is not None and np.isfinite(float(results[key]))]
    lines = ["---", "library_name: transformers", "pipeline_tag: image-segmentation", "tags:"]
    lines += [f"- {t}" for t in ("segformer", "image-segmentation", "vision", "pytorch" if framework == "pt" else "tensorflow")]
    if dataset:
        lines += ["datasets:", f"- {_q(dataset)}"]
    if metrics:
        lines += ["metrics:"] + [f"- {hub}" for _, hub, _, _ in metrics]
    if base_model and looks_like_repo_id(base_model) and not Path(base_model).exists():
        lines.append(f"base_model: {_q(base_model)}")
    if metrics:
        name = _q(Path(str(base_model or "segformer")).name or "segformer")
        lines += [
            "model-index:", f"- name: {name}", "  results:", "  - task:", "      type: image-segmentation",
            "      name: Semantic segmentation",
        ]
        if dataset:
            lines += ["    dataset:", f"      name: {_q(dataset)}", f"      type: {_q(dataset)}"]
        lines.append("    metrics:")
        for _, hub, label, value in metrics:
            lines += [f"    - type: {hub}", f"      value: {value:.4f}", f"      name: {_q(label)}"]
    lines.append("---")
    id2label = {int(k): v for k, v in config.id2label.items()}
    body = [
        "",
        "# SegFormer semantic segmentation",
        "",
        how,
        "",
        f"Architecture: depths {config.depths}, hidden sizes {config.hidden_sizes}, heads {config.num_attention_heads}, "
        f"decoder width {config.decoder_hidden_size}, decode head: {config.decode_head_type}, {config.num_labels} labels. Weights: "
        f"{'model.safetensors (PyTorch)' if framework == 'pt' else 'tf_model.h5 (TensorFlow / Keras)'}; "
        "`preprocessor_config.json` holds the image processing.",
        "",
    ]
    if metrics:
        body += ["Last evaluation" + (f" on {dataset}" if dataset else "") + ": "
                 + ", ".join(f"{label} {value:.4f}" for _, _, label, value in metrics) + ".", ""]
    body += _usage(framework) + [
        "| id | label |",
        "|---:|---|",
    ]
    body += [f"| {i} | {id2label[i]} |" for i in sorted(id2label)]
    return "\n".join(lines + body) + "\n"


def _usage(framework: str) -> list[str]:
    """The card's code: the ``segformer`` package (``pip install "segformer[all]"``) for both frameworks, and for PyTorch
    weights transformers' pipeline, which needs ``USE_TF=0`` before its import when Keras 3 is installed (transformers
    refuses it). Every line runs as written in a folder holding ``photo.jpg`` once the path is this folder's."""
    ours = "" if framework == "pt" else ', framework="tf"'
    lines = [
        "With the `segformer` package:", "",
        "```python",
        "from segformer import Segmenter",
        f'result = Segmenter.from_pretrained("path/to/this/folder"{ours})("photo.jpg")',
        "print(result.summary())",
        "pipeline_output = result.to_pipeline()  # transformers' pipeline(\"image-segmentation\") output",
        "```", "",
    ]
    if framework == "pt":
        lines += [
            "With transformers' pipeline:", "",
            "```python",
            "import os",
            'os.environ["USE_TF"] = "0"  # before importing transformers, which refuses Keras 3 otherwise',
            "from transformers import pipeline",
            'segmenter = pipeline("image-segmentation", model="path/to/this/folder")',
            'print([item["label"] for item in segmenter("photo.jpg")])',
            "```", "",
        ]
    else:
        lines += ["transformers' pipeline reads PyTorch weights: `segformer convert path/to/this/folder OUT --to pt` "
                  "writes them.", ""]
    return lines


def write_model_card(folder: str | os.PathLike, config: SegformerConfig, **options: Any) -> Path:
    """Write :func:`model_card` to ``folder/README.md`` (atomically, replacing one that is there)."""
    path = Path(folder) / MODEL_CARD_NAME
    atomic_write_text(path, model_card(config, **options))
    return path


def write_inference_files(
    folder: str | os.PathLike,
    config: SegformerConfig,
    *,
    image_size: tuple[int, int] = (512, 512),
    reduce_labels: bool = False,
    keep_processor: bool = False,
    **card: Any,
) -> list[Path]:
    """``preprocessor_config.json`` (resize to ``image_size``, ImageNet mean / std; kept when
    ``keep_processor`` and one is there) and the model card ``README.md`` in ``folder``."""
    from ..images.image_processing import PREPROCESSOR_CONFIG_NAME, SegformerImageProcessor

    folder = Path(folder)
    processor_path = folder / PREPROCESSOR_CONFIG_NAME
    if not (keep_processor and processor_path.is_file()):
        processor = SegformerImageProcessor(size={"height": int(image_size[0]), "width": int(image_size[1])},
                                            do_reduce_labels=reduce_labels)
        processor.save_pretrained(folder)
    return [processor_path, write_model_card(folder, config, **card)]
