"""What the PT eval head's fold costs, against the forward it serves.

    python benchmarks/bench_head_fold.py                         # b0 and b2, 512x512 and 128x128, 1 and 2 threads
    python benchmarks/bench_head_fold.py --variants b0 --sizes 512 --threads 1 --repeats 20

Per (variant, size, threads), min / median / max milliseconds of:

* ``forward``: one eval fast-path forward (batch 1, 150 classes, ``torch.inference_mode``), fold cache hit;
* ``fold``: :func:`segformer.common.model.head_fold.fold_decode_head` of the head's weights (what folding on every
  call would add to each forward);
* ``check``: the cache's comparison of its kept copy with the live weights (what the cache adds to each
  forward: ``segformer.pt.decode_head.same_bits``).

and both as a percentage of the forward (medians; mins in parentheses). Results are printed as Markdown table rows. The numbers
recorded in benchmarks/README.md ("Eval fold cache") came from this script.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _times(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _fmt(ms: list[float]) -> str:
    return f"{min(ms):.3f} / {statistics.median(ms):.3f} / {max(ms):.3f}"


def _ratio(part: list[float], whole: list[float]) -> str:
    """Medians' ratio, and mins' ratio in parentheses (the min is the least disturbed by other load)."""
    return f"{100 * statistics.median(part) / statistics.median(whole):.2f} % ({100 * min(part) / min(whole):.2f} %)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="b0,b2")
    parser.add_argument("--sizes", default="512,128")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)

    import torch

    from segformer.common.model.config import SegformerConfig
    from segformer.common.model.head_fold import fold_decode_head
    from segformer.pt import SegformerForSemanticSegmentation
    from segformer.pt.decode_head import same_bits

    print("| variant | input | threads | forward ms (min / med / max) | fold ms | check ms | fold / forward (by min) | check / forward (by min) |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        model = SegformerForSemanticSegmentation(SegformerConfig.from_variant(variant, num_labels=150)).eval()
        head = model.decode_head
        d, n = head.config.decoder_hidden_size, head.config.num_encoder_blocks
        bn = head.batch_norm
        sources = head._fold_sources()
        kept = [t.detach().clone() for t in sources]

        def fold():
            fold_decode_head(head.linear_fuse.weight.reshape(d, n * d), [m.proj.weight for m in head.linear_c],
                             [m.proj.bias for m in head.linear_c], bn.weight, bn.bias, bn.running_mean,
                             bn.running_var, bn.eps)

        def check():
            assert same_bits(kept, sources)

        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for size in (int(s) for s in args.sizes.split(",")):
                pixels = torch.randn(1, 3, size, size)
                with torch.inference_mode():
                    forward_ms = _times(lambda: model(pixels), args.repeats)
                    fold_ms = _times(fold, args.repeats * 4)
                    check_ms = _times(check, args.repeats * 4)
                print(f"| {variant} | {size}x{size} | {threads} | {_fmt(forward_ms)} | {_fmt(fold_ms)} | {_fmt(check_ms)} "
                      f"| {_ratio(fold_ms, forward_ms)} | {_ratio(check_ms, forward_ms)} |",
                      flush=True)


if __name__ == "__main__":
    main()
