"""How the forms look and speak: one stylesheet on JupyterLab's theme variables (readable in
the dark theme too), one red line for an error in the form's own words, and Ctrl+Enter in a
prompt box pressing the form's main button.
"""

from __future__ import annotations

import re

from ...errors import FluxnbError
from .widgets import esc, note, w

CSS = """
.fluxnb-generator, .fluxnb-sweep { color: var(--jp-ui-font-color1); font-family: var(--jp-ui-font-family); }
.fluxnb-error { color: var(--jp-error-color1, #d32f2f); }
.fluxnb-warn { color: var(--jp-warn-color1, #f57c00); }
.fluxnb-ok { color: var(--jp-success-color1, #388e3c); }
.fluxnb-info { color: var(--jp-ui-font-color2, #616161); }
.fluxnb-over { color: var(--jp-error-color1, #d32f2f); font-weight: bold; }
.fluxnb-tokens { color: var(--jp-ui-font-color2); font-size: var(--jp-ui-font-size1); }
.fluxnb-settings th { color: var(--jp-ui-font-color2); font-weight: normal; vertical-align: top; }
.fluxnb-settings td { color: var(--jp-ui-font-color1); word-break: break-word; }
.fluxnb-generator .widget-label { min-width: 64px; }
.fluxnb-generator .widget-dropdown > select, .fluxnb-sweep .widget-dropdown > select { min-width: 150px; }
.fluxnb-thumb { border: 2px solid transparent; border-radius: 4px; padding: 2px; }
.fluxnb-thumb.fluxnb-shown { border-color: var(--jp-brand-color1, #1976d2); }
.fluxnb-thumb img { cursor: pointer; }
.fluxnb-actions a, .fluxnb-actions button { margin-right: 6px; }
.fluxnb-actions a { color: var(--jp-content-link-color, #1976d2); }
.fluxnb-actions button { background: var(--jp-layout-color2); color: var(--jp-ui-font-color1);
  border: 1px solid var(--jp-border-color1); border-radius: 2px; padding: 2px 8px; cursor: pointer; }
.fluxnb-stale { opacity: 0.55; }
"""

# Ctrl+Enter (Cmd+Enter) in a form's text box clicks the form's main button (`.fluxnb-go`).
# ipywidgets runs no <script> in an HTML widget; an image's onerror does run, once per page.
KEYS_JS = ("if(!window.__fluxnbKeys){window.__fluxnbKeys=1;document.addEventListener('keydown',function(e){"
           "if(e.key!=='Enter'||!(e.ctrlKey||e.metaKey))return;var t=e.target;"
           "if(!t||!t.closest)return;var f=t.closest('.fluxnb-generator,.fluxnb-sweep');if(!f)return;"
           "var b=f.querySelector('.fluxnb-go button, button.fluxnb-go');if(b&&!b.disabled){e.preventDefault();"
           "e.stopPropagation();b.click();}},true);}")


def style():
    """The stylesheet (and the Ctrl+Enter key) as a widget to put in a form."""
    W = w()
    js = esc(KEYS_JS)
    return W.HTML(f'<style>{CSS}</style><img src="data:," alt="" style="display:none" onerror="{js}">',
                  layout=W.Layout(height="0px", margin="0", overflow="hidden"))


FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)(?:[ =]([^\s,;()]+))?")
PLACEHOLDERS = {"N", "X", "WxH", "PATH", "S", "DIR", "NAME", "..."}
NOT_VALUES = {"out", "or", "and", "to", "with", "in", "for", "the", "a", "is", "are", "when", "if", "on", "off"}


def in_form_terms(text: str, labels: dict) -> str:
    """A message's CLI flags (`--steps N`, `--enhance local`, `--yes`) as the form's own
    controls (`the steps field`, `the enhance switch set to local`, ...)."""
    def one(m):
        name, value = m.group(1).replace("-", "_"), m.group(2)
        where = labels.get(name) or f"the {name.replace('_', ' ')} setting"
        if value is None or value in NOT_VALUES:
            return where + (f" {value}" if value else "")
        if value in PLACEHOLDERS:
            return where
        return f"{where} set to {value}"
    return FLAG.sub(one, text)


def error_line(exc: BaseException, labels: dict | None = None) -> str:
    """One red line for a failure: a FluxnbError's message (field, value, fix) in the form's
    terms, never a traceback; anything else as its type and message."""
    if isinstance(exc, FluxnbError):
        text = in_form_terms(str(exc), labels or {})
    else:
        text = f"unexpected error: {type(exc).__name__}: {exc}"
    return note("error", "⚠ " + esc(text))


GENERATOR_LABELS = {
    "steps": "the steps field", "guidance": "the guidance field", "size": "the size field",
    "seed": "the seed field", "random_seed": "the seed's random switch", "count": "the images field",
    "prompt": "the prompt box", "prompts": "the prompt box", "enhance": "the enhance switch",
    "strength": "the strength slider", "init_image": "the init image field", "mask": "the mask field",
    "image_format": "the format switch", "jpeg_quality": "the JPEG quality slider",
}
SWEEP_LABELS = {
    **GENERATOR_LABELS, "seeds": "the seed axis values", "prompts": "the prompt axis values (a | b)",
    "yes": "the «allow more cells than the cap» box", "out": "the output folder",
}
