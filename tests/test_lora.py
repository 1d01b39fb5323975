"""LoRA adapters on the tiny model: `--lora` / `loras` and `<lora:NAME:W>` prompt tags, both
file layouts (diffusers/PEFT and kohya), weights, two adapters, unloading, records and
metadata (A1111's `Lora hashes`), reproduction from the file, the weight as a sweep axis, and
bad input refused with the pipeline left as it was. (fluxnb against diffusers' own
load_lora_weights + set_adapters: tests/test_fidelity.py.)"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

import fluxnb
from fluxnb import runlog
from fluxnb.config import loras as config_loras
from fluxnb.config.settings import resolve
from fluxnb.errors import FluxnbError
from support import run_cli, tiny_lora

FAST = dict(model="tiny", steps=2, size="64x64", image_format="png", progress=False)


def pixels(image_or_path) -> np.ndarray:
    im = Image.open(image_or_path) if not hasattr(image_or_path, "convert") else image_or_path
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def make(prompt="a fox", seed=3, **kw) -> np.ndarray:
    return pixels(fluxnb.generate(prompt, seeds=[seed], save=False, record=False, **FAST, **kw)[0].image)


@pytest.fixture
def lora_dir(tmp_path, monkeypatch):
    """A LoRA folder ($FLUXNB_LORA_DIR) with style (diffusers layout), detail (another seed)
    and civitai (kohya layout)."""
    d = tmp_path / "loras"
    d.mkdir()
    tiny_lora(d / "style.safetensors", seed=1)
    tiny_lora(d / "detail.safetensors", seed=2)
    tiny_lora(d / "civitai.safetensors", layout="kohya", seed=3)
    monkeypatch.setenv("FLUXNB_LORA_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def base(tiny_model):
    """The image of no LoRA (the loaded pipeline is shared by every test)."""
    return make()


# ---------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["style", "civitai"])
def test_weight_zero_is_no_lora_and_a_weight_changes_the_image(lora_dir, base, name):
    path = lora_dir / f"{name}.safetensors"
    assert np.array_equal(make(loras=[f"{path}:0"]), base)
    changed = make(loras=[f"{path}:1"])
    assert np.abs(changed - base).max() > 0
    assert not np.array_equal(make(loras=[f"{path}:0.5"]), changed)


def test_flag_tag_and_name_give_the_same_pixels(lora_dir, base):
    by_path = make(loras=[f"{lora_dir / 'style.safetensors'}:0.7"])
    assert np.array_equal(make("a fox <lora:style:0.7>"), by_path)
    assert np.array_equal(make("<lora:style:0.7> a fox"), by_path)
    assert np.array_equal(make(lora="style:0.7"), by_path)            # a NAME in the LoRA folder
    assert np.array_equal(make(loras=[{"path": str(lora_dir / "style.safetensors"), "weight": 0.7}]), by_path)
    assert not np.array_equal(by_path, base)


def test_two_adapters_combine_and_turning_them_off_restores_the_base(lora_dir, base):
    one = make(loras=["style:1"])
    two = make(loras=["style:1", "detail:1"])
    assert not np.array_equal(two, one) and not np.array_equal(two, make(loras=["detail:1"]))
    assert np.array_equal(make(loras=["style:1", "detail:0"]), one)
    assert np.array_equal(make(), base)                               # no LoRA: adapters off


def test_unloading_restores_the_base_model(lora_dir, base):
    from fluxnb.model.pipeline import current

    make(loras=["style:1", "civitai:1"])
    loaded = current()
    pipe = loaded.pipe
    fluxnb.unload_loras()
    assert not any("lora" in name for name, _ in pipe.transformer.named_modules())
    import torch
    from diffusers import FluxTransformer2DModel

    fresh = FluxTransformer2DModel.from_pretrained(loaded.path, subfolder="transformer", dtype=torch.float32)
    got, want = pipe.transformer.state_dict(), fresh.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)  # the base weights, exactly
    assert np.array_equal(make(), base)
    assert current() is loaded                                        # never a reload of the base model


# ---------------------------------------------------------------------------------------
# Records, metadata, reproduction
# ---------------------------------------------------------------------------------------

def test_recorded_as_a1111_and_civitai_read_it_and_reproduced(lora_dir, outdir):
    path = lora_dir / "civitai.safetensors"
    [img] = fluxnb.generate("a fox <lora:style:0.5>", loras=[f"{path}:0.8"], seeds=[4], out=outdir, **FAST)
    meta = fluxnb.read_metadata(img.path)
    data = meta["fluxnb"]
    assert [(e["name"], e["weight"]) for e in data["lora_adapters"]] == [("civitai", 0.8), ("style", 0.5)]
    blob = path.read_bytes()
    full = hashlib.sha256(blob).hexdigest()
    addnet = hashlib.sha256(blob[8 + int.from_bytes(blob[:8], "little"):]).hexdigest()
    assert data["lora_adapters"][0]["sha256"] == full and data["lora_adapters"][0]["path"] == str(path)
    assert data["loras"] == "civitai:0.8, style:0.5"                       # the run-log record's column
    assert data["t5_prompt"] == data["clip_prompt"] == "a fox"           # the tag never reaches the encoders
    parsed = fluxnb.metadata.parse_infotext(meta["parameters"])
    assert parsed["prompt"] == "a fox <lora:civitai:0.8> <lora:style:0.5>"  # as A1111 writes its prompt
    style_hash = config_loras.short_hash(str(lora_dir / "style.safetensors"))
    assert parsed["params"]["Lora hashes"] == f"civitai: {addnet[:12]}, style: {style_hash}"
    # the run log: names and weights, filterable
    df = runlog.load(outdir)
    assert df.loc[df["loras"].str.contains("civitai:0.8"), "seed"].tolist() == [4]
    # the file reproduces itself: the same adapters at the same weights
    s = fluxnb.read_settings(img.path)
    assert s.prompt == "a fox" and [config_loras.parse(x).name for x in s.loras] == ["civitai", "style"]
    again = fluxnb.generate(settings=s, save=False, record=False, progress=False)[0]
    assert np.array_equal(pixels(again.image), pixels(img.path))
    # a changed file is refused, naming the adapter and the hash
    tiny_lora(path, layout="kohya", seed=99)
    with pytest.raises(FluxnbError, match=r"LoRA 'civitai'.*sha256 " + full[:12]):
        fluxnb.read_settings(img.path)
    path.unlink()
    with pytest.raises(FluxnbError, match=r"LoRA 'civitai'.*no such file"):
        fluxnb.read_settings(img.path)


def test_ids_change_only_with_loras(lora_dir):
    from fluxnb.image.record import item_id

    s = resolve(prompt="a fox", **{k: v for k, v in FAST.items() if k != "progress"})
    plain = item_id(s, 1)
    assert item_id(s.replace(loras=[]), 1) == plain
    assert item_id(s.replace(loras=["style:1"]), 1) != plain
    assert item_id(s.replace(loras=["style:1"]), 1) != item_id(s.replace(loras=["style:0.5"]), 1)


def test_params_file_loras_key(lora_dir, tmp_path):
    from fluxnb.config.params import load_params

    (tmp_path / "p").mkdir()
    tiny_lora(tmp_path / "p" / "mine.safetensors", seed=5)
    (tmp_path / "p" / "params.yaml").write_text("loras:\n  - mine.safetensors:0.25\n  - {path: style, weight: -1}\n")
    s = resolve(load_params(tmp_path / "p" / "params.yaml"))
    assert s.loras == [f"{tmp_path / 'p' / 'mine.safetensors'}:0.25", f"{lora_dir / 'style.safetensors'}:-1"]


def test_img2img_takes_the_adapters_too(lora_dir, tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")).save(src)
    plain = make(init_image=str(src), strength=0.8)
    assert np.array_equal(make(init_image=str(src), strength=0.8, loras=["style:0"]), plain)
    assert not np.array_equal(make(init_image=str(src), strength=0.8, loras=["style:1"]), plain)


def test_hashes_are_computed_once_and_kept(lora_dir, monkeypatch):
    path = str(lora_dir / "style.safetensors")
    first = config_loras.hashes(path)
    assert first[0] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    monkeypatch.setattr(config_loras, "_HASHES", {})
    monkeypatch.setattr(config_loras, "_DISK", None)       # a new process: read from the cache file
    monkeypatch.setattr(config_loras.hashlib, "sha256", lambda *a: pytest.fail("hashed again"))
    assert config_loras.hashes(path) == first


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, match", [
    ("missing.safetensors", "no such LoRA file"),
    ("style:3", r"weight 3 is outside -2\.\.2"),
    ("style:0,1", "several weights make a sweep"),
])
def test_bad_specs_refused_before_anything_loads(lora_dir, spec, match):
    with pytest.raises(FluxnbError, match=match):
        resolve(prompt="a fox", loras=[spec])


def test_weight_range_is_configurable_and_tags_checked(lora_dir, monkeypatch):
    with pytest.raises(FluxnbError, match="no LoRA 'nope.safetensors' in the LoRA folder"):
        resolve(prompt="a fox <lora:nope:1>")
    with pytest.raises(FluxnbError, match="given twice"):
        resolve(prompt="a fox <lora:style:1>", loras=["style:0.5"])
    monkeypatch.setenv("FLUXNB_LORA_WEIGHT_LIMIT", "4")
    assert resolve(prompt="a fox", loras=["style:3"]).loras[0].endswith(":3")


@pytest.mark.parametrize("layout, match", [
    ("text", "not a FLUX LoRA diffusers can read"),
    ("sdxl", "not a FLUX LoRA diffusers can read"),
    ("unet", "no LoRA weights for a FLUX transformer"),
])
def test_files_that_are_not_flux_loras_are_refused_and_leave_the_pipeline_as_it_was(lora_dir, base, outdir, layout,
                                                                                    match):
    bad = lora_dir / f"bad_{layout}.safetensors"
    if layout == "text":
        bad.write_text("not a LoRA")
    else:
        tiny_lora(bad, layout=layout)
    before = make(loras=["style:0.6"])
    with pytest.raises(FluxnbError, match=match):
        fluxnb.generate("a fox", loras=["style:0.6", f"{bad}:1"], seeds=[3], out=outdir, **FAST)
    assert not list(outdir.glob("*.png"))                                  # no image
    assert runlog.load(outdir)["status"].tolist() == ["error"]             # one failure record
    assert np.array_equal(make(loras=["style:0.6"]), before)               # the pipeline as it was
    assert np.array_equal(make(), base)


def test_a_failed_load_takes_back_the_adapters_loaded_with_it(lora_dir, base, outdir):
    from fluxnb.model.pipeline import current

    active = make(loras=["detail:0.4"])
    fresh = tiny_lora(lora_dir / "fresh.safetensors", seed=21)
    (lora_dir / "bad.safetensors").write_text("not a LoRA")
    with pytest.raises(FluxnbError, match="not a FLUX LoRA"):
        fluxnb.generate("a fox", loras=[f"{fresh}:1", "bad:1"], seeds=[3], out=outdir, **FAST)
    peft = current().pipe.transformer.peft_config
    assert not any(name.startswith("fresh_") for name in peft)             # taken back
    assert np.array_equal(make(loras=["detail:0.4"]), active)
    assert np.array_equal(make(), base)


def test_a_lora_that_trains_the_text_encoder_is_refused(lora_dir, base, outdir):
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(str(lora_dir / "style.safetensors"))
    sd["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.ones(4, 32)
    sd["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.ones(32, 4)
    save_file(sd, str(lora_dir / "te.safetensors"))
    with pytest.raises(FluxnbError, match="also trains the text encoder"):
        fluxnb.generate("a fox", loras=["te:1"], seeds=[3], out=outdir, **FAST)
    assert np.array_equal(make(), base)


def test_refused_on_pipelines_they_would_be_wrong_on(lora_dir):
    from types import SimpleNamespace

    from fluxnb.model.loras import check_pipeline

    lora = [config_loras.parse(f"{lora_dir / 'style.safetensors'}:1")]
    for precision, key, match in (("fp8", SimpleNamespace(precision="fp8"), "float8"),
                                  ("bf16", SimpleNamespace(precision="bf16", compile=True), "torch.compile"),
                                  ("bf16", SimpleNamespace(precision="bf16", compile=False, fuse_qkv=True), "fused")):
        with pytest.raises(FluxnbError, match=match):
            check_pipeline(SimpleNamespace(precision=precision, key=key), lora)


def test_cli_bad_lora_is_one_error_line(lora_dir, tmp_path):
    r = run_cli("generate", "a fox", "--model", "tiny", "--lora", "missing.safetensors:0.5", "--out", tmp_path / "o")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "missing.safetensors" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.jpg"))


# ---------------------------------------------------------------------------------------
# The weight as a sweep axis
# ---------------------------------------------------------------------------------------

def test_weight_sweep_cells_equal_single_generates(lora_dir, outdir):
    r = fluxnb.sweep("a fox", loras="style.safetensors:0,0.5,1", seeds=[1, 2], out=outdir, batch_size=1,
                     **{k: v for k, v in FAST.items()})
    assert (r.plan.rows.name, r.plan.cols.name) == ("seed", "loras")
    assert r.plan.cols.labels == ["lora style: 0", "lora style: 0.5", "lora style: 1"]
    assert len(r.cells) == 6
    for c in r.cells:
        w = config_loras.parse(c.values["loras"][0]).weight
        assert np.array_equal(pixels(c.path), make(seed=c.seed, loras=[f"style:{w:g}"]))
    df = runlog.load(outdir)
    assert sorted(set(df["loras"])) == ["style:0", "style:0.5", "style:1"]
    g = fluxnb.grid(outdir, rows="seed", cols="loras")
    assert len(g.col_values) == 3
    g = fluxnb.grid(outdir, rows="lora:style", cols="seed")          # a LoRA's weight as an axis
    assert list(g.row_values) == [0.0, 0.5, 1.0] and g.images[2] == str(r.cells[1].path)


def test_cli_sweep_dry_run_plans_the_grid(lora_dir):
    r = run_cli("sweep", "a fox", "--model", "tiny", "--lora", "style.safetensors:0,0.5,1", "--lora", "detail:0.3",
                "--seeds", "1,2", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    axes = {a["name"]: a for a in d["axes"]}
    assert d["cells"] == 6 and set(axes) == {"seed", "loras"}
    assert axes["loras"]["labels"][1] == "lora style: 0.5"
    assert [config_loras.parse(x).name for x in axes["loras"]["values"][1]] == ["style", "detail"]
    assert d["fixed"]["loras"] == "detail: 0.3"


# ---------------------------------------------------------------------------------------
# The forms
# ---------------------------------------------------------------------------------------

def test_generator_form_picks_loras_weights_and_shows_tags(lora_dir, outdir):
    from fluxnb import ui
    from fluxnb.front.ui.lora_picker import describe_file

    form = ui.generator(model="tiny", output_dir=str(outdir), steps=2, size="64x64", image_format="png")
    picker = form.lora_picker
    style = str((lora_dir / "style.safetensors").resolve())
    assert [v for _label, v in picker.choose.options] == sorted(str(p.resolve()) for p in lora_dir.glob("*"))
    assert describe_file(lora_dir / "style.safetensors").endswith(
        f"MB, {config_loras.short_hash(str(lora_dir / 'style.safetensors'))})")
    picker.choose.value = (style,)
    assert len(picker.sliders.children) == 1
    picker.weights[style].value = 0.7
    form.prompt.value = "a fox <lora:detail:0.3>"
    assert "detail 0.3" in picker.tags.value
    form.seed_mode.value, form.seed.value = "lock", "3"
    form.generate_button.click()
    [item] = form.images
    assert item.settings.loras == [f"{style}:0.7"]
    assert np.array_equal(pixels(item.path), make("a fox <lora:detail:0.3>", loras=[f"{style}:0.7"]))
    picker.choose.value = ()
    form.restore(item)                                   # an image's LoRAs come back to the picker
    assert picker.choose.value == (style,) and picker.weights[style].value == 0.7
    form.prompt.value = "a fox <lora:nope:1>"
    assert "nope" in picker.tags.value and "fluxnb-error" in picker.tags.value


def test_sweep_form_sweeps_a_lora_weight(lora_dir, outdir):
    from fluxnb import ui

    form = ui.sweep_form(model="tiny", output_dir=str(outdir), rows=("seed", "1, 2"),
                         cols=("loras", "style.safetensors:0,1"), size="64x64", steps=2)
    form.prompt.value = "a fox"
    r = form.run()
    assert r is not None, form.message.value
    assert r.plan.cols.labels == ["lora style: 0", "lora style: 1"] and len(r.images) == 4


def test_batch_loras_key(lora_dir, tmp_path):
    from fluxnb import batch

    common = {"model": "tiny", "prompts": ["a fox", "a hare <lora:detail:0.5>"], "seeds": [1], "steps": 2,
              "size": "64x64", "image_format": "png", "output_dir": str(tmp_path / "b")}
    p = batch.plan({**common, "loras": ["style:0.8"]})
    assert p.batch_id != batch.plan(common).batch_id
    batch.execute(p)
    df = runlog.load(tmp_path / "b")
    assert sorted(df["loras"]) == ["style:0.8", "style:0.8, detail:0.5"]
    fox = df[df["prompt"] == "a fox"].iloc[0]
    assert np.array_equal(pixels(fox["path"]), make(seed=1, loras=["style:0.8"]))


def test_a_hub_lora_is_downloaded_once_and_recorded_by_its_id(lora_dir, tmp_path):
    from fakehub import GOOD, REPO, FakeHub

    style = (lora_dir / "style.safetensors").read_bytes()
    with FakeHub({"loras/style.safetensors": style}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": GOOD,
               "HF_HUB_DISABLE_XET": "1"}
        r = run_cli("generate", "a fox", "--model", "tiny", "--lora", f"{REPO}/loras/style.safetensors:0.5",
                    "--seed", "3", "--size", "64x64", "--steps", "2", "--format", "png", "--out", tmp_path / "o",
                    env=env)
        gets = [p for m, p in hub.requests if m == "GET" and p.endswith("style.safetensors")]
    assert r.returncode == 0, r.stderr
    assert len(gets) == 1                                                   # downloaded once for the image
    path = r.stdout.strip().splitlines()[-1]
    [entry] = fluxnb.read_metadata(path)["fluxnb"]["lora_adapters"]
    assert entry["path"] == f"{REPO}/loras/style.safetensors" and entry["sha256"] == hashlib.sha256(style).hexdigest()
    assert np.array_equal(pixels(path), make(loras=["style:0.5"]))


def test_an_a1111_image_with_lora_tags_is_reproduced_from_the_lora_folder(lora_dir, tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    short = config_loras.short_hash(str(lora_dir / "style.safetensors"))
    info.add_text("parameters", "a fox <lora:style:0.5>\nSteps: 2, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: "
                                f'3.5, Seed: 3, Size: 64x64, Model: tiny, Lora hashes: "style: {short}"')
    Image.new("RGB", (64, 64)).save(tmp_path / "a1111.png", pnginfo=info)
    s = fluxnb.read_settings(tmp_path / "a1111.png")
    made = fluxnb.generate(settings=s, save=False, record=False, progress=False)[0]
    assert np.array_equal(pixels(made.image), make(loras=["style:0.5"]))
    assert made.record["t5_prompt"] == "a fox" and made.record["loras"] == "style:0.5"
