"""Training throughput: our HookedTransformer vs TransformerBridge vs plain-PyTorch SDPA (issue 6).

Same config, same batch, same optimizer (the trainer's: fused AdamW where torch has it) and the
same loss (next-token cross-entropy over all positions) for all three; tokens/s per training step
(forward + backward + AdamW). Modes: no hooks, and one cached hook (`blocks.0.hook_resid_post`
stored every step; on the plain model a `register_forward_hook` on block 0's output projection).
"ours, hook points stripped" replaces every HookPoint of our model by a plain function, so ours ÷
stripped is the cost of unused hook points. "ours, train()" is the whole trainer loop (data
generated on the device every step, masked loss, lr schedule, host sync every `log_every` steps),
so ours ÷ train() is the trainer's overhead.

Implementations run interleaved round by round; each ratio is the median of per-round ratios,
so machine load (shared cores) cancels out. Olsson-768 = olsson-attn-only-2l's width (d_model
768, 12 heads of 64, attention-only, no LayerNorm) with standard positions (TransformerBridge has
no shortformer positions), its byte-level vocab 257, and a CPU-sized context (256) and batch (8).

    python benchmarks/train_throughput.py                     # CPU, both sizes
    python benchmarks/train_throughput.py --device cuda --amp --compile   # a GPU run
    python benchmarks/train_throughput.py --smoke     # toy widths, 2 rounds x 1 step, print only
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from _common import emit
from torch import nn

import inducthead as ih
from inducthead.tasks import RepeatedTokens
from inducthead.training import make_optimizer
from inducthead.training.speed import compiled_forward

HOOK = "blocks.0.hook_resid_post"


def sizes(device: str, smoke: bool = False) -> dict[str, dict]:
    demo = ih.configs.get("demo")
    olsson = ih.configs.get("olsson-attn-only-2l").model.replace(
        positional_embedding_type="standard", n_ctx=256, model_name="olsson-2l-768"
    )
    gpu = device.startswith("cuda")
    if smoke:  # both sizes at the demo's width and context (tests)
        tiny = dict(d_model=64, n_heads=2, d_head=32, n_ctx=128)
        return {
            name: dict(cfg=cfg.replace(**tiny), batch=2, steps=1, rounds=2)
            for name, cfg in (("demo", demo.model), ("olsson-2l-768", olsson))
        }
    return {
        "demo": dict(cfg=demo.model, batch=32, steps=6 if not gpu else 50, rounds=15),
        "olsson-2l-768": dict(cfg=olsson, batch=8 if not gpu else 32, steps=2, rounds=7),
    }


class PlainSDPA(nn.Module):
    """The reference: an attention-only transformer in plain PyTorch (fused QKV nn.Linear, SDPA)."""

    def __init__(self, cfg: ih.HookedTransformerConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.n_heads * cfg.d_head
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "qkv": nn.Linear(cfg.d_model, 3 * width, bias=cfg.use_bias),
                    "o": nn.Linear(width, cfg.d_model, bias=cfg.use_bias),
                }
            )
            for _ in range(cfg.n_layers)
        )
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab_out, bias=cfg.use_bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, p = tokens.shape
        h, d = self.cfg.n_heads, self.cfg.d_head
        x = self.embed(tokens) + self.pos[:p]
        for block in self.blocks:
            q, k, v = block["qkv"](x).view(b, p, 3, h, d).permute(2, 0, 3, 1, 4)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + block["o"](z.transpose(1, 2).reshape(b, p, h * d))
        return self.unembed(x)


class _Identity:
    """Stands in for a HookPoint: a plain callable, no nn.Module call machinery, never hooked."""

    _forward_hooks = _backward_hooks = _forward_pre_hooks = {}

    def __call__(self, x):
        return x


def strip_hook_points(model: ih.HookedTransformer) -> ih.HookedTransformer:
    """Replace every HookPoint by a plain identity callable: the no-hooks floor."""
    from transformer_lens.hook_points import HookPoint

    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, HookPoint):
                del module._modules[name]
                object.__setattr__(module, name, _Identity())
    return model


class Impl:
    def __init__(self, name, module, device, hooked, amp, compile_backend):
        self.name, self.device, self.amp = name, device, amp
        self.module = module.to(device).train()
        self.forward = self.module
        if compile_backend:
            self.forward = compiled_forward(self.module, compile_backend)
        # the optimizer our trainer uses (fused AdamW where available), for all three
        self.opt = make_optimizer(self.module.parameters(), ih.TrainConfig(lr=1e-3), device)
        self.cache: dict[str, torch.Tensor] = {}
        self.hook_ctx = contextlib.nullcontext
        if hooked:
            self.hook_ctx = self._hooks_for(name)

    def _hooks_for(self, name):
        def save(x, hook):
            self.cache[HOOK] = x.detach()

        if name.startswith("plain"):  # no hook points: a forward hook on block 0's output

            @contextlib.contextmanager
            def ctx():
                handle = self.module.blocks[0]["o"].register_forward_hook(
                    lambda mod, inp, out: self.cache.__setitem__(HOOK, out.detach())
                )
                try:
                    yield
                finally:
                    handle.remove()

            return ctx
        return lambda: self.module.hooks(fwd_hooks=[(HOOK, save)])

    def steps(self, tokens, targets, n):
        # our model trains under fast_attention (as train() does): SDPA unless a pattern hook
        fast = getattr(self.module, "fast_attention", contextlib.nullcontext)
        with fast(), self.hook_ctx():
            for _ in range(n):
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
                    logits = self.forward(tokens)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return loss


def build(cfg, device, hooked, amp, compile_backend, with_bridge):
    ours = ih.HookedTransformer(cfg)
    ours.check_inputs = False
    impls = [Impl("ours", ours, device, hooked, amp, compile_backend)]
    if not hooked:
        stripped = strip_hook_points(ih.HookedTransformer(cfg))
        stripped.check_inputs = False
        impls.append(
            Impl("ours, hook points stripped", stripped, device, False, amp, compile_backend)
        )
    if with_bridge:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = ih.to_bridge(ih.HookedTransformer(cfg))
        impls.append(Impl("TransformerBridge", bridge, device, hooked, amp, None))
    impls.append(Impl("plain SDPA", PlainSDPA(cfg), device, hooked, amp, compile_backend))
    return impls


def trainer_tokens_per_s(cfg, batch, n, device, amp, compile_backend) -> float:
    """tokens/s of the full `train()` loop over `n` steps after a warmup (elapsed_s between the
    metrics rows at the two checkpoint steps; their evals use one sequence and no head scores)."""
    task = RepeatedTokens(d_vocab=cfg.d_vocab, seq_len=cfg.n_ctx, bos_token_id=0)
    warm = 3
    tc = ih.TrainConfig(
        steps=warm + n,
        batch_size=batch,
        lr=1e-3,
        grad_clip=None,
        eval_every=10**6,
        eval_batch_size=1,
        checkpoint_steps=(warm, warm + n),
        head_scores=False,
        progress=False,
        device=str(device),
        amp=amp,
        compile=compile_backend or False,
    )
    m = ih.train(ih.HookedTransformer(cfg), task, tc).metrics.set_index("step")
    return n * batch * cfg.n_ctx / (m.elapsed_s[warm + n] - m.elapsed_s[warm])


def bench_size(name, spec, device, amp, compile_backend, with_bridge, lines, summary):
    cfg, batch, n, rounds = spec["cfg"], spec["batch"], spec["steps"], spec["rounds"]
    task = RepeatedTokens(d_vocab=cfg.d_vocab, seq_len=cfg.n_ctx, bos_token_id=0)
    b = task.sample(batch, seed=0, device=device)
    tokens_per_step = batch * cfg.n_ctx
    lines += [
        f"**{name}**: {cfg.n_layers}L, d_model {cfg.d_model}, {cfg.n_heads} heads x "
        f"{cfg.d_head}, vocab {cfg.d_vocab}, batch {batch} x {cfg.n_ctx} tokens, "
        f"{rounds} rounds x {n} steps",
        "",
        "| hooks | implementation | tokens/s (median) | ours ÷ this |",
        "|---|---|---|---|",
    ]
    for hooked in (False, True):
        impls = build(cfg, device, hooked, amp, compile_backend, with_bridge)
        for impl in impls:  # warmup (and compilation)
            impl.steps(b.tokens, b.targets, 2)
        rates: dict[str, list[float]] = {i.name: [] for i in impls}
        trainer: list[float] = []
        for r in range(rounds):
            for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:  # rotate the order
                t0 = time.perf_counter()
                impl.steps(b.tokens, b.targets, n)
                rates[impl.name].append(n * tokens_per_step / (time.perf_counter() - t0))
            if not hooked:
                trainer.append(trainer_tokens_per_s(cfg, batch, n, device, amp, compile_backend))
                rates.setdefault("ours, train()", []).append(trainer[-1])
        label = f"1 cached ({HOOK})" if hooked else "none"
        for impl_name, r in rates.items():
            ratio = statistics.median(o / x for o, x in zip(rates["ours"], r, strict=True))
            lines.append(
                f"| {label} | {impl_name} | {statistics.median(r):,.0f} | "
                f"{'—' if impl_name == 'ours' else f'{ratio:.2f}x'} |"
            )
            summary[(name, label, impl_name)] = ratio
    lines.append("")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        help="torch.compile ours and the plain model (backend, default inductor)",
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--sizes", nargs="*", help="subset of: demo olsson-2l-768")
    parser.add_argument("--no-bridge", action="store_true", help="skip TransformerBridge")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--smoke", action="store_true", help="toy size, print only (tests)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    lines = [
        f"device {device}, threads {torch.get_num_threads()}, amp {args.amp}, "
        f"compile {args.compile or 'off'}, load average at start {load:.2f}",
        "",
    ]
    summary: dict = {}
    for name, spec in sizes(args.device, args.smoke).items():
        if args.sizes and name not in args.sizes:
            continue
        bench_size(name, spec, device, args.amp, args.compile, not args.no_bridge, lines, summary)
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    lines.append(f"load average at end {end_load:.2f}")
    lines += goals(summary)
    emit(
        "Training throughput (benchmarks/train_throughput.py)",
        lines,
        save=not (args.no_record or args.smoke),
    )


def goals(summary) -> list[str]:
    out = ["", "Goals (issue 6):"]
    for (size, hooks, impl), ratio in summary.items():
        if impl == "plain SDPA":
            ok = "met" if ratio >= 0.9 else "MISSED"
            out.append(f"- {size}, hooks {hooks}: ours ÷ plain SDPA = {ratio:.2f} (>= 0.9: {ok})")
        if impl == "TransformerBridge" and size == "demo":
            ok = "met" if ratio >= 1.5 else "MISSED"
            out.append(f"- {size}, hooks {hooks}: ours ÷ bridge = {ratio:.2f} (>= 1.5: {ok})")
        if impl == "ours, hook points stripped":
            out.append(
                f"- {size}: ours ÷ ours-without-hook-points = {ratio:.3f} (unused hook points cost "
                f"{(1 - ratio) * 100:+.1f}%)"
            )
    return out


if __name__ == "__main__":
    main()
