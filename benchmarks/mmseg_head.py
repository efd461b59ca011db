"""The mmseg decode head's eval fast path against its plain path (PyTorch, CPU, batch 1, random weights).

    python benchmarks/mmseg_head.py [--variants b0,b2] [--size 512] [--threads 1] [--repeats 10]

Per variant: min / median milliseconds of the decode head alone (on the encoder's stage maps) and of the whole
model, plain path (per-stage conv + BatchNorm + ReLU, upsample, n*D concatenation, fuse conv + BatchNorm) and
fast path (each stage's BatchNorm folded into its conv and the fuse block run before the upsampling; fold cached),
and the max |diff| of the logits.
"""

from __future__ import annotations

import argparse
import statistics

from segformer.benchmark.head_fold import times_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="b0,b2")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import torch

    from segformer import SegformerConfig
    from segformer.pt import SegformerForSemanticSegmentation

    torch.set_num_threads(args.threads)
    print(f"| variant | part | plain ms (min / median) | fast ms (min / median) | speed-up (medians) | max abs diff |")
    print("|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        config = SegformerConfig.from_variant(variant, num_labels=150, decode_head_type="mmseg")
        model = SegformerForSemanticSegmentation(config).eval()
        with torch.no_grad():  # random BatchNorm statistics: the fold must carry them
            for module in model.decode_head.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
        x = torch.randn(1, 3, args.size, args.size)
        with torch.inference_mode():
            maps = model.segformer(x, output_hidden_states=True).hidden_states
            results = {}
            for fast in (False, True):
                model.use_fast_path = fast
                results[fast] = {
                    "head": times_ms(lambda: model.decode_head(maps), args.repeats),
                    "model": times_ms(lambda: model(x).logits, max(3, args.repeats // 3)),
                    "logits": model.decode_head(maps),
                }
        diff = float((results[True]["logits"] - results[False]["logits"]).abs().max())
        for part in ("head", "model"):
            plain, fast = results[False][part], results[True][part]
            print(f"| {variant} {args.size}x{args.size} | {part} | {min(plain):.1f} / {statistics.median(plain):.1f} | "
                  f"{min(fast):.1f} / {statistics.median(fast):.1f} | {statistics.median(plain) / statistics.median(fast):.2f}x "
                  f"| {diff:.1e} |")


if __name__ == "__main__":
    main()
