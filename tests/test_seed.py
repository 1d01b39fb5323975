"""Coming from flux-generate.sh: its config.env names (HUGGINGFACE_TOKEN, the SSH and
download keys), its token file and its model cache on a pod, and what doctor says of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import BIN, run_cli

SEED_TOKEN = "hf_" + "S" * 34
REPO_DIR = "models--black-forest-labs--FLUX.1-dev"
SHA = "0ef5fff789c832c5c7f4e127f94c8b54bbcced44"


def _config(tmp_path, text: str):
    path = tmp_path / "config.env"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _model_cache(hub_cache) -> None:
    """A hub cache holding FLUX.1-dev's pipeline folder as the Hugging Face client lays it out."""
    repo = hub_cache / REPO_DIR
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    snap = repo / "snapshots" / SHA
    (snap / "vae").mkdir(parents=True)
    (snap / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    (snap / "vae" / "config.json").write_text("{}")


# ---------------------------------------------------------------------------------------
# HUGGINGFACE_TOKEN
# ---------------------------------------------------------------------------------------

def test_huggingface_token_from_the_environment_and_config_env(monkeypatch, tmp_path):
    from fluxnb.logs import scrub
    from fluxnb.model.hub import find_token

    assert find_token() == (None, "")
    monkeypatch.setenv("HUGGINGFACE_TOKEN", SEED_TOKEN)
    assert find_token() == (SEED_TOKEN, "the environment (HUGGINGFACE_TOKEN)")
    assert scrub(f"token {SEED_TOKEN} here") == "token *** here"  # a secret like HF_TOKEN
    monkeypatch.setenv("HF_TOKEN", "hf_" + "T" * 34)
    assert find_token()[1] == "the environment (HF_TOKEN)"  # HF_TOKEN first
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGINGFACE_TOKEN")
    cfg = _config(tmp_path, f'RUNPOD_HOST=1.2.3.4\nHUGGINGFACE_TOKEN="{SEED_TOKEN}"\n')
    monkeypatch.setenv("FLUXNB_CONFIG_ENV", str(cfg))
    assert find_token() == (SEED_TOKEN, f"config.env ({cfg}: HUGGINGFACE_TOKEN)")
    assert scrub(SEED_TOKEN) == "***"


def test_doctor_says_where_the_seed_token_came_from(monkeypatch, tmp_path, capsys):
    from fluxnb.front import cli

    cfg = _config(tmp_path, f"HUGGINGFACE_TOKEN={SEED_TOKEN}\nFLUXNB_MODEL=tiny\n")
    monkeypatch.setenv("FLUXNB_CONFIG_ENV", str(cfg))
    cli.main(["doctor", "--json"])
    out = capsys.readouterr().out
    [row] = [r for r in json.loads(out)["checks"] if r["name"] == "hf_token"]
    assert row["status"] == "ok" and row["value"] == f"present, from config.env ({cfg}: HUGGINGFACE_TOKEN) (not shown)"
    assert SEED_TOKEN not in out


# ---------------------------------------------------------------------------------------
# On a pod: the seed's token file and model cache
# ---------------------------------------------------------------------------------------

def _pod_env(tmp_path, **extra) -> dict:
    """A pod: the workspace folder exists; HOME and HF_HOME as the seed and runpod_setup.sh left them."""
    ws, home = tmp_path / "workspace", tmp_path / "home"
    ws.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_TOKEN_PATH")}
    env.update(FLUXNB_WORKSPACE=str(ws), HOME=str(home), HF_HOME=str(ws / ".cache" / "huggingface"),
               FLUXNB_CACHE_DIR=str(tmp_path / "cache"), FLUXNB_MODEL="black-forest-labs/FLUX.1-dev")
    env.update(extra)
    return env


def _hub_cache_in(env) -> str:
    code = "import fluxnb, huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_on_a_pod_the_seed_token_file_counts(monkeypatch, tmp_path):
    from fluxnb.model import hub

    seed_file = tmp_path / "home" / ".cache" / "huggingface" / "token"
    seed_file.parent.mkdir(parents=True)
    seed_file.write_text(SEED_TOKEN + "\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLUXNB_WORKSPACE", str(tmp_path / "not-here"))
    assert hub.find_token() == (None, "")  # off a pod: only the client's own token file
    (tmp_path / "workspace").mkdir()
    monkeypatch.setenv("FLUXNB_WORKSPACE", str(tmp_path / "workspace"))
    assert hub.find_token() == (SEED_TOKEN, f"the Hugging Face token file ({seed_file})")


@pytest.mark.parametrize("where", ["workspace/hf/hub", "workspace/.cache/other/hub", "home/.cache/huggingface/hub",
                                   "workspace/deep/er/hub (HF_HOME in config.env)"])
def test_on_a_pod_an_existing_model_cache_is_reused(tmp_path, where):
    path, _, why = where.partition(" ")
    cache = tmp_path / path
    _model_cache(cache)
    env = _pod_env(tmp_path)
    if why:
        env["FLUXNB_CONFIG_ENV"] = str(_config(tmp_path, f"HF_HOME={cache.parent}\n"))
    assert _hub_cache_in(env) == str(cache)


def test_the_cache_in_use_wins_and_off_a_pod_nothing_is_searched(tmp_path):
    env = _pod_env(tmp_path)
    _model_cache(tmp_path / "workspace" / "hf" / "hub")
    _model_cache(tmp_path / "workspace" / ".cache" / "huggingface" / "hub")  # HF_HOME's own: used as it is
    assert _hub_cache_in(env) == str(tmp_path / "workspace" / ".cache" / "huggingface" / "hub")
    env = dict(env, FLUXNB_WORKSPACE=str(tmp_path / "no-workspace"))  # not a pod
    assert _hub_cache_in(env) == str(tmp_path / "workspace" / ".cache" / "huggingface" / "hub")
    env["HF_HOME"] = str(tmp_path / "empty")
    assert _hub_cache_in(env) == str(tmp_path / "empty" / "hub")
    # An explicit HF_HUB_CACHE is never second-guessed.
    env = _pod_env(tmp_path, HF_HOME=str(tmp_path / "empty"), HF_HUB_CACHE=str(tmp_path / "mine"))
    assert _hub_cache_in(env) == str(tmp_path / "mine")


def test_doctor_on_a_pod_says_where_the_token_and_the_model_were_found(tmp_path):
    seed_cache = tmp_path / "workspace" / "hf" / "hub"
    _model_cache(seed_cache)
    token_file = tmp_path / "home" / ".cache" / "huggingface" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(SEED_TOKEN)
    r = subprocess.run([str(BIN / "fluxnb"), "doctor", "--json"], env=_pod_env(tmp_path), capture_output=True,
                       text=True, timeout=300)
    rows = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert rows["hf_token"]["status"] == "ok"
    assert rows["hf_token"]["value"] == f"present, from the Hugging Face token file ({token_file}) (not shown)"
    assert rows["model"]["status"] == "ok", rows["model"]
    assert str(seed_cache / REPO_DIR / "snapshots" / SHA) in rows["model"]["value"]
    assert f"reused from {seed_cache} ({tmp_path}/workspace/.cache/huggingface/hub lacked it)" in rows["model"]["value"]
    assert SEED_TOKEN not in r.stdout + r.stderr


# ---------------------------------------------------------------------------------------
# flux-generate.sh's other keys: one note, once; doctor says it every time
# ---------------------------------------------------------------------------------------

def test_seed_only_keys_get_one_note_once(tmp_path):
    cfg = _config(tmp_path, "RUNPOD_HOST=1.2.3.4\nRUNPOD_PORT=22022\nSSH_KEY=~/.ssh/id_ed25519\n"
                            "OUTPUT_DIR_WSL=/home/me/flux\nFLUXNB_MODEL=tiny\n")
    env = {"FLUXNB_CONFIG_ENV": str(cfg), "FLUXNB_CACHE_DIR": str(tmp_path / "cache")}
    quiet = run_cli("-q", "config", env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""  # -q: not said, so not marked as said
    first = run_cli("config", env=env)
    notes = [line for line in first.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, first.stderr
    for words in ("RUNPOD_HOST, RUNPOD_PORT, SSH_KEY, OUTPUT_DIR_WSL", "not needed", "no SSH", "fluxnb pull URL",
                  "download.sh"):
        assert words in notes[0]
    assert "OUTPUT_DIR_WINDOWS" not in notes[0]  # only the keys present
    assert "note:" not in run_cli("config", env=env).stderr  # once
    doctor = run_cli("doctor", "--json", env=env)
    [row] = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "config.env"]
    assert row["status"] == "info" and "fluxnb pull URL" in row["fix"] and "RUNPOD_PORT" in row["fix"]
    # A key added later: said again (for the new set).
    cfg.write_text(cfg.read_text() + "OUTPUT_DIR_WINDOWS=C:/flux\n")
    again = run_cli("config", env=env)
    assert "OUTPUT_DIR_WINDOWS" in again.stderr


def test_no_note_without_seed_keys(tmp_path):
    cfg = _config(tmp_path, "FLUXNB_MODEL=tiny\n")
    r = run_cli("config", env={"FLUXNB_CONFIG_ENV": str(cfg), "FLUXNB_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0 and "note:" not in r.stderr and not (tmp_path / "cache" / "notes").exists()


# ---------------------------------------------------------------------------------------
# README: "Coming from flux-generate.sh"
# ---------------------------------------------------------------------------------------

def test_readme_maps_every_seed_option_to_a_real_flag():
    import re

    from fluxnb.front.cli import build_parser
    from support import ROOT

    section = (ROOT / "README.md").read_text().split("### Coming from flux-generate.sh", 1)[1].split("\n#", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    parser = build_parser()
    subs = next(a for a in parser._actions if a.choices and "generate" in a.choices).choices
    options = {s for name in ("generate", "enhance", "doctor", "pull") for a in subs[name]._actions
               for s in a.option_strings}
    seed_flags = {f for old, _ in rows for f in re.findall(r"--[a-z0-9-]+", old)}
    assert {"--fast", "--quality", "--portrait", "--landscape", "--square", "--hd", "--4k", "--custom", "--seed",
            "--creative", "--strict", "--enhance-ai", "--cpu-offload", "--no-cpu-offload", "--format"} == seed_flags
    assert {opt for _, new in rows for opt in re.findall(r"--[a-z0-9-]+", new)} <= options
    assert seed_flags <= {s for a in subs["generate"]._actions for s in a.option_strings}  # "the same flags"
    for words in ("deploy", "download.sh", "HUGGINGFACE_TOKEN", "RUNPOD_HOST", "test-enhance-verbose.py",
                  "test-hf-models.py", "model CPU offload", "temperature 0.7", "77 CLIP tokens"):
        assert words in section, words
