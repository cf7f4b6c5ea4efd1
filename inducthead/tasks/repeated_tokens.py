"""Repeated random tokens with a random period and offset: the induction-head training task."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inducthead.tasks.base import Batch, Task, generator


@dataclass
class RepeatedTokens(Task):
    """BOS, then random tokens; from a random offset `o` on, a random segment of period `p` repeats
    to the end: `content[j] = content[o + (j - o) mod p]` for `j >= o`.

    The period is drawn per sequence from [min_period, max_period] minus `held_out_periods` (kept
    for evaluation, `eval_batch`), and the offset uniformly in [0, L - 2p], so neither a fixed
    position nor a fixed distance solves the task: a fixed period teaches a positional shortcut
    with no previous-token head (measured on the demo preset). With `distinct`, the tokens of one
    period are drawn without replacement, so the induction target is unambiguous.

    The loss mask (`predictable_only`) keeps only targets induction can predict: content index
    j >= o + p + 1, whose previous token already occurred one period earlier.
    """

    name = "repeated_tokens"
    d_vocab: int = 64
    seq_len: int = 128
    min_period: int = 4
    max_period: int = 40
    held_out_periods: tuple[int, ...] = (13, 25, 37)
    bos_token_id: int | None = 0
    distinct: bool = True
    predictable_only: bool = True

    def __post_init__(self) -> None:
        self.held_out_periods = tuple(int(p) for p in self.held_out_periods)
        n_content = self.d_vocab - (self.bos_token_id is not None)
        if self.seq_len < 4:
            raise ValueError(f"RepeatedTokens.seq_len must be >= 4, got {self.seq_len}.")
        if self.bos_token_id is not None and not 0 <= self.bos_token_id < self.d_vocab:
            raise ValueError(
                f"RepeatedTokens.bos_token_id must be None or in [0, d_vocab={self.d_vocab}), "
                f"got {self.bos_token_id}."
            )
        longest = self.content_len // 2
        if not 2 <= self.min_period <= self.max_period <= longest:
            raise ValueError(
                f"RepeatedTokens periods must satisfy 2 <= min_period <= max_period <= "
                f"{longest} (half the {self.content_len} content tokens, so two periods fit); got "
                f"min_period={self.min_period}, max_period={self.max_period}."
            )
        if self.distinct and n_content < max(self.max_period, *self.held_out_periods, 0):
            raise ValueError(
                f"RepeatedTokens(distinct=True) needs at least max_period={self.max_period} "
                f"content tokens but d_vocab={self.d_vocab} has {n_content}; raise d_vocab or "
                "set distinct=False."
            )
        if not self.train_periods:
            raise ValueError("RepeatedTokens: held_out_periods leaves no period to train on.")
        bad = [p for p in self.held_out_periods if not 2 <= p <= longest]
        if bad:
            raise ValueError(f"RepeatedTokens.held_out_periods {bad} must lie in [2, {longest}].")

    @property
    def content_len(self) -> int:
        """Tokens after BOS: the input is seq_len tokens and targets are shifted by one."""
        return self.seq_len + (self.bos_token_id is None)

    @property
    def train_periods(self) -> list[int]:
        return [
            p for p in range(self.min_period, self.max_period + 1) if p not in self.held_out_periods
        ]

    def sample(self, batch_size: int, seed: int = 0, device="cpu", periods=None) -> Batch:
        """`periods`: periods to draw from (default: the training periods)."""
        periods = self.train_periods if periods is None else list(periods)
        return self._generate(batch_size, periods, seed, device)

    def eval_batch(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        """Sequences whose period is one of `held_out_periods` (never seen in training)."""
        periods = self.held_out_periods or self.train_periods
        return self._generate(batch_size, periods, seed + 10**9, device)

    def _generate(self, batch_size: int, periods: list[int], seed: int, device) -> Batch:
        g = generator(seed, device)
        L, bos = self.content_len, self.bos_token_id
        n_content = self.d_vocab - (bos is not None)
        # non_blocking: a blocking host-to-GPU copy would synchronise the stream every step
        period_table = torch.tensor(periods).to(device, non_blocking=True)
        p = period_table[torch.randint(len(periods), (batch_size,), generator=g, device=device)]
        # offset o uniform in [0, L - 2p]: at least two whole periods fit.
        o = (torch.rand(batch_size, generator=g, device=device) * (L - 2 * p + 1)).long()
        noise = torch.randint(n_content, (batch_size, L), generator=g, device=device)
        rel = torch.arange(L, device=device) - o[:, None]  # position relative to the offset
        phase = rel.clamp(min=0) % p[:, None]
        if self.distinct:
            segment = torch.rand(batch_size, n_content, generator=g, device=device).argsort(-1)
            repeated = segment.gather(1, phase)
        else:
            repeated = noise.gather(1, o[:, None] + phase)
        content = torch.where(rel >= 0, repeated, noise)
        if bos is not None:
            content = content + (content >= bos).long()  # skip over the BOS id
            bos_col = torch.full((batch_size, 1), bos, device=device, dtype=torch.long)
            full = torch.cat([bos_col, content], dim=1)
        else:
            full = content
        tokens, targets = full[:, :-1], full[:, 1:]
        if self.predictable_only:
            mask = induction_targets_mask(self.seq_len, p, o, bos is not None)
        else:
            mask = torch.ones_like(tokens, dtype=torch.bool)
        return Batch(tokens, targets, mask, info={"period": p, "offset": o})


def induction_targets_mask(seq_len: int, period: Tensor, offset: Tensor, bos: bool) -> Tensor:
    """`[batch, seq_len]` mask of input positions whose target induction can predict.

    The target at input position t is content token j = t (+1 without BOS); it is predictable
    when j >= offset + period + 1 (its previous token occurred one period earlier)."""
    j = torch.arange(seq_len, device=period.device) + (not bos)
    return j[None, :] >= (offset + period + 1)[:, None]
