"""What a trajectory measures on one checkpoint. Each function takes the checkpoint's
`ModelAdapter` and returns plain lists and floats (what the cache stores).

- `head_scores`: `inducthead.detect`'s scores (one batched forward pass over its probes).
- `eval_outputs`: from one forward pass over the evaluation batch: the masked loss (the run's
  `eval_loss`), the ICL score (`inducthead.icl_score`'s definition, Olsson et al. 2022) and the
  loss at each position (`inducthead.loss_by_position`).
- `example_outputs`: per-token losses (or centred logits) at one fixed random position of each
  example, the vectors behind the per-token-loss PCA and essential dynamics.
- `progress_measures`: Musat et al. 2025's weight-space measures (provisional, see there).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings

import torch
from torch import Tensor

from inducthead.analysis import ModelAdapter, detect_heads
from inducthead.causal.data import n_targets
from inducthead.causal.metrics import icl_metric
from inducthead.model import token_nll
from inducthead.tasks import Batch

ABSOLUTE_POSITIONS = ("standard", "shortformer")


def fingerprint(*tensors: Tensor) -> str:
    """A short hash of tensors' values (the data a cached result was computed on)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def batch_fingerprint(batch: Batch) -> str:
    return fingerprint(batch.tokens, batch.targets, batch.mask)


def head_scores(adapter: ModelAdapter, probe: dict) -> dict:
    """`detect`'s per-head scores, `{score: [[layer][head]]}`; `probe` holds detect's keyword
    arguments (n_samples, period, repeats, seed). Probe-shortening warnings are raised once by
    the trajectory, not once per checkpoint."""
    notes = []
    content = adapter.d_vocab - (adapter.bos_token_id is not None)
    if probe["period"] > content:  # tokens within a period are distinct
        notes.append(
            f"probe period {probe['period']} > the {content} non-BOS tokens: used {content}"
        )
        probe = {**probe, "period": content}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = detect_heads(adapter, **probe)
    out = {k: v.tolist() for k, v in result.scores.items()}
    out["__notes__"] = notes + list(result.warnings)
    return out


def logits(adapter: ModelAdapter, tokens: Tensor) -> Tensor:
    """The model's logits, through our model's SDPA path (`fast_attention`: the same function,
    tested in float64, without materialising attention patterns) when it has one."""
    fast = getattr(adapter.model, "fast_attention", None)
    with fast() if callable(fast) else contextlib.nullcontext():
        return adapter.logits(tokens)


def eval_outputs(adapter: ModelAdapter, batch: Batch, early: int = 50, late: int = 500) -> dict:
    """Loss, ICL score and loss by position from one forward pass over `batch`."""
    batch = batch.to(adapter.device)
    out = logits(adapter, batch.tokens)
    nll = token_nll(out, batch.targets)
    mask = batch.mask
    loss = float(nll[mask].mean()) if mask.any() else math.nan
    return {
        "loss": loss,
        "icl_score": float(icl_metric(early, late)(out, batch)),
        "loss_by_position": nll[:, : n_targets(batch)].mean(0).tolist(),
    }


def example_positions(batch: Batch, seed: int) -> Tensor:
    """One random position per example, fixed by `seed` (Olsson et al. 2022's per-token loss
    vectors: each example contributes the loss at one random token index, the same index at
    every checkpoint and in every run compared)."""
    g = torch.Generator().manual_seed(int(seed))
    n = n_targets(batch)
    return torch.randint(0, n, (len(batch),), generator=g)


def example_outputs(
    adapter: ModelAdapter, batch: Batch, positions: Tensor, output: str = "loss"
) -> dict:
    """At `positions[b]` of each example b: the per-token loss ("loss"), or the logits there
    minus their mean over the vocabulary ("logits": logits are defined up to that shift)."""
    batch = batch.to(adapter.device)
    out = logits(adapter, batch.tokens)
    rows = torch.arange(len(batch), device=out.device)
    picked = out[rows, positions.to(out.device)].float()
    if output == "loss":
        targets = batch.targets[rows, positions.to(out.device)]
        return {"values": token_nll(picked, targets).tolist()}
    if output == "logits":
        return {"values": (picked - picked.mean(-1, keepdim=True)).flatten().tolist()}
    raise ValueError(f"output must be 'loss' or 'logits', got {output!r}.")


def progress_measures(adapter: ModelAdapter) -> dict:
    """Musat et al. 2025's progress measures for a 2-layer induction circuit, per head.

    PROVISIONAL: written from the issue's statement of them, not yet checked against the paper
    (Musat, Pimentel, Noci et al. 2025, "On the Emergence of Induction Heads for In-Context
    Learning"); the normalisation and the exact index ranges may differ there. With TL's row
    convention (`x @ W_Q` is the query of residual vector x), for layer-0 head h, layer-1 head h:

    - alpha[h] = sum_{i>=1} (p_{i-1} W_K^0[h]) . (p_i W_Q^0[h]): layer 0 attends to the previous
      position (the paper's alpha ~ 3); p_i = W_pos[i].
    - beta[h] = sum_t (t W_OV^0 W_K^1[h]) . (t W_Q^1[h]), W_OV^0 = sum_h' W_V^0[h'] W_O^0[h']:
      layer 1 matches a token through layer 0's output (beta ~ 2); t = rows of W_E.
    - gamma[h] = tr(W_E W_V^1[h] W_O^1[h] W_U): layer 1 copies (gamma ~ 3).

    alpha needs learned absolute positions (positional_embedding_type "standard" or
    "shortformer"); for rotary, ALiBi, relative or no positions it is NaN (noted), beta and gamma
    are still defined. Norms are ignored (exact for models without LayerNorm). Models with more
    than two layers use layers 0 and 1 (noted); one-layer models raise ValueError.
    """
    if adapter.n_layers < 2:
        raise ValueError("progress measures need at least 2 layers (a 2-layer induction circuit).")
    notes = []
    if adapter.n_layers > 2:
        notes.append(f"{adapter.n_layers} layers: measured on layers 0 and 1 only")
    pos_type = getattr(adapter.model.cfg, "positional_embedding_type", "standard")
    with torch.no_grad():
        W_Q, W_K, W_V, W_O = (
            w.double() for w in (adapter.W_Q, adapter.W_K, adapter.W_V, adapter.W_O)
        )
        E, U = adapter.W_E.double(), adapter.W_U.double()
        if pos_type in ABSOLUTE_POSITIONS and getattr(adapter.model, "W_pos", None) is not None:
            P = adapter.model.W_pos.double()
            q = torch.einsum("id,hde->hie", P[1:], W_Q[0])  # [h, i, d_head]
            k = torch.einsum("id,hde->hie", P[:-1], W_K[0])
            alpha = (q * k).sum((-1, -2)).tolist()
        else:
            alpha = [math.nan] * adapter.n_heads
            notes.append(
                f"alpha undefined: positional_embedding_type {pos_type!r} (no learned positions)"
            )
        W_OV0 = torch.einsum("hde,hef->df", W_V[0], W_O[0])  # [d_model, d_model]
        key = torch.einsum("td,df,hfe->hte", E, W_OV0, W_K[1])
        query = torch.einsum("td,hde->hte", E, W_Q[1])
        beta = (key * query).sum((-1, -2)).tolist()
        # tr(E V O U) = tr(O U E V): the [d_head, d_head] form, cheap for large vocabularies
        if U.shape[1] == E.shape[0]:
            circuit = torch.einsum("hef,fv,vd,hdg->heg", W_O[1], U, E, W_V[1])
            gamma = circuit.diagonal(dim1=-2, dim2=-1).sum(-1).tolist()
        else:
            gamma = [math.nan] * adapter.n_heads
            notes.append("gamma undefined: d_vocab_out != d_vocab")
    return {"alpha": alpha, "beta": beta, "gamma": gamma, "__notes__": notes}
