"""nbval runs of the notebooks (`pytest --nbval-lax notebooks/`, part of `pytest -q`).

Each notebook's kernel starts offline, on the tiny model, with no config.env and no
secrets, writing into its own temporary output folder, in strict mode (FLUXNB_STRICT=1:
an error a form would show is raised, so its cell fails). Each notebook ends with a cell
that checks what it made. A notebook (or a cell) that needs a fluxnb module that has not
landed yet is skipped with the reason said.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

SECRETS = ("ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "JUPYTER_TOKEN", "JUPYTER_PASSWORD")
# notebook -> the module all of it needs; cell source pattern -> the module that cell needs
NOTEBOOK_NEEDS = {"sweeps.ipynb": "fluxnb.sweeps", "batch.ipynb": "fluxnb.batch"}
CELL_NEEDS = {r"\bfluxnb\.(sweep|grid)\(": "fluxnb.sweeps", r"\bfluxnb\.run_batch\(": "fluxnb.batch"}


def pytest_ignore_collect(collection_path, config):
    """Only the notebooks here: not executed copies in subfolders (outputs/, batch reports)."""
    if collection_path.is_dir() and collection_path.parent == Path(__file__).resolve().parent:
        return True
    return None


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix != ".ipynb":
            continue
        need = NOTEBOOK_NEEDS.get(item.path.name)
        if need and _missing(need):
            item.add_marker(pytest.mark.skip(reason=f"{item.path.name} needs {need}, which is not in this checkout yet"))
            continue
        source = getattr(getattr(item, "cell", None), "source", "")
        for pattern, module in CELL_NEEDS.items():
            if re.search(pattern, source) and _missing(module):
                item.add_marker(pytest.mark.skip(reason=f"this cell needs {module}, which is not in this checkout yet"))


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
