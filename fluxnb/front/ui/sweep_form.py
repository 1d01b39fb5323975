"""The sweep form (ipywidgets) over fluxnb.sweeps: two axes and their values, the labelled
grid inline, a copy saved where you say. Built by `fluxnb.ui.sweep_form(...)`.

Inside a kernel the sweep runs in a worker thread (front/ui/running.py): Stop ends it at the
next step (the cells made are kept, and running it again resumes), Skip skips the cell in
progress. Bad values show as one red line in the form's terms; the old grid goes.
"""

from __future__ import annotations

from ...errors import FluxnbError, raise_if_strict
from ...config.settings import resolve
from ...image.callbacks import Callback
from .gridview import grid_widget, save_copy, show_grid
from .running import run_controls
from .theme import SWEEP_LABELS, error_line, style
from .widgets import esc, note, preset_value, preset_widgets, row, w


class _Cells(Callback):
    """The form's progress over the sweep's cells and their steps."""

    def __init__(self, form, steps: int, cells: int):
        self.form, self.steps, self.cells, self.done = form, steps, cells, 0

    def step(self, pipe, i, t, tensors):
        f = self.form
        f.progress.value = min(self.done * self.steps + i + 1, f.progress.max)
        f.status.value = note("info", f"{self.done}/{self.cells} cells made · step {i + 1}/{self.steps}")

    def made(self, job, image):
        self.done += 1


# axis name -> the keyword of fluxnb.sweep that takes its values
AXES = {"seed": "seeds", "guidance": "guidance", "steps": "steps", "size": "size", "prompt": "prompts",
        "enhance": "enhance", "loras": "loras"}


class SweepForm:
    """Pick two axes and their values, run the sweep, see the labelled grid, save a copy."""

    def __init__(self, base, rows=("seed", "1, 2, 3"), cols=("guidance", "1.5, 3.5, 5.0")):
        W = w()
        self.base = base
        self.result = None
        self.prompt = W.Textarea(value=base.prompt, placeholder="the prompt (or sweep the prompt axis)", rows=2,
                                 layout=W.Layout(width="100%"))
        self.rows_axis = W.Dropdown(options=list(AXES), value=rows[0], description="rows")
        self.rows_values = W.Text(value=rows[1], placeholder="1, 2, 3 or 1-10 (+2); prompts: a | b",
                                  layout=W.Layout(width="50%"))
        self.cols_axis = W.Dropdown(options=list(AXES), value=cols[0], description="columns")
        self.cols_values = W.Text(value=cols[1], layout=W.Layout(width="50%"))
        self.steps, self.steps_custom = preset_widgets("steps", base.steps, W.IntText(value=base.steps,
                                                        layout=W.Layout(width="90px")))
        self.size, self.size_custom = preset_widgets("size", base.size, W.Text(value=base.size,
                                                      layout=W.Layout(width="110px")))
        self.yes = W.Checkbox(value=False, description="allow more cells than the cap", indent=False)
        self.run_button = run_controls(self, "Run sweep", "th", "30%")  # + worker, Stop, Skip, progress
        self.status, self.message, self.info = W.HTML(), W.HTML(), W.HTML()
        self.grid = grid_widget()  # as code output shows it: its own scale, each cell a link to its image
        self.grid.layout.display = "none"
        self.save_as = W.Text(placeholder="empty: beside the grid", description="save as")
        self.save_button = W.Button(description="Save a copy", icon="save", disabled=True)
        self.run_button.on_click(lambda _b: self.run())
        self.save_button.on_click(lambda _b: self.save())
        self.widget = W.VBox([style(), self.prompt, row(self.rows_axis, self.rows_values),
                              row(self.cols_axis, self.cols_values),
                              row(self.steps, self.steps_custom, self.size, self.size_custom, self.yes),
                              row(self.run_button, self.stop_button, self.skip_button, self.progress, self.status),
                              self.message, self.grid, self.info, row(self.save_as, self.save_button)])
        self.widget.add_class("fluxnb-sweep")

    def _repr_mimebundle_(self, **kw):
        return self.widget._repr_mimebundle_(**kw)

    def arguments(self) -> dict:
        """The keyword arguments of fluxnb.sweep that the form describes (rows axis first)."""
        if self.rows_axis.value == self.cols_axis.value:
            raise FluxnbError(f"columns {self.cols_axis.value!r}: the same axis as the rows", field="columns",
                              value=self.cols_axis.value, fix="pick two different axes")
        kw = {AXES[self.rows_axis.value]: self.rows_values.value, AXES[self.cols_axis.value]: self.cols_values.value}
        fixed = {"steps": preset_value(self.steps, self.steps_custom),
                 "size": preset_value(self.size, self.size_custom)}
        kw.update({k: v for k, v in fixed.items() if k not in kw})
        return {**kw, "rows": self.rows_axis.value, "cols": self.cols_axis.value, "model": self.base.model,
                "out": self.base.output_dir, "yes": self.yes.value}

    def fail(self, exc: BaseException) -> None:
        """One red line in the form's terms; the stale status, progress and grid go."""
        raise_if_strict(exc)
        self.clear_result()  # the stale grid first, then the message
        self.status.value, self.info.value = "", ""
        self.progress.value, self.progress.bar_style = 0, ""
        self.message.value = error_line(exc, SWEEP_LABELS)

    def clear_result(self) -> None:
        self.result = None
        self.grid.layout.display = "none"
        self.save_button.disabled = True

    def stop(self) -> None:
        """End the sweep at the next step (the Stop button)."""
        self.worker.control.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a sweep running in the background (inside a kernel) to end."""
        return self.worker.wait(timeout)

    def run(self):
        """Run the sweep (fluxnb.sweep; in a worker thread inside a kernel) and show its grid."""
        from ...runs import sweep as sweeps

        if self.worker.running:
            return None
        self.message.value = ""
        try:
            kwargs = self.arguments()
            p = sweeps.plan(self.prompt.value, **kwargs)  # every value checked before anything runs
        except Exception as e:  # noqa: BLE001 - shown in the form, never as a traceback
            self.fail(e)
            return None
        self.clear_result()
        self.info.value = ""
        self.run_button.disabled = True
        steps = max(c.settings.steps for c in p.cells)
        self.progress.max, self.progress.value, self.progress.bar_style = steps * len(p.cells), 0, ""
        self.status.value = note("info", f"running the sweep: {len(p.cells)} cells…")

        def work(control):
            return sweeps.run(p, callbacks=(control.callback(), _Cells(self, steps, len(p.cells))), progress=False)

        self.worker.start(work, self._done, skip=len(p.cells) > 1)
        return self.result

    def _done(self, r, error) -> None:
        self.run_button.disabled = False
        if isinstance(error, KeyboardInterrupt):
            self.progress.bar_style = "warning"
            self.status.value = note("warn", f"stopped at step {self.worker.control.step}: the cells made are kept; "
                                             "Run sweep again makes the rest")
            return
        if error is not None:
            self.progress.bar_style = "danger"
            self.fail(error)
            return
        self.result = r
        self.progress.value, self.progress.bar_style = self.progress.max, "success"
        missing = [c for c in r.plan.cells if getattr(c, "image", None) is None]
        if missing or not r.grids:
            self.status.value = note("warn", f"{len(missing)} cell(s) skipped: no grid yet; Run sweep again makes "
                                             "them (the cells made are kept)")
            return
        show_grid(self.grid, r)  # as code output shows it: its own scale, a link per cell
        self.grid.layout.display = None
        self.status.value = note("ok", f"{len(r.images)} images, sweep {esc(r.sweep_id)}")
        self.info.value = f'<div class="fluxnb-grid-path">grid saved: {esc(r.grid)}</div>'
        self.save_button.disabled = False

    def save(self):
        """Save a copy of the grid under the name given, else beside the grid in the output
        folder (never over an existing file); shows its full path."""
        try:
            path = save_copy(self.result, self.save_as.value)
        except Exception as e:  # noqa: BLE001 - shown in the form
            raise_if_strict(e)
            self.message.value = error_line(e, SWEEP_LABELS)
            return None
        self.info.value += f'<div class="fluxnb-saved">copy saved: {esc(path)}</div>'
        return path


def sweep_form(model: str | None = None, output_dir: str | None = None, *, rows=("seed", "1, 2, 3"),
               cols=("guidance", "1.5, 3.5, 5.0"), **settings) -> SweepForm:
    """Build the sweep form; `rows`/`cols` are (axis, values text) to start with."""
    return SweepForm(resolve(model=model, output_dir=output_dir, **settings), rows=rows, cols=cols)
