"""Drop-in for transformers: two recipes written for transformers' SegFormer run on ours unchanged.

* The PEFT LoRA recipe for semantic segmentation: ``LoraConfig(target_modules=["query", "value"])`` +
  ``get_peft_model`` on our ``SegformerForSemanticSegmentation``, a few training steps, merge, save, reload.
* transformers' ``Trainer`` running a few steps of the SegFormer fine-tuning tutorial with our PT model and
  processor (``remove_unused_columns=False``, ``compute_metrics`` on the logits).

Each skips only when peft / transformers are not installed (both are in the ``dev`` extra).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from randomize import random_state, tiny_config

torch = pytest.importorskip("torch")
from segformer.common.images.image_processing import SegformerImageProcessor  # noqa: E402
from segformer.common.training.metrics import SegmentationMetric  # noqa: E402
from segformer.pt import SegformerForSemanticSegmentation  # noqa: E402

NUM_LABELS = 3
# transformers' Trainer imports its TensorFlow half when TensorFlow is installed, which needs tf-keras beside
# Keras 3; these recipes are PyTorch-only (set before any test imports transformers: collection comes first).
os.environ.setdefault("USE_TF", "0")


def _model() -> SegformerForSemanticSegmentation:
    model = SegformerForSemanticSegmentation(tiny_config(num_labels=NUM_LABELS))
    model.load_state_dict_numpy(random_state(model.config, "semantic_segmentation", seed=11))
    return model


def _examples(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Images with a bright square whose pixels are class 1 (class 2 in the corner), processed by our processor."""
    rng = np.random.default_rng(seed)
    processor = SegformerImageProcessor(size={"height": 64, "width": 64})
    examples = []
    for _ in range(n):
        image = rng.integers(0, 80, size=(48, 56, 3), dtype=np.uint8)
        label = np.zeros((48, 56), np.uint8)
        top, left = rng.integers(0, 24), rng.integers(0, 28)
        image[top : top + 20, left : left + 20] += 150
        label[top : top + 20, left : left + 20] = 1
        label[:6, :6] = 2
        batch = processor(image, label, return_tensors="pt")
        examples.append({"pixel_values": batch["pixel_values"][0], "labels": batch["labels"][0]})
    return examples


def test_peft_lora_recipe_train_merge_save_reload(tmp_path):
    peft = pytest.importorskip("peft")
    model = _model()
    config = peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=["query", "value"], lora_dropout=0.0, bias="lora_only",
        modules_to_save=["decode_head"],
    )
    lora = peft.get_peft_model(model, config)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in lora.parameters())
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    examples = _examples(4)
    pixel_values = torch.stack([e["pixel_values"] for e in examples])
    labels = torch.stack([e["labels"] for e in examples])
    lora.train()
    losses = []
    for _ in range(5):
        loss = lora(pixel_values=pixel_values, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print("LoRA losses", [round(v, 4) for v in losses])
    assert losses[-1] < losses[0]
    lora.eval()
    with torch.no_grad():
        adapted = lora(pixel_values=pixel_values).logits
    merged = lora.merge_and_unload()
    assert type(merged) is SegformerForSemanticSegmentation
    assert not any("lora" in name for name in merged.state_dict())
    with torch.no_grad():
        diff = float((merged(pixel_values).logits - adapted).abs().max())
    assert diff < 1e-4, f"max |merged - adapter| = {diff}"
    merged.save_pretrained(tmp_path)
    reloaded = SegformerForSemanticSegmentation.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values).logits, merged.eval()(pixel_values).logits)


def test_transformers_trainer_runs_the_finetuning_tutorial(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _model()
    train, evaluation = _examples(6, seed=1), _examples(2, seed=2)

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        logits = torch.from_numpy(logits)
        upsampled = torch.nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        metric = SegmentationMetric(NUM_LABELS, ignore_index=255)
        metric.update(upsampled.argmax(dim=1).numpy(), labels)
        return {"mean_iou": metric.compute()["mean_iou"]}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), learning_rate=6e-4, max_steps=4, per_device_train_batch_size=2,
        per_device_eval_batch_size=2, eval_strategy="no", save_strategy="no", logging_steps=1,
        remove_unused_columns=False, report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0,
        gradient_checkpointing=True,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation, compute_metrics=compute_metrics,
    )
    result = trainer.train()
    assert result.global_step == 4 and np.isfinite(result.training_loss)
    assert model.is_gradient_checkpointing  # Trainer's gradient_checkpointing_enable(gradient_checkpointing_kwargs=...)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_loss"]) and 0.0 <= metrics["eval_mean_iou"] <= 1.0
    trainer.save_model(str(tmp_path / "final"))
    reloaded = SegformerForSemanticSegmentation.from_pretrained(tmp_path / "final", config=model.config)
    for name, value in reloaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[name].cpu()), name
