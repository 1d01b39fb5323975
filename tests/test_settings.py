"""Settings: presets, precedence with sources, model defaults, validation messages, params files."""

from __future__ import annotations

import pytest

from fluxnb.errors import FluxnbError
from fluxnb.config.params import load_params
from fluxnb.config.settings import parse_size, resolve


@pytest.mark.parametrize("preset,steps", [("fast", 4), ("balanced", 20), ("quality", 50), ("37", 37)])
def test_quality_presets(preset, steps):
    assert resolve(steps=preset).steps == steps


@pytest.mark.parametrize("preset,size", [("square", (1024, 1024)), ("portrait", (832, 1216)),
                                         ("landscape", (1216, 832)), ("hd", (1920, 1080)), ("4k", (3840, 2160)),
                                         ("512x768", (512, 768))])
def test_size_presets(preset, size):
    s = resolve(size=preset)
    assert (s.width, s.height) == size
    assert s.render_size[0] % 16 == 0 and s.render_size[1] % 16 == 0


def test_hd_renders_at_1088():
    assert resolve(size="hd").render_size == (1920, 1088)


@pytest.mark.parametrize("preset,g", [("creative", 1.5), ("default", 3.5), ("strict", 5.0), ("2.25", 2.25)])
def test_guidance_presets(preset, g):
    assert resolve(guidance=preset).guidance == g


def test_defaults_and_sources():
    s = resolve()
    assert (s.steps, s.guidance, s.width, s.height) == (20, 3.5, 1024, 1024)
    assert s.model == "black-forest-labs/FLUX.1-dev" and s.max_sequence_length == 512
    assert (s.image_format, s.jpeg_quality, s.output_dir, s.seed) == ("jpg", 95, "outputs", None)
    assert s.sources["image_format"] == "defaults"


def test_precedence_env_params_call(monkeypatch, tmp_path):
    monkeypatch.setenv("FLUXNB_STEPS", "30")
    monkeypatch.setenv("FLUXNB_IMAGE_FORMAT", "png")
    monkeypatch.setenv("FLUXNB_JPEG_QUALITY", "80")
    s = resolve({"steps": 40, "image_format": "jpg"}, params_name="params:x.yaml", steps=50)
    assert s.steps == 50 and s.sources["steps"] == "call"
    assert s.image_format == "jpg" and s.sources["image_format"] == "params:x.yaml"
    assert s.jpeg_quality == 80 and s.sources["jpeg_quality"] == "env:FLUXNB_JPEG_QUALITY"


def test_config_env_is_read_below_the_environment(monkeypatch, tmp_path):
    env_file = tmp_path / "config.env"
    env_file.write_text("# comment\nFLUXNB_STEPS=12\nexport FLUXNB_GUIDANCE='2.5'\nANTHROPIC_API_KEY=x\n")
    monkeypatch.setenv("FLUXNB_CONFIG_ENV", str(env_file))
    monkeypatch.setenv("FLUXNB_GUIDANCE", "4")
    s = resolve()
    assert s.steps == 12 and s.sources["steps"] == "config.env:FLUXNB_STEPS"
    assert s.guidance == 4.0 and s.sources["guidance"] == "env:FLUXNB_GUIDANCE"


def test_schnell_defaults_only_where_unset():
    s = resolve(model="black-forest-labs/FLUX.1-schnell")
    assert (s.steps, s.guidance, s.max_sequence_length) == (4, 0.0, 256)
    assert s.sources["steps"] == "model:black-forest-labs/FLUX.1-schnell"
    assert resolve(model="schnell", steps=8).steps == 8


def test_pod_output_dir(monkeypatch):
    monkeypatch.setenv("RUNPOD_POD_ID", "abc123")
    s = resolve()
    assert s.output_dir == "/workspace/outputs" and s.sources["output_dir"] == "pod"
    monkeypatch.setenv("FLUXNB_OUTPUT_DIR", "/tmp/x")
    assert resolve().output_dir == "/tmp/x"


@pytest.mark.parametrize("kwargs,words", [
    ({"size": "1000x1000"}, ["size 1000x1000", "multiples of 16", "992x992", "1008x1008"]),
    ({"size": "1920x1080"}, ["1920x1072 or 1920x1088", "--hd"]),
    ({"size": "0x512"}, ["size 0x512", "positive"]),
    ({"size": "-64x64"}, ["size -64x64", "positive"]),
    ({"size": "4112x1024"}, ["at most 4096"]),
    ({"size": "huge"}, ["size 'huge'", "square"]),
    ({"guidance": 9}, ["guidance 9.0", "between 1.0 and 7.0"]),
    ({"guidance": 0.5}, ["guidance 0.5"]),
    ({"guidance": "wild"}, ["guidance 'wild'", "creative"]),
    ({"steps": 0}, ["steps 0", "between 1 and 150"]),
    ({"steps": 151}, ["steps 151"]),
    ({"steps": "turbo"}, ["steps 'turbo'", "fast"]),
    ({"jpeg_quality": 0}, ["jpeg_quality 0", "between 1 and 100"]),
    ({"jpeg_quality": 101}, ["jpeg_quality 101"]),
    ({"seed": -1}, ["seed -1", "4294967295"]),
    ({"seed": 2**32}, ["seed 4294967296"]),
    ({"image_format": "gif"}, ["image_format 'gif'", "jpg, png"]),
    ({"offload": "disk"}, ["offload 'disk'", "sequential"]),
    ({"enhance": "gpt"}, ["enhance 'gpt'", "claude"]),
    ({"bogus": 1}, ["unknown setting 'bogus'", "valid settings"]),
])
def test_bad_input_names_field_value_and_fix(kwargs, words):
    with pytest.raises(FluxnbError) as e:
        resolve(**kwargs)
    for w in words:
        assert w in str(e.value)
    assert e.value.field in (*kwargs, None) or e.value.field == next(iter(kwargs))


def test_parse_size_accepts_presets_and_wxh():
    assert parse_size("Portrait") == ("portrait", 832, 1216)
    assert parse_size("768 x 512") == ("768x512", 768, 512)


def test_replace_revalidates_and_keeps_sources():
    s = resolve(steps="fast")
    t = s.replace(seed=5)
    assert t.seed == 5 and t.steps == 4 and t.sources["steps"] == "call"
    with pytest.raises(FluxnbError):
        s.replace(steps=500)


def test_width_height_fold_into_size():
    assert resolve(width=512).size == "512x1024"
    assert resolve(size="portrait", height=64).size == "832x64"


def test_load_params_refuses_tags_and_yaml11_surprises(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("steps: 4\nprompt: hi\n")
    assert load_params(f) == {"steps": 4, "prompt": "hi"}
    f.write_text("prompt: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(FluxnbError, match="tags"):
        load_params(f)
    f.write_text("enhance: no\n")
    with pytest.raises(FluxnbError, match="boolean"):
        load_params(f)
    f.write_text("seed: 012\n")
    with pytest.raises(FluxnbError, match="012"):
        load_params(f)
    f.write_text("seed: 1:20\n")
    with pytest.raises(FluxnbError, match="80"):
        load_params(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(FluxnbError, match="mapping"):
        load_params(f)
    with pytest.raises(FluxnbError, match="no such file"):
        load_params(tmp_path / "missing.yaml")
