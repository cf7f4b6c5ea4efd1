"""No code runs from files and nothing is written outside the directory given (README
"Reliability", guarantees 5 and 6)."""

from __future__ import annotations

import ast
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import perturbed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inducthead as ih
from inducthead.cli import main
from inducthead.runs import UnsafePathError, safe_child, sanitize_name
from inducthead.runs import checkpoint as ckpt
from inducthead.tasks import RepeatedTokens

PACKAGE = Path(ih.__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------------- pickles
class Payload:
    """Unpickling this object runs `open(marker, "w")`: it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def hostile_files(folder: Path, marker: Path) -> dict[str, Path]:
    """A TL-3-style torch checkpoint carrying the payload next to real weights (zip format),
    and the same payload as a raw pickle."""
    folder.mkdir(parents=True, exist_ok=True)
    zipped = folder / "tl3_model.pt"
    torch.save({"embed.W_E": torch.zeros(3, 2), "payload": Payload(marker)}, zipped)
    raw = folder / "raw.pkl"
    raw.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    return {"zip": zipped, "raw": raw}


def test_the_payload_is_live(tmp_path):
    """Control: the files used below really do create their marker when unpickled normally, so
    the tests that show the marker is never created can fail."""
    marker = tmp_path / "marker_control"
    files = hostile_files(tmp_path / "control", marker)
    torch.load(files["zip"], weights_only=False)
    assert marker.read_text() == "pwned"
    marker.unlink()
    pickle.loads(files["raw"].read_bytes())
    assert marker.exists()


def test_hostile_pickles_never_execute_on_any_code_path(tmp_path, capsys):
    marker = tmp_path / "marker"
    files = hostile_files(tmp_path / "files", marker)
    cfg = ih.HookedTransformerConfig(n_layers=1, d_model=2, n_heads=1, d_head=2, d_vocab=3, n_ctx=4)
    disguised = tmp_path / "files" / "model.safetensors"  # a pickle under our suffix
    disguised.write_bytes(files["zip"].read_bytes())
    bare = tmp_path / "files" / "model"  # and with no suffix at all
    bare.write_bytes(files["raw"].read_bytes())

    for path in (*files.values(), disguised, bare):
        with pytest.raises(ckpt.CheckpointError, match=re.escape(str(path))):
            ih.load(path)  # no opt-in: refused before any unpickling
        with pytest.raises(ckpt.CheckpointError, match="allow_pickle=True"):
            ih.load_pickle(path, cfg)
    for path in (files["zip"], files["raw"], bare):  # opt-in: torch.load(weights_only=True)
        with pytest.raises(ckpt.CheckpointError, match="objects other than tensors"):
            ih.load_pickle(path, cfg, allow_pickle=True)
        with pytest.raises(ckpt.CheckpointError, match="objects other than tensors"):
            ih.load(path, allow_pickle=True, config=cfg)
    with pytest.raises(ckpt.CheckpointError, match="pickle"):
        ih.load(disguised, allow_pickle=True)  # a .safetensors name is never unpickled

    # A run directory whose newest checkpoint was replaced by the hostile file: listed as
    # damaged, skipped by load and by --resume (CLI), which continues from the intact one.
    out = tmp_path / "run"
    args = ["train", "--config", "demo", "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main([*args, "--steps", "2"]) == 0
    run = ih.Run(out)
    newest = run.checkpoint_path(2)
    newest.write_bytes(files["zip"].read_bytes())
    (out / "checkpoints" / "step_00000003.pt").write_bytes(files["zip"].read_bytes())
    assert [s for s, _ in run.damaged] == [2] and "pickle" in run.damaged[0][1]
    assert torch.equal(ih.load(out).W_E, ih.load(run.checkpoint_path(1)).W_E)
    with pytest.raises(ckpt.CheckpointError):
        ih.load(out, step=2)
    capsys.readouterr()
    assert main([*args, "--steps", "3", "--resume"]) == 0  # the CLI warns in one line
    assert "inducthead: warning: skipping damaged checkpoint" in capsys.readouterr().err
    assert ih.Run(out).damaged == [] and ih.Run(out).checkpoints[-1] == 3

    # `inducthead detect` on the hostile file, and on a Hugging Face directory whose
    # pytorch_model.bin carries the payload (transformers loads it with weights_only=True).
    capsys.readouterr()
    assert main(["detect", str(files["zip"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pickle" in err and str(files["zip"]) in err
    assert main(["detect", "--pretrained", str(hostile_hf_dir(tmp_path / "hf", marker))]) == 2
    assert "Unsupported global" in capsys.readouterr().err
    assert not marker.exists()


def hostile_hf_dir(folder: Path, marker: Path) -> Path:
    """A tiny GPT-2 directory (config, tokenizer) whose weights file carries the payload."""
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, PreTrainedTokenizerFast

    GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10, n_positions=16).save_pretrained(folder)
    tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(10)}, unk_token="t0"))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0").save_pretrained(folder)
    weights = {"transformer.wte.weight": torch.zeros(10, 8), "payload": Payload(marker)}
    torch.save(weights, folder / "pytorch_model.bin")
    return folder


def _assert_weights_only_everywhere(tree: ast.AST, path: Path) -> list[str]:
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = (
            f"{f.value.id}.{f.attr}"
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
            else getattr(f, "id", "")
        )
        kwargs = {k.arg: k.value for k in node.keywords}
        where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}"
        if name in ("torch.load", "load") and isinstance(f, ast.Attribute):
            w = kwargs.get("weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                problems.append(f"{where} without weights_only=True")
        if name in (
            "pickle.load",
            "pickle.loads",
            "pickle.Unpickler",
            "dill.load",
            "dill.loads",
            "joblib.load",
            "marshal.loads",
            "shelve.open",
            "pd.read_pickle",
            "pandas.read_pickle",
        ):
            problems.append(where)
        if name in ("np.load", "numpy.load"):
            a = kwargs.get("allow_pickle")
            if isinstance(a, ast.Constant) and a.value is True:
                problems.append(f"{where} with allow_pickle=True")
    return problems


def test_no_module_of_the_package_unpickles():
    """Source check over every module (present and future): torch.load only with
    weights_only=True, and no pickle/dill/joblib/marshal loads at all."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        problems += _assert_weights_only_everywhere(ast.parse(path.read_text()), path)
    assert problems == []
    sample = ast.parse("import torch\ntorch.load(p)\npickle.loads(b)\n")  # the check can fail
    assert len(_assert_weights_only_everywhere(sample, PACKAGE / "x.py")) == 2


# ---------------------------------------------------------------------------------- TL 3 files
def tl3_state_dict(model: ih.HookedTransformer, **extra) -> dict[str, torch.Tensor]:
    """What TL 3's `HookedTransformer.state_dict()` holds for the same architecture: our keys
    plus TL 3's derived buffers (causal `mask`, `IGNORE`, rotary tables), always-present biases
    and an unused `pos_embed.W_pos` for ALiBi."""
    cfg = model.cfg
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for l in range(cfg.n_layers):
        sd[f"blocks.{l}.attn.mask"] = torch.ones(cfg.n_ctx, cfg.n_ctx).bool().tril()
        sd[f"blocks.{l}.attn.IGNORE"] = torch.tensor(-torch.inf)
        if cfg.positional_embedding_type == "rotary":
            sd[f"blocks.{l}.attn.rotary_sin"] = torch.randn(cfg.n_ctx, cfg.rotary_dim)
            sd[f"blocks.{l}.attn.rotary_cos"] = torch.randn(cfg.n_ctx, cfg.rotary_dim)
        if not cfg.use_bias:
            for b, shape in (("b_Q", (cfg.n_heads, cfg.d_head)), ("b_O", (cfg.d_model,))):
                sd[f"blocks.{l}.attn.{b}"] = torch.zeros(shape)
    if cfg.positional_embedding_type == "alibi":
        sd["pos_embed.W_pos"] = torch.randn(cfg.n_ctx, cfg.d_model)
    sd.update(extra)
    return sd


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(positional_embedding_type="rotary", attn_only=True, normalization_type="RMS"),
        dict(positional_embedding_type="alibi", use_bias=False, normalization_type="LNPre"),
        dict(positional_embedding_type="shortformer", attn_only=True, normalization_type=None),
    ],
)
def test_tl3_state_dicts_load_only_with_the_opt_in(tmp_path, monkeypatch, overrides):
    base = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=11, n_ctx=12, seed=0)
    cfg = ih.HookedTransformerConfig(**{**base, **overrides})
    model = perturbed(ih.HookedTransformer(cfg))
    path = tmp_path / "tl3.pth"
    torch.save(tl3_state_dict(model), path)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    with pytest.raises(ckpt.CheckpointError, match="allow_pickle=True"):
        ih.load(path)
    tl3_dict = {**cfg.to_dict(), "device": "cpu", "n_params": 1, "original_architecture": "x"}
    loaded = ih.load_pickle(path, tl3_dict, allow_pickle=True)
    assert calls and all(k.get("weights_only") is True for k in calls)
    tokens = torch.randint(11, (2, 12))
    assert torch.equal(loaded(tokens), model(tokens)) and loaded.cfg == cfg
    again = ih.load(path, allow_pickle=True, config=cfg)
    assert torch.equal(again.W_Q, model.W_Q)
    bundled = tmp_path / "bundled.pt"  # {"state_dict", "config"}: no config= needed
    torch.save({"state_dict": tl3_state_dict(model), "config": cfg.to_dict()}, bundled)
    assert torch.equal(ih.load_pickle(bundled, allow_pickle=True).W_E, model.W_E)


def test_tl3_files_that_do_not_match_are_refused_by_name(tmp_path):
    cfg = ih.HookedTransformerConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, d_vocab=7, n_ctx=6)
    model = ih.HookedTransformer(cfg)

    def save(sd, name="m.pt"):
        torch.save(sd, tmp_path / name)
        return tmp_path / name

    path = save(tl3_state_dict(model))
    with pytest.raises(ckpt.CheckpointError, match="pass config="):
        ih.load_pickle(path, allow_pickle=True)
    with pytest.raises(ckpt.CheckpointError, match=r"unexpected: blocks\.1\."):
        ih.load_pickle(path, cfg.replace(n_layers=1), allow_pickle=True)
    with pytest.raises(ckpt.CheckpointError, match=r"wrong shape: embed\.W_E \(7, 8\)"):
        ih.load_pickle(path, cfg.replace(d_vocab=9), allow_pickle=True)
    local = torch.ones(6, 6).bool().tril().triu(-2)  # GPT-Neo style local attention
    with pytest.raises(ckpt.CheckpointError, match="blocks.0.attn.mask is not a plain causal"):
        ih.load_pickle(
            save(tl3_state_dict(model, **{"blocks.0.attn.mask": local})), cfg, allow_pickle=True
        )
    biased = tl3_state_dict(model)
    biased["blocks.1.attn.b_V"] = torch.ones(2, 4)
    with pytest.raises(ckpt.CheckpointError, match="b_V is non-zero but the config has use_bias"):
        ih.load_pickle(save(biased), cfg.replace(use_bias=False), allow_pickle=True)
    with pytest.raises(ckpt.CheckpointError, match="does not hold a state dict"):
        ih.load_pickle(save([torch.zeros(2)]), cfg, allow_pickle=True)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ih.load_pickle(tmp_path / "nope.pt", cfg, allow_pickle=True)
    ours = ckpt.write_checkpoint(tmp_path / "c.safetensors", model)  # carries its own config
    with pytest.raises(ValueError, match="config= applies only to pickle-based files"):
        ih.load(ours, config=cfg)


# ---------------------------------------------------------------------------------- paths
@pytest.mark.parametrize(
    "name",
    ["..", ".", "", "../x", "a/../../b", "/etc/passwd", "a/b", "a\\b", "x\x00y", "C:evil", "c:\\x"],
)
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(UnsafePathError, match="not a plain file name"):
        safe_child(tmp_path, name, what="sweep cell name")
    assert sanitize_name(name) not in ("", ".", "..")
    assert safe_child(tmp_path, sanitize_name(name)).parent == tmp_path


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.text(max_size=40), other=st.text(alphabet="./\\a:", max_size=8))
def test_safe_child_never_leaves_the_directory(tmp_path, name, other):
    for candidate in (name, other, name + other):
        try:
            path = safe_child(tmp_path, candidate)
        except UnsafePathError:
            continue
        assert path.parent == tmp_path and path.resolve().parent == tmp_path.resolve()
        clean = sanitize_name(candidate)
        assert not clean.startswith(".") and safe_child(tmp_path, clean).parent == tmp_path


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_symbolic_links_planted_in_a_run_directory_cannot_redirect_writes(tmp_path):
    task = RepeatedTokens(d_vocab=12, seq_len=16, min_period=3, max_period=6, held_out_periods=())
    cfg = ih.HookedTransformerConfig(
        n_layers=1,
        d_model=8,
        n_heads=1,
        d_head=8,
        d_vocab=12,
        n_ctx=16,
        seed=0,
        model_name="../../escaped",  # names from configs never become paths
    )
    recipe = ih.TrainConfig(
        steps=2, batch_size=2, n_checkpoints=2, progress=False, head_scores=False
    )
    out = tmp_path / "run"
    run = ih.train(ih.HookedTransformer(cfg), task, recipe, out)
    assert all(out in p.parents for p in _files_under(tmp_path) if p != out)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    decoy = outside / "step_00000001.safetensors"
    decoy.write_text("not yours")
    (out / "checkpoints").rename(tmp_path / "moved")
    (out / "checkpoints").symlink_to(outside, target_is_directory=True)
    for kwargs in (dict(resume=True), dict(overwrite=True)):
        with pytest.raises(ValueError, match="outside"):
            ih.train(ih.HookedTransformer(cfg), task, recipe, out, **kwargs)
    assert sorted(p.name for p in outside.iterdir()) == [decoy.name]
    assert decoy.read_text() == "not yours" and not (out / ".lock").exists()

    run = ih.Run(out)
    with pytest.raises(UnsafePathError, match="not a plain file name"):
        run.output_path("../report.html")
    with pytest.raises(UnsafePathError, match="outside"):
        run.output_path("checkpoints", "figure.png")
    assert run.output_path("reports", "report.html") == out / "reports" / "report.html"
    assert (out / "reports").is_dir() and sanitize_name(cfg.model_name) == "escaped"


def test_lock_and_metrics_are_plain_files_inside_the_run(tmp_path):
    """A `.lock` planted as a symbolic link to a file elsewhere is not followed for writing."""
    out = tmp_path / "run"
    task = RepeatedTokens(d_vocab=12, seq_len=16, min_period=3, max_period=6, held_out_periods=())
    cfg = ih.HookedTransformerConfig(
        n_layers=1, d_model=8, n_heads=1, d_head=8, d_vocab=12, n_ctx=16
    )
    recipe = ih.TrainConfig(
        steps=1, batch_size=2, n_checkpoints=2, progress=False, head_scores=False
    )
    ih.train(ih.HookedTransformer(cfg), task, recipe, out)
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    os.symlink(target, out / ".lock")
    with pytest.raises(ValueError, match="outside"):
        ih.train(ih.HookedTransformer(cfg), task, recipe.replace(steps=2), out, resume=True)
    assert target.read_text() == "keep"
