"""The generator's *Preview enhanced prompt*: the text the model will get, with its tokens,
the seed it was made with (Generate keeps it), and a *stale* mark once the prompt changes.
Functions of the form (front/ui/generator.py)."""

from __future__ import annotations

from ...config.settings import draw_seed, require_prompt
from .widgets import count_tokens, esc, note, token_html


def seed_for(form, s) -> int:
    """The seed for the next image: the locked one, the previewed one, or a new one."""
    if s.seed is not None:
        return s.seed
    p = form.preview
    if p and p[0] == s.prompt and p[1] == s.enhance:
        return p[2]
    return draw_seed()


def mark_stale(form) -> None:
    """The enhanced preview no longer matches the prompt: say so (it is not what Generate sends)."""
    p = form.preview
    stale = p is not None and (p[0] != form.prompt.value or p[1] != form.enhance.value)
    if stale and form.enhanced.value and "fluxnb-stale" not in form.enhanced.value:
        form.enhanced.value = ('<div class="fluxnb-stale"><span class="fluxnb-warn">stale: the prompt changed '
                               "since this preview; press Preview enhanced prompt again</span>"
                               + form.enhanced.value + "</div>")


def show_preview(form):
    """Enhance the prompt now and show the text the model will get, with its tokens."""
    from ...prompt import enhancer

    form.message.value = ""
    try:
        s = form.settings()
        require_prompt(s.prompt)
        seed = seed_for(form, s)
        enh = enhancer.enhance(s.prompt, backend=s.enhance, model=s.enhance_model, seed=seed,
                               use_cache=s.enhance_cache, fallback=s.enhance_fallback)
    except Exception as e:  # noqa: BLE001 - shown in the form
        form.enhanced.value = ""
        form.fail(e)
        return None
    form.mark_field(None)
    form.preview = (s.prompt, s.enhance, seed, enh)
    if enh.backend == "none":
        form.enhanced.value = note("info", "enhance is none: the model gets the prompt as typed")
        return enh
    how = f"{esc(enh.backend)}" + (f" ({esc(enh.model)})" if enh.model else "")
    if enh.fallback_from:
        how += f", fell back from {esc(enh.fallback_from)}"
    form.enhanced.value = (f'<div class="fluxnb-enhanced"><b>Enhanced</b> by {how}, seed {seed}'
                           f'{" (cached)" if enh.cached else ""}:<br><i>{esc(enh.enhanced)}</i>'
                           f"{token_html(count_tokens(enh.enhanced, s))}</div>")
    return enh
