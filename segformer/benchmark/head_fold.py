"""``segformer bench --mode fold``: what keeping the PT eval head's fold fresh costs, against the forward it serves.

    segformer bench --mode fold                                        # b0 and b2 at 512x512, the policy's threads
    segformer bench --mode fold --variants b0 --sizes 512x512,128x128 --threads 1 --repeats 20

Per (variant, size), min / median / max milliseconds of:

* ``forward``: one eval fast-path forward (batch 1, ``--num-labels`` classes, ``torch.inference_mode``), fold cache hit;
* ``fold``: :func:`segformer.common.model.head_fold.fold_decode_head` of the head's weights (what folding on every
  call would add to each forward);
* ``check``: the cache's bit-for-bit comparison of its kept copy with the live weights (what the cache adds to
  each forward: ``segformer.pt.decode_head.same_bits``),

and both as a percentage of the forward (medians; mins in parentheses), as Markdown table rows.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

__all__ = ["run_fold"]


def times_ms(fn: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after one warm-up call."""
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


def run_fold(variants: Sequence[str], sizes: Sequence[tuple[int, int]], threads: int, repeats: int = 15,
             num_labels: int = 150) -> list[str]:
    """Print (and return) the table rows; ``threads`` intra-op threads (the harness's thread policy)."""
    import torch

    from ..common.base.threads import configure_threads
    from ..common.model.config import SegformerConfig
    from ..common.model.head_fold import fold_decode_head
    from ..pt import SegformerForSemanticSegmentation
    from ..pt.decode_head import same_bits

    configure_threads(threads)
    rows = ["| variant | input | threads | forward ms (min / med / max) | fold ms | check ms | fold / forward (by min) "
            "| check / forward (by min) |", "|---|---|---|---|---|---|---|---|"]
    print("\n".join(rows), flush=True)
    for variant in variants:
        torch.manual_seed(0)
        model = SegformerForSemanticSegmentation(SegformerConfig.from_variant(variant, num_labels=num_labels)).eval()
        head = model.decode_head
        d, n = head.config.decoder_hidden_size, head.config.num_encoder_blocks
        bn = head.batch_norm
        sources = head._fold_sources()
        kept = [t.detach().clone() for t in sources]

        def fold() -> None:
            fold_decode_head(head.linear_fuse.weight.reshape(d, n * d), [m.proj.weight for m in head.linear_c],
                             [m.proj.bias for m in head.linear_c], bn.weight, bn.bias, bn.running_mean,
                             bn.running_var, bn.eps)

        def check() -> None:
            if not same_bits(kept, sources):
                raise AssertionError("the kept copy differs from the weights it was taken from")

        for height, width in sizes:
            pixels = torch.randn(1, 3, height, width)
            with torch.inference_mode():
                forward_ms = times_ms(lambda: model(pixels), repeats)
                fold_ms = times_ms(fold, repeats * 4)
                check_ms = times_ms(check, repeats * 4)
            row = (f"| {variant} | {height}x{width} | {threads} | {_fmt(forward_ms)} | {_fmt(fold_ms)} | {_fmt(check_ms)} "
                   f"| {_ratio(fold_ms, forward_ms)} | {_ratio(check_ms, forward_ms)} |")
            print(row, flush=True)
            rows.append(row)
    return rows
