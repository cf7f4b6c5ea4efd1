"""inducthead.dynamics on real trajectories: the shipped demo run, a fresh 800-step run, the LLC's
known answers, the CLI, pretrained checkpoints from local directories. All slow (seconds to a
minute apiece: training, SGLD chains, booting TransformerBridges)."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import pytest
import torch
from conftest import ASSETS

import inducthead as ih
from inducthead.dynamics import LLCSettings, Trajectory, estimate_llc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "demo"
    shutil.copytree(ASSETS / "demo", path)
    return Trajectory(path)


def test_the_shipped_demo_signals_fall_in_or_next_to_one_window(demo):
    stages = demo.stages()
    print(stages)
    print(stages.data[["signal", "start", "end", "step"]].to_string(index=False))
    assert stages.agree, stages.data
    w = stages.reference
    assert 200 <= w["start"] <= w["end"] <= 300


def test_a_fresh_800_step_demo_run_agrees_with_itself(tmp_path):
    preset = ih.presets.get("demo")
    cfg = preset.train.replace(progress=False, device="cpu")
    ih.train(ih.HookedTransformer(preset.model), preset.make_task(), cfg, tmp_path / "fresh")
    traj = Trajectory(tmp_path / "fresh")
    assert len(traj) >= 40  # ~50 log-spaced checkpoints
    stages = traj.stages()
    print(stages.data[["signal", "start", "end", "step"]].to_string(index=False))
    assert stages.agree, stages.data


def _regression(n=2000, d=4, sigma=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = X @ torch.randn(d, generator=g) + sigma * torch.randn(n, generator=g)
    return X, y, sigma


class _Linear(torch.nn.Module):
    """y = x . w, or with `tied` y = (w0 + w1) x0 + w2 x1 + w3 x2: w0 - w1 is a flat direction."""

    def __init__(self, w, tied=False):
        super().__init__()
        self.w, self.tied = torch.nn.Parameter(w.clone()), tied

    def forward(self, x):
        if self.tied:
            return x[:, :3] @ torch.stack([self.w[0] + self.w[1], self.w[2], self.w[3]])
        return x @ self.w


def test_the_llc_has_its_known_answers_on_linear_regression():
    """A regular model with d = 4 parameters at its minimum: LLC = d/2 = 2 (Watanabe; Lau et al.
    2023 check their estimator the same way). With one flat direction: (d - 1)/2 = 1.5."""
    X, y, sigma = _regression()
    n = len(X)

    def loss(model, index):  # Gaussian negative log-likelihood, per example
        return (model(X[index]) - y[index]) ** 2 / (2 * sigma**2)

    w = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    w3 = torch.linalg.lstsq(X[:, :3], y[:, None]).solution[:, 0]
    tied = torch.stack([w3[0] / 2, w3[0] / 2, w3[1], w3[2]])
    settings = LLCSettings(
        lr=1e-4,
        localization=1.0,
        n_beta=n / math.log(n),
        num_chains=4,
        num_draws=1000,
        num_burnin_steps=100,
        batch_size=500,
        n_data=n,
    )
    regular = estimate_llc(_Linear(w), loss, n, settings)
    degenerate = estimate_llc(_Linear(tied, tied=True), loss, n, settings)
    print(
        f"regular {regular['llc_mean']:.3f} ± {regular['llc_std']:.3f}, "
        f"degenerate {degenerate['llc_mean']:.3f} ± {degenerate['llc_std']:.3f}"
    )
    assert regular["llc_mean"] == pytest.approx(2.0, abs=0.3)
    assert degenerate["llc_mean"] == pytest.approx(1.5, abs=0.3)
    assert degenerate["llc_mean"] < regular["llc_mean"] - 0.25
    assert not regular["warnings"] and not degenerate["warnings"]


def test_the_demo_llc_rises_across_the_phase_change_and_is_cached(tmp_path):
    run = tmp_path / "demo"
    shutil.copytree(ASSETS / "demo", run)
    keep = {0, 200, 250, 300, 800}
    for f in (run / "checkpoints").iterdir():
        if int(f.stem.split("_")[1]) not in keep:
            f.unlink()
    traj = Trajectory(run)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # defaults: no chain warns
        result = traj.llc()
    llc = result.to_dataframe().set_index("step")["llc_mean"]
    print(result)
    assert llc[300] > llc[200] + 5 and llc[0] > 0
    assert result.window["start"] >= 200 and result.window["end"] <= 300
    again = Trajectory(run)
    again.llc()
    assert again.cache_stats.computed["llc"] == 0 and again.cache_stats.reused["llc"] == 5
    head = Trajectory([run / "checkpoints" / "step_00000800.safetensors"], cache=False)
    per_head = head.llc(heads=["L1H0"])
    assert 0 < per_head.to_dataframe()["llc_mean"].iloc[0] < llc[800]
    with pytest.warns(UserWarning, match="LLC at step 800 .*(failed|not settled|negative)"):
        head.llc(lr=1.0)


def test_the_cli_writes_figures_tables_and_a_summary_next_to_the_run(demo, capsys):
    from inducthead.cli import main

    assert main(["dynamics", str(demo.source.path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    folder = demo.source.path / "dynamics"
    for name in (
        "head_scores",
        "loss_icl",
        "loss_by_position",
        "per_token_loss_pca",
        "weight_pca",
        "essential_dynamics",
        "progress_measures",
    ):
        assert (folder / f"{name}.png").stat().st_size > 10_000, name
    assert (folder / "head_scores.csv").read_text().startswith("step,tokens,elapsed_s,layer")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stages"]["agree"] and summary["phase_change"]["window"]["start"] >= 200
    assert "PhaseChangeResult" in out and "phase change steps" in out


def test_pretrained_checkpoints_from_local_directories(tmp_path):
    from inducthead.testing import tiny_gpt2

    dirs = {0: tiny_gpt2(tmp_path / "a", seed=0), 100: tiny_gpt2(tmp_path / "b", seed=1)}
    traj = Trajectory(dirs, cache_dir=tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scores = traj.head_scores(["prefix_matching"], n_samples=2)
        weights = traj.weight_pca()
    assert sorted(set(scores.to_dataframe()["step"])) == [0, 100]
    assert weights.explained_variance_ratio[0] == pytest.approx(1.0)  # two points: one line
    again = Trajectory(dirs, cache_dir=tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        again.head_scores(["prefix_matching"], n_samples=2)
    assert again.cache_stats.reused["head_scores"] == 2


def test_runs_compared_share_one_per_token_loss_pca(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(ASSETS / "demo", a)
    shutil.copytree(ASSETS / "demo", b)
    for f in sorted((b / "checkpoints").iterdir())[7:]:
        f.unlink()
    result = Trajectory.compare([a, b]).per_token_loss_pca(n_examples=64)
    df = result.to_dataframe()
    assert result.runs == ["a", "b"] and len(df) == 14 + 7
    # the same examples and positions: run b's checkpoints sit exactly on run a's
    pa = df[df.run == "a"].set_index("step")[["pc1", "pc2"]]
    pb = df[df.run == "b"].set_index("step")[["pc1", "pc2"]]
    torch.testing.assert_close(
        torch.tensor(pb.to_numpy()), torch.tensor(pa.loc[pb.index].to_numpy())
    )
