"""Secrets and hygiene: committed notebooks carry no outputs and nothing shaped like a key;
secrets are never papermill parameters; config.env is ignored and .env.example holds no value."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from support import ROOT

from fluxnb.config.environment import SECRET_NAMES

KEY_PATTERNS = {
    "Anthropic key": re.compile(r"sk-ant-[A-Za-z0-9_\-]{16,}"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}"),
    "OpenAI-style key": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9]{32,}"),
    "Jupyter URL token": re.compile(r"[?&]token=[0-9a-f]{32,}"),
}
TEXT_EXT = {".ipynb", ".md", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".txt", ".example", ".sh", ".json", ".env"}


def tracked(*patterns: str) -> list[Path]:
    """Files git tracks (the committed ones); a checkout without git: the files on disk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *patterns], cwd=ROOT, capture_output=True,
                             check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        return [p for pat in patterns for p in ROOT.glob(pat)]


def key_like(text: str) -> list[str]:
    return [name for name, pat in KEY_PATTERNS.items() if pat.search(text)]


def notebook_problems(path: Path) -> list[str]:
    """What is wrong with a notebook as committed: outputs, execution counts, key-shaped
    strings, secrets passed as papermill parameters."""
    text = path.read_text(encoding="utf-8")
    problems = [f"holds something shaped like a {k}" for k in key_like(text)]
    nb = json.loads(text)
    for n, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {n} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {n} has an execution count")
        source = "".join(cell.get("source", []))
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            for name in SECRET_NAMES:
                if re.search(rf"^\s*{name}\s*[:=]", source, re.MULTILINE | re.IGNORECASE):
                    problems.append(f"cell {n}: {name} is a papermill parameter (secrets come from the environment)")
    return problems


def _nb(cells: list[dict]) -> dict:
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source: str, **extra) -> dict:
    cell = {"cell_type": "code", "source": source, "metadata": {}, "outputs": [], "execution_count": None}
    cell.update(extra)
    return cell


def test_the_notebook_check_catches_what_it_should(tmp_path):
    clean = tmp_path / "clean.ipynb"
    clean.write_text(json.dumps(_nb([_code("import fluxnb"), {"cell_type": "markdown", "source": "# hi",
                                                                "metadata": {}}])))
    assert notebook_problems(clean) == []
    bad = tmp_path / "bad.ipynb"
    key = "sk-ant-api03-" + "x1" * 20
    token = "hf_" + "AbC9" * 9
    bad.write_text(json.dumps(_nb([
        _code("print(1)", outputs=[{"output_type": "stream", "name": "stdout", "text": "1\n"}], execution_count=3),
        _code(f"client = Anthropic(api_key='{key}')"),
        _code(f"HF_TOKEN = '{token}'\nsteps = 20", metadata={"tags": ["parameters"]}),
    ])))
    problems = notebook_problems(bad)
    assert "cell 0 has outputs" in problems and "cell 0 has an execution count" in problems
    assert "holds something shaped like a Anthropic key" in problems
    assert "holds something shaped like a Hugging Face token" in problems
    assert any("HF_TOKEN is a papermill parameter" in p for p in problems)


def test_committed_notebooks_are_clean():
    notebooks = [p for p in tracked("*.ipynb") if p.is_file()]
    names = {str(p.relative_to(ROOT)) for p in notebooks}
    assert {f"notebooks/{n}.ipynb" for n in ("generate", "sweeps", "batch", "runlog")} <= names, names
    bad = {str(p.relative_to(ROOT)): notebook_problems(p) for p in notebooks}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_committed_text_file_holds_a_key():
    # Tests may hold fake keys (they check that keys never leak); everything else may not.
    files = [p for p in tracked() if p.is_file() and p.suffix in TEXT_EXT | {""} and "tests" not in p.parts
             and p.stat().st_size < 2_000_000]
    assert files, "no tracked files found"
    found = {}
    for p in files:
        try:
            hits = key_like(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
        if hits:
            found[str(p.relative_to(ROOT))] = hits
    assert found == {}


def test_config_env_is_ignored_and_env_example_holds_no_secret():
    r = subprocess.run(["git", "check-ignore", "-q", "config.env"], cwd=ROOT)
    assert r.returncode == 0, "config.env must be ignored by git"
    example = ROOT / ".env.example"
    assert example in tracked(".env.example") or not (ROOT / ".git").exists()
    values = {}
    for line in example.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    assert {"HF_TOKEN", "ANTHROPIC_API_KEY"} <= set(values)  # it names the keys people need
    for name in SECRET_NAMES:
        assert not values.get(name), f".env.example gives {name} a value"
    assert "JUPYTER_TOKEN" not in values  # an empty token is refused: it stays commented out
