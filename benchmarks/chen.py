"""Chen et al. 2024's GIH model: training steps per second of ours (`papers.chen.GIHModel`),
on its default path (layer 1 once per lag-window type, the selector's inner products looked
up, its score a sum of products) and on its per-position path (what a hook on layer 1 makes it
take: banded layer 1, one broadcast product per lag), vs the paper's equations written out
(`papers.chen.reference_forward`: a dense (L+1)^2 score matrix per head, a loop over the
selector's subsets), same data, same parameters, in one run. Also the data generation: one
batched call for every sequence's Dirichlet table and chain.

    python benchmarks/chen.py            # 1000 sequences of L = 100 (quick mode's size)
    python benchmarks/chen.py --n 9000   # the authors' training set (full mode)
    python benchmarks/chen.py --smoke    # 64 sequences, print only (tests)
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import emit

from inducthead.papers.chen import GIHModel, reference_forward, to_reference_state_dict
from inducthead.tasks import NGramMarkovICL


def steps_per_s(loss_fn, params, seconds: float, min_steps: int = 3) -> float:
    n, start = 0, time.perf_counter()
    while n < min_steps or time.perf_counter() - start < seconds:
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= 0.1 * g
        n += 1
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy size, print only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=1000, help="training sequences")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, seconds = (64, 0.2) if args.smoke else (args.n, 10.0)
    task = NGramMarkovICL()
    start = time.perf_counter()
    batch = task.sample(n, seed=0)
    t_data = time.perf_counter() - start
    x, y = batch.tokens, batch.targets[:, -1]
    lines = [
        f"{n} sequences, L 100, S 3, H 3, float32, threads {args.threads}; data generation "
        f"{t_data * 1000:.0f} ms (batched tables and chains)",
        "",
        "| model | ours (steps/s) | ours per position (steps/s) | equations written out "
        "(steps/s) | ours ÷ per position | ours ÷ equations |",
        "|---|---|---|---|---|---|",
    ]
    identity = [("blocks.0.hook_resid_post", lambda v, hook: v)]
    for simplified in (True, False):
        model = GIHModel(simplified=simplified)
        params = list(model.parameters())
        ours = steps_per_s(lambda m=model: m.loss(x, y), params, seconds)

        def per_position(m=model):
            with m.hooks(fwd_hooks=identity):  # a hook on layer 1's stream: per position
                return m.loss(x, y)

        stream = steps_per_s(per_position, params, seconds)
        sd = {k: v.requires_grad_() for k, v in to_reference_state_dict(model).items()}

        def ref_loss(sd=sd):
            p = reference_forward(sd, x)
            return -p.gather(-1, y[:, None]).clamp(min=1e-8).log().mean()

        theirs = steps_per_s(ref_loss, list(sd.values()), seconds)
        kind = "simplified" if simplified else "full"
        lines.append(
            f"| {kind} | {ours:.2f} | {stream:.2f} | {theirs:.2f} | {ours / stream:.1f}x | "
            f"{ours / theirs:.1f}x |"
        )
    emit(
        "Chen GIH model: training steps/s, ours vs the equations (benchmarks/chen.py)",
        lines,
        save=not args.smoke,
    )


if __name__ == "__main__":
    main()
