"""Shared fixtures: every test runs offline, on the CPU, with the tiny model, in its own
folders, with no config.env and no secrets from the machine it runs on."""

from __future__ import annotations

import os

import pytest

from support import run_cli


@pytest.fixture(scope="session")
def session_env(tmp_path_factory):
    """Process-wide environment for the whole run (inherited by subprocesses and kernels)."""
    base = tmp_path_factory.mktemp("fluxnb-session")
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(base / "hf"),
        "FLUXNB_CACHE_DIR": os.environ.get("FLUXNB_TEST_CACHE_DIR", str(base / "cache")),
        "FLUXNB_CONFIG_ENV": str(base / "no-config.env"),  # a path that does not exist: no config.env
        "FLUXNB_LOG_DIR": str(base / "logs"),
        "NO_COLOR": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for name in ("ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "RUNPOD_POD_ID",
                 "JUPYTER_TOKEN"):
        os.environ.pop(name, None)
    for name in list(os.environ):
        if name.startswith("FLUXNB_") and name not in env:
            os.environ.pop(name)
    os.environ.update(env)
    return env


@pytest.fixture(autouse=True)
def _isolated(session_env, tmp_path, monkeypatch):
    """Each test: its own working folder (outputs/ and logs/ land there), and the `fluxnb`
    logger back to normal afterwards (cli.main attaches handlers to the captured stderr)."""
    import logging

    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("FLUXNB_") and name not in session_env:
            monkeypatch.delenv(name)
    yield
    logger = logging.getLogger("fluxnb")
    for h in [h for h in logger.handlers if getattr(h, "_fluxnb", False)]:
        logger.removeHandler(h)
        h.close()
    logger.propagate = True


@pytest.fixture(scope="session")
def tiny_model(session_env):
    """The tiny model's folder, built once per session."""
    from fluxnb.model.testmodel import ensure_tiny

    return ensure_tiny()


@pytest.fixture(scope="session")
def tiny_kontext(session_env):
    """A tiny random-weight FLUX.1 Kontext pipeline's folder (FluxKontextPipeline), built once."""
    from fluxnb.model.testmodel import ensure_tiny

    return ensure_tiny("kontext")


@pytest.fixture(scope="session")
def tiny_fill(session_env):
    """A tiny random-weight FLUX.1 Fill pipeline's folder (FluxFillPipeline), built once."""
    from fluxnb.model.testmodel import ensure_tiny

    return ensure_tiny("fill")


@pytest.fixture
def outdir(tmp_path):
    return tmp_path / "out"


@pytest.fixture
def cli():
    """`run_cli` as a fixture: cli("generate", "x", ...) -> CompletedProcess."""
    return run_cli
