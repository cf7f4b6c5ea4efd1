"""Head ablations (zero, mean, pattern-preserving) and per-head ablation scans.

Everything acts through TransformerLens hook names (`blocks.{l}.attn.hook_z`,
`blocks.{l}.attn.hook_pattern`), so it works on inducthead models, TransformerBridge and
TransformerLens 3 models alike. The metrics (loss / accuracy on induction-predictable tokens,
logit difference, ICL score) and the data they run on live in `inducthead.causal.metrics`.

>>> with ih.ablate(model, ["L1H0"], mode="pattern_preserving"):
...     logits = model(tokens)

Scans of every head (`ablation_scan`) live in `causal.scan`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from inducthead.analysis.adapters import ModelAdapter
from inducthead.analysis.heads import check_heads, head_label
from inducthead.causal.data import Data, as_batch, describe, repeated_token_batch

__all__ = ["ablate", "Ablation", "MODES"]

MODES = ("zero", "mean", "pattern_preserving")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    return mode


def z_means(adapter: ModelAdapter, reference: Data, layers: Iterable[int]) -> dict[int, Tensor]:
    """`{layer: [n_heads, d_head]}`: each head's `hook_z` averaged over the reference batch's
    sequences and positions."""
    layers = sorted(set(layers))
    tokens = as_batch(adapter, reference).tokens
    cache = adapter.run(tokens, [adapter.z_hook(l) for l in layers])
    return {l: cache[adapter.z_hook(l)].float().mean((0, 1)) for l in layers}


def mean_reference(adapter: ModelAdapter, reference: Data):
    """The mean-ablation reference and its description (the documented default when None)."""
    if reference is not None:
        return reference, describe(reference)
    data = repeated_token_batch(adapter, seed=1)
    return data, f"default repeated-token data ({describe(data)}, seed 1)"


def record_patterns(adapter: ModelAdapter, tokens: Tensor, hooks=()) -> dict[int, Tensor]:
    """Every layer's attention pattern on `tokens` (with `hooks` active), `{layer: pattern}`."""
    names = [adapter.pattern_hook(l) for l in range(adapter.n_layers)]
    with adapter.model.hooks(fwd_hooks=list(hooks)):
        cache = adapter.run(tokens, names)
    return {l: cache[n] for l, n in enumerate(names)}


def replace_heads_hook(values: dict[int, Tensor | None], block: int | None = None):
    """Hook on `hook_z` setting head h to `values[h]` (None: zero); with `block`, only rows
    [i·block, (i+1)·block) of the batch get the i-th head of `values` (stacked scans)."""

    def hook(z: Tensor, hook) -> Tensor:
        if z.requires_grad:
            z = z.clone()
        for i, (h, value) in enumerate(values.items()):
            rows = slice(None) if block is None else slice(i * block, (i + 1) * block)
            z[rows, :, h] = 0.0 if value is None else value.to(z.dtype)
        return z

    return hook


def _force_pattern_hook(pattern: Tensor):
    def hook(p: Tensor, hook) -> Tensor:
        if p.shape != pattern.shape:
            raise ValueError(
                f"pattern-preserving ablation recorded patterns of shape {tuple(pattern.shape)} "
                f"but this forward has {tuple(p.shape)}: call hooks_for(tokens) with the tokens "
                "you run."
            )
        return pattern.to(p.dtype)

    return hook


@contextlib.contextmanager
def only_these_hooks(model, hooks: list) -> Iterator[None]:
    """Run with `hooks` as the only forward hooks: every other one on the model's hook points is
    set aside for the duration and put back after."""
    points = list(model.hook_dict.values())
    kept = [hp._forward_hooks for hp in points]
    for hp in points:
        hp._forward_hooks = OrderedDict()
    try:
        with model.hooks(fwd_hooks=hooks):
            yield
    finally:
        for hp, hooks_dict in zip(points, kept, strict=True):
            hp._forward_hooks = hooks_dict


def pattern_hooks(adapter: ModelAdapter, patterns: dict[int, Tensor], repeat: int = 1) -> list:
    """Hooks forcing every layer's `hook_pattern` to the recorded one (tiled `repeat` times along
    the batch for stacked scans)."""
    return [
        (
            adapter.pattern_hook(l),
            _force_pattern_hook(p.repeat(repeat, 1, 1, 1) if repeat > 1 else p),
        )
        for l, p in patterns.items()
    ]


class Ablation:
    """Remove some heads' outputs; a context manager and a source of TransformerLens hook lists.

    Modes:
    - "zero": the heads' `hook_z` is set to 0 (so their output, `z @ W_O`, is 0; a bias `b_O` is
      shared by the layer and stays).
    - "mean": `hook_z` is set to its mean over the sequences AND positions of a reference batch
      (one `[d_head]` vector per head: a per-position mean would tie the ablation to one sequence
      length). Without `reference` the default data of `causal.data.default_data` with seed 1
      (repeated random tokens, not the data you evaluate on) is the reference; `.reference`
      says which was used. Mean ablation never silently falls back to zero.
    - "pattern_preserving" (Olsson et al. 2022's ablation tables): record every layer's attention
      pattern on the clean run, then rerun with the heads' `hook_z` zeroed and every
      `hook_pattern` forced to its recorded value, so only value/output paths downstream change.

    >>> abl = ablate(model, [(1, 0)], mode="mean", reference=tokens)
    >>> model.run_with_hooks(tokens, fwd_hooks=abl.hooks)
    >>> model.run_with_hooks(tokens, fwd_hooks=abl.hooks_for(tokens))  # any mode
    >>> with abl:  # every forward inside; pattern-preserving runs a clean recording pass first
    ...     logits = model(tokens)

    Inside `with`, a pattern-preserving forward first records the clean patterns in a pass that
    runs no other hook (so your hooks, and those of outer ablations, fire once: in the ablated
    pass, which returns the output), then runs the ablated pass.
    """

    def __init__(self, adapter: ModelAdapter, heads, mode: str = "zero", reference: Data = None):
        self.adapter = adapter
        self.model = adapter.model
        self.heads = check_heads(heads, self.adapter)
        self.mode = check_mode(mode)
        self.reference = None
        self._means: dict[int, Tensor] = {}
        if mode == "mean":
            reference, self.reference = mean_reference(self.adapter, reference)
            self._means = z_means(self.adapter, reference, [l for l, _ in self.heads])
        elif reference is not None:
            raise ValueError(f"reference is only used by mode='mean', not {mode!r}.")
        self._stack: list = []

    def values(self, layer: int) -> dict[int, Tensor | None]:
        """What each ablated head of `layer` is set to (`None` = zero)."""
        out: dict[int, Tensor | None] = {}
        for l, h in self.heads:
            if l == layer:
                out[h] = self._means[l][h] if self.mode == "mean" else None
        return out

    @property
    def z_hooks(self) -> list:
        layers = sorted({l for l, _ in self.heads})
        return [(self.adapter.z_hook(l), replace_heads_hook(self.values(l))) for l in layers]

    @property
    def hooks(self) -> list:
        """`[(hook_name, fn), ...]` for `run_with_hooks` / `model.hooks` (zero and mean modes)."""
        if self.mode == "pattern_preserving":
            raise ValueError(
                "pattern-preserving hooks replay the patterns of one clean run: use "
                "hooks_for(tokens), or the context manager `with ablate(...):`."
            )
        return self.z_hooks

    def hooks_for(self, tokens: Tensor) -> list:
        """Hooks for running `tokens`; pattern-preserving records their clean patterns first."""
        if self.mode != "pattern_preserving":
            return self.z_hooks
        patterns = record_patterns(self.adapter, tokens.to(self.adapter.device))
        return self.z_hooks + pattern_hooks(self.adapter, patterns)

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> Ablation:
        if self.mode != "pattern_preserving":
            ctx = self.model.hooks(fwd_hooks=self.z_hooks)
            ctx.__enter__()
            self._stack.append(ctx)
            return self
        model, original = self.model, self.model.forward
        clean_forward = type(model).forward.__get__(model)  # below every wrapper

        def forward_with_recorded_patterns(tokens, *args, **kwargs):
            # 1. the clean patterns, from a pass with no other hook (the user's, an outer
            #    ablation's) active; its errors are raised, not swallowed.
            patterns: dict[int, Tensor] = {}

            def saver(layer: int):
                def save(p, hook):
                    patterns[layer] = p.detach()

                return save

            names = [self.adapter.pattern_hook(l) for l in range(self.adapter.n_layers)]
            with (
                torch.no_grad(),
                only_these_hooks(model, [(n, saver(l)) for l, n in enumerate(names)]),
            ):
                clean_forward(tokens, *args, **kwargs)
            # 2. the ablated pass, with every other hook active: they fire once.
            with model.hooks(fwd_hooks=self.z_hooks + pattern_hooks(self.adapter, patterns)):
                return original(tokens, *args, **kwargs)

        # An instance attribute: nn.Module.__call__ and run_with_hooks call it. Nested contexts
        # wrap each other; each exit puts back what was there before.
        self._stack.append(("forward", model.__dict__.get("forward")))
        model.forward = forward_with_recorded_patterns
        return self

    def __exit__(self, *exc) -> None:
        ctx = self._stack.pop()
        if isinstance(ctx, tuple):
            if ctx[1] is None:
                del self.model.forward  # the class's forward again
            else:
                self.model.forward = ctx[1]
        else:
            ctx.__exit__(*exc)

    def __repr__(self) -> str:
        names = ", ".join(head_label(h) for h in self.heads)
        ref = f", reference {self.reference}" if self.reference else ""
        return f"Ablation({self.mode}: {names}{ref})"


def ablate(model, heads, mode: str = "zero", reference: Data = None) -> Ablation:
    """Ablate `heads` of `model` (see `Ablation`): `with ablate(model, ["L1H0"]): ...`, or
    `model.run_with_hooks(tokens, fwd_hooks=ablate(model, heads).hooks)`."""
    return Ablation(ModelAdapter.wrap(model), heads, mode, reference)
