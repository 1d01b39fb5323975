"""The notebook runs (nbval) fail when a notebook cannot do its job: in strict mode
(FLUXNB_STRICT=1, set by notebooks/conftest.py) the forms raise the errors they would
otherwise show, and each notebook ends with a cell that checks what it made."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from fluxnb import ui
from fluxnb.errors import FluxnbError
from support import ROOT


@pytest.fixture
def not_a_model(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.txt").write_text("no model_index.json here")
    return folder


def test_forms_show_their_errors_and_raise_them_in_strict_mode(tmp_path, not_a_model, monkeypatch):
    # 1. As a person uses them: the error is shown in the form, nothing is raised.
    gen = ui.generator(model=str(not_a_model), output_dir=str(tmp_path), load=True)
    assert "model_index.json" in gen.message.value
    gen.prompt.value = ""
    assert gen.run() is None and "prompt" in gen.message.value
    sweep = ui.sweep_form(model="tiny", output_dir=str(tmp_path), rows=("seed", "1"), cols=("seed", "2"))
    assert sweep.run() is None and "the same axis as the rows" in sweep.message.value
    assert sweep.save() is None and "no grid yet" in sweep.message.value
    # 2. In strict mode (the notebook tests) the same errors are raised.
    monkeypatch.setenv("FLUXNB_STRICT", "1")
    with pytest.raises(FluxnbError, match="model_index.json"):
        ui.generator(model=str(not_a_model), output_dir=str(tmp_path), load=True)
    with pytest.raises(FluxnbError, match="prompt"):
        gen.run()
    assert not gen.generate_button.disabled  # the form is still usable after the raise
    with pytest.raises(FluxnbError, match="the same axis as the rows"):
        sweep.run()
    assert not sweep.run_button.disabled
    with pytest.raises(FluxnbError, match="no grid yet"):
        sweep.save()


def _with_model(notebook: dict, model: str) -> dict:
    """The notebook with its parameters cell's `model = None` set to `model`."""
    nb = json.loads(json.dumps(notebook))
    [cell] = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(cell["source"])
    assert "model = None" in source
    cell["source"] = source.replace("model = None", f"model = {model!r}", 1)
    return nb


def test_a_broken_model_fails_the_notebook_run(tmp_path, tiny_model, not_a_model):
    """generate.ipynb run by nbval as the suite runs it (the same notebooks/conftest.py):
    as committed it passes on the tiny model; with its model set to a folder that is not a
    model it fails, at the cell that builds the form, naming the problem (without strict
    mode that cell would show the error in the form and pass)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "pytest.ini").write_text("[pytest]\n")  # not the repository's settings: only what is given below
    shutil.copy(ROOT / "notebooks" / "conftest.py", run / "conftest.py")
    notebook = json.loads((ROOT / "notebooks" / "generate.ipynb").read_text())
    (run / "good.ipynb").write_text(json.dumps(notebook))
    (run / "broken.ipynb").write_text(json.dumps(_with_model(notebook, str(not_a_model))))
    report = tmp_path / "report.xml"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                        "--nbval-current-env", f"--junitxml={report}", f"--basetemp={tmp_path / 'tmp'}", str(run)],
                       cwd=run, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    cases = {}
    for case in ET.parse(report).iter("testcase"):
        failure = case.find("failure")
        cases[(case.get("classname"), case.get("name"))] = None if failure is None else failure.get("message", "") \
            + (failure.text or "")
    good = {name: failed for (module, name), failed in cases.items() if module.startswith("good")}
    broken = {name: failed for (module, name), failed in cases.items() if module.startswith("broken")}
    code_cells = sum(c["cell_type"] == "code" for c in notebook["cells"])
    assert len(good) == len(broken) == code_cells, cases
    assert not any(good.values()), good  # the committed notebook, the check cell included
    form_cell = next(n for n, c in enumerate(c for c in notebook["cells"] if c["cell_type"] == "code")
                     if "ui.generator(" in "".join(c["source"]))
    failed = [n for n, (name, failure) in enumerate(broken.items()) if failure]
    assert failed[0] == form_cell, broken
    assert "model_index.json" in list(broken.values())[form_cell]


def test_runlog_notebook_on_long_prompts_and_many_long_seeds(tmp_path, tiny_model, monkeypatch):
    """runlog.ipynb, run strictly (papermill, FLUXNB_STRICT=1) on a log of what made it hard to
    read: a long prompt and a dozen ten-digit seeds. The tables cut the prompt to 60 characters,
    the seeds plot's title says it shows 10 of the 12 seeds, and the notebook's check passes."""
    import html
    import re

    import nbformat

    from fluxnb.image.make import generate
    from fluxnb.runs.batch.notebook import execute_notebook

    out = tmp_path / "log"
    long = "a lighthouse on a cliff at dusk, oil painting, " * 4
    generate(long, model="tiny", steps=1, size="64x64", seed=4_000_000_000, count=12, output_dir=str(out),
             image_format="png", progress=False)
    monkeypatch.setenv("FLUXNB_STRICT", "1")
    monkeypatch.setenv("FLUXNB_MODEL", "tiny")
    report = tmp_path / "runlog-run.ipynb"
    execute_notebook(ROOT / "notebooks" / "runlog.ipynb", report, {"run_dir": str(out), "export_to": None},
                     echo=False, report_mode=False)
    nb = nbformat.read(report, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    [slowest] = [c for c in code if "analysis.show(slowest.head(10))" in c.source]
    table = next(o for o in slowest.outputs if o.output_type == "execute_result").data["text/html"]
    prompts = [html.unescape(p) for p in re.findall(r"<td [^>]*>(a lighthouse[^<]*)<", table)]
    assert len(prompts) == 10 and all(len(p) <= 60 and p.endswith("…") for p in prompts), prompts
    assert "white-space: nowrap" in table and "text-align: left" in table and long.strip() in table  # whole: tooltip
    [seeds] = [c for c in code if c.source.startswith("top = ")]
    assert any("image/png" in o.get("data", {}) for o in seeds.outputs)             # the plot was drawn
    shown = next(o for o in seeds.outputs if o.output_type == "execute_result").data["text/html"]
    assert shown.count("<th>40000000") == 10                                          # the 10 seeds the plot shows
