"""Fine-tune a small SegFormer from random weights on the synthetic dataset; report held-out mIoU and time.

    python benchmarks/finetune_synthetic.py --framework pt
    python benchmarks/finetune_synthetic.py --framework tf

This is the proof run of benchmarks/TRAINING.md (not a CI test; CI runs a short version that checks that the
loss falls). It writes the dataset (``make_synthetic_dataset``: 64x64 images, 5 classes: background + 4
coloured, textured shapes), a small MiT config (depths 1/1/1/1, widths 16/32/64/128, decoder 64), then runs
exactly the command line printed below through ``segformer.cli.main`` and evaluates the result with
``segformer eval``. The recipe is the original one (AdamW, head lr x10, no decay on norms, poly + linear
warm-up) with a larger base lr, because it starts from random weights; the photometric distortion is off
because the synthetic classes are defined by their colour (hue jitter of +-18 would blur that cue), and
the random rescale is 0.75..1.5 around the 64x64 images.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

SMALL = dict(
    depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=64,
    drop_path_rate=0.0, classifier_dropout_prob=0.0,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("pt", "tf"), default="pt")
    parser.add_argument("--work", default="/tmp/segformer_finetune_synthetic", help="scratch folder")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--num-val", type=int, default=16)
    args = parser.parse_args(argv)

    from segformer.cli import main as cli
    from segformer.common.model.config import SegformerConfig
    from segformer.common.training.datasets import make_synthetic_dataset

    work = Path(args.work)
    data = make_synthetic_dataset(work / "data", num_train=args.num_train, num_val=args.num_val, size=(64, 64), num_labels=5)
    SegformerConfig(num_labels=5, **SMALL).save_pretrained(work / "small")
    out = work / f"run_{args.framework}"
    command = ["train", "--framework", args.framework, "--model", str(work / "small" / "config.json"), "--data", str(data),
               "--out", str(out), "--overwrite", "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--crop-size", "64,64", "--img-scale", "64,64", "--ratio-range", "0.75,1.5", "--no-photometric",
               "--lr", str(args.lr),
               "--eval-every", str(max(args.steps // 3, 1)), "--log-every", "25", "--no-progress"]
    print("segformer " + " ".join(command), flush=True)
    start = time.perf_counter()
    code = cli(command)
    elapsed = time.perf_counter() - start
    if code:
        return code
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = cli(["eval", "--framework", args.framework, "--model", str(out), "--data", str(data), "--no-progress"])
    table = buffer.getvalue().strip()
    miou = float(table.splitlines()[-1].split()[1])
    print(table)
    result = {"framework": args.framework, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
              "train_seconds": round(elapsed, 1), "held_out_mIoU": miou}
    print(json.dumps(result))
    return 0 if miou >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
