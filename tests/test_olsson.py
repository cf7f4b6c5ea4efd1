"""papers/olsson: the run shipping round trip, per-token losses with and without
pattern-preserving ablation, the ICL score of a loss table, the joint PCA and its pivot on
trajectories built by hand, the claims' verdicts on hand-made measurements, bad input, the full
mode's path at a toy size and `inducthead reproduce olsson` on the shipped runs (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from test_bpe_corpus import write_docs

import inducthead as ih
from inducthead.causal import default_data
from inducthead.papers.olsson import analysis, claims, pca, runs
from inducthead.tasks import BPECorpus


def _run_losses(turn: int | None, n_tokens=400, seed=0):
    """Per-token losses at 10 checkpoints laid out on a known plane (two random token-space
    directions): a fast fall that bends (rising along the second direction), then a slow
    drift along the first; from checkpoint `turn` on (None: never) the run turns down the
    second direction."""
    g = np.random.default_rng(seed)
    e1, e2 = np.linalg.qr(g.normal(size=(n_tokens, 2)))[0].T
    xy = [(30.0, -10.0), (10.0, 5.0), (0.0, 10.0)]
    for i in range(3, 10):
        x, y = xy[-1]
        xy.append((x - 1, y - 4) if turn is not None and i > turn else (x - 1, y))
    return np.array([6.0 + x * e1 + y * e2 for x, y in xy])


def test_joint_pca_finds_the_pivot_of_the_turning_run():
    steps = [0, 50, 100, 200, 300, 400, 500, 600, 800, 1000]
    straight, turning = _run_losses(None), _run_losses(5)  # turns after step 400
    joint = pca.joint_pca({"1l": straight, "2l": turning})
    c1, c2 = joint["coords"]["1l"], joint["coords"]["2l"]
    assert c1.shape == (10, 3) and sum(joint["explained_variance_ratio"][:2]) > 0.999
    assert np.allclose(c1[:6], c2[:6], atol=1e-6)  # one path until the turn
    assert c1[0, 1] < 0  # PC2 oriented: step 0 below the mean, the maximum after it
    w = pca.pivot(steps, c2[:, 1])
    assert w is not None and w["start"] == 400 and w["end"] >= 800  # from checkpoint 5 on
    assert w["peak_rate"] == pytest.approx(0.04, rel=0.05)  # 4 units of PC2 per 100 steps
    plain = pca.pivot(steps, c1[:, 1])  # the straight run only drifts (the PCs mix the plane)
    assert plain is None or plain["peak_rate"] < w["peak_rate"] / 4
    assert pca.pivot(steps, np.arange(10.0)) is None  # PC2 never falls
    with pytest.raises(ValueError, match="same tokens"):
        pca.joint_pca({"a": straight, "b": straight[:, :10]})


def test_icl_of_a_loss_table_reads_the_late_minus_the_early_index():
    losses = torch.arange(256.0).repeat(4, 1)  # loss = position: the score is late - early
    # indices 500 and 50 scaled to 255 and 26, each averaged over 11 positions: 245-255, 21-31
    assert analysis.icl(losses) == pytest.approx(250 - 26)


def test_token_losses_equal_the_model_loss_and_ablation_undoes_induction(demo_model):
    batch = default_data(demo_model, n_samples=8)
    full = analysis.token_losses(demo_model, batch, chunk=3)
    with torch.no_grad():
        logits = demo_model(batch.tokens)
    ref = F.cross_entropy(logits.transpose(1, 2), batch.targets, reduction="none")
    assert torch.allclose(full, ref, atol=1e-5)
    found = ih.detect(demo_model).induction_heads
    assert found
    ablated = analysis.token_losses(demo_model, batch, found)
    repeat = batch.mask  # tokens induction can predict
    assert ablated[repeat].mean() > full[repeat].mean() + 1.0


def test_shipped_run_loads_weights_only_and_the_eval_batch_round_trips(tmp_path):
    task = BPECorpus(
        paths=(str(write_docs(tmp_path / "docs")),),
        seq_len=24,
        vocab_size=300,
        val_every=3,
        cache_dir=str(tmp_path / "cache"),
    )
    cfg = tiny_config(d_vocab=task.d_vocab, bos_token_id=task.bos_token_id, n_ctx=24)
    recipe = ih.TrainConfig(steps=4, checkpoint_steps=(0, 2, 4), progress=False, eval_every=2)
    ih.train(ih.HookedTransformer(cfg), task, recipe, tmp_path / "run")
    steps = runs.ship(tmp_path / "run", tmp_path / "shipped", keep=(0, 2))
    assert steps == [0, 2, 4]  # the last step is always kept
    runs.ship(tmp_path / "run", tmp_path / "exact", keep=(0, 2), dtype=torch.float32)
    shipped, original = ih.Run(tmp_path / "shipped"), ih.Run(tmp_path / "run")
    exact = ih.Run(tmp_path / "exact")
    for a, b, c in zip(
        shipped.load(4).parameters(),
        original.load(4).parameters(),
        exact.load(4).parameters(),
        strict=True,
    ):
        assert a.dtype == torch.float32 and torch.equal(b, c)  # float16 read back as float32
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4) and not torch.equal(a, b)
    size = (tmp_path / "shipped" / "checkpoints" / "step_00000004.safetensors").stat().st_size
    full = (tmp_path / "run" / "checkpoints" / "step_00000004.safetensors").stat().st_size
    assert size < full / 4  # no optimizer state, half the bytes per weight
    runs.write_shared(task, tmp_path / "shipped", n=5)
    batch, ref = runs.eval_batch(tmp_path / "shipped"), task.eval_batch(5, seed=0)
    assert torch.equal(batch.tokens, ref.tokens) and torch.equal(batch.targets, ref.targets)
    assert (tmp_path / "shipped" / "tokenizer.json").is_file()
    with pytest.raises(FileNotFoundError, match="assets/olsson"):
        runs.eval_batch(tmp_path / "nowhere")


def _run(window=(400, 700), before=0.05, after=-0.45, jump=650.0, heads=("L1H0",), **extra):
    steps = [0, 100, 200, 300, 400, 500, 600, 700, 800, 1000, 2000]
    r = {
        "steps": steps,
        "induction_heads": list(heads),
        "window": {"start": window[0], "end": window[1]} if window else None,
        "icl_score_before": before,
        "icl_score_window_end": after,
        "icl_score_after": after - 0.05,
        "prefix_matching_jump_step": jump,
        "loss_gap_window": {"start": 400, "end": 600},
        "pca_pivot": {"start": 500, "end": 600, "peak_rate": 0.9},
    }
    if heads:
        r.update(
            icl_removed_by_ablation=0.95,
            icl_removed_by_control=0.02,
            control_heads=["L1H1"],
            attribution={"L0H0": 0.1, heads[0]: 0.3},
            attribution_heads={"step": window[1], "induction": list(heads)},
        )
    return {**r, **extra}


def test_claims_judge_hand_made_measurements():
    flat = _run(window=(600, 700), before=0.04, after=-0.03, jump=math.nan, heads=())
    flat["loss_gap_window"] = None
    flat["pca_pivot"] = {"start": 100, "end": 200, "peak_rate": 0.3}
    early = {"start": 100, "end": 200}
    smeared = _run(
        window=(100, 200), jump=150.0, loss_gap_window=early, pca_pivot={**early, "peak_rate": 2}
    )
    runs_ = {"1l": flat, "2l": _run(), "3l": _run(), "smeared_1l": smeared}
    ours, status = claims.judge({"runs": runs_})
    assert status["induction_heads"] == "reproduced" and "1L: none" in ours["induction_heads"]
    assert status["phase_change"] == "reproduced" and status["pca_pivot"] == "reproduced"
    assert status["ablation"] == "reproduced" and status["attribution"] == "reproduced"
    assert status["smeared_keys"] == "partly"  # no smeared 2L run: "earlier" not measured
    # a 1-layer run with a head, or with a 0.2-nat ICL fall, breaks the claims
    _, s = claims.judge({"runs": {**runs_, "1l": _run()}})
    assert s["induction_heads"] == "differs" and s["phase_change"] != "reproduced"
    # the jump two checkpoints past the window does not coincide with it
    late = _run(jump=1500.0)
    assert (
        not claims.coincides(late)["prefix_matching"]
        and claims.coincides(_run(jump=780.0))["prefix_matching"]
    )
    # a 1-layer run whose PC2 falls as fast as the others': no pivot specific to induction
    loud = {**flat, "pca_pivot": {"start": 100, "end": 200, "peak_rate": 0.8}}
    assert claims.judge({"runs": {**runs_, "1l": loud}})[1]["pca_pivot"] == "partly"
    # the largest attribution on a head that is not an induction head at the window's end
    other = _run(attribution={"L0H0": 0.4, "L1H0": 0.3})
    assert claims.judge({"runs": {**runs_, "2l": other}})[1]["attribution"] == "partly"
    # a control that removes as much as the heads: ablation not specific
    _, s = claims.judge({"runs": {**runs_, "2l": _run(icl_removed_by_control=0.9)}})
    assert s["ablation"] == "partly"
    # smeared 2L forming after 2L: "earlier" fails
    _, s = claims.judge({"runs": {**runs_, "smeared_2l": _run(jump=900.0)}})
    assert s["smeared_keys"] == "partly"
    _, s = claims.judge({"runs": {**runs_, "smeared_2l": _run(jump=150.0)}})
    assert s["smeared_keys"] == "reproduced"


def test_reproduce_bad_input_says_what_to_do(tmp_path):
    from inducthead.papers.olsson import reproduce

    with pytest.raises(ValueError, match="'quick' or 'full'"):
        reproduce("medium")
    with pytest.raises(ValueError, match="seed 0"):
        reproduce("quick", seeds=(1,))
    with pytest.raises(ValueError, match="unknown run"):
        reproduce("quick", runs=("4l",))
    with pytest.raises(ValueError, match="pass out_dir"):
        reproduce("full")
    with pytest.raises(ValueError, match="on the CPU"):
        reproduce("quick", device="cuda")


@pytest.mark.slow  # five 3-step trainings on the stdlib corpus (its BPE is cached once)
def test_full_mode_path_runs_at_toy_size(monkeypatch, tmp_path):
    # full mode is ~45 CPU-minutes (`make assets`); its code path on 3-step runs here
    from inducthead.papers.olsson import experiment

    monkeypatch.setitem(experiment.FULL, "steps", 3)
    monkeypatch.setattr(runs, "N_EVAL", 8)
    r = experiment.reproduce("full", out_dir=tmp_path, device="cpu", progress=False)
    assert r.mode == "full" and set(r.metrics["runs"]) == set(runs.RUNS)
    for key in runs.RUNS:
        assert ih.Run(tmp_path / "runs" / key).checkpoints[-1] == 3
        assert r.metrics["runs"][key]["steps"][-1] == 3
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "figure.png").is_file()
    assert runs.eval_batch(tmp_path / "runs").tokens.shape == (8, 256)
    assert set(r.status) == {c.key for c in r.paper}


@pytest.mark.slow  # ~2 min: the one quick reproduction, through the CLI
def test_cli_reproduce_olsson_quick_on_the_shipped_runs(tmp_path, capsys):
    import json

    from inducthead.cli import main

    assert main(["reproduce", "olsson", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "OlssonResult('olsson2022', quick" in printed and "claims reproduced" in printed
    m = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    runs_ = m["runs"]
    # the assertions: induction heads in 2L, none in 1L ...
    assert m["induction_heads_2l"] and m["induction_heads_1l"] == []
    assert m["induction_heads_smeared_1l"]
    # ... a window in which the ICL score falls by more than the margin (the 1-layer run's band
    # score stays within +-0.05 over training: claims.MARGIN = 0.15 is 3x that)
    for key in ("2l", "smeared_1l"):
        lo, hi = m["phase_change_window"][key]
        assert lo < hi
        r = runs_[key]
        assert r["icl_score_before"] - r["icl_score_window_end"] > claims.MARGIN
        assert claims.coincides(runs_[key])["prefix_matching"]
    one = runs_["1l"]
    # no ICL in one layer: its steepest fall is noise (measured +0.05 -> -0.03), none at the end
    assert one["icl_score_before"] - one["icl_score_window_end"] < claims.MARGIN
    assert abs(one["icl_score_after"]) < claims.MARGIN / 2
    # ablation removes most of the ICL score; the same-layer control does not
    assert m["icl_removed_by_ablation"]["2l"] > 0.5
    assert runs_["2l"]["icl_removed_by_control"] < 0.25
    assert (tmp_path / "figure.png").stat().st_size > 10_000
