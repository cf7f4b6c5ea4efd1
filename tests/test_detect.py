import json
import math

import pytest
import torch
from conftest import tiny_config

import inducthead as ih
from inducthead.analysis import DetectionReport, Thresholds
from inducthead.cli import main
from inducthead.model import induction_circuit
from inducthead.tasks.probes import coprime_partner


@pytest.fixture(scope="module")
def circuit():
    return induction_circuit()


@pytest.fixture(scope="module")
def circuit_report(circuit):
    return ih.detect(circuit[0])


def test_hand_built_heads_are_classified_exactly(circuit, circuit_report):
    _, roles = circuit
    r = circuit_report
    assert r.induction_heads == [roles.induction]
    assert r.anti_induction_heads == [roles.anti_induction]
    assert r.previous_token_heads == [roles.previous_token]
    assert r.duplicate_token_heads == [roles.duplicate_token]
    assert r.role(roles.positional_shortcut) == ""
    assert r.scores["copying_eigen"][roles.induction] == pytest.approx(1.0)
    assert r.scores["copying_eigen"][roles.anti_induction] == pytest.approx(-1.0)
    assert r.k_composition_source[1] == roles.previous_token


@pytest.mark.parametrize("shortcut_period", [25, coprime_partner(25), 13, 40])
def test_a_positional_shortcut_is_never_an_induction_head(shortcut_period):
    model, roles = induction_circuit(shortcut_period=shortcut_period)
    report = ih.detect(model)
    assert roles.positional_shortcut not in report.induction_heads
    assert report.induction_heads == [roles.induction]
    # it does look like induction on a probe of its own period: why detect uses two periods
    probes = [k for k in report.scores if k.startswith("prefix_matching_p")]
    assert len(probes) == 2
    if shortcut_period in report.probe["periods"]:
        assert report.scores[f"prefix_matching_p{shortcut_period}"][roles.positional_shortcut] > 0.9


def test_same_weights_same_scores_as_transformerbridge(circuit, circuit_report):
    bridge = ih.to_bridge(circuit[0])
    theirs = ih.detect(bridge, bos_token_id=0)  # a boot_native bridge has no tokenizer / BOS
    for key, ours in circuit_report.scores.items():
        torch.testing.assert_close(theirs.scores[key], ours, atol=1e-5, rtol=0, equal_nan=True)
    assert theirs.induction_heads == circuit_report.induction_heads


def test_tiny_gpt2_through_boot_transformers(tiny_gpt2_dir):
    from inducthead.model import from_hf_gpt2

    bridge = ih.load_pretrained(tiny_gpt2_dir)
    ours = from_hf_gpt2(tiny_gpt2_dir)
    a, b = ih.detect(bridge), ih.detect(ours)
    assert a.probe["bos_token_id"] == 0  # from the tokenizer
    for key in a.scores:
        torch.testing.assert_close(a.scores[key], b.scores[key], atol=1e-5, rtol=0, equal_nan=True)


def test_trained_demo_model(demo_model):
    r = ih.detect(demo_model)
    assert r.induction_heads and all(layer >= 1 for layer, _ in r.induction_heads)
    assert any(layer == 0 for layer, _ in r.previous_token_heads)
    assert not r.anti_induction_heads
    assert "L1H" in repr(r)


def test_report_outputs(circuit_report, tmp_path):
    r = circuit_report
    df = r.to_dataframe()
    assert len(df) == 8 and {"label", "prefix_matching", "copying_empirical", "role"} <= set(df)
    assert df.set_index("label").loc["L1H0", "role"] == "induction"
    text = r.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["heads"]["induction"] == ["L1H0"] and json.loads(text) == data
    again = DetectionReport.from_dict(data)
    assert again.induction_heads == r.induction_heads
    torch.testing.assert_close(
        again.scores["k_composition"], r.scores["k_composition"], equal_nan=True
    )
    assert "<table" in r._repr_html_() and "L1H0" in r._repr_html_()
    fig = r.plot()
    assert len([ax for ax in fig.axes if ax.get_title()]) == 6
    assert "induction heads: L1H0" in r.summary_lines()[0]


def test_custom_thresholds_change_verdicts(circuit):
    strict = ih.detect(circuit[0], thresholds=Thresholds(previous_token=1.01))
    assert strict.previous_token_heads == [] and strict.induction_heads == [(1, 0)]


def test_user_tokens(circuit):
    seg = torch.arange(1, 31)
    tokens = torch.cat([torch.zeros(1, dtype=torch.long), seg, seg, seg])[None]
    r = ih.detect(circuit[0], tokens=tokens)
    assert r.induction_heads[0] == (1, 0)
    with pytest.raises(ValueError, match="d_vocab"):
        ih.detect(circuit[0], tokens=tokens + 100)


def test_short_contexts_get_a_smaller_probe_with_a_warning():
    model = ih.HookedTransformer(tiny_config(n_ctx=60, d_vocab=40, bos_token_id=0))
    with pytest.warns(UserWarning, match="repeats 2"):
        r = ih.detect(model)
    assert r.probe["repeats"] == 2 and r.probe["periods"][0] == 25
    tiny = ih.HookedTransformer(tiny_config(n_ctx=30, d_vocab=40, bos_token_id=0))
    with pytest.warns(UserWarning, match="period 14"):
        assert ih.detect(tiny).probe["periods"][0] == 14
    with pytest.raises(ValueError, match="n_ctx=8 is too short.*cannot be probed"):
        ih.detect(ih.HookedTransformer(tiny_config(n_ctx=8, bos_token_id=0)))


def test_models_without_bos_are_probed_without_it():
    r = ih.detect(ih.HookedTransformer(tiny_config(n_ctx=101, d_vocab=30)))
    assert r.probe["bos_token_id"] is None and r.probe["length"] == 100


@pytest.mark.parametrize(
    "model, error, match",
    [
        (torch.nn.Linear(3, 3), TypeError, "not a hooked transformer"),
        ("demo", TypeError, "not a hooked transformer"),
    ],
)
def test_objects_that_are_not_hooked_models(model, error, match):
    with pytest.raises(error, match=match):
        ih.detect(model)


def test_model_without_pattern_hooks_is_refused():
    class NoPatterns(torch.nn.Module):
        cfg = tiny_config()
        hook_dict = {"blocks.0.attn.hook_z": None}

        def run_with_cache(self, *args, **kwargs):
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="hook_pattern"):
        ih.detect(NoPatterns())


def test_bad_weights_and_vocabularies():
    model = ih.HookedTransformer(tiny_config(n_ctx=101, d_vocab=20))
    with pytest.raises(ValueError, match="period 25"):
        ih.detect(model)
    model = ih.HookedTransformer(tiny_config(n_ctx=101, d_vocab=40))
    with torch.no_grad():
        model.blocks[1].attn.W_K[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="blocks.1.attn.W_K"):
        ih.detect(model)


def test_cli_detect(tmp_path, capsys):
    assert main(["detect", "assets/demo", "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "induction heads: L1H" in out and "previous-token heads: L0H0" in out
    assert json.loads((tmp_path / "d.json").read_text())["heads"]["previous_token"] == ["L0H0"]
    assert main(["detect", "assets/demo", "--step", "0"]) == 0
    assert "induction heads: none" in capsys.readouterr().out
    assert main(["detect", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_detect_pretrained(tiny_gpt2_dir, capsys):
    assert main(["detect", "--pretrained", str(tiny_gpt2_dir)]) == 0
    assert "L1H3" in capsys.readouterr().out


def test_errors_offer_only_what_works():
    """A 3-state Markov model (MarkovICL's default) and an 8-token context cannot be probed at
    all: the error says so, instead of suggesting a period that is refused next."""
    from inducthead.tasks import MarkovICL

    task = MarkovICL()
    markov = ih.HookedTransformer(tiny_config(d_vocab=task.d_vocab, n_ctx=64))
    for model, match in [
        (markov, f"only {task.d_vocab} non-BOS tokens.*cannot be probed"),
        (ih.HookedTransformer(tiny_config(n_ctx=8, bos_token_id=0)), "too short.*cannot be probed"),
    ]:
        with pytest.raises(ValueError, match=match) as caught:
            ih.detect(model)
        assert "pass period" not in str(caught.value) and "period=3" not in str(caught.value)
    # where a shorter period works, that is what the error offers, and it works
    small = ih.HookedTransformer(tiny_config(d_vocab=12, n_ctx=64, bos_token_id=0))
    with pytest.raises(ValueError, match="pass period <= 11"):
        ih.detect(small)
    assert ih.detect(small, period=11).probe["periods"][0] == 11
