"""inducthead.dynamics: trajectories over checkpoints, their known answers and the cache."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from conftest import ASSETS

import inducthead as ih
from inducthead.analysis import emergence_step
from inducthead.analysis.emergence import first_crossing
from inducthead.dynamics import Trajectory
from inducthead.testing import synthetic_trajectory

S0 = 100  # the synthetic trajectory's circuit starts forming here
CHEAP = {"n_samples": 2}  # detect's probe with 2 sequences per period: enough for counters


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    steps = range(0, 201, 20)
    files = synthetic_trajectory(tmp_path_factory.mktemp("synthetic"), s0=S0, steps=steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # d_vocab 24: detect shortens its probe
        traj = Trajectory(files)
        traj.head_scores(**CHEAP)
    return traj


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The shipped demo run, copied (the cache is written next to the run)."""
    path = tmp_path_factory.mktemp("runs") / "demo"
    shutil.copytree(ASSETS / "demo", path)
    return Trajectory(path)


@pytest.mark.usefixtures("one_cpu_thread")
def test_synthetic_trajectory_has_one_direction_and_emerges_at_s0(synthetic):
    steps = synthetic.steps
    weights = synthetic.weight_pca()
    assert weights.explained_variance_ratio[0] >= 0.99
    assert weights.span_dimension == 1
    assert weights.participation_ratio == pytest.approx(1.0, abs=0.01)
    share = weights.groups.set_index("group")["variance_share"]
    assert share["blocks.1.attn"] == pytest.approx(1.0) and share.drop("blocks.1.attn").max() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        e = synthetic.emergence("prefix_matching", 0.5, **CHEAP)
    i = steps.index(S0)
    assert steps[i - 1] <= e.step <= steps[i + 1]  # at s0, within one checkpoint
    assert e.before == S0 and e.after == steps[i + 1]
    w = synthetic.phase_change().window
    assert w["start"] <= S0 <= w["end"]


def test_demo_losses_are_the_logged_eval_losses(demo):
    logged = demo.source.run.metrics.set_index("step")["eval_loss"]
    df = demo.losses().set_index("step")
    torch.testing.assert_close(
        torch.tensor(df["loss"].to_numpy()),
        torch.tensor(logged[df.index].to_numpy()),
        atol=1e-4,
        rtol=0,
    )


def test_icl_scores_and_loss_by_position_are_the_causal_definitions(demo):
    batch = demo.eval_batch()
    icl = demo.icl_scores().set_index("step")["icl_score"]
    lbp = demo.loss_by_position().wide()
    for step in (0, 250, 800):
        model = demo.load(step)
        assert icl[step] == pytest.approx(ih.icl_score(model, batch), abs=1e-4)
        torch.testing.assert_close(
            torch.tensor(lbp.loc[step].to_numpy(), dtype=torch.float32),
            ih.loss_by_position(model, batch),
            atol=1e-4,
            rtol=0,
        )


def test_the_cache_is_reused_and_a_longer_run_computes_only_new_checkpoints(tmp_path):
    run = tmp_path / "demo"
    shutil.copytree(ASSETS / "demo", run)
    later = sorted((run / "checkpoints").glob("*.safetensors"))[10:]
    parked = tmp_path / "later"
    parked.mkdir()
    for f in later:
        f.rename(parked / f.name)
    first = Trajectory(run)
    first.head_scores(**CHEAP)
    assert first.cache_stats.computed["head_scores"] == 10
    again = Trajectory(run)  # a new object: reads the disk cache
    again.head_scores(**CHEAP)
    assert again.cache_stats.computed["head_scores"] == 0
    assert again.cache_stats.reused["head_scores"] == 10
    for f in parked.iterdir():  # the run goes on
        f.rename(run / "checkpoints" / f.name)
    longer = Trajectory(run)
    result = longer.head_scores(**CHEAP)
    assert longer.cache_stats.computed["head_scores"] == len(later) == 4
    assert longer.cache_stats.reused["head_scores"] == 10
    assert sorted(set(result.to_dataframe()["step"])) == longer.steps
    other_probe = Trajectory(run)
    other_probe.head_scores(**CHEAP, seed=1)  # other metric parameters: computed anew
    assert other_probe.cache_stats.computed["head_scores"] == 14


def test_at_most_two_models_are_alive_while_streaming(demo):
    traj = Trajectory(demo.source.path, cache=False)
    traj.progress_measures()
    assert traj.max_live_models <= 2


def test_one_emergence_definition_for_sweeps_and_trajectories(demo):
    rows = demo.source.run.rows()
    c = first_crossing(
        [r["step"] for r in rows],
        [min(r["best_prefix_matching"], r["best_previous_token"]) for r in rows],
        0.5,
    )
    assert emergence_step(rows) == c.after
    assert c.before < c.step <= c.after
    e = demo.emergence("prefix_matching", 0.5, **CHEAP)
    series = dict(zip(e.data["step"], e.data["value"], strict=True))
    assert series[e.before] < 0.5 <= series[e.after] and e.before < e.step <= e.after
    assert e.tokens == pytest.approx(e.step * 32 * 128, rel=1e-6)  # batch 32 x 128 tokens
    assert "interpolated linearly" in str(e)


# ----------------------------------------------------------------------------- reading


def _full_checkpoint(path, seed=0, **cfg):
    """A checkpoint with optimizer moments (what training writes), of a tiny model."""
    from conftest import tiny_config

    from inducthead.runs.checkpoint import write_checkpoint

    model = ih.HookedTransformer(tiny_config(**cfg))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    return write_checkpoint(path, model, opt, step=seed)


def test_reading_for_analysis_opens_only_the_model_tensors(tmp_path, monkeypatch):
    import safetensors

    from inducthead.dynamics import read_model_state

    path = _full_checkpoint(tmp_path / "step_00000000.safetensors")
    read: list[str] = []
    real = safetensors.safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.f = real(*a, **k)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def get_tensor(self, name):
            read.append(name)
            return self.f.get_tensor(name)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    state, _ = read_model_state(path, verify=False)
    assert read and all(n.startswith("model/") for n in read)
    assert not any(k.startswith(("optim", "rng")) for k in state)
    read.clear()
    read_model_state(path)  # verify=True hashes every tensor's bytes from the memory map ...
    assert read and all(n.startswith("model/") for n in read)  # ... and materialises none else


def test_the_streamed_hash_is_the_checkpoint_content_hash(tmp_path):
    from inducthead.runs.checkpoint import _mapped_digest, read_checkpoint, tensor_digest

    path = _full_checkpoint(tmp_path / "step_00000000.safetensors")
    tensors, meta = read_checkpoint(path)
    dtypes = {t.dtype for t in tensors.values()}
    assert {torch.float32, torch.uint8} <= dtypes and any(t.dim() == 0 for t in tensors.values())
    assert _mapped_digest(path) == tensor_digest(tensors) == meta["sha256"]


def test_a_damaged_optimizer_tensor_fails_the_hash_unless_verification_is_skipped(tmp_path):
    from inducthead.dynamics import read_model_state
    from inducthead.runs import CheckpointError

    path = _full_checkpoint(tmp_path / "step_00000000.safetensors")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # the last tensors in the file are optimizer moments / RNG state
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash"):
        read_model_state(path)
    state, _ = read_model_state(path, verify=False)
    assert "embed.W_E" in state


# ----------------------------------------------------------------------------- bad input


def test_empty_and_half_written_run_directories_say_what_is_missing(tmp_path):
    from inducthead.runs import RunDirError

    with pytest.raises(RunDirError, match="no run.json"):
        Trajectory(tmp_path)
    run = tmp_path / "demo"
    run.mkdir()
    shutil.copy(ASSETS / "demo" / "run.json", run / "run.json")
    with pytest.raises(RunDirError, match="no checkpoints/ folder"):
        Trajectory(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".step_00000050.safetensors.123.0badc0de.tmp").write_bytes(b"x")
    with pytest.raises(RunDirError, match="no step_.*1 unfinished temporary file"):
        Trajectory(run)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Trajectory(tmp_path / "nope")


def test_a_corrupt_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path):
    from inducthead.runs import CheckpointError

    run = tmp_path / "demo"
    shutil.copytree(ASSETS / "demo", run)
    bad = run / "checkpoints" / "step_00000250.safetensors"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a weight byte: the header still parses
    bad.write_bytes(bytes(data))
    traj = Trajectory(run)
    with pytest.warns(UserWarning, match="step_00000250.safetensors is corrupt"):
        result = traj.head_scores(["prefix_matching"], **CHEAP)
    assert 250 not in set(result.to_dataframe()["step"]) and len(traj.steps) == 13
    with pytest.raises(CheckpointError, match="step_00000250"):
        Trajectory(run, strict=True, cache=False).head_scores(**CHEAP)
    header = run / "checkpoints" / "step_00000300.safetensors"
    header.write_bytes(b"\x10" + header.read_bytes()[1:])  # the header length is broken
    with pytest.warns(UserWarning, match="step_00000300.safetensors"):
        assert 300 not in Trajectory(run).steps


def test_checkpoints_of_different_architectures_are_refused_naming_both(tmp_path):
    a = _full_checkpoint(tmp_path / "a.safetensors")
    b = _full_checkpoint(tmp_path / "b.safetensors", seed=1, d_model=16, d_head=4)
    match = r"a\.safetensors and .*b\.safetensors differ in .*d_head 8 vs 4"
    with pytest.raises(ValueError, match=match):
        Trajectory([a, b])


def test_a_missing_devinterp_is_one_line_naming_the_extra(demo, monkeypatch):
    import sys

    from inducthead.dynamics import MissingExtraError

    monkeypatch.setitem(sys.modules, "devinterp.slt.sampling", None)
    with pytest.raises(MissingExtraError) as e:
        demo.llc()
    assert str(e.value) == "the LLC needs devinterp: pip install 'inducthead[devinterp]'"


def test_a_pretrained_trajectory_offline_fails_clearly():
    from inducthead.runs import PretrainedLoadError

    traj = Trajectory("EleutherAI/pythia-14m", checkpoint_values=[0, 1000])
    assert traj.steps == [0, 1000]
    with pytest.raises(PretrainedLoadError, match="could not load 'EleutherAI/pythia-14m'"):
        traj.head_scores()


def test_pythia_checkpoint_indices_map_to_their_steps():
    traj = Trajectory("EleutherAI/pythia-70m", checkpoints=[0, 10, -1])
    assert traj.steps[0] == 0 and traj.steps[-1] == 143000


def test_progress_measures_without_learned_positions_leave_alpha_undefined(tmp_path):
    import math

    a = _full_checkpoint(tmp_path / "a.safetensors", positional_embedding_type="rotary")
    result = Trajectory([a]).progress_measures()
    df = result.to_dataframe()
    assert df[df.measure == "alpha"]["value"].map(math.isnan).all()
    assert df[df.measure == "beta"]["value"].notna().all()
    assert any("alpha undefined" in n for n in result.notes)


# ----------------------------------------------------------------------------- results


@pytest.fixture(scope="module")
def results(synthetic):
    import pandas as pd

    from inducthead.dynamics import LLCResult

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = {
            "head_scores": synthetic.head_scores(**CHEAP),
            "phase_change": synthetic.phase_change(),
            "loss_by_position": synthetic.loss_by_position(),
            "emergence": synthetic.emergence("prefix_matching", 0.5, **CHEAP),
            "per_token_loss_pca": synthetic.per_token_loss_pca(n_examples=32),
            "essential_dynamics": synthetic.essential_dynamics(n_examples=32),
            "weight_pca": synthetic.weight_pca(),
            "progress_measures": synthetic.progress_measures(),
        }
    out["stages"] = synthetic.stages()
    steps = synthetic.steps[:3]
    # the shape trajectory_llc builds (the LLC itself runs in the slow tests)
    out["llc"] = LLCResult(
        name="synthetic",
        settings={"lr": 1e-3, "n_beta": 5.8, "num_chains": 2, "num_draws": 4},
        boundaries=[20],
        window={
            "start": 0,
            "end": 40,
            "peak_start": 0,
            "peak_end": 20,
            "peak_rate": 1.0,
            "signal": "LLC",
            "rule": "r",
        },
        seconds_per_checkpoint=1.0,
        data=pd.DataFrame(
            {
                "step": steps,
                "llc_mean": [1.0, float("nan"), 3.0],
                "llc_std": [0.1, 0.2, 0.3],
                "init_loss": [1.0, 1.0, 1.0],
                "chains_ok": [2, 1, 2],
                "warnings": ["", "chain 1 failed", ""],
                "seconds": [1.0, 1.0, 1.0],
            }
        ),
        traces=pd.DataFrame(
            {"step": [0, 0], "chain": [0, 0], "sgld_step": [0, 1], "loss": [1.0, 1.1]}
        ),
    )
    return out


KINDS = [
    "head_scores",
    "phase_change",
    "loss_by_position",
    "emergence",
    "per_token_loss_pca",
    "essential_dynamics",
    "weight_pca",
    "progress_measures",
    "stages",
    "llc",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_dynamics_result_follows_the_contract(results, kind, tmp_path):
    import json

    import matplotlib.figure
    import matplotlib.pyplot as plt

    from inducthead.analysis import Result

    r = results[kind]
    assert isinstance(r, Result) and type(r).__name__.endswith("Result")
    assert "\n" not in repr(r) and repr(r).startswith(type(r).__name__)
    text = str(r)
    assert text.startswith(repr(r)) and len(text.splitlines()) > 1
    assert len(r.to_dataframe()) > 0
    assert "<table" in r._repr_html_()
    fig = r.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    plt.close(fig)
    again = type(r).from_json(r.to_json())
    assert json.loads(again.to_json()) == json.loads(r.to_json())
    assert repr(again) == repr(r)
    path = tmp_path / "r.json"
    r.to_json(path)
    assert repr(type(r).from_json(path)) == repr(r)


def test_head_scores_are_tidy_with_heads_named_l1h4(results):
    df = results["head_scores"].to_dataframe()
    assert list(df.columns) == [
        "step",
        "tokens",
        "elapsed_s",
        "layer",
        "head",
        "label",
        "metric",
        "value",
    ]
    assert set(df["label"]) == {f"L{l}H{h}" for l in range(2) for h in range(4)}
    assert len(df) == 11 * 8 * 3  # steps x heads x metrics
    assert "phase change steps" in repr(results["head_scores"])


def test_the_phase_change_prints_its_rule(results):
    text = str(results["phase_change"])
    assert "rule: the ICL score falls at >= 0.5 x its fastest rate" in text
    assert "Olsson et al. 2022" in text
