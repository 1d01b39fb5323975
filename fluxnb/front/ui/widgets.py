"""Widget helpers the notebook forms share: notes and errors as HTML, display copies of
images, token counters, rows, and preset dropdowns with a custom value.
"""

from __future__ import annotations

import html
import io
import logging

from ...config.schema import SETTINGS, limits, presets
from ...errors import FluxnbError

log = logging.getLogger(__name__)
CUSTOM = "custom"
ERROR_BORDER = "2px solid var(--jp-error-color1, #d33)"


def w():
    import ipywidgets

    return ipywidgets


def esc(value) -> str:
    return html.escape(str(value))


def png(image, max_side: int) -> bytes:
    """A display copy of a PIL image as PNG bytes, at most `max_side` pixels a side."""
    img = image.copy()
    img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


THEME_COLOURS = {"error": "var(--jp-error-color1, #b00020)", "warn": "var(--jp-warn-color1, #9a6700)",
                 "ok": "var(--jp-success-color1, #1a7f37)", "info": "var(--jp-ui-font-color2, #555)"}


def note(kind: str, text: str) -> str:
    """A status line coloured by JupyterLab's theme (readable in the dark theme too)."""
    return f'<div class="fluxnb-{kind}" style="color:{THEME_COLOURS[kind]}">{text}</div>'


def error_html(exc: Exception) -> str:
    """One readable line for a failure; FluxnbErrors name the field, value and fix."""
    if isinstance(exc, FluxnbError):
        return note("error", "⚠ " + esc(exc))
    return note("error", f"⚠ unexpected error: {esc(type(exc).__name__)}: {esc(exc)}")


# ---------------------------------------------------------------------------------------
# Token counters
# ---------------------------------------------------------------------------------------

def token_html(plan) -> str:
    """CLIP/T5 counts for a prompt, with a warning and what CLIP drops past its limit."""
    clip_over = plan.clip_tokens > plan.clip_limit
    t5_over = bool(plan.t5_dropped)
    parts = [f'<span class="{"fluxnb-over" if clip_over else ""}">CLIP {plan.clip_tokens}/{plan.clip_limit}</span>',
             f'<span class="{"fluxnb-over" if t5_over else ""}">T5 {plan.t5_tokens}/{plan.t5_limit}'
             + ("" if plan.t5_exact else " (estimate until the model is loaded)") + "</span>"]
    out = [" · ".join(parts)]
    if plan.clip_dropped:
        out.append(note("warn", f"⚠ over CLIP's limit: CLIP sees the first {plan.clip_limit} tokens and drops "
                                 f"«{esc(plan.clip_dropped)}» (T5 still gets the whole prompt)"))
    if t5_over:
        out.append(note("warn", f"⚠ over T5's limit of {plan.t5_limit}: the end is cut: «{esc(plan.t5_dropped)}»"))
    return '<div class="fluxnb-tokens">' + "".join(out) + "</div>"


def count_tokens(prompt: str, settings):
    """tokens.count_tokens with the loaded pipeline's tokenizers when the form's model is loaded."""
    from ...model import pipeline
    from ...prompt import tokens

    cur = pipeline.current()
    pipe = cur.pipe if cur is not None and cur.key == settings.load else None
    return tokens.count_tokens(prompt, model=settings.model, pipe=pipe, t5_limit=settings.max_sequence_length)


TOGGLE = {"button_width": "72px"}


def row(*children, top: bool = False):
    W = w()
    return W.HBox(list(children), layout=W.Layout(flex_flow="row wrap", align_items="flex-start" if top else "center"))


def label(text: str):
    W = w()
    return W.Label(text, layout=W.Layout(width="64px"))


# ---------------------------------------------------------------------------------------
# Presets with a custom value
# ---------------------------------------------------------------------------------------

def preset_widgets(kind: str, value, custom):
    """(dropdown, custom widget) for a preset kind (steps, guidance, size) set to `value`."""
    W = w()
    values = presets(SETTINGS[kind])
    options = [(f"{name} ({val})", name) for name, val in values.items()] + [(CUSTOM, CUSTOM)]
    drop = W.Dropdown(options=options, description=kind, layout=W.Layout(width="280px" if kind == "size" else "220px"),
                      style={"description_width": "64px"})
    drop.add_class(f"fluxnb-{kind}")
    custom.add_class(f"fluxnb-{kind}-custom")
    set_preset(drop, custom, kind, value)

    def picked(change):  # a preset shows its value in the (disabled) custom field
        custom.disabled = change["new"] != CUSTOM
        if change["new"] != CUSTOM:
            custom.value = type(custom.value)(values[change["new"]])

    drop.observe(picked, "value")
    return drop, custom


def preset_name(kind: str, value) -> str | None:
    """The preset of `kind` that `value` names or equals, else None."""
    for name, val in presets(SETTINGS[kind]).items():
        if str(value) in (name, str(val)):
            return name
        if kind != "size" and is_number(value) and float(value) == float(val):
            return name
    return None


def set_preset(drop, custom, kind: str, value) -> None:
    """Select the preset that `value` equals, else `custom` holding the value."""
    name = preset_name(kind, value)
    drop.value = name or CUSTOM
    custom.value = type(custom.value)(presets(SETTINGS[kind])[name] if name else value)
    custom.disabled = name is not None


def is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def preset_value(drop, custom):
    return custom.value if drop.value == CUSTOM else drop.value


def options(name: str) -> list:
    """A setting's choices, for a toggle or a dropdown (the settings table's)."""
    return list(SETTINGS[name].choices)


def bounds(name: str) -> dict:
    """min= and max= of a number widget for a setting, from its range in defaults.yaml."""
    lo, hi = limits(SETTINGS[name])
    return {"min": lo, "max": hi}


def grid_image(result):
    """The PIL grid image of a SweepResult (read from its saved file when it holds none)."""
    image = getattr(result, "grid_image", None) or getattr(result, "image", None)
    if not hasattr(image, "save"):
        from PIL import Image

        with Image.open(result.grid) as im:
            image = im.copy()
    return image


