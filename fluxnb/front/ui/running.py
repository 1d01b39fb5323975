"""How a form runs its work: in a worker thread inside a Jupyter kernel (so the kernel stays
free to handle the Stop click), with Stop and Skip buttons over one `image.control.RunControl`,
and SIGINT (Kernel > Interrupt) stopping the run too.

Outside a kernel (tests, a plain Python session) the work runs in the caller's thread, so
`.click()` returns with the result on display; `background=True` forces the thread, and
`wait()` joins it.
"""

from __future__ import annotations

import logging
import threading

from ...image.control import RunControl, sigint_stops
from .widgets import w

log = logging.getLogger(__name__)


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where a click handler must return at once)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def keep_handler_in_kernel() -> None:
    """ipykernel puts its saved SIGINT handler back after each message it handles (a click
    included); make the one it puts back ours, so Kernel > Interrupt reaches an idle
    kernel's running form (ipykernel ignores SIGINT while idle)."""
    from ...image import control

    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
    except ImportError:
        kernel = None
    if kernel is None or not hasattr(kernel, "saved_sigint_handler"):
        return
    saved = kernel.saved_sigint_handler
    if saved is not control.on_sigint:
        control.chain(saved)
        kernel.saved_sigint_handler = control.on_sigint


class Worker:
    """Runs a form's work with Stop and Skip buttons. `work(control)` returns the result;
    `done(result, error)` shows it (error: the exception, a KeyboardInterrupt included)."""

    def __init__(self, skip: bool = True):
        W = w()
        self.control = RunControl()
        self.background: bool | None = None  # None: in a thread inside a kernel, else in the caller's
        self.thread: threading.Thread | None = None
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="end the run at the next step (nothing unfinished is saved)",
                                    layout=W.Layout(width="auto", display="none"))
        self.skip_button = W.Button(description="Skip", icon="forward", tooltip="skip the image in progress",
                                    layout=W.Layout(width="auto", display="none"))
        self.stop_button.add_class("fluxnb-stop")
        self.skip_button.add_class("fluxnb-skip")
        self.has_skip = skip
        self.stop_button.on_click(lambda _b: self.control.stop())
        self.skip_button.on_click(lambda _b: self.control.skip())

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def buttons(self, show: bool, skip: bool = False) -> None:
        self.stop_button.layout.display = None if show else "none"
        self.skip_button.layout.display = None if show and skip and self.has_skip else "none"
        self.stop_button.disabled = self.skip_button.disabled = not show

    def start(self, work, done, *, skip: bool = False):
        """Run `work(control)` (in a thread inside a kernel), then `done(result, error)`."""
        self.control.reset()
        self.buttons(True, skip)
        guard = sigint_stops(self.control)
        guard.__enter__()  # from the main thread: installs the SIGINT handler
        keep_handler_in_kernel()

        def body():
            result, error = None, None
            try:
                result = work(self.control)
            except BaseException as e:  # noqa: BLE001 - a stop (KeyboardInterrupt) too: shown by done
                error = e
            finally:
                guard.release()
                self.buttons(False)
            if not background:
                done(result, error)  # in the caller's thread: its errors reach the caller
                return
            try:
                done(result, error)
            except Exception:  # noqa: BLE001 - a worker thread has no one to raise to
                log.exception("the form could not show its result")

        background = in_kernel() if self.background is None else self.background
        if not background:
            body()
            return
        self.thread = threading.Thread(target=body, name="fluxnb-form", daemon=True)
        self.thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run in a thread to end; True when none is running. Ctrl-C (or
        Kernel > Interrupt) while waiting stops the run, then is raised."""
        if self.thread is not None:
            try:
                self.thread.join(timeout)
            except KeyboardInterrupt:
                self.control.stop()
                self.thread.join(60)
                raise
        return not self.running


def run_controls(form, description: str, icon: str, width: str):
    """A form's main button (Ctrl+Enter in its prompt clicks it), returned; its Worker with
    Stop and Skip and a progress bar, set on `form` (`worker`, `stop_button`, `skip_button`,
    `progress`)."""
    W = w()
    button = W.Button(description=description, button_style="primary", icon=icon,
                      tooltip=f"{description.lower()} (Ctrl+Enter in the prompt)")
    button.add_class("fluxnb-go")
    form.worker = Worker()
    form.stop_button, form.skip_button = form.worker.stop_button, form.worker.skip_button
    form.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width=width))
    return button
