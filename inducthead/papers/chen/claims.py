"""The paper's claims (`.paper`) and how our numbers are judged against them (`status`).

Sources: Chen et al. 2024 (arXiv 2409.10559), section 3 and Theorem 3.6 (the three-stage
dynamics), Figs. 5-6; the final values in the authors' result files (RPE/results_paper/NGram at
gszfwsb/Unveiling-Induction-Heads 9a620e4). Thresholds:
- selector: p_S* >= 0.9 (the authors' full model ends at 0.971; their simplified at 1.000).
- parent heads: heads 1 and 2 gain >= 0.01 attention on their own lag over init (0.901 at
  w+ 3, w- 0.1) and head 3 moves by < 0.01 (the authors': 0.94 / 0.98 / 0.90).
- a grows: a ends >= 100x its init 0.01 (the authors' 11.35 after 50000 epochs).
- Bayes: the validation NLL is within 0.05 nats of the Bayes estimator's on the same sequences
  (the gap a 500-sequence run closes to in 2000 steps was 0.027; measured, not the paper's).
"""

from __future__ import annotations

from inducthead.papers.chen.model import min_authors_loss
from inducthead.papers.common import Claim

INIT_OWN_LAG = 0.901  # softmax of (3, 0.1, 0.1): a head's own-lag attention at init

PAPER = [
    Claim(
        "selector",
        "the FFN selector concentrates on the parent heads S* = {1, 2}",
        "p_S* -> 1 (Fig. 5); authors' files: p_110 = 1.000 (simplified), 0.971 (full model)",
        "Theorem 3.6, Fig. 5; RPE/results_paper",
        provisional=False,
    ),
    Claim(
        "parent_heads",
        "heads 1 and 2 attend to parents -1, -2; head 3 stays near init",
        "sigma(w) -> 1 on the parent lag; authors' files: own-lag 0.94 / 0.98 / 0.90",
        "Theorem 3.6 (stage 2), Fig. 6; RPE/results_paper",
        provisional=False,
    ),
    Claim(
        "a_grows",
        "the classifier scale a grows",
        "a grows (stage 3); authors' files: a = 11.35 after 50000 epochs",
        "Theorem 3.6 (stage 3); RPE/results_paper",
        provisional=False,
    ),
    Claim(
        "bayes",
        "the trained model approaches the in-context Bayes estimator",
        "kernel-regression-like ICL close to the Bayes predictor; authors' files: val loss "
        "0.652 in their quantity (floor 0.5514)",
        "section 3.3, Theorem 3.6; RPE/results_paper",
    ),
    Claim(
        "staged",
        "staged training (C, then W, then a) ends in the same circuit",
        "the three stages of Theorem 3.6",
        "Theorem 3.6",
        provisional=False,
    ),
    Claim(
        "full_model",
        "the full model (Q/K/OV projections, LayerNorm) learns the same selector",
        "authors' files: p_110 = 0.971, a = 3.10 (lr 1e-3, 50000 epochs; w+ 1 ends on 011)",
        "RPE/results_paper (Full_*, w+ 3)",
    ),
]


def _circuit(r: dict) -> tuple[bool, str]:
    own = r["parent_attention"]
    ok = (
        r["p_star"] >= 0.9
        and min(own[0], own[1]) >= INIT_OWN_LAG + 0.01
        and abs(own[2] - INIT_OWN_LAG) < 0.01
    )
    text = f"p_110 {r['p_star']:.3f}, own-lag " + " / ".join(f"{v:.3f}" for v in own)
    return ok, text


def judge(m: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(ours, status) per claim key from the metrics."""
    ours, status = {}, {}
    j = m["joint"]
    top = max(j["p_S"], key=j["p_S"].get)
    ours["selector"] = f"p_110 {j['p_star']:.3f} (largest: {top}) after {j['steps']} steps"
    if "joint_nll" in m:  # the same run on the true NLL: the objective decides
        n = m["joint_nll"]
        ours["selector"] += (
            f"; trained on the true NLL instead: p_110 peaks at {n['peak_p_star']:.3f}, ends at "
            f"{n['p_star']:.3f} after {n['steps']} steps (p_100 {n['p_S']['100']:.3f})"
        )
    status["selector"] = "reproduced" if j["p_star"] >= 0.9 else "differs"
    own = j["parent_attention"]
    abl = j["head_ablation"]
    ours["parent_heads"] = (
        "own-lag " + " / ".join(f"{v:.3f}" for v in own) + " (init 0.901); zeroing a head "
        "raises the val NLL by " + ", ".join(f"{h} {d:+.3f}" for h, d in abl.items())
    )
    heads_ok = min(own[0], own[1]) >= INIT_OWN_LAG + 0.01 and abs(own[2] - INIT_OWN_LAG) < 0.01
    status["parent_heads"] = "reproduced" if heads_ok else "differs"
    ours["a_grows"] = f"a 0.01 -> {j['a_final']:.2f} in {j['steps']} steps"
    status["a_grows"] = "reproduced" if j["a_final"] >= 1.0 else "differs"
    gap = j["val_loss"] - m["bayes_loss"]
    ours["bayes"] = (
        f"val NLL {j['val_loss']:.3f} vs Bayes {m['bayes_loss']:.3f} (gap {gap:+.3f}); "
        f"authors' quantity {j['authors_val_loss']:.3f} (its floor {min_authors_loss(3):.4f})"
    )
    status["bayes"] = "reproduced" if gap <= 0.05 else "partly"
    if "staged" in m:
        ok, text = _circuit(m["staged"])
        ours["staged"] = (
            f"{text}, a {m['staged']['a_final']:.2f}, val NLL {m['staged']['val_loss']:.3f}"
        )
        status["staged"] = "reproduced" if ok else "differs"
    else:
        ours["staged"], status["staged"] = "not run (runs=...)", "not run"
    if "full_model" in m:
        f = m["full_model"]
        ours["full_model"] = (
            f"p_110 {f['p_star']:.3f}, a {f['a_final']:.2f}, val NLL {f['val_loss']:.3f} after "
            f"{f['steps']} steps"
        )
        status["full_model"] = (
            "reproduced" if f["p_star"] >= 0.9 else "partly" if f["p_star"] > 1 / 7 else "differs"
        )
    else:
        ours["full_model"], status["full_model"] = "not run (runs=...)", "not run"
    return ours, status
