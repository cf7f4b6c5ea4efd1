"""The result contract (`inducthead.analysis.results.Result`) on every result class, and heads."""

import json
import math
from pathlib import Path

import matplotlib.figure
import pytest
import torch

import inducthead as ih
from inducthead.analysis import Head, Result, all_heads, parse_heads
from inducthead.causal import default_data, patch_heads, path_patch
from inducthead.causal.scan import AblationResult
from inducthead.causal.verification import CausalResult
from inducthead.model import induction_circuit
from inducthead.sweep import SweepResult


@pytest.fixture(scope="module")
def circuit():
    model, roles = induction_circuit(d_vocab=24, n_ctx=64)
    return model, roles, default_data(model, n_samples=16)


@pytest.fixture(scope="module")
def results(circuit):
    model, roles, data = circuit
    sweep = SweepResult(
        Path("runs/sweep"),
        [
            {"cell": "demo,seed=0", "preset": "demo", "seed": 0, "status": "finished",
             "attempts": 1, "final_step": 40, "eval_loss": 0.5, "emergence_step": 20},
            {"cell": "demo,seed=1", "preset": "demo", "seed": 1, "status": "finished",
             "attempts": 1, "final_step": 40, "eval_loss": math.nan, "emergence_step": None},
        ],
    )  # fmt: skip
    return {
        "detect": ih.detect(model, period=20, repeats=3),
        "verify": ih.verify(model, heads=[roles.induction, roles.positional_shortcut], data=data),
        "scan": ih.ablation_scan(model, data, ["loss", "accuracy"]),
        "patch": patch_heads(model, data, heads=[roles.induction]),
        "path": path_patch(model, roles.previous_token, roles.induction, "k", data),
        "sweep": sweep,
    }


KINDS = ["detect", "verify", "scan", "patch", "path", "sweep"]


def _same(a, b):
    """Equal as stored: numbers to 1e-6 with NaN equal to NaN and inf to inf."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, float):
        assert isinstance(b, (int, float)) and (
            (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-6)
        )
    else:
        assert a == b


@pytest.mark.parametrize("kind", KINDS)
def test_every_result_follows_the_contract(results, kind, tmp_path):
    r = results[kind]
    assert isinstance(r, Result) and type(r).__name__.endswith("Result")
    assert "\n" not in repr(r) and repr(r).startswith(type(r).__name__)
    text = str(r)
    assert text.startswith(repr(r)) and len(text.splitlines()) > 1
    df = r.to_dataframe()
    assert len(df) > 0
    for column in df.columns:  # plain values: no comma-joined lists of heads in a cell
        assert not any(isinstance(v, str) and "," in v and "H" in v for v in df[column]), column
    assert "<table" in r._repr_html_()
    assert isinstance(r.plot(), matplotlib.figure.Figure)
    # lossless round trips: dict, JSON text, JSON file
    again = type(r).from_dict(json.loads(r.to_json()))
    _same(json.loads(again.to_json()), json.loads(r.to_json()))
    path = tmp_path / "r.json"
    r.to_json(path)
    assert repr(type(r).from_json(path)) == repr(r)
    assert repr(type(r).from_json(path.read_text())) == repr(r)


def test_per_head_results_have_one_row_per_head(results):
    for kind in ("detect", "scan"):
        df = results[kind].to_dataframe()
        assert len(df) == 8 and list(df["label"]) == [str(h) for h in all_heads(2, 4)]
    assert list(results["verify"].to_dataframe()["label"]) == ["L1H0", "L1H2"]


def test_the_verify_result_round_trips_its_verdicts(results):
    r = results["verify"]
    again = CausalResult.from_json(r.to_json())
    assert again.confirmed == r.confirmed == [(1, 0)]
    assert again.rows[(1, 0)]["senders"] == [(0, 0)] and again.rows[(1, 0)]["controls"]
    assert all(isinstance(h, Head) for h in again.rows[(1, 0)]["controls"])
    assert math.isinf(r.rows[(1, 0)]["specificity"])  # no control head has an effect
    assert math.isinf(again.rows[(1, 0)]["specificity"])
    assert isinstance(again.scan, AblationResult)
    torch.testing.assert_close(again.scores["loss"], r.scores["loss"], equal_nan=True)


def test_heads_are_tuples_printed_l1h4():
    head = Head(1, 4)
    assert head == (1, 4) and hash(head) == hash((1, 4)) and str(head) == repr(head) == "L1H4"
    assert repr([Head(1, 1), Head(0, 2)]) == "[L1H1, L0H2]"
    assert Head.parse("l1h4") == head and parse_heads("L0H1, L1H0") == [(0, 1), (1, 0)]
    assert all(isinstance(h, Head) for h in parse_heads([(0, 1), "L1H2"]))
    with pytest.raises(ValueError, match="L<layer>H<head>"):
        Head.parse("layer 1 head 4")


def test_results_return_heads_and_cpu_tensors(results):
    r = results["detect"]
    assert all(isinstance(h, Head) for h in r.induction_heads + r.previous_token_heads)
    assert all(v.device.type == "cpu" for v in r.scores.values())
    assert all(isinstance(h, Head) for h in results["verify"].confirmed)
