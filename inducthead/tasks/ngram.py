"""In-context n-gram Markov chains (Chen et al. 2024, "Unveiling Induction Heads", section 2.1):
each sequence has its own transition table, one Dirichlet(alpha) row per context of the
`order` previous tokens (the parents -1 .. -order), so the next-token law must be inferred in
context. `MarkovICL` is the order-1 case with its own Bayes floor; this is the general one.

Sampling is vectorised: a chain of order r is a first-order chain over the S^r windows of the
last r tokens, so every step's next-window map is drawn at once (inverse CDF) and the chain is
their prefix composition (`markov.compose_prefix`): no loop over positions or sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from inducthead.tasks.base import Batch, Task, generator
from inducthead.tasks.markov import compose_prefix, sample_gamma


@dataclass
class NGramMarkovICL(Task):
    """Sequences of `seq_len` tokens over `n_states` symbols from an order-`order` chain with a
    fresh table per sequence (rows Dirichlet(`alpha`)); the first `order` tokens are uniform.
    `final_only` scores only the last position (predict token L + 1 from L tokens: Chen et al.'s
    setting); otherwise every position with `order` tokens of context. `bayes_loss` is the
    in-context Bayes predictor (Dirichlet counts of each context's continuations so far)."""

    name = "ngram_markov_icl"
    n_states: int = 3
    seq_len: int = 100
    order: int = 2
    alpha: float = 0.1
    final_only: bool = True

    def __post_init__(self) -> None:
        if self.n_states < 2:
            raise ValueError(f"NGramMarkovICL.n_states must be >= 2, got {self.n_states}.")
        if self.order < 1:
            raise ValueError(f"NGramMarkovICL.order must be >= 1 (parents), got {self.order}.")
        if self.seq_len <= self.order:
            raise ValueError(
                f"NGramMarkovICL.seq_len must exceed order={self.order}, got {self.seq_len}."
            )
        if not self.alpha > 0:
            raise ValueError(f"NGramMarkovICL.alpha must be > 0, got {self.alpha}.")
        if self.n_states**self.order > 4096:
            raise ValueError(
                f"NGramMarkovICL: n_states ** order = {self.n_states**self.order} contexts is "
                "more than 4096; use fewer states or a lower order."
            )

    @property
    def d_vocab(self) -> int:
        return self.n_states

    @property
    def n_contexts(self) -> int:
        return self.n_states**self.order

    def context_index(self, tokens: Tensor) -> Tensor:
        """`[batch, pos - order + 1]`: the index of each window of `order` tokens, the most
        recent token the least significant digit (window ending at position t, t >= order-1)."""
        S, r = self.n_states, self.order
        idx = torch.zeros_like(tokens[:, r - 1 :])
        for j in range(r):  # parent -(j+1) of the next token is the window's (r-1-j)-th token
            idx = idx + tokens[:, r - 1 - j : tokens.shape[1] - j] * S**j
        return idx

    def tables(self, batch_size: int, g: torch.Generator, device) -> Tensor:
        """`[batch, S^order, S]` transition tables, every row Dirichlet(alpha)."""
        gam = sample_gamma(self.alpha, (batch_size, self.n_contexts, self.n_states), g, device)
        return gam / gam.sum(-1, keepdim=True)

    def sample(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        g = generator(seed, device)
        S, r, n = self.n_states, self.order, self.seq_len + 1  # n: the chain, target included
        P = self.tables(batch_size, g, device)
        first = torch.randint(S, (batch_size, r), generator=g, device=device)
        # window w = (oldest .. newest) as an index with the newest least significant; the next
        # window drops the oldest digit and appends the drawn token
        u = torch.rand(batch_size, n - r, self.n_contexts, 1, generator=g, device=device)
        cdf = P.cumsum(-1)[:, None]  # [b, 1, contexts, S]
        nxt = (u > cdf[..., :-1]).sum(-1)  # [b, n - r, contexts]: next token per window
        w = torch.arange(self.n_contexts, device=device)
        maps = (w % S ** (r - 1)) * S + nxt  # next window
        prefix = compose_prefix(maps)
        w0 = self.context_index(first)[:, 0]
        windows = prefix.gather(-1, w0[:, None, None].expand(-1, n - r, 1)).squeeze(-1)
        chain = torch.cat([first, windows % S], dim=1)  # each window's newest token
        tokens, targets = chain[:, :-1], chain[:, 1:]
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        if self.final_only:
            mask[:, -1] = True
        else:
            mask[:, r - 1 :] = True
        return Batch(tokens, targets, mask, info={"tables": P})

    def bayes_probs(self, tokens: Tensor, targets: Tensor) -> Tensor:
        """`[batch, pos - order + 1, S]`: the posterior predictive of the next token at each
        position t >= order - 1 given the tokens up to t: (n_{c,y} + alpha) / (n_c + S alpha),
        n counting the transitions c -> y completed before t."""
        S, r = self.n_states, self.order
        ctx = F.one_hot(self.context_index(tokens), self.n_contexts).float()  # [b, p', C]
        nxt = F.one_hot(targets[:, r - 1 :], S).float()  # [b, p', S]
        seen = ctx[..., :, None] * nxt[..., None, :]
        counts = seen.cumsum(1) - seen  # strictly before t
        row = torch.einsum("bpc,bpcs->bps", ctx, counts)
        return (row + self.alpha) / (row.sum(-1, keepdim=True) + S * self.alpha)

    def bayes_loss(self, batch: Batch) -> Tensor:
        """Per-position NLL `[batch, pos]` of the Bayes predictor (0 where unscored)."""
        r = self.order
        probs = self.bayes_probs(batch.tokens, batch.targets)
        nll = -probs.gather(-1, batch.targets[:, r - 1 :, None]).squeeze(-1).log()
        out = torch.zeros(batch.targets.shape, dtype=nll.dtype, device=nll.device)
        out[:, r - 1 :] = nll
        return out * batch.mask
