"""The sweep form (ipywidgets) over fluxnb.sweeps: two axes and their values, the labelled
grid inline, a copy saved where you say. Built by `fluxnb.ui.sweep_form(...)`."""

from __future__ import annotations

from ...errors import FluxnbError, raise_if_strict
from ...config.settings import resolve
from .gridview import grid_widget, save_copy, show_grid
from .widgets import error_html, esc, note, preset_value, preset_widgets, row, w


# axis name -> the keyword of fluxnb.sweep that takes its values
AXES = {"seed": "seeds", "guidance": "guidance", "steps": "steps", "size": "size", "prompt": "prompts",
        "enhance": "enhance"}


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
        self.run_button = W.Button(description="Run sweep", button_style="primary", icon="th")
        self.status, self.message, self.info, self.output = W.HTML(), W.HTML(), W.HTML(), W.Output()
        self.grid = grid_widget()  # as code output shows it: its own scale, each cell a link to its image
        self.save_as = W.Text(placeholder="empty: beside the grid", description="save as")
        self.save_button = W.Button(description="Save a copy", icon="save", disabled=True)
        self.run_button.on_click(lambda _b: self.run())
        self.save_button.on_click(lambda _b: self.save())
        self.widget = W.VBox([self.prompt, row(self.rows_axis, self.rows_values), row(self.cols_axis, self.cols_values),
                              row(self.steps, self.steps_custom, self.size, self.size_custom, self.yes),
                              row(self.run_button, self.status), self.output, self.message, self.grid, self.info,
                              row(self.save_as, self.save_button)])
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

    def run(self):
        """Run the sweep (fluxnb.sweep) and show its grid."""
        self.message.value = ""
        self.run_button.disabled = True
        self.status.value = note("info", "running the sweep…")
        try:
            kwargs = self.arguments()
            from ...runs import sweep as sweeps

            self.output.clear_output()
            with self.output:  # the sweep's progress bar over the cells shows in the form
                self.result = sweeps.sweep(self.prompt.value, **kwargs)
        except Exception as e:  # noqa: BLE001 - shown in the form
            raise_if_strict(e)
            self.status.value = ""
            self.message.value = error_html(e)
            return None
        finally:
            self.run_button.disabled = False
        r = self.result
        show_grid(self.grid, r)
        self.status.value = note("ok", f"{len(r.images)} images, sweep {esc(r.sweep_id)}")
        self.info.value = f'<div class="fluxnb-grid-path">grid saved: {esc(r.grid)}</div>'
        self.save_button.disabled = False
        return r

    def save(self):
        """Save a copy of the grid under the name given, else beside the grid in the output
        folder (never over an existing file); shows its full path."""
        try:
            path = save_copy(self.result, self.save_as.value)
        except Exception as e:  # noqa: BLE001 - shown in the form
            raise_if_strict(e)
            self.message.value = error_html(e)
            return None
        self.info.value += f'<div class="fluxnb-saved">copy saved: {esc(path)}</div>'
        return path


def sweep_form(model: str | None = None, output_dir: str | None = None, *, rows=("seed", "1, 2, 3"),
               cols=("guidance", "1.5, 3.5, 5.0"), **settings) -> SweepForm:
    """Build the sweep form; `rows`/`cols` are (axis, values text) to start with."""
    return SweepForm(resolve(model=model, output_dir=output_dir, **settings), rows=rows, cols=cols)
