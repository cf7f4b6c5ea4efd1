"""The token version of Wang et al. 2024's mixed target (arXiv 2410.11474, section 4): at each
scored position the target is, with probability `alpha`, the token `lag` positions back (the
"4-gram" part: a fixed function of the last tokens, learnable from positions alone) and
otherwise the in-context 2-gram continuation (the token that followed the previous occurrence
of the current token: the induction part). The paper's target is the convex combination
alpha* x_{L-2} + (1 - alpha*) IH(x) of Gaussian vectors under a squared loss; with tokens and
cross-entropy the same mixture is a two-point target distribution, sampled per position
(its expected loss is the cross-entropy to the mixture). PROVISIONAL (ours): the paper's own
experiments use Gaussian inputs (`inducthead.papers.wang.data`).

The inputs are `RepeatedTokens` sequences (a random segment of distinct tokens repeats from a
random offset), so the induction continuation is defined at every scored position; periods
>= 4 keep the two parts' tokens distinct (the lag-2 token and the continuation are `p - 3`
apart inside one period of distinct tokens). `info` carries both parts' targets per position,
`fourgram_target` and `induction_target`, for the loss split; the loss floor of each part is
-log alpha and -log(1 - alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from inducthead.tasks.base import Batch, Task, generator
from inducthead.tasks.repeated_tokens import RepeatedTokens


@dataclass
class MixedTargetICL(Task):
    """Repeated random tokens (BOS first) whose target at each predictable position is the
    token `lag` back with probability `alpha`, else the induction continuation."""

    name = "mixed_target_icl"
    d_vocab: int = 32
    seq_len: int = 64
    alpha: float = 0.3
    lag: int = 2
    min_period: int = 4
    max_period: int = 24
    held_out_periods: tuple[int, ...] = ()
    bos_token_id: int | None = 0

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"MixedTargetICL.alpha must be in [0, 1], got {self.alpha!r}.")
        if isinstance(self.lag, bool) or not isinstance(self.lag, int) or self.lag < 1:
            raise ValueError(f"MixedTargetICL.lag must be an int >= 1, got {self.lag!r}.")
        if self.min_period < self.lag + 2:
            raise ValueError(
                f"MixedTargetICL.min_period must be >= lag + 2 = {self.lag + 2} so the lag-"
                f"{self.lag} token and the induction continuation differ, got {self.min_period}."
            )
        self.held_out_periods = tuple(int(p) for p in self.held_out_periods)
        self._inner = RepeatedTokens(  # validates the remaining fields
            d_vocab=self.d_vocab,
            seq_len=self.seq_len,
            min_period=self.min_period,
            max_period=self.max_period,
            held_out_periods=self.held_out_periods,
            bos_token_id=self.bos_token_id,
            distinct=True,
            predictable_only=True,
        )

    def sample(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        return self._mix(self._inner.sample(batch_size, seed=seed, device=device), seed, device)

    def eval_batch(self, batch_size: int, seed: int = 0, device="cpu") -> Batch:
        held_out = self._inner.eval_batch(batch_size, seed=seed, device=device)
        return self._mix(held_out, seed + 10**9, device)  # its own branch stream too

    def _mix(self, batch: Batch, seed: int, device) -> Batch:
        tokens, induction = batch.tokens, batch.targets
        # the token `lag` back; positions < lag are never scored (the mask starts after p >= 4)
        fourgram = torch.cat([tokens[:, : self.lag], tokens[:, : -self.lag]], 1)
        mask = batch.mask & (torch.arange(tokens.shape[1], device=tokens.device) >= self.lag)
        g = generator(seed + 7 * 10**8, device)  # the branch draw: its own stream
        pick = torch.rand(tokens.shape, generator=g, device=device) < self.alpha
        info = dict(batch.info, fourgram_target=fourgram, induction_target=induction)
        return Batch(tokens, torch.where(pick, fourgram, induction), mask, info)

    def component_losses(self, logits: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Cross-entropy of the model's prediction against each part's own target over the
        scored positions ("fourgram", "induction"), and each part's floor -log alpha,
        -log(1 - alpha) (a model that puts exactly the mixture's weights on the two tokens)."""
        logp = logits.float().log_softmax(-1)
        m = batch.mask
        out = {}
        for part in ("fourgram", "induction"):
            t = batch.info[f"{part}_target"]
            out[part] = float(-logp.gather(-1, t[..., None])[..., 0][m].mean())
        a = float(self.alpha)
        out["fourgram_floor"] = -math.log(a) if a > 0 else math.inf
        out["induction_floor"] = -math.log(1 - a) if a < 1 else math.inf
        return out
