"""Run a notebook with papermill the way fluxnb's front ends do.

- The kernel is this very Python (the venv's), whatever kernelspecs the machine has, and
  talks over unix sockets in the private Jupyter runtime folder rather than TCP ports.
- The executed notebook is saved atomically (`fluxnb.files.write_atomic`) at every save,
  so a kill -9 never leaves a torn report, and scrubbed of the values of known secrets.
- What the notebook prints goes to this console too, scrubbed the same way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ...errors import RuntimeFailure
from ...files import pid_alive, write_atomic
from ...logs import scrub

SCHEME = "fluxnb-report://"


class NotebookFailed(RuntimeFailure):
    """A cell raised (`ename`, `evalue`), or the kernel died or could not start."""

    def __init__(self, message: str, *, ename: str = "", evalue: str = ""):
        super().__init__(message)
        self.ename = ename
        self.evalue = evalue


class _ReportIO:
    """papermill I/O for `fluxnb-report://PATH`: every save atomic and scrubbed."""

    @staticmethod
    def _path(path: str) -> Path:
        return Path(path[len(SCHEME):])

    def read(self, path):
        return self._path(path).read_text(encoding="utf-8")

    def write(self, buf, path):
        write_atomic(self._path(path), scrub(buf).replace(SCHEME, ""))

    def listdir(self, path):
        return [SCHEME + str(q) for q in self._path(path).iterdir()]

    def pretty_path(self, path):
        return str(self._path(path))


class _Scrubbed:
    """A stream that scrubs secrets from what the kernel prints on its way to the console."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        self.stream.write(scrub(text))

    def flush(self):
        self.stream.flush()


def _runtime_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    folder = Path(jupyter_runtime_dir())
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def tidy_runtime() -> int:
    """Remove the kernel sockets (`fluxnb-PID-*`) of runs whose process was killed."""
    removed = 0
    for f in _runtime_dir().glob("fluxnb-*-*-*"):
        pid = f.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            f.unlink(missing_ok=True)
            removed += 1
    return removed


def this_python_kernel():
    """A kernel manager class that starts the kernel with `sys.executable`."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisPythonSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name="Python 3 (fluxnb)", language="python", resource_dir="")

    class ThisPythonKernel(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _this_python_specs(self):
            return ThisPythonSpecs()

        @default("transport")
        def _ipc(self):
            return "ipc"

        @default("ip")
        def _ipc_path(self):
            return str(_runtime_dir() / f"fluxnb-{os.getpid()}-{id(self)}")

    return ThisPythonKernel


def execute_notebook(notebook: str | os.PathLike, report: str | os.PathLike, parameters: dict, *,
            kernel_name: str | None = None, echo: bool = True, report_mode: bool = True) -> Path:
    """Run `notebook` with `parameters` and keep the executed copy at `report`.
    `kernel_name`: a named kernelspec instead of this Python. Raises NotebookFailed."""
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from papermill.iorw import papermill_io

    report = Path(report).resolve()
    tidy_runtime()
    if not any(scheme == SCHEME for scheme, _ in papermill_io._handlers):
        papermill_io.register(SCHEME, _ReportIO())
    kernel = {"kernel_name": kernel_name} if kernel_name else {
        "kernel_name": "python3", "kernel_manager_class": this_python_kernel()}
    try:
        papermill.execute_notebook(str(notebook), SCHEME + str(report), parameters=parameters,
                                   report_mode=report_mode, progress_bar=False,
                                   stdout_file=_Scrubbed(sys.stdout) if echo else None,
                                   stderr_file=_Scrubbed(sys.stderr) if echo else None, **kernel)
    except PapermillExecutionError as e:
        evalue = scrub(str(e.evalue or "").strip())
        first = evalue.splitlines()[0] if evalue else e.ename
        raise NotebookFailed(f"{first} (cell {e.exec_count}, see {report})", ename=e.ename, evalue=evalue) from None
    except Exception as e:  # noqa: BLE001 - the kernel died or could not start
        raise NotebookFailed(scrub(f"the notebook's kernel failed: {type(e).__name__}: {e}"),
                             ename=type(e).__name__, evalue=scrub(str(e))) from None
    return report
