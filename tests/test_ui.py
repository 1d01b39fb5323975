"""The notebook forms without a browser: build, set values, .click(), assert what shows and what is recorded."""

from __future__ import annotations

import base64
import html
import io
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb import runlog
from fluxnb import ui
from fluxnb.errors import FluxnbError


def form_for(outdir, **kw):
    return ui.generator(model="tiny", output_dir=str(outdir), **kw)


def set_custom(form, steps=None, guidance=None, size=None):
    for name, value in (("steps", steps), ("guidance", guidance), ("size", size)):
        if value is not None:
            getattr(form, name).value = "custom"
            getattr(form, name + "_custom").value = value


def pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_generate_click_shows_image_settings_and_records(tiny_model, outdir):
    form = form_for(outdir)
    form.prompt.value = "a red fox in the snow, watercolor"
    set_custom(form, steps=3, guidance=2.5, size="64x48")
    form.seed_mode.value, form.seed.value = "lock", "123"
    form.image_format.value = "png"
    form.generate_button.click()

    assert form.message.value == ""
    [item] = form.images
    # the image on display is the image made, at its size
    shown = Image.open(io.BytesIO(form.image.value))
    assert shown.size == (64, 48)
    assert np.abs(pixels(shown) - pixels(item.image)).max() == 0
    # the settings shown next to it
    for text in ("a red fox in the snow, watercolor", ">123<", ">3<", ">2.5<", "64x48", str(item.path)):
        assert text in form.info.value
    # the run-log record and the file's own metadata
    [rec] = runlog.read(outdir)
    assert (rec["status"], rec["seed"], rec["steps"], rec["guidance"], rec["width"], rec["height"]) == \
        ("ok", 123, 3, 2.5, 64, 48)
    assert rec["prompt"] == "a red fox in the snow, watercolor" and rec["path"].endswith(".png")
    back = fluxnb.read_settings(rec["path"])
    assert (back.seed, back.steps, back.guidance, back.size) == (123, 3, 2.5, "64x48")
    # progress ran over every step; the button is back
    assert form.progress.value == form.progress.max == 3 and form.progress.bar_style == "success"
    assert not form.generate_button.disabled and form.generate_button.description == "Generate"
    assert len(form.strip.children) == 1 and not form.reuse_button.disabled


def test_generate_button_disabled_while_running_and_progress_per_step(tiny_model, outdir):
    form = form_for(outdir, prompt="a lighthouse at dusk")
    set_custom(form, steps=3)
    form.count.value = 2
    seen, original = [], form._on_step

    def spy(*args):
        out = original(*args)
        seen.append((form.generate_button.disabled, form.generate_button.description, form.progress.value,
                     form.status.value))
        form.generate_button.click()  # a second click while running does nothing
        return out

    form._on_step = spy
    form.generate_button.click()
    assert [s[2] for s in seen] == [1, 2, 3, 4, 5, 6]
    assert all(disabled and desc == "Generating…" for disabled, desc, _, _ in seen)
    assert "image 2/2 · step 3/3" in seen[-1][3]
    assert len(form.images) == 2 and len(runlog.read(outdir)) == 2
    assert [i.seed for i in form.images][1] == form.images[0].seed + 1
    assert not form.generate_button.disabled


def test_token_counters_warn_past_the_limits_and_show_what_clip_drops(outdir):
    form = form_for(outdir, prompt="a lighthouse")
    assert "CLIP 4/77" in form.tokens.value and "fluxnb-over" not in form.tokens.value
    assert "⚠" not in form.tokens.value
    long = "a lighthouse on a cliff at dusk, " * 10 + "with a tiny red boat far away"
    form.prompt.value = long  # observed: the counter updates as you type
    plan = fluxnb.count_tokens(long, model="tiny")
    assert plan.clip_dropped and plan.clip_tokens > 77
    assert f"CLIP {plan.clip_tokens}/77" in form.tokens.value and "fluxnb-over" in form.tokens.value
    assert "drops" in form.tokens.value and html.escape(plan.clip_dropped) in form.tokens.value
    # past T5's limit: a warning with the cut text
    short_t5 = form_for(outdir, prompt=long, max_sequence_length=16)
    assert "over T5's limit of 16" in short_t5.tokens.value


def test_token_counters_use_the_loaded_pipelines_tokenizers(tiny_model, outdir, monkeypatch):
    from fluxnb.prompt import tokens

    calls, real = [], tokens.count_tokens
    monkeypatch.setattr(tokens, "count_tokens", lambda *a, **kw: calls.append(kw.get("pipe")) or real(*a, **kw))
    form = form_for(outdir, prompt="a fox")
    loaded = form.load()
    assert loaded is not None and "tiny loaded on cpu" in form.status.value
    form.prompt.value = "a fox in the snow"
    assert calls[-1] is loaded.pipe
    other = ui.generator(model="tiny", output_dir=str(outdir), offload="model", prompt="x")  # another load key
    assert other.base.load != loaded.key and calls[-1] is None


def test_seed_random_lock_and_reuse_last(tiny_model, outdir):
    from fluxnb.model import pipeline

    form = form_for(outdir, prompt="a red fox")
    set_custom(form, steps=2)
    assert form.seed_mode.value == "random" and form.seed.disabled
    form.generate_button.click()
    loaded = pipeline.current()
    form.generate_button.click()
    assert pipeline.current() is loaded  # loaded once, kept loaded
    first, second = form.images
    assert first.seed != second.seed and form.seed.value == str(second.seed)
    # reuse last seed: locks it; the next image is the same picture
    form.reuse_button.click()
    assert form.seed_mode.value == "lock" and form.seed.value == str(second.seed) and not form.seed.disabled
    form.generate_button.click()
    third = form.images[-1]
    assert third.seed == second.seed and np.abs(pixels(third.image) - pixels(second.image)).max() <= 2
    # lock with a typed seed
    form.seed.value = "42"
    form.generate_button.click()
    assert form.images[-1].seed == 42 and runlog.read(outdir)[-1]["seed"] == 42
    # locked but empty: said in the form, nothing generated
    form.seed.value = ""
    form.generate_button.click()
    assert "seed" in form.message.value and "locked but empty" in form.message.value
    assert form.seed.layout.border == ui.ERROR_BORDER
    assert len(form.images) == 4 and len(runlog.read(outdir)) == 4


def test_presets_with_custom_values(outdir):
    form = form_for(outdir, prompt="a fox", steps="quality", guidance=2.0)  # tiny's own size: 64x64
    assert (form.steps.value, form.steps_custom.value, form.steps_custom.disabled) == ("quality", 50, True)
    assert (form.guidance.value, form.guidance_custom.value, form.guidance_custom.disabled) == ("custom", 2.0, False)
    assert (form.size.value, form.size_custom.value) == ("custom", "64x64")
    form.size.value = "portrait"  # a preset shows its value; custom starts from it
    assert form.size_custom.value == "832x1216" and form.size_custom.disabled
    form.size.value = "custom"
    assert not form.size_custom.disabled
    assert form.values()["size"] == "832x1216" and form.settings().size == "832x1216"
    form.steps.value = "balanced"
    assert form.values()["steps"] == "balanced" and form.settings().steps == 20


@pytest.mark.parametrize("setting, value, expected", [
    ("size", "100x100", "multiples of 16 (nearest: 96x96 or 112x112)"),
    ("steps", 0, "steps 0: must be between 1 and 150"),
    ("guidance", 9.5, "guidance 9.5: must be between 1.0 and 7.0"),
])
def test_bad_settings_are_shown_in_the_form_not_raised(outdir, setting, value, expected):
    form = form_for(outdir, prompt="a red fox")
    set_custom(form, **{setting: value})
    form.generate_button.click()  # no exception
    assert "fluxnb-error" in form.message.value and expected in html.unescape(form.message.value)
    assert getattr(form, setting + "_custom").layout.border == ui.ERROR_BORDER
    assert not runlog.path_for(outdir).exists() and not form.generate_button.disabled
    # fixing it clears the mark
    form.size.value, form.steps.value, form.guidance.value = "square", "fast", "default"
    form.prompt.value = ""
    form.generate_button.click()
    assert "the prompt is empty" in form.message.value
    assert form.prompt.layout.border == ui.ERROR_BORDER and getattr(form, setting + "_custom").layout.border is None


def test_restore_from_the_strip(tiny_model, outdir):
    form = form_for(outdir)
    form.prompt.value = "first: a lighthouse at dusk"
    set_custom(form, steps=2, size="64x64")
    form.guidance.value = "creative"
    form.seed_mode.value, form.seed.value = "lock", "5"
    form.generate_button.click()
    form.prompt.value = "second: a red fox"
    set_custom(form, steps=3, guidance=4.0, size="48x64")
    form.seed.value, form.image_format.value = "9", "png"
    form.generate_button.click()
    first = form.images[0]
    assert form.shown is form.images[1]

    assert [t.item for t in form.strip.children] == [form.images[1], first]  # newest first
    thumb = form.strip.children[1]
    assert "fluxnb-shown" in form.strip.children[0]._dom_classes and "fluxnb-shown" not in thumb._dom_classes
    assert thumb.children[1].description == "↺ 5" and "seed 5\nfirst: a lighthouse" in thumb.children[0].tooltip
    thumb.children[1].click()
    assert form.prompt.value == "first: a lighthouse at dusk"
    assert (form.steps.value, form.steps_custom.value) == ("custom", 2)
    assert form.guidance.value == "creative" and form.guidance_custom.disabled
    assert (form.size.value, form.size_custom.value) == ("custom", "64x64")
    assert (form.seed_mode.value, form.seed.value, form.image_format.value) == ("lock", "5", "jpg")
    assert form.shown is first and "first: a lighthouse at dusk" in form.info.value
    assert "restored: seed 5" in form.status.value and "fluxnb-shown" in thumb._dom_classes
    # generating again from the restored settings reproduces the first image
    form.generate_button.click()
    again = form.images[-1]
    assert (again.seed, again.settings.steps, again.settings.guidance) == (5, 2, 1.5)
    assert np.abs(pixels(again.image) - pixels(first.image)).max() <= 2


def test_enhancer_none_preview_says_the_prompt_goes_as_typed(outdir):
    form = form_for(outdir, prompt="a red fox")
    form.preview_button.click()
    assert "as typed" in form.enhanced.value and form.preview[3].enhanced == "a red fox"
    form.prompt.value = ""
    form.preview_button.click()
    assert "the prompt is empty" in form.message.value


def test_enhancer_failure_is_shown_in_the_form(outdir):
    prompt = "a fox no enhancer cache has seen, 7f3a"
    form = form_for(outdir, prompt=prompt, enhance_cache=False)
    form.enhance.value = "claude"  # no ANTHROPIC_API_KEY in the tests' environment
    with pytest.raises(FluxnbError) as direct:
        fluxnb.enhance(prompt, backend="claude", model=form.base.enhance_model, seed=1, use_cache=False)
    form.preview_button.click()
    # the message in the form's terms: its controls, not CLI flags
    said = str(direct.value).replace("--enhance local", "the enhance switch set to local")
    assert "--enhance" in str(direct.value) and html.escape(said) in form.message.value
    assert " --" not in form.message.value and form.enhanced.value == ""
    form.generate_button.click()  # generating with a failing enhancer: the same message, recorded
    assert html.escape(said) in form.message.value
    [rec] = runlog.read(outdir)
    assert rec["status"] == "enhance_failed" and rec["enhancer"] == "claude"


def test_enhancer_preview_shows_the_text_and_generate_uses_it(tiny_model, outdir, monkeypatch):
    from fluxnb.prompt import enhancer

    calls = []

    def fake_enhance(prompt, backend="none", *, model=None, seed=None, use_cache=True, fallback="none"):
        calls.append((prompt, backend, seed))
        return enhancer.Enhancement(prompt, f"{prompt}, golden hour, volumetric light, seed {seed}", backend,
                                    model="fake-1", system_prompt_sha256="ab" * 32, elapsed_s=0.01)

    monkeypatch.setattr(enhancer, "enhance", fake_enhance)
    form = form_for(outdir, prompt="a red fox")
    set_custom(form, steps=2)
    form.enhance.value = "local"
    form.preview_button.click()
    enh = form.preview[3]
    seed = form.preview[2]
    assert enh.enhanced == f"a red fox, golden hour, volumetric light, seed {seed}"
    assert html.escape(enh.enhanced) in form.enhanced.value and "local (fake-1)" in form.enhanced.value
    plan = fluxnb.count_tokens(enh.enhanced, model="tiny")
    assert f"CLIP {plan.clip_tokens}/77" in form.enhanced.value
    # Generate (seed random): the previewed seed, so the enhanced text is the one previewed
    form.generate_button.click()
    [rec] = runlog.read(outdir)
    assert rec["seed"] == seed and rec["enhanced_prompt"] == enh.enhanced and rec["enhancer"] == "local"
    assert calls[-1] == ("a red fox", "local", seed)
    assert "golden hour" in form.info.value
    # a changed prompt forgets the preview's seed
    form.prompt.value = "a blue fox"
    form.generate_button.click()
    assert runlog.read(outdir)[-1]["prompt"] == "a blue fox"


def test_load_failure_is_shown_in_the_form(outdir, tmp_path):
    form = ui.generator(model=str(tmp_path / "no-such-model"), output_dir=str(outdir), load=True)
    assert "no such folder" in form.message.value and form.status.value == ""
    with pytest.raises(FluxnbError, match="size 30x30"):  # bad settings given in code raise at once
        ui.generator(model="tiny", size="30x30")


# ---------------------------------------------------------------------------------------
# The sweep form
# ---------------------------------------------------------------------------------------

def test_sweep_form_arguments(outdir):
    form = ui.sweep_form(model="tiny", output_dir=str(outdir), prompt="a fox", rows=("guidance", "1.5, 3.5"),
                         cols=("seed", "1-3"))
    form.steps.value = "custom"
    form.steps_custom.value = 2
    args = form.arguments()
    assert list(args)[:2] == ["guidance", "seeds"]  # the rows axis comes first
    assert args == {"guidance": "1.5, 3.5", "seeds": "1-3", "steps": 2, "size": "64x64", "rows": "guidance",
                    "cols": "seed", "model": "tiny", "out": str(outdir), "yes": False}
    form.rows_axis.value = "steps"
    form.rows_values.value = "2, 4"
    assert form.arguments()["steps"] == "2, 4"  # an axis wins over the fixed value
    form.cols_axis.value = "steps"
    form.run_button.click()
    assert "the same axis as the rows" in form.message.value and form.result is None


def test_sweep_form_runs_a_sweep_shows_and_saves_the_grid(tiny_model, outdir, tmp_path):
    form = ui.sweep_form(model="tiny", output_dir=str(outdir), prompt="a fox", rows=("seed", "1, 2"),
                         cols=("guidance", "1.5, 3.5, 5.0"))
    form.steps.value = "custom"
    form.steps_custom.value = 2
    form.run_button.click()
    assert form.message.value == "", form.message.value
    r = form.result
    assert len(r.images) == 6 and "6 images" in form.status.value
    assert form.grid.value == r._repr_html_()  # the same grid, at the same scale, as code output shows
    m = re.search(r'src="data:image/png;base64,([^"]+)"[^>]* width="(\d+)"', form.grid.value)
    grid = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
    assert grid.size == r.grid_image.size and int(m.group(2)) == grid.size[0]  # never stretched
    assert grid.size[0] > 3 * 64 and grid.size[1] > 2 * 64
    cells = re.findall(r'<a class="fluxnb-cell" href="([^"]+)"', form.grid.value)
    assert [Path(unquote(h)).name for h in cells] == [p.name for p in r.images]  # each cell opens its image
    recs = [x for x in runlog.read(outdir) if x.get("sweep_id") == r.sweep_id and x["status"] == "ok"]
    assert sorted((x["seed"], x["guidance"]) for x in recs) == [(s, g) for s in (1, 2) for g in (1.5, 3.5, 5.0)]
    form.save_as.value = str(tmp_path / "copies" / "grid.png")
    form.save_button.click()
    assert (tmp_path / "copies" / "grid.png").read_bytes() == open(r.grid, "rb").read()
    form.save_button.click()  # never over an existing file: a new name
    assert len(list((tmp_path / "copies").glob("grid*.png"))) == 2
    form.save_as.value = str(tmp_path / "grid.jpg")
    form.save_button.click()
    assert "grids are PNG files" in form.message.value
    form.message.value = ""
    form.save_as.value = ""  # no name: beside the grid in the output folder, not the working folder
    form.save_button.click()
    copy = Path(r.grid).with_name(Path(r.grid).stem + "_copy.png")
    assert copy.read_bytes() == Path(r.grid).read_bytes() and form.message.value == ""
    assert f"copy saved: {copy.resolve()}" in form.info.value and not list(Path.cwd().glob("*.png"))
    form.save_as.value = "mine/best.png"  # a relative name: within the output folder too
    assert form.save() == Path(r.grid).resolve().parent / "mine" / "best.png"
    form.save_as.value = str(tmp_path / "copies")  # a folder: the copy goes in it
    assert form.save() == (tmp_path / "copies" / copy.name).resolve()


def test_ui_import_is_light():
    import subprocess

    code = "import fluxnb.ui, fluxnb.analysis, sys; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
