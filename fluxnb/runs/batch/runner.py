"""`fluxnb batch` and `fluxnb.run_batch`: the batch notebook (package data), run by papermill."""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

from ...config.params import parse_yaml
from ...errors import FluxnbError, RuntimeFailure
from .kernel import BatchFailed, Summary, check, now, summarize
from .notebook import NotebookFailed, execute_notebook
from .params import NOTEBOOK, check_names, load, plan, preflight

log = logging.getLogger("fluxnb.batch")



def run(params: str | os.PathLike | dict, *, out: str | os.PathLike | None = None, overrides: dict | None = None,
        parameters=None, force: bool = False, backend: str | None = None, kernel_name: str | None = None,
        notebook: str | os.PathLike | None = None, echo: bool = True, **backend_options) -> Summary:
    """Run the batch notebook on a params file (or dict) with papermill, keeping the executed
    notebook (report mode) in the output folder. Raises BatchFailed (exit 1) listing the
    failures when any item failed; bad params raise before any kernel starts.

    `overrides`: {key: value} over the file's keys; `parameters`: (KEY, VALUE) text pairs as
    `fluxnb batch -p KEY VALUE` takes them, each VALUE read as strict YAML. `backend="ray"`
    and its options (address=, workers=, gpus_per_worker=, ray_results=) are the params keys
    of the same names; a key given twice over these is refused."""
    # 1. Read and check everything before a kernel starts.
    source = str(params) if not isinstance(params, dict) else "params"
    raw = dict(params) if isinstance(params, dict) else load(params)
    check_names(raw, source)
    changes = dict(overrides or {})
    for key, text in parameters or ():
        if key in changes:
            raise FluxnbError(f"-p {key}: given twice", field=key, fix="give each key once")
        check_names({key: None}, f"-p {key}")  # the name first: a secret's name is refused before its value
        changes[key] = parse_yaml(text, f"-p {key}")
    for key, value in {"backend": backend, **backend_options}.items():
        if value is not None:
            if key in changes:
                raise FluxnbError(f"{key}: given with -p and as a flag", field=key, fix="give it once")
            changes[key] = value
    for key, value in changes.items():
        check_names({key: value}, f"-p {key}")
        raw[key] = value
    if out is not None:
        raw["output_dir"] = str(out)
    if force:
        raw["force"] = True
    p = plan(raw, source=source)
    preflight(p)
    nb = Path(notebook) if notebook else NOTEBOOK
    if not nb.is_file():
        raise FluxnbError(f"batch notebook {str(nb)!r}: not found", field="notebook", value=str(nb),
                          fix="run from a fluxnb checkout (pip install -e .), or pass notebook=")
    out_dir = Path(p.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"batch_{p.batch_id}_{datetime.now():%Y%m%d_%H%M%S}"
    report = next(r for k in range(10000) if not (r := out_dir / f"{stem}{f'_{k}' if k else ''}.ipynb").exists())
    log.info("%r\n  report: %s", p, report)

    # 2. Run the notebook: this Python as the kernel, the report saved atomically, scrubbed.
    since = now()
    error = None
    try:
        execute_notebook(nb, report, raw, kernel_name=kernel_name, echo=echo)
    except NotebookFailed as e:
        error = e

    # 3. The summary from the run log; a failure anywhere makes the exit status non-zero.
    summary = summarize(p, since)
    summary.report = report if report.exists() else None
    sheets = sorted(out_dir.glob(f"contact_{p.batch_id}_*.png"), key=lambda q: q.stat().st_mtime)
    summary.contact_sheet = sheets[-1] if sheets and sheets[-1].stat().st_mtime >= since.timestamp() - 1 else None
    if error is not None and error.ename != "BatchFailed":
        cls = FluxnbError if error.ename == "FluxnbError" else RuntimeFailure
        raise cls(f"batch {p.batch_id} stopped: {error}", field="batch", value=p.batch_id)
    check(summary)
    if error is not None:  # the kernel saw failures the run log does not show
        raise BatchFailed(error.evalue, summary)
    return summary
