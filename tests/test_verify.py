import json
import math
import runpy

import pytest
import torch
from conftest import ASSETS

import inducthead as ih
from inducthead.causal import CausalReport, VerifyThresholds, default_data, verify
from inducthead.cli import main
from inducthead.model import induction_circuit


@pytest.fixture(scope="module")
def demo_report(demo_model):
    return verify(demo_model, data=default_data(demo_model, n_samples=32))


def test_demo_model_induction_heads_are_confirmed(demo_model, demo_report):
    """Measured on 64 sequences (README): each head alone +0.44 / +0.48 nats (0.11-0.12 of the
    gap to the no-context baseline), 65-70x its control heads; L0H0 ablated drops prefix matching
    0.93-0.95 -> 0.04, restored 101% through the key, 0% through the query."""
    r = demo_report
    detected = ih.detect(demo_model).induction_heads
    assert sorted(r.confirmed) == sorted(detected) == [(1, 0), (1, 1)]
    t = VerifyThresholds()
    for head in detected:
        row = r.rows[head]
        assert row["loss_share"] > 2 * t.loss_share
        assert row["specificity"] > 2 * t.specificity
        assert row["senders"] == [(0, 0)]
        assert row["prefix_drop"] > 0.8 and row["key_recovery"] > 0.9
        assert abs(row["query_recovery"]) < 0.05
    # together they are the model's in-context learning: accuracy falls to the baseline
    assert r.joint["accuracy_share"] > 0.9 and r.joint["loss_share"] > 0.9
    assert r.joint["specificity"] > 10


def test_hand_built_roles():
    model, roles = induction_circuit(d_vocab=24, n_ctx=64)
    data = default_data(model, n_samples=16)
    heads = [roles.induction, roles.anti_induction, roles.positional_shortcut, roles.zero[-1]]
    r = verify(model, heads=heads, data=data)
    assert r.confirmed == [roles.induction]
    v = {h: r.verdicts(h) for h in heads}
    assert v[roles.induction] == {"a": True, "b": True, "c": True}
    assert not v[roles.anti_induction]["a"]  # ablating it lowers the loss
    assert v[roles.anti_induction]["c"]  # it does attend by K-composition
    assert not v[roles.positional_shortcut]["c"]  # attends by position: no K-composition
    assert r.rows[roles.zero[-1]]["loss_effect"] == 0.0
    assert r.rows[roles.induction]["key_recovery"] == pytest.approx(1.0, abs=1e-4)


def test_untrained_model_confirms_nothing():
    model = ih.HookedTransformer(ih.configs.get("demo").model).eval()
    r = verify(model, heads=[(1, 0), (1, 1)], data=default_data(model, n_samples=16))
    assert r.confirmed == []
    assert all(not any(r.verdicts(h).values()) for h in r.candidates)


def test_report_outputs(demo_report, tmp_path):
    r = demo_report
    df = r.to_dataframe()
    assert list(df["label"]) == ["L1H1", "L1H0"] and df["confirmed"].all()
    assert {"loss_effect", "loss_share", "specificity", "key_recovery", "a", "b", "c"} <= set(df)
    assert "confirmed: L1H1, L1H0" in repr(r)
    assert "CONFIRMED" in str(r) and "(c) PASS" in str(r)
    html = r._repr_html_()
    assert "<table" in html and "K-composition" in html
    fig = r.plot()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["loss", "accuracy"]
    for ax in panels:  # the confirmed heads are outlined, and only they
        boxes = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches]
        assert sorted((int(y), int(x)) for x, y in boxes) == sorted(r.confirmed)
        values = ax.images[0].get_array()
        torch.testing.assert_close(torch.tensor(values.data), r.scores[ax.get_title()])
    data = json.loads(r.to_json(tmp_path / "verify.json"))
    assert data["confirmed"] == ["L1H1", "L1H0"] and data["heads"]["L1H0"]["c"] is True


def test_no_candidates(demo_model):
    r = verify(demo_model, heads=[], data=default_data(demo_model, n_samples=4))
    assert r.confirmed == [] and r.to_dataframe().empty
    assert "no candidate heads" in str(r)
    assert isinstance(r, CausalReport)


def test_bad_heads(demo_model):
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.1 and heads 0\.\.1"):
        verify(demo_model, heads=["L3H0"])


def test_public_api():
    for name in (
        "verify",
        "CausalReport",
        "ablate",
        "ablation_scan",
        "AblationResult",
        "icl_score",
        "loss_by_position",
        "patch_heads",
        "path_patch",
        "clamp",
    ):
        assert name in ih.__all__ and callable(getattr(ih, name))


def test_cli_verify_and_ablate(capsys, tmp_path):
    demo = str(ASSETS / "demo")
    out_json = tmp_path / "v.json"
    assert main(["verify", demo, "--samples", "16", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "confirmed: L1H1, L1H0" in out and out_json.is_file()
    code = main(["ablate", demo, "--heads", "L1H0,L1H1", "--mode", "pattern_preserving"])
    out = capsys.readouterr().out
    assert code == 0
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    clean, ablated, delta = (float(x) for x in lines["loss"])
    assert delta == pytest.approx(ablated - clean, abs=2e-3) and delta > 3
    assert float(lines["accuracy"][2]) < -0.8
    assert {"logit_diff", "icl_score"} <= set(lines)
    assert main(["ablate", demo, "--heads", "L1H9"]) == 2
    assert "valid layers are 0..1 and heads 0..1" in capsys.readouterr().err
    assert main(["ablate", demo, "--heads", "L1H0", "--mode", "mean", "--samples", "8"]) == 0
    assert "mean over: default repeated-token data" in capsys.readouterr().out


def test_cli_on_a_pretrained_gpt2(tiny_gpt2_dir, capsys):
    """A TransformerBridge with LayerNorm and MLPs (random weights: nothing to confirm)."""
    target = ["--pretrained", str(tiny_gpt2_dir), "--samples", "8"]
    assert main(["verify", *target]) == 0
    assert "no candidate heads" in capsys.readouterr().out
    assert main(["verify", *target, "--heads", "L1H0,L1H3"]) == 0
    out = capsys.readouterr().out
    assert "confirmed: none" in out and "does not beat the no-context baseline" in out
    assert main(["ablate", *target, "--heads", "L1H0", "--mode", "pattern_preserving"]) == 0
    out = capsys.readouterr().out
    assert "ablating L1H0 (pattern_preserving)" in out and "icl_score" in out


def test_shipped_tutorial_runs(capsys):
    runpy.run_path(str(ASSETS.parent / "tutorials" / "ablate_heads.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "confirmed: L1H1, L1H0" in out and "ICL score" in out and "via k" in out


def test_verify_on_a_bridge_matches(demo_model, demo_report):
    bridge = ih.to_bridge(demo_model).eval()
    data = default_data(demo_model, n_samples=32)  # with BOS, as for our model
    theirs = verify(bridge, data=data, detection=ih.detect(bridge, bos_token_id=0))
    assert theirs.confirmed == demo_report.confirmed
    for head, row in demo_report.rows.items():
        for key, value in row.items():
            if isinstance(value, float) and math.isfinite(value):
                assert theirs.rows[head][key] == pytest.approx(value, abs=1e-4, rel=1e-4), key
    torch.testing.assert_close(theirs.scores["loss"], demo_report.scores["loss"], atol=1e-5, rtol=0)


def test_control_sets_are_drawn_uniformly():
    """Three candidates in a 12-head layer leave 9 controls per pool: each control set is a
    uniform draw of 3 distinct heads, so 1 - C(7,3)/C(9,3) = 0.583 of them hold L1H3 or L1H4."""
    from inducthead.analysis import Head
    from inducthead.causal.verify import _control_sets

    pool = [Head(1, h) for h in range(3, 12)]
    sets = [s for seed in range(200) for s in _control_sets([pool] * 3, 8, seed)]
    assert len(sets) == 1600 and all(len(set(s)) == 3 for s in sets)
    share = sum(any(h in s for h in ((1, 3), (1, 4))) for s in sets) / len(sets)
    assert share == pytest.approx(1 - 35 / 84, abs=0.04)
    per_head = [sum(h in s for s in sets) / len(sets) for h in pool]
    assert max(per_head) - min(per_head) < 0.08  # every head about 3/9 of the sets


@pytest.mark.slow  # a joint-ablation subset search (~1.2 s)
def test_redundant_induction_heads_are_confirmed_together():
    """Two copies of the induction head: either alone predicts the repeats, so ablating one
    costs little (check (a) fails alone) while ablating both destroys induction. Both are
    confirmed, as sharing the job; the positional-shortcut decoy is not."""
    from inducthead.tasks import RepeatedTokens

    model, roles = induction_circuit(d_vocab=24, n_ctx=64, redundant=True, induction_strength=14)
    data = RepeatedTokens(24, 64, 13, 13, held_out_periods=()).sample(32, seed=0)
    heads = [roles.induction, roles.redundant_induction, roles.positional_shortcut]
    r = verify(model, heads=heads, data=data)
    assert sorted(r.confirmed) == [(1, 0), (1, 3)]
    for head, other in ((roles.induction, roles.redundant_induction),) * 1 + (
        (roles.redundant_induction, roles.induction),
    ):
        row = r.rows[head]
        assert row["loss_share"] < r.thresholds.loss_share  # alone: not enough
        assert row["redundant_with"] == [other] and row["joint_share"] > 1.0
    assert r.rows[roles.positional_shortcut]["redundant_with"] == []
    assert "the heads are redundant" in str(r)
    again = CausalReport.from_json(r.to_json())
    assert again.confirmed == r.confirmed and again.rows[(1, 0)]["redundant_with"] == [(1, 3)]


def test_an_untrained_model_is_described_without_nan_shares():
    model = ih.HookedTransformer(ih.presets.get("demo").model).eval()
    r = verify(model, heads=[(1, 0), (1, 1)], data=default_data(model, n_samples=16))
    assert "nan" not in str(r) and "does not beat" in str(r)


def test_few_sequences_warn(demo_model):
    with pytest.warns(UserWarning, match="verify on 4 sequence"):
        verify(demo_model, data=default_data(demo_model, n_samples=4))


def test_verify_takes_the_probe_of_detect(tmp_path, capsys):
    """A model whose vocabulary is too small for detect's default probe period is verified
    with a probe it can take (`--period`)."""
    from inducthead.tasks import RepeatedTokens

    model, _ = induction_circuit(d_vocab=12, n_ctx=64)
    with pytest.raises(ValueError, match="pass period <= 11"):
        ih.detect(model)
    path = tmp_path / "m.safetensors"
    from inducthead.runs import checkpoint as ckpt

    ckpt.write_checkpoint(path, model)
    assert main(["verify", str(path), "--period", "8", "--samples", "16"]) == 0
    assert "confirmed: L1H0" in capsys.readouterr().out
    assert RepeatedTokens  # the data verify builds is repeated tokens of periods <= 11
