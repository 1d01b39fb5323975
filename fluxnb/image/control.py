"""Stop and Skip: one control object a front end holds while the path makes its images.

    control = RunControl()
    generate(..., callbacks=(control.callback(),))   # in a worker thread
    control.stop()                                   # from a button, another thread, or SIGINT

`stop()` ends the run at the next step end: the callback raises `Stopped` (a
KeyboardInterrupt, so every caller that already handles Ctrl-C handles it), the path
records the unfinished images as `interrupted` with the step reached, and nothing is saved
as if finished. `skip()` ends only the pipeline call in progress: the callback raises
`Skipped`, the path records that call's images as `interrupted` and goes on with the next.

diffusers' own `pipe._interrupt` only skips the remaining steps and still decodes the
half-denoised latents; raising from the step callback is what stops it at once.

`sigint_stops(control)` makes SIGINT (Ctrl-C, JupyterLab's Kernel > Interrupt) stop the
run in progress while a form's worker thread runs it: the kernel's main thread is idle
then, and its own handler would ignore the signal.
"""

from __future__ import annotations

import signal
import threading

from .callbacks import Callback


class Stopped(KeyboardInterrupt):
    """The run was stopped (the Stop button, Ctrl-C, Kernel > Interrupt)."""


class Skipped(Exception):
    """The pipeline call in progress was skipped; the run goes on with the next one."""


class RunControl:
    """Stop and skip requests for one run; safe to set from any thread or a signal handler."""

    def __init__(self):
        self.stopped = threading.Event()
        self.skipped = threading.Event()
        self.step = 0          # the last step that ended (1-based) in the call in progress

    def stop(self) -> None:
        self.stopped.set()

    def skip(self) -> None:
        self.skipped.set()

    def reset(self) -> None:
        self.stopped.clear()
        self.skipped.clear()
        self.step = 0

    def callback(self) -> "StopCallback":
        return StopCallback(self)


class StopCallback(Callback):
    """Raises at a step end when a stop or skip was asked for."""

    def __init__(self, control: RunControl):
        self.control = control

    def before(self, jobs):
        self.control.step = 0  # a skip asked for between calls applies to the next one

    def step(self, pipe, i, t, tensors):
        self.control.step = i + 1
        if self.control.stopped.is_set():
            raise Stopped(f"stopped at step {i + 1}")
        if self.control.skipped.is_set():
            self.control.skipped.clear()
            raise Skipped(f"skipped at step {i + 1}")
        return None


_active: list = []          # the controls of the runs SIGINT stops now (a stack)
_installed = {"previous": None, "done": False}


def on_sigint(signum, frame):
    if _active:
        for control in _active:
            control.stop()
        return
    previous = _installed["previous"]
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        raise KeyboardInterrupt
    # SIG_IGN (an idle Jupyter kernel): nothing runs, nothing to stop


class sigint_stops:
    """While entered (and until `release`), SIGINT stops `control` instead of raising.
    Installs the handler on entry from the main thread; from another thread it only
    registers (a handler installed before, from the main thread, then sees it)."""

    def __init__(self, control: RunControl):
        self.control = control

    def __enter__(self):
        install()
        _active.append(self.control)
        return self.control

    def __exit__(self, *exc):
        self.release()
        return False

    def release(self) -> None:
        if self.control in _active:
            _active.remove(self.control)


def chain(previous) -> None:
    """What SIGINT does when no run is stopped by it (the handler ours replaced)."""
    if previous is not on_sigint:
        _installed["previous"] = previous


def install() -> bool:
    """Put `on_sigint` in front of the current SIGINT handler (once; main thread only).
    ipykernel swaps its own handler in around each cell and puts ours back after, so a
    cell's Ctrl-C still interrupts the cell."""
    if threading.current_thread() is not threading.main_thread():
        return _installed["done"]
    current = signal.getsignal(signal.SIGINT)
    if current is not on_sigint:
        chain(current)
        signal.signal(signal.SIGINT, on_sigint)
    _installed["done"] = True
    return True
