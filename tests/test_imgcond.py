"""Image-conditioned generation on the tiny models: img2img, inpainting (and outpainting),
FLUX.1 Kontext editing and FLUX.1 Fill; their sizes, records, metadata and reproduction from
the file; strength as a sweep axis; bad input; the form's image input driven by .click().
(The pixels against diffusers' own pipelines: tests/test_fidelity.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb import runlog, ui
from fluxnb.errors import FluxnbError
from fluxnb.front.cli import main
from support import run_cli

FAST = dict(model="tiny", steps=2, image_format="png", progress=False)
CROP = (3, 1, 67, 49)     # 70x50 rendered at 64x48: cropped about the centre
RECT = (20, 10, 50, 40)   # the mask's white rectangle, in the 70x50 input


def noise(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, channels) * 255).astype("uint8"), mode)


def pixels(image_or_path) -> np.ndarray:
    im = Image.open(image_or_path) if not hasattr(image_or_path, "convert") else image_or_path
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def pics(tmp_path):
    """A 70x50 noise image and a mask of the same size with a white rectangle (RECT)."""
    d = tmp_path / "pics"
    d.mkdir()
    noise(70, 50).save(d / "in.png")
    mask = Image.new("L", (70, 50), 0)
    mask.paste(255, RECT)
    mask.save(d / "mask.png")
    return d


def inside_mask() -> np.ndarray:
    m = np.zeros((50, 70), bool)
    m[RECT[1]:RECT[3], RECT[0]:RECT[2]] = True
    return m[CROP[1]:CROP[3], CROP[0]:CROP[2]]


def input_pixels(pics) -> np.ndarray:
    return pixels(Image.open(pics / "in.png").crop(CROP))


# ---------------------------------------------------------------------------------------
# img2img
# ---------------------------------------------------------------------------------------

def test_img2img_renders_at_the_inputs_size_and_is_deterministic(tiny_model, pics, outdir, caplog):
    caplog.set_level(logging.INFO, logger="fluxnb")
    init = str(pics / "in.png")
    [a] = fluxnb.generate("a fox", init_image=init, strength=0.6, seed=3, output_dir=str(outdir), **FAST)
    assert a.image.size == (64, 48) and "70x50 cropped about the centre to 64x48" in caplog.text
    [again] = fluxnb.generate("a fox", init_image=init, strength=0.6, seed=3, save=False, record=False, **FAST)
    assert (pixels(again.image) == pixels(a.path)).all()
    for change in ({"seed": 4}, {"strength": 0.9}):  # at 4 steps, 0.6 runs the last 3, 0.9 all 4
        [one, other] = [fluxnb.generate("a fox", init_image=init, **{"strength": 0.6, "seed": 3, **c}, save=False,
                                        record=False, **{**FAST, "steps": 4})[0] for c in ({}, change)]
        assert np.abs(pixels(other.image) - pixels(one.image)).max() > 4, change
    [asked] = fluxnb.generate("a fox", init_image=init, size="96x64", seed=3, save=False, record=False, **FAST)
    assert asked.image.size == (96, 64) and "70x50 resized to 96x64" in caplog.text
    [rec] = runlog.read(outdir)
    assert (rec["task"], rec["strength"], rec["width"], rec["height"]) == ("img2img", 0.6, 64, 48)
    assert rec["init_image"] == str((pics / "in.png").resolve()) and rec["init_sha256"] == sha(pics / "in.png")
    assert rec["mask_sha256"] == "" and (outdir / "inputs" / f"{sha(pics / 'in.png')}.png").is_file()


def test_txt2img_records_and_ids_are_as_before(tiny_model, outdir):
    """No init image: task txt2img, no strength, and the id of the settings and seed alone."""
    from fluxnb.image.record import IDENTITY_FIELDS, item_id

    [a] = fluxnb.generate("a fox", seed=3, output_dir=str(outdir), **FAST)
    rec = a.record
    assert (rec["task"], rec["strength"], rec["init_image"], rec["init_sha256"]) == ("txt2img", None, "", "")
    key = {k: getattr(a.settings, k) for k in IDENTITY_FIELDS} | {"seed": 3}
    assert rec["id"] == item_id(a.settings, 3) == hashlib.sha256(
        json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    text = fluxnb.read_metadata(a.path)["parameters"]
    assert "Denoising strength" not in text and "Mask blur" not in text
    assert "inputs" not in fluxnb.read_metadata(a.path)["fluxnb"]


def test_strength_sweep_cells_equal_single_generates(tiny_model, pics, outdir):
    """`fluxnb sweep PROMPT --init-image in.png --strength 0.3,0.6,0.9 --seeds 1,2`: each
    strength's two seeds share a batched call (each seed encodes its own copy of the input,
    as a single call does); every cell is the single generate's image within 2/255."""
    r = run_cli("sweep", "a fox", "--model", "tiny", "--init-image", pics / "in.png", "--strength", "0.3,0.6,0.9",
                "--seeds", "1,2", "--steps", 3, "--format", "png", "--out", outdir, "--json")
    assert r.returncode == 0, r.stderr
    cells = json.loads(r.stdout)["cells"]
    assert sorted((c["values"]["strength"], c["seed"]) for c in cells) == [(s, n) for s in (0.3, 0.6, 0.9)
                                                                          for n in (1, 2)]
    images = {}
    for c in cells:
        [single] = fluxnb.generate("a fox", init_image=str(pics / "in.png"), strength=c["values"]["strength"],
                                   seed=c["seed"], model="tiny", steps=3, save=False, record=False, progress=False)
        got = pixels(c["path"])
        assert got.shape == (48, 64, 3) and np.abs(got - pixels(single.image)).max() <= 2, c["values"]
        images[(c["values"]["strength"], c["seed"])] = got
    assert np.abs(images[(0.3, 1)] - images[(0.9, 1)]).max() > 4
    recs = [r for r in runlog.read(outdir) if r["status"] == "ok"]
    assert sorted(r["strength"] for r in recs) == [0.3, 0.3, 0.6, 0.6, 0.9, 0.9]
    assert {r["task"] for r in recs} == {"img2img"}


# ---------------------------------------------------------------------------------------
# Inpainting and outpainting
# ---------------------------------------------------------------------------------------

def test_inpaint_changes_only_the_inside_of_the_mask(tiny_model, pics, outdir):
    inside, want = inside_mask(), input_pixels(pics)
    made = {}
    for blur in (0, 4):
        [item] = fluxnb.generate("a fox", init_image=str(pics / "in.png"), mask=str(pics / "mask.png"), strength=1.0,
                                 mask_blur=blur, seed=5, output_dir=str(outdir), **FAST)
        got = made[blur] = pixels(item.path)
        assert (got[~inside] == want[~inside]).all(), f"mask_blur {blur}: a pixel outside the mask changed"
        assert np.abs(got - want)[inside].mean() > 10, f"mask_blur {blur}: the inside was not repainted"
        assert item.record["task"] == "inpaint" and item.record["mask_sha256"] == sha(pics / "mask.png")
    # The feathering falls inside the mask: next to its edge the blurred composite is nearer
    # the input than the hard one; at its centre they are the same pixels.
    edge = inside & ~np.pad(inside[1:-1, 1:-1] & inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2]
                            & inside[1:-1, 2:], 1)
    assert np.abs(made[4] - want)[edge].sum() < np.abs(made[0] - want)[edge].sum()
    assert (made[4][22:26, 30:34] == made[0][22:26, 30:34]).all()
    text = fluxnb.read_metadata(item.path)["parameters"]
    assert "Denoising strength: 1.0" in text and "Mask blur: 4" in text
    meta = fluxnb.read_metadata(item.path)["fluxnb"]
    assert meta["inputs"]["init_image"] == {"path": str((pics / "in.png").resolve()), "width": 70, "height": 50,
                                            "sha256": sha(pics / "in.png"), "kept": f"inputs/{sha(pics / 'in.png')}.png"}
    assert meta["inputs"]["mask"]["sha256"] == sha(pics / "mask.png")


def test_transparent_pixels_are_the_mask_and_a_mask_is_resized(tiny_model, pics, outdir, caplog):
    caplog.set_level(logging.INFO, logger="fluxnb")
    rgba = Image.open(pics / "in.png").convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, RECT)
    rgba.putalpha(alpha)
    rgba.save(pics / "holed.png")
    [holed] = fluxnb.generate("a fox", init_image=str(pics / "holed.png"), seed=6, mask_blur=0, output_dir=str(outdir),
                              **FAST)
    inside, want = inside_mask(), input_pixels(pics)
    assert holed.record["task"] == "inpaint"
    assert (pixels(holed.path)[~inside] == want[~inside]).all() and np.abs(pixels(holed.path) - want)[inside].max() > 20
    # a mask twice the size (same shape): resized, with a note, to the same mask
    big = Image.open(pics / "mask.png").resize((140, 100), Image.NEAREST)
    big.save(pics / "big.png")
    runs = {}
    for name in ("mask.png", "big.png"):
        [runs[name]] = fluxnb.generate("a fox", init_image=str(pics / "in.png"), mask=str(pics / name), seed=6,
                                       save=False, record=False, **FAST)
    assert "140x100 resized to the init image's 70x50" in caplog.text
    assert (pixels(runs["mask.png"].image) == pixels(runs["big.png"].image)).all()
    Image.new("L", (50, 50), 255).save(pics / "square.png")
    with pytest.raises(FluxnbError, match="another shape than the init image"):
        fluxnb.generate("a fox", init_image=str(pics / "in.png"), mask=str(pics / "square.png"), seed=6, **FAST)


def test_outpainting_grows_the_canvas_and_keeps_the_input(tiny_model, tmp_path, outdir):
    noise(64, 48, 2).save(tmp_path / "in.png")
    [item] = fluxnb.generate("a fox", init_image=str(tmp_path / "in.png"), pad="16,0,0,16", strength=1.0, mask_blur=0,
                             seed=7, output_dir=str(outdir), **FAST)
    got, want = pixels(item.path), pixels(tmp_path / "in.png")
    assert got.shape == (64, 80, 3) and item.record["task"] == "inpaint"
    assert (got[:48, 16:] == want).all()                       # the input, untouched
    border = np.pad(want, ((0, 16), (16, 0), (0, 0)), mode="edge")  # what the border started from
    assert np.abs(got - border)[48:, :].mean() > 10 and np.abs(got - border)[:, :16].mean() > 10
    assert fluxnb.read_settings(item.path).pad == "16,0,0,16"


# ---------------------------------------------------------------------------------------
# Kontext and Fill
# ---------------------------------------------------------------------------------------

def test_model_build_writes_the_kontext_and_fill_variants(tmp_path, capsys):
    for variant, cls in (("kontext", "FluxKontextPipeline"), ("fill", "FluxFillPipeline")):
        assert main(["model", "build", str(tmp_path / variant), "--scale", "tiny", "--variant", variant]) == 0
        index = json.loads((tmp_path / variant / "model_index.json").read_text())
        config = json.loads((tmp_path / variant / "transformer" / "config.json").read_text())
        assert index["_class_name"] == cls and config["in_channels"] == (384 if variant == "fill" else 64)
        assert config["out_channels"] in (64, None)


def test_kontext_edits_the_init_image(tiny_kontext, pics, outdir):
    made = {}
    for resize in ("keep", "preferred"):
        [made[resize]] = fluxnb.generate("make it red", model=str(tiny_kontext), init_image=str(pics / "in.png"),
                                         kontext_resize=resize, seed=8, steps=2, image_format="png",
                                         output_dir=str(outdir), progress=False)
        rec = made[resize].record
        assert made[resize].image.size == (64, 48) and (rec["task"], rec["strength"]) == ("edit", None)
    assert np.abs(pixels(made["keep"].path) - pixels(made["preferred"].path)).max() > 4
    assert "Denoising strength" not in fluxnb.read_metadata(made["keep"].path)["parameters"]
    [plain] = fluxnb.generate("a fox", model=str(tiny_kontext), size="64x64", seed=8, steps=2, save=False,
                              record=False, progress=False)
    assert plain.image.size == (64, 64) and plain.record["task"] == "txt2img"
    with pytest.raises(FluxnbError, match="it does not inpaint"):
        fluxnb.generate("x", model=str(tiny_kontext), init_image=str(pics / "in.png"), mask=str(pics / "mask.png"),
                        steps=2, progress=False)


def test_fill_inpaints_with_its_own_pipeline(tiny_fill, pics, outdir):
    [item] = fluxnb.generate("a fox", model=str(tiny_fill), init_image=str(pics / "in.png"), mask=str(pics / "mask.png"),
                             mask_blur=0, seed=9, steps=2, image_format="png", output_dir=str(outdir), progress=False)
    loaded = fluxnb.pipeline.current()
    assert type(loaded.pipe).__name__ == "FluxFillPipeline" and loaded.pipes == {}
    inside, want = inside_mask(), input_pixels(pics)
    got = pixels(item.path)
    assert item.record["task"] == "inpaint" and (got[~inside] == want[~inside]).all()
    assert np.abs(got - want)[inside].mean() > 10
    with pytest.raises(FluxnbError, match="Fill model repaints the masked part"):
        fluxnb.generate("a fox", model=str(tiny_fill), init_image=str(pics / "in.png"), steps=2, progress=False)


def test_derived_pipelines_share_the_loaded_components_and_keep_fp8(tiny_model, pics, outdir):
    """img2img and inpaint pipelines are the loaded pipeline's own modules (no copy, no cast):
    fp8-stored transformer weights stay fp8; their end-of-call offload step is the loaded one's."""
    import torch

    for extra in ({}, {"mask": str(pics / "mask.png")}):
        fluxnb.generate("a fox", init_image=str(pics / "in.png"), precision="fp8", seed=1, output_dir=str(outdir),
                        **extra, **FAST)
    loaded = fluxnb.pipeline.current()
    assert set(loaded.pipes) == {"FluxImg2ImgPipeline", "FluxInpaintPipeline"}
    for derived in loaded.pipes.values():
        assert derived.components and all(comp is loaded.pipe.components[name]
                                          for name, comp in derived.components.items() if comp is not None)
    assert loaded.pipe.transformer.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    assert loaded.pipe.vae.dtype == loaded.pipe.text_encoder.dtype == torch.float32
    calls = []
    loaded.pipe.maybe_free_model_hooks = lambda: calls.append("base")
    try:
        loaded.pipes["FluxInpaintPipeline"].maybe_free_model_hooks()
    finally:
        del loaded.pipe.maybe_free_model_hooks
    assert calls == ["base"]


@pytest.mark.parametrize("offload", ["model", "group"])
def test_derived_pipelines_run_under_the_loaded_pipelines_offload_hooks(offload, tiny_model, pics):
    """The memory policy's hooks live on the shared modules: a derived img2img pipeline runs
    under them (here with the CPU standing in for the GPU, which fluxnb itself never offloads
    to) and makes the pixels it makes without them; model offload's hooks are the loaded
    pipeline's before and after the call."""
    import torch
    from diffusers import FluxPipeline

    from fluxnb.image.conditioning import derive
    from fluxnb.model.pipeline import apply_offload

    image = Image.open(pics / "in.png").crop(CROP)
    made = {}
    for policy in ("none", offload):
        pipe = FluxPipeline.from_pretrained(str(tiny_model), dtype=torch.float32)
        if policy != "none":
            apply_offload(pipe, policy, "cpu")
        hooks = list(getattr(pipe, "_all_hooks", []))
        derived = derive(pipe, "FluxImg2ImgPipeline")
        made[policy] = pixels(derived(prompt="a fox", image=image, strength=0.6, width=64, height=48,
                                      num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(1)).images[0])
        assert len(getattr(pipe, "_all_hooks", [])) == len(hooks) and not hasattr(derived, "_all_hooks")
    assert (made[offload] == made["none"]).all() and (offload != "model" or hooks)


# ---------------------------------------------------------------------------------------
# Reproduction from the file
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["img2img", "inpaint", "edit", "fill"])
def test_from_image_reproduces_each_task(task, request, pics, outdir, capsys):
    model = {"edit": "tiny_kontext", "fill": "tiny_fill"}.get(task, "tiny_model")
    folder = str(request.getfixturevalue(model)) if task in ("edit", "fill") else "tiny"
    masked = {"mask": str(pics / "mask.png")} if task in ("inpaint", "fill") else {}
    [item] = fluxnb.generate("a fox", model=folder, init_image=str(pics / "in.png"), strength=0.7, seed=11, steps=2,
                             image_format="png", output_dir=str(outdir), progress=False, **masked)
    assert item.record["task"] == ("inpaint" if task == "fill" else task)
    # A local model folder is used only when named (the image cannot choose it).
    named = ["--model", folder] if folder != "tiny" else []
    assert main(["generate", "--from-image", str(item.path), *named, "--out", str(outdir / "again")]) == 0
    [again] = capsys.readouterr().out.split()
    assert (pixels(again) == pixels(item.path)).all()
    [rec] = runlog.read(outdir / "again")
    assert (rec["init_sha256"], rec["mask_sha256"]) == (item.record["init_sha256"], item.record["mask_sha256"])


def test_a_moved_input_is_found_by_hash_or_named(tiny_model, pics, outdir, capsys):
    init, digest = pics / "in.png", sha(pics / "in.png")
    [item] = fluxnb.generate("a fox", init_image=str(init), mask=str(pics / "mask.png"), seed=12,
                             output_dir=str(outdir), **FAST)
    init.rename(pics / "moved.png")
    back = fluxnb.read_settings(item.path)  # found in the output folder's inputs/ by its hash
    assert back.init_image == str(outdir / "inputs" / f"{digest}.png")
    [again] = fluxnb.generate(settings=back, save=False, record=False, progress=False)
    assert (pixels(again.image) == pixels(item.path)).all()
    shutil.rmtree(outdir / "inputs")
    assert main(["generate", "--from-image", str(item.path), "--out", str(outdir / "again")]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == err.splitlines()
    assert str(init) in err and digest in err and "is missing" in err
    noise(70, 50, seed=99).save(init)  # another image at the recorded path
    with pytest.raises(FluxnbError, match=f"init_image .*{digest}.* has changed"):
        fluxnb.read_settings(item.path)
    assert not (outdir / "again").exists()


# ---------------------------------------------------------------------------------------
# Bad input, params files, the form
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--init-image", "{pics}/text.png"], ["init_image", "not an image file"]),
    (["--init-image", "{pics}/none.png"], ["init_image", "no such file"]),
    (["--init-image", "{pics}/in.png", "--strength", "0"], ["strength 0", "above 0"]),
    (["--init-image", "{pics}/in.png", "--strength", "1.5"], ["strength 1.5", "at most 1"]),
    (["--mask", "{pics}/mask.png"], ["mask", "needs an init image"]),
    (["--init-image", "{pics}/in.png", "--pad", "1,2"], ["pad '1,2'", "LEFT,TOP,RIGHT,BOTTOM"]),
    (["--init-image", "{pics}/in.png", "--mask", "{pics}/square.png"], ["another shape"]),
    (["--init-image", "{pics}/in.png", "--kontext-resize", "keep"], ["kontext_resize", "not a FLUX.1 Kontext model"]),
])
def test_bad_input_is_one_error_line_and_no_file(args, words, tiny_model, pics, outdir, capsys):
    (pics / "text.png").write_text("not an image")
    Image.new("L", (50, 50), 255).save(pics / "square.png")
    args = [a.format(pics=pics) for a in args]
    assert main(["generate", "x", "--model", "tiny", "--steps", "2", "--out", str(outdir), *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert all(w in errors[0] for w in words), errors[0]
    assert not list(outdir.glob("*.png")) and not list(outdir.glob("*.jpg"))


def test_params_file_paths_are_relative_to_the_file(pics, tmp_path):
    from fluxnb import batch

    sub = tmp_path / "params"
    sub.mkdir()
    shutil.copy(pics / "in.png", sub / "start.png")
    (sub / "edit.yaml").write_text('model: tiny\nprompts: ["a fox"]\nseeds: [1]\ninit_image: start.png\n'
                                   "strength: 0.4\n")
    p = batch.plan(batch.load(sub / "edit.yaml"))
    assert p.settings.init_image == str(sub / "start.png") and p.settings.strength == 0.4
    assert p.settings.size == "64x48"
    plain = batch.plan({"model": "tiny", "prompts": ["a fox"], "seeds": [1]})
    assert p.items[0].id != plain.items[0].id and p.batch_id != plain.batch_id


def test_the_form_takes_an_upload_and_uses_a_result_as_input(tiny_model, pics, outdir):
    import datetime

    form = ui.generator(model="tiny", output_dir=str(outdir), prompt="a fox", image_format="png", steps=2)
    box = form.image_input
    box.upload.value = ({"name": "mine.png", "type": "image/png", "size": 1, "last_modified": datetime.datetime.now(),
                         "content": memoryview((pics / "in.png").read_bytes())},)
    assert box.init_image.value == str(outdir / "inputs" / f"{sha(pics / 'in.png')}.png")
    assert box.shown.layout.display is None and Image.open(io.BytesIO(box.shown.value)).size == (70, 50)
    box.strength.value = 0.5
    form.generate_button.click()
    assert form.message.value == ""
    [first] = form.images
    assert first.image.size == (64, 48) and (first.record["task"], first.record["strength"]) == ("img2img", 0.5)
    assert "img2img of" in form.info.value
    form.strip.children[0].children[-1].click()  # "→ input": the result becomes the init image
    assert box.init_image.value == str(first.path)
    form.generate_button.click()
    assert form.message.value == "" and form.images[-1].record["init_sha256"] == sha(first.path)
    Image.open(pics / "mask.png").crop(CROP).save(pics / "mask64.png")
    box.mask.value = str(pics / "mask64.png")
    form.generate_button.click()
    assert form.message.value == "" and form.images[-1].record["task"] == "inpaint"
    form.restore(first)
    assert box.init_image.value == first.settings.init_image and box.mask.value == "" and box.strength.value == 0.5
    box.clear()
    form.generate_button.click()
    assert form.images[-1].record["task"] == "txt2img" and box.shown.layout.display == "none"
