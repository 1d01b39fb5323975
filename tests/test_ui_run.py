"""The forms while they run: Stop and Skip (from a second thread, and SIGINT), the live
preview, errors as one line, the gallery from the run log, the file's link, Download and
Copy. Driven by .click() as in tests/test_ui.py."""

from __future__ import annotations

import base64
import html
import os
import re
import signal
import threading
import time

import numpy as np
import pytest

from fluxnb import runlog
from fluxnb import ui
from fluxnb.outputs.metadata import read_metadata


def form_for(outdir, **kw):
    return ui.generator(model="tiny", output_dir=str(outdir), **kw)


def set_custom(form, steps=None, size=None):
    if steps is not None:
        form.steps.value, form.steps_custom.value = "custom", steps
    if size is not None:
        form.size.value, form.size_custom.value = "custom", size


def images_in(outdir):
    return sorted(p.name for p in outdir.glob("*") if p.suffix in (".png", ".jpg"))


def when(condition, then, limit=120.0):
    """A second thread: once `condition()` holds, `then()` (as a user's click would)."""
    def body():
        end = time.monotonic() + limit
        while time.monotonic() < end and not condition():
            time.sleep(0.01)
        then()
    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------------------------------
# Stop and Skip
# ---------------------------------------------------------------------------------------

def test_stop_from_another_thread_ends_a_long_run_with_no_image(tiny_model, outdir):
    form = form_for(outdir, prompt="a long run to stop")
    set_custom(form, steps=150, size="256x256")
    form.seed_mode.value, form.seed.value = "lock", "7"
    clicker = when(lambda: form.progress.value >= 3, form.stop_button.click)
    form.generate_button.click()  # outside a kernel the run is in this thread; the click comes from another
    clicker.join(5)
    assert form.images == [] and images_in(outdir) == []
    [rec] = runlog.read(outdir)
    assert rec["status"] == "interrupted" and rec["seed"] == 7 and 3 <= rec["step"] < 150
    assert rec["error"].startswith("stopped at step")
    assert "stopped at step" in form.status.value and form.progress.bar_style == "warning"
    assert form.image.layout.display == "none"  # the preview went; there was no image before
    assert form.stop_button.layout.display == "none" and not form.generate_button.disabled
    assert isinstance(form.last, KeyboardInterrupt)


def test_stop_in_the_background_and_by_sigint(tiny_model, outdir):
    form = form_for(outdir, prompt="a long run in a worker thread")
    set_custom(form, steps=150, size="256x256")
    form.worker.background = True  # as inside a kernel
    form.generate_button.click()
    assert form.worker.running and form.generate_button.disabled and form.stop_button.layout.display is None
    end = time.monotonic() + 120
    while form.progress.value < 2 and time.monotonic() < end:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)  # Kernel > Interrupt: the main thread is idle, the run stops
    assert form.wait(60)
    [rec] = runlog.read(outdir)
    assert rec["status"] == "interrupted" and 2 <= rec["step"] < 150 and images_in(outdir) == []
    # with no run going, SIGINT is a KeyboardInterrupt again
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def test_skip_skips_the_image_in_progress_and_goes_on(tiny_model, outdir):
    form = form_for(outdir, prompt="two images, the first skipped")
    set_custom(form, steps=4)
    form.count.value = 2
    original = form._on_step

    def spy(pipe, i, t, kw):
        out = original(pipe, i, t, kw)
        if form._image_no == 1 and i == 1:
            assert form.skip_button.layout.display is None  # shown for a run of several images
            form.skip_button.click()
        return out

    form._on_step = spy
    form.generate_button.click()
    recs = runlog.read(outdir)
    assert [r["status"] for r in recs] == ["interrupted", "ok"]
    assert recs[0]["step"] == 3 and recs[0]["error"] == "skipped at step 3"  # at the next step end
    assert len(form.images) == 1 and form.images[0].seed == recs[1]["seed"] and len(images_in(outdir)) == 1
    assert "1 image(s)" in form.status.value and "1 skipped" in form.status.value


def test_sweep_form_stop_from_another_thread_keeps_no_partial_grid(tiny_model, outdir):
    form = ui.sweep_form(model="tiny", output_dir=str(outdir), prompt="a fox", rows=("seed", "1, 2"),
                         cols=("guidance", "1.5, 3.5"))
    form.steps.value, form.steps_custom.value = "custom", 150
    form.size.value, form.size_custom.value = "custom", "256x256"
    clicker = when(lambda: form.progress.value >= 2, form.stop_button.click)
    form.run_button.click()
    clicker.join(5)
    recs = runlog.read(outdir)
    assert recs and {r["status"] for r in recs} == {"interrupted"} and all(r["step"] < 150 for r in recs)
    assert "stopped at step" in form.status.value and form.result is None and form.grid.layout.display == "none"
    assert not list(outdir.glob("sweep_*.png")) and not form.run_button.disabled


# ---------------------------------------------------------------------------------------
# Live preview
# ---------------------------------------------------------------------------------------

def test_the_preview_changes_during_a_run(tiny_model, outdir):
    form = form_for(outdir, prompt="a preview every step")
    set_custom(form, steps=6, size="128x128")
    form.preview_every = 1
    seen = []
    form.image.observe(lambda c: seen.append((form.running, c["new"])), "value")
    form.generate_button.click()
    during = [v for running, v in seen if running]
    assert len(set(during)) >= 5  # a different preview at (nearly) every step
    assert seen[-1][1] == form.image.value and not form.running  # then the image itself


def test_latent_rgb_unpacks_flux_latents_and_projects_16_channels():
    import torch

    from fluxnb.image.preview import FLUX_RGB, FLUX_RGB_BIAS, latent_rgb, unpack

    lat = torch.randn(1, 16, 8, 12)  # 16 channels, 8x12 cells: a 96x64 image
    packed = lat.reshape(1, 16, 4, 2, 6, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, 24, 64)  # as FluxPipeline packs
    assert torch.equal(unpack(packed, 96, 64), lat)
    image = latent_rgb(packed, 96, 64)
    assert image.size == (12, 8)
    expect = np.einsum("chw,cr->hwr", lat[0].numpy(), np.array(FLUX_RGB)) + np.array(FLUX_RGB_BIAS)
    expect = np.clip((expect + 1) * 127.5, 0, 255).astype(np.uint8)
    assert np.abs(np.asarray(image).astype(int) - expect.astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------

def test_sweep_form_shows_a_bad_value_as_one_line_and_clears_the_old_grid(tiny_model, outdir, capsys):
    form = ui.sweep_form(model="tiny", output_dir=str(outdir), prompt="a fox", rows=("seed", "1, 2"),
                         cols=("guidance", "1.5, 3.5"))
    form.steps.value, form.steps_custom.value = "custom", 1
    form.run_button.click()
    assert "4 images" in form.status.value and form.grid.layout.display is None
    form.rows_values.value = "1-x"
    form.run_button.click()
    msg = html.unescape(re.sub("<[^>]+>", "", form.message.value))
    assert "fluxnb-error" in form.message.value and "1-x" in msg and "seed" in msg and "\n" not in msg.strip()
    assert form.status.value == "" and form.info.value == "" and form.result is None
    assert form.grid.layout.display == "none" and form.save_button.disabled and form.progress.value == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err


def test_a_restore_says_what_is_shown_and_an_edit_marks_the_preview_stale(tiny_model, outdir):
    form = form_for(outdir, prompt="a red fox")
    set_custom(form, steps=2)
    form.preview_button.click()
    assert "fluxnb-stale" not in form.enhanced.value
    form.prompt.value = "a blue fox"
    assert "fluxnb-stale" in form.enhanced.value and "stale" in form.enhanced.value
    form.generate_button.click()
    form.restore(form.images[0])
    assert "restored: seed" in form.status.value and "a blue fox" in form.status.value


# ---------------------------------------------------------------------------------------
# The gallery, the link, Download and Copy
# ---------------------------------------------------------------------------------------

def test_gallery_survives_a_rebuilt_form_with_filters(tiny_model, outdir, monkeypatch):
    form = form_for(outdir, prompt="a lighthouse")
    set_custom(form, steps=2)
    form.generate_button.click()
    form.prompt.value = "a red fox"
    form.generate_button.click()
    paths = [str(i.path) for i in form.images]

    again = form_for(outdir, prompt="")  # the cell run again (or a new kernel: the log is on disk)
    assert [b.path for b in again.strip.children] == paths[::-1]
    first = again.strip.children[1]
    assert "seed " + str(form.images[0].seed) in first.children[2].value  # the full seed under the thumbnail
    first.children[0].click()  # the thumbnail itself shows the image
    assert again.shown.path == form.images[0].path and "fluxnb-shown" in first._dom_classes
    assert "a lighthouse" in again.info.value and again.image.layout.display is None
    first.children[1].click()  # ↺ restores its settings from the file
    assert again.prompt.value == "a lighthouse" and again.seed.value == str(form.images[0].seed)
    again.gallery.filter.value = "fox"
    assert [b.path for b in again.strip.children] == [paths[1]]
    again.gallery.filter.value = ""
    from fluxnb.front.ui import gallery

    monkeypatch.setattr(gallery, "SESSION_START", gallery.datetime.now(gallery.timezone.utc))
    again.gallery.refresh()
    assert again.strip.children == ()  # "this session" began after them
    again.gallery.scope.value = "all"
    assert len(again.strip.children) == 2


def test_file_link_download_and_copy(tiny_model, outdir, monkeypatch):
    monkeypatch.delenv("FLUXNB_LAB_ROOT", raising=False)
    form = form_for(outdir, prompt='a "quoted" fox, watercolor')
    set_custom(form, steps=2)
    form.image_format.value = "png"
    form.generate_button.click()
    [item] = form.images
    actions = form.actions.value
    # outside a Jupyter server's root: Download is the original file's bytes, metadata and all
    href = re.search(r'class="fluxnb-download" href="([^"]+)" download="([^"]+)"', actions)
    assert href and href.group(2) == item.path.name
    data = base64.b64decode(html.unescape(href.group(1)).split(",", 1)[1])
    assert data == item.path.read_bytes()
    # Copy parameters: the file's A1111 text; Copy prompt: the prompt
    params = html.unescape(re.search(r'fluxnb-copy-params"[^>]*>(.*?)</textarea>', actions, re.S).group(1))
    assert params == read_metadata(item.path)["parameters"]
    prompt = html.unescape(re.search(r'fluxnb-copy-prompt"[^>]*>(.*?)</textarea>', actions, re.S).group(1))
    assert prompt == 'a "quoted" fox, watercolor' and "navigator.clipboard" in actions
    # under the server's root: the file as a /files/ link (it opens the full image), and Download by it
    monkeypatch.setenv("FLUXNB_LAB_ROOT", str(outdir.parent))
    form.show(item)
    url = f"/files/{outdir.name}/{item.path.name}"
    assert f'class="fluxnb-file" href="{url}"' in form.actions.value
    assert f'class="fluxnb-download" href="{url}" download=' in form.actions.value
    assert re.search(r"<td class=\"fluxnb-info-time\">\d+\.\d{1,2} s</td>", form.info.value)  # rounded


def test_live_preview_uses_taef1_only_when_its_weights_are_on_disk(tmp_path, monkeypatch):
    import types

    import torch
    from diffusers import AutoencoderTiny

    from fluxnb.image import preview

    def run_preview():
        got = []
        live = preview.LivePreview(lambda im, step: got.append((im.size, step)), every=1)
        settings = types.SimpleNamespace(render_size=(128, 128), steps=2)
        live.before([types.SimpleNamespace(settings=settings)])
        live.step(types.SimpleNamespace(vae_scale_factor=8), 0, None, {"latents": torch.randn(1, 64, 64)})
        return got

    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FLUXNB_TAEF1", raising=False)
    monkeypatch.setattr(preview.Taef1, "_loaded", {})
    assert preview.taef1_dir() is None
    assert run_preview() == [((16, 16), 1)]  # no weights: the linear projection, 1/8 the size
    small = dict(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                 num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=16)
    AutoencoderTiny(**small).save_pretrained(tmp_path / "taef1")
    monkeypatch.setenv("FLUXNB_TAEF1", str(tmp_path / "taef1"))
    assert preview.taef1_dir() == tmp_path / "taef1"
    assert run_preview() == [((128, 128), 1)]  # TAEF1 decodes to the full size


def test_fix_texts_speak_of_the_forms_controls():
    from fluxnb.front.ui.theme import GENERATOR_LABELS, SWEEP_LABELS, error_line, in_form_terms
    from fluxnb.errors import FluxnbError

    assert in_form_terms("use fast or --steps N", GENERATOR_LABELS) == "use fast or the steps field"
    assert in_form_terms("or use --enhance local", GENERATOR_LABELS) == "or use the enhance switch set to local"
    assert in_form_terms("give --size WxH to resize it", GENERATOR_LABELS) == "give the size field to resize it"
    assert "«allow more cells than the cap» box" in in_form_terms("narrow an axis, or pass --yes", SWEEP_LABELS)
    line = error_line(FluxnbError("steps 0: must be between 1 and 150", field="steps", fix="use fast or --steps N"))
    assert line.count("<div") == 1 and "fluxnb-error" in line and "var(--jp-error-color1" in line
    assert "the steps field" in error_line(FluxnbError("x", fix="use --steps N"), GENERATOR_LABELS)
    assert "unexpected error: ValueError: boom" in error_line(ValueError("boom"))
