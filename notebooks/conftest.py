"""nbval runs of the notebooks (`pytest --nbval-lax notebooks/`, part of `pytest -q`).

Each notebook's kernel starts offline, on the tiny model, with no config.env and no
secrets, writing into its own temporary output folder, in strict mode (FLUXNB_STRICT=1:
an error a form would show is raised, so its cell fails). Each notebook ends with a cell
that checks what it made. Nothing here is skipped: a notebook whose fluxnb module is missing
fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SECRETS = ("ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "JUPYTER_TOKEN", "JUPYTER_PASSWORD")


def pytest_ignore_collect(collection_path, config):
    """Only the notebooks here: not executed copies in subfolders (outputs/, batch reports)."""
    if collection_path.is_dir() and collection_path.parent == Path(__file__).resolve().parent:
        return True
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """The environment a notebook's kernel starts with (at its first cell), then put back."""
    if item.path.suffix != ".ipynb" or getattr(item.parent, "kernel", None) is not None:
        yield
        return
    base = item.config._tmp_path_factory.getbasetemp()
    saved = dict(os.environ)
    for name in SECRETS:
        os.environ.pop(name, None)
    os.environ.update({
        "HF_HUB_OFFLINE": "1",
        "FLUXNB_STRICT": "1",  # the forms raise what they would show (fluxnb.errors.raise_if_strict)
        "FLUXNB_MODEL": "tiny",
        "FLUXNB_CONFIG_ENV": str(base / "no-config.env"),  # a path that does not exist: no config.env
        "FLUXNB_OUTPUT_DIR": str(base / f"nb-{item.path.stem}" / "outputs"),
        "FLUXNB_LOG_DIR": str(base / "nb-logs"),
        "TOKENIZERS_PARALLELISM": "false",
    })
    # the tests' session sets FLUXNB_CACHE_DIR (the tiny model is built once); alone, our own
    os.environ.setdefault("FLUXNB_CACHE_DIR", os.environ.get("FLUXNB_TEST_CACHE_DIR", str(base / "cache")))
    try:
        yield  # the kernel starts here, inheriting this environment
    finally:
        os.environ.clear()
        os.environ.update(saved)
