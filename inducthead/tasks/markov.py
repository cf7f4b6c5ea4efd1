"""In-context Markov chains (Edelman et al. 2024, The Evolution of Statistical Induction Heads)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from inducthead.tasks.base import Batch, Task, generator


def sample_gamma(alpha: float, shape: tuple[int, ...], g: torch.Generator, device) -> Tensor:
    """Gamma(alpha, 1) samples drawn from `g` (Marsaglia & Tsang 2000; alpha < 1 via the boost
    Gamma(a) = Gamma(a + 1) * U^(1/a)). torch's own gamma sampler takes no generator."""
    a = alpha + 1.0 if alpha < 1 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    out = torch.empty(shape, device=device)
    todo = torch.ones(shape, dtype=torch.bool, device=device)
    while bool(todo.any()):  # each round accepts >95% of the remaining draws
        x = torch.randn(shape, generator=g, device=device)
        v = (1 + c * x) ** 3
        u = torch.rand(shape, generator=g, device=device)
        ok = (v > 0) & (u.log() < 0.5 * x**2 + d - d * v + d * v.clamp(min=1e-30).log())
        take = ok & todo
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    if alpha < 1:
        out = out * torch.rand(shape, generator=g, device=device) ** (1.0 / alpha)
    return out


def compose_prefix(maps: Tensor) -> Tensor:
    """Given maps f_t `[batch, T, k]` (f_t[s] = next state from s), return prefix compositions
    P_t = f_t ∘ ... ∘ f_0 for every t, by a Hillis–Steele scan: O(log T) vectorised gathers."""
    prefix = maps.clone()
    step = 1
    while step < prefix.shape[1]:
        later, earlier = prefix[:, step:], prefix[:, :-step]
        prefix = torch.cat([prefix[:, :step], later.gather(-1, earlier)], dim=1)
        step *= 2
    return prefix


@dataclass
class MarkovICL(Task):
    """Each sequence is a Markov chain over `n_states` symbols with its own transition matrix,
    rows drawn from Dirichlet(alpha) (Edelman et al. 2024, section 2). Nothing about the matrix
    can be memorised: the model must predict from the bigram statistics of the context, which
    statistical induction heads implement. `bayes_loss` gives the optimal in-context predictor's
    loss, (n_ij + alpha) / (n_i + k·alpha), as the floor to compare with.

    Sampling is vectorised: every step's next-state choice for every state is drawn at once, and
    the chain is the prefix composition of those maps (no loop over positions).
    """

    name = "markov_icl"
    n_states: int = 3
    seq_len: int = 100
    alpha: float = 1.0
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.n_states < 2:
            raise ValueError(f"MarkovICL.n_states must be >= 2, got {self.n_states}.")
        if self.seq_len < 2:
            raise ValueError(f"MarkovICL.seq_len must be >= 2, got {self.seq_len}.")
        if not self.alpha > 0:
            raise ValueError(f"MarkovICL.alpha must be > 0, got {self.alpha}.")
        if self.bos_token_id is not None and self.bos_token_id != self.n_states:
            raise ValueError(
                f"MarkovICL.bos_token_id must be None or n_states={self.n_states} (the id after "
                f"the symbols), got {self.bos_token_id}."
            )

    @property
    def d_vocab(self) -> int:
        return self.n_states + (self.bos_token_id is not None)

    def transition_matrices(self, batch_size: int, g: torch.Generator, device) -> Tensor:
        k = self.n_states
        gam = sample_gamma(self.alpha, (batch_size, k, k), g, device)
        return gam / gam.sum(-1, keepdim=True)

    def sample(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        g = generator(seed, device)
        k, bos = self.n_states, self.bos_token_id is not None
        n = self.seq_len + 1 - bos  # chain length
        P = self.transition_matrices(batch_size, g, device)
        x0 = torch.randint(k, (batch_size,), generator=g, device=device)
        # maps[b, t, s]: the state after s at step t, drawn by inverse CDF of P[b, s].
        u = torch.rand(batch_size, n - 1, k, 1, generator=g, device=device)
        cdf = P.cumsum(-1)[:, None]  # [b, 1, k, k]
        maps = (u > cdf[..., :-1]).sum(-1)  # [b, n - 1, k]
        prefix = compose_prefix(maps)
        rest = prefix.gather(-1, x0[:, None, None].expand(-1, n - 1, 1)).squeeze(-1)
        chain = torch.cat([x0[:, None], rest], dim=1)
        if bos:
            chain = torch.cat([torch.full_like(chain[:, :1], k), chain], dim=1)
        tokens, targets = chain[:, :-1], chain[:, 1:]
        mask = torch.ones_like(tokens, dtype=torch.bool)
        if bos:
            mask[:, 0] = False  # the first symbol after BOS is uniform: no context to use
        return Batch(tokens, targets, mask, info={"transitions": P})

    def bayes_loss(self, batch: Batch) -> Tensor:
        """Per-position loss `[batch, pos]` of the Bayes-optimal in-context bigram predictor."""
        k, a = self.n_states, self.alpha
        tokens, targets = batch.tokens, batch.targets
        valid = tokens < k  # BOS has no outgoing bigram statistics
        prev = F.one_hot(tokens.clamp(max=k - 1), k) * valid[..., None]  # [b, p, k]
        nxt = F.one_hot(targets, k)
        # counts[b, t, i, j]: bigrams i->j seen strictly before the prediction at t.
        bigrams = prev[..., :, None] * nxt[..., None, :]
        counts = bigrams.cumsum(1) - bigrams
        row = (counts * prev[..., :, None]).sum(-2).float()  # counts from the current token
        probs = (row + a) / (row.sum(-1, keepdim=True) + k * a)
        return -probs.gather(-1, targets[..., None]).squeeze(-1).log()
