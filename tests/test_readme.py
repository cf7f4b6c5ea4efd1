"""Every ```python block of README.md runs as written.

The blocks of one `##` section run in order in one fresh interpreter, as a reader would run them
top to bottom (a later block may use the names of an earlier one in its section, never of another
section), in a temporary working directory holding a copy of `assets/demo` (the blocks that
read the shipped demo run say `assets/demo`, as from the repository root), on the CPU, offline,
under a time limit. Tracebacks point at README.md's own line numbers.

Convention for blocks that need the network: the block's first line is `# needs: internet`.
It still runs here: `load_pretrained` answers each hub name with a tiny local GPT-2
(`inducthead.testing.tiny_gpt2`; checkpoint arguments dropped) and prints the substitution, and
the test checks that such a block did ask for a hub name (so the marker is never stale).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INTERNET = "# needs: internet"
TIME_LIMIT_S = 900  # per section; the quick start trains the demo preset (~25 s on 2 free cores)
FENCE = re.compile(r"^```(\w*)\s*$")


def python_blocks(text: str) -> list[dict]:
    """Each ```python block: its section (the `##` heading above it), first code line (1-based)
    and code."""
    blocks, section, lang, start, body = [], "(top)", None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if lang is None:
            if fence:
                lang, start, body = fence.group(1), number + 1, []
            elif line.startswith("## "):
                section = line[3:].strip()
        elif line.startswith("```"):
            if lang == "python":
                code = "\n".join(body) + "\n"
                internet = code.lstrip().startswith(INTERNET)
                blocks.append(dict(section=section, line=start, code=code, internet=internet))
            lang = None
        else:
            body.append(line)
    return blocks


BLOCKS = python_blocks(README.read_text())
SECTIONS = list(dict.fromkeys(b["section"] for b in BLOCKS))
# they train: the demo preset (800 steps); a second seed and the LLC; 4 seeds x 300 steps
SLOW = {"Quick start (Python)", "Training dynamics", "Performance"}

# Runs in the child interpreter: the blocks of one section, with README.md's line numbers.
DRIVER = r"""
import json, sys
from pathlib import Path

blocks = json.loads(Path(sys.argv[1]).read_text())
tiny_dir = sys.argv[2]
asked = []

def offline_hub():
    import inducthead, inducthead.runs, inducthead.runs.pretrained as pretrained
    import inducthead.dynamics.sources as sources

    real = pretrained.load_pretrained

    def load_pretrained(name, *args, **kwargs):
        if not Path(str(name)).exists():
            asked.append(str(name))
            print(f"[test_readme] {name!r} -> the tiny local GPT-2 {tiny_dir}", flush=True)
            kwargs.pop("checkpoint", None), kwargs.pop("checkpoint_value", None)
            name = tiny_dir
        return real(name, *args, **kwargs)

    for module in (inducthead, inducthead.runs, sources):
        module.load_pretrained = load_pretrained

namespace = {"__name__": "__main__"}
for block in blocks:
    if block["internet"]:
        offline_hub()
        before = len(asked)
    exec(compile("\n" * (block["line"] - 1) + block["code"], "README.md", "exec"), namespace)
    if block["internet"] and len(asked) == before:
        sys.exit(f"README.md:{block['line']} is marked '# needs: internet' but asks for no hub")
print("[test_readme] ran", len(blocks), "blocks")
"""


def test_the_readme_has_python_blocks_and_they_parse():
    assert len(BLOCKS) >= 6, "README.md lost its python blocks"
    for block in BLOCKS:
        compile(block["code"], f"README.md:{block['line']}", "exec")  # SyntaxError names the line
    assert all(b["section"] != "(top)" for b in BLOCKS)


def test_every_picture_and_local_link_exists():
    text = README.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert len(images) >= 4, "README.md lost its pictures"
    for target in images:
        path = ROOT / target
        assert path.is_file(), f"README.md shows {target}, which does not exist"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{target} is not a PNG"
    for target in re.findall(r"`(assets/[\w/.{},-]+\.png)`", text):
        for name in re.findall(r"\{([^}]*)\}", target)[0].split(",") if "{" in target else [""]:
            path = ROOT / re.sub(r"\{[^}]*\}", name, target)
            assert path.is_file(), f"README.md names {path.relative_to(ROOT)}, which is missing"


def test_the_parser_finds_sections_lines_and_markers():
    text = "## A\n```python\nx = 1\n```\n```bash\nls\n```\n"
    text += "## B\n```python\n# needs: internet\n```\n"
    blocks = python_blocks(text)
    assert [(b["section"], b["line"], b["internet"]) for b in blocks] == [
        ("A", 3, False),
        ("B", 10, True),
    ]
    assert blocks[0]["code"] == "x = 1\n"


def run_blocks(blocks: list[dict], tmp_path: Path, tiny_dir: Path):
    """Run `blocks` with DRIVER in a fresh interpreter in tmp_path/work (with assets/demo)."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "assets" / "demo", work / "assets" / "demo")
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "CUDA_VISIBLE_DEVICES": "",
        # tiny models: one thread is as fast on free cores and was 3x faster on 2 shared ones
        # (the quick start's 800 steps: 74 s vs 228 s)
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "blocks.json"), str(tiny_dir)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
    )


def test_the_driver_substitutes_hub_names_and_rejects_stale_markers(tmp_path, tiny_gpt2_dir):
    hub = "# needs: internet\nimport inducthead as ih\nb = ih.load_pretrained('gpt2')\n"
    hub += "assert type(b).__name__ == 'TransformerBridge' and b.cfg.n_layers == 2\n"
    good = [dict(section="s", line=10, code=hub, internet=True)]
    proc = run_blocks(good, tmp_path / "good", tiny_gpt2_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'gpt2' -> the tiny local GPT-2" in proc.stdout
    stale = [dict(section="s", line=20, code="# needs: internet\nx = 1\n", internet=True)]
    proc = run_blocks(stale, tmp_path / "stale", tiny_gpt2_dir)
    assert proc.returncode != 0 and "README.md:20 is marked" in proc.stderr
    failing = [dict(section="s", line=30, code="x = 1\nundefined_name\n", internet=False)]
    proc = run_blocks(failing, tmp_path / "failing", tiny_gpt2_dir)
    assert proc.returncode != 0 and 'File "README.md", line 31' in proc.stderr


@pytest.mark.parametrize(
    "section",
    [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in SECTIONS],
)
def test_readme_section_runs(section, tmp_path, tiny_gpt2_dir):
    blocks = [b for b in BLOCKS if b["section"] == section]
    proc = run_blocks(blocks, tmp_path, tiny_gpt2_dir)
    assert proc.returncode == 0, f"README section {section!r} failed:\n{proc.stderr[-6000:]}"
    assert f"ran {len(blocks)} blocks" in proc.stdout
    for line in proc.stdout.splitlines():
        if line.startswith("[test_readme] '"):
            print(line)  # a `# needs: internet` block ran on the tiny local GPT-2
