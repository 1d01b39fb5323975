"""Generation end to end on the tiny model: seeds, determinism, metadata, read-back, run log,
failures recorded with their status."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb import runlog
from fluxnb.errors import FluxnbError
from fluxnb.image.make import generate
from fluxnb.image.record import item_id
from fluxnb.outputs.metadata import parse_infotext, read_metadata, read_settings

TINY = dict(model="tiny", steps=2, size="64x64")


def pixels(path_or_image):
    img = Image.open(path_or_image) if not hasattr(path_or_image, "size") else path_or_image
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_one_image_end_to_end(tiny_model, outdir):
    [r] = generate("a lighthouse at dusk", seed=7, output_dir=outdir, image_format="png", **TINY)
    assert r.path.parent == outdir and r.path.name.startswith("flux_") and r.path.name.endswith("_7.png")
    assert Image.open(r.path).size == (64, 64)
    rec = runlog.read(outdir)[-1]
    for key in ("path", "status", "prompt", "clip_prompt", "t5_prompt", "enhancer", "seed", "steps", "guidance",
                "width", "height", "model", "offload", "elapsed_s", "created_at", "fluxnb_version", "device"):
        assert key in rec, key
    assert rec["status"] == "ok" and rec["path"] == str(r.path) and rec["seed"] == 7
    assert rec["clip_prompt"] == rec["t5_prompt"] == "a lighthouse at dusk" and rec["enhancer"] == "none"
    assert rec["device"] == "cpu" and rec["offload"] == "none" and rec["model"] == "tiny"
    assert rec["id"] == item_id(r.settings, 7)


def test_same_seed_same_pixels_other_seed_other_pixels(tiny_model, outdir):
    a = generate("a red fox", seed=11, save=False, record=False, **TINY)[0]
    b = generate("a red fox", seed=11, save=False, record=False, **TINY)[0]
    c = generate("a red fox", seed=12, save=False, record=False, **TINY)[0]
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert not np.array_equal(pixels(a.image), pixels(c.image))


def test_count_gives_consecutive_seeds_and_explicit_seeds(tiny_model, outdir):
    rs = generate("a red fox", seed=100, count=3, output_dir=outdir, **TINY)
    assert [r.seed for r in rs] == [100, 101, 102]
    rs = generate("a red fox", seeds=[5, 9], output_dir=outdir, **TINY)
    assert [r.seed for r in rs] == [5, 9]
    assert len({r.path for r in rs}) == 2
    assert [r["seed"] for r in runlog.read(outdir)] == [100, 101, 102, 5, 9]


def test_random_seed_is_drawn_and_recorded(tiny_model, outdir):
    [r] = generate("a red fox", output_dir=outdir, **TINY)
    assert 0 <= r.seed < 2**32
    assert runlog.read(outdir)[-1]["seed"] == r.seed
    assert r.path.name.endswith(f"_{r.seed}.jpg")


def test_pipeline_is_loaded_once(tiny_model):
    from fluxnb.model.pipeline import current

    generate("a", seed=1, save=False, record=False, **TINY)
    first = current()
    generate("b", seed=2, save=False, record=False, guidance=2.0, **TINY)
    assert current() is first


def test_png_metadata_is_a1111_and_json(tiny_model, outdir):
    prompt = "a cat, sitting: on a mat"
    [r] = generate(prompt, seed=3, output_dir=outdir, image_format="png", guidance=2.5, **TINY)
    meta = read_metadata(r.path)
    text = meta["parameters"]
    assert text.splitlines()[0] == prompt
    parsed = parse_infotext(text)
    assert parsed["prompt"] == prompt
    p = parsed["params"]
    assert p["Steps"] == "2" and p["Seed"] == "3" and p["Size"] == "64x64" and p["CFG scale"] == "1"
    assert p["Distilled CFG Scale"] == "2.5" and p["Sampler"] == "Euler" and p["Model"] == "tiny"
    j = meta["fluxnb"]
    assert j["prompt"] == prompt and j["seed"] == 3 and j["settings"]["guidance"] == 2.5
    assert j["versions"]["torch"] and j["clip_tokens"] > 2 and j["t5_tokens"] > 1
    assert "denoise_s" in j and "decode_s" in j


def test_jpeg_metadata_in_exif_usercomment_readable_by_piexif(tiny_model, outdir):
    import piexif  # a dependency of fluxnb (JPEG infotext): never skipped
    import piexif.helper

    [r] = generate("a blue whale, 8k", seed=4, output_dir=outdir, image_format="jpg", jpeg_quality=80, **TINY)
    exif = piexif.load(str(r.path))
    text = piexif.helper.UserComment.load(exif["Exif"][piexif.ExifIFD.UserComment])  # how A1111 reads it
    assert text.splitlines()[0] == "a blue whale, 8k"
    assert "Seed: 4" in text and "Distilled CFG Scale: 3.5" in text
    assert read_metadata(r.path)["fluxnb"]["jpeg_quality"] == 80


def test_values_with_commas_are_json_quoted():
    from fluxnb.outputs.metadata import infotext

    meta = {"t5_prompt": "p", "steps": 2, "guidance": 3.5, "seed": 1, "width": 64, "height": 64,
            "model_name": "my, model: v2", "fluxnb_version": "0"}
    line = infotext(meta).splitlines()[1]
    assert 'Model: "my, model: v2"' in line
    assert parse_infotext(infotext(meta))["params"]["Model"] == "my, model: v2"


def test_read_settings_reproduces_the_pixels(tiny_model, outdir):
    [r] = generate("a castle on a hill", seed=21, output_dir=outdir, image_format="png", guidance=4.0, **TINY)
    s = read_settings(r.path)
    assert (s.prompt, s.seed, s.steps, s.guidance, s.model) == ("a castle on a hill", 21, 2, 4.0, "tiny")
    [again] = generate(settings=s, output_dir=outdir)
    assert again.path != r.path
    assert np.array_equal(pixels(r.path), pixels(again.path))


def test_read_settings_from_a_foreign_a1111_png(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", 'a forest, misty\nNegative prompt: blurry\nSteps: 28, Sampler: Euler, '
                                'Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3, Seed: 1234, '
                                'Size: 1920x1080, Model: flux1-dev, Version: f2.0.1')
    path = tmp_path / "forge.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    s = read_settings(path)
    assert (s.prompt, s.steps, s.guidance, s.seed, s.size) == ("a forest, misty", 28, 3.0, 1234, "hd")
    assert s.model == "black-forest-labs/FLUX.1-dev"


def test_read_settings_without_metadata_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(FluxnbError, match="no generation settings"):
        read_settings(path)


def test_hd_is_rendered_at_1088_and_cropped_to_1080(tiny_model, outdir):
    [r] = generate("wide", seed=1, model="tiny", steps=1, size="hd", save=False, record=False)
    assert r.image.size == (1920, 1080)
    assert r.settings.render_size == (1920, 1088)


def test_vae_tiling_turns_on_above_2mp_only(tiny_model):
    from fluxnb.image.render import configure_tiling
    from fluxnb.model.pipeline import get_pipeline
    from fluxnb.config.settings import resolve

    s = resolve(model="tiny", size="4k")
    loaded = get_pipeline(s.load)
    configure_tiling(loaded, s)
    assert loaded.pipe.vae.use_tiling
    configure_tiling(loaded, resolve(model="tiny", size="square"))
    assert not loaded.pipe.vae.use_tiling


def test_callbacks_see_every_step(tiny_model):
    steps = []
    generate("x", seed=1, save=False, record=False, callbacks=[lambda p, i, t, kw: steps.append(i)], model="tiny",
             steps=3, size="64x64")
    assert steps == [0, 1, 2]


def test_black_image_is_recorded_and_raised(tiny_model, outdir):
    def poison(pipe, i, t, kwargs):
        return {"latents": kwargs["latents"] * float("nan")}

    with pytest.raises(FluxnbError, match="black") as e:
        generate("x", seed=1, output_dir=outdir, callbacks=[poison], **TINY)
    assert e.value.status == "black"
    rec = runlog.read(outdir)[-1]
    assert rec["status"] == "black" and "black" in rec["error"] and rec["seed"] == 1
    assert not list(outdir.glob("*.jpg"))


def test_out_of_memory_names_the_offload_that_fits(tiny_model, outdir, monkeypatch):
    import torch

    from fluxnb.model import pipeline

    loaded = pipeline.get_pipeline(fluxnb.resolve(**TINY).load)

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(loaded.pipe), "__call__", oom)
    with pytest.raises(FluxnbError) as e:
        generate("x", seed=1, output_dir=outdir, **TINY)
    assert e.value.status == "oom" and "--offload encoders" in str(e.value) and e.value.exit_code == 1
    assert runlog.read(outdir)[-1]["status"] == "oom"


def test_no_room_on_disk_leaves_no_file(tiny_model, outdir, monkeypatch):
    from fluxnb.outputs import files

    monkeypatch.setattr(files, "_free_bytes", lambda d: 1024)
    with pytest.raises(FluxnbError, match="no room on disk"):
        generate("x", seed=1, output_dir=outdir, **TINY)
    assert [p.name for p in outdir.iterdir()] == ["runlog.jsonl"]
    assert runlog.read(outdir)[-1]["status"] == "disk_full"


def test_blank_prompt_is_refused_before_anything_runs(outdir):
    for prompt in ("", "   ", None):
        with pytest.raises(FluxnbError, match="prompt"):
            generate(prompt, output_dir=outdir, **TINY)
    assert not outdir.exists()


def test_files_never_overwrite(tmp_path):
    from fluxnb.outputs.files import write_new

    a = write_new(tmp_path, "flux_1.png", b"one")
    b = write_new(tmp_path, "flux_1.png", b"two")
    assert (a.name, b.name) == ("flux_1.png", "flux_1_1.png")
    assert a.read_bytes() == b"one" and b.read_bytes() == b"two"
    assert not list(tmp_path.glob("*.tmp"))


def test_metadata_json_has_every_setting(tiny_model, outdir):
    [r] = generate("a", seed=2, output_dir=outdir, image_format="png", **TINY)
    settings = read_metadata(r.path)["fluxnb"]["settings"]
    assert set(fluxnb.Settings().to_dict()) <= set(settings)
    json.dumps(settings)
