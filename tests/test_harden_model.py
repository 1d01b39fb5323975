"""Hardening, class 6: `--from-image` takes the model from the user. An image's model is used
only when it is the configured model or a known FLUX model, or when `--model` names one;
otherwise one line says which model the image asks for and how to allow it, the same
whether or not such a folder exists here (nothing is looked up)."""

from __future__ import annotations

import json

import pytest
from support import run_hostile

from fluxnb.errors import FluxnbError
from fluxnb.outputs.metadata import read_settings


def fluxnb_png(path, model: str, **settings):
    from PIL import Image, PngImagePlugin

    meta = {"id": "x", "seed": 5, "settings": {"prompt": "a fox", "steps": 2, "size": "64x64", "model": model,
                                                **settings}}
    info = PngImagePlugin.PngInfo()
    info.add_itxt("fluxnb", json.dumps(meta))
    Image.new("RGB", (8, 8)).save(path, format="PNG", pnginfo=info)
    return path


@pytest.mark.parametrize("asked", ["{folder}", "{folder}/../{folder_name}", "{missing}", "someone/any-model",
                                   "~/models/flux", "black-forest-labs/FLUX.1-evil", "a/" + "x" * 400])
def test_an_image_cannot_choose_its_model(asked, tmp_path):
    folder = tmp_path / "private-models" / "flux-finetune"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    model = asked.format(folder=folder, folder_name=folder.name, missing=tmp_path / "no-such-folder")
    image = fluxnb_png(tmp_path / "shared.png", model)
    r, err = run_hostile("generate", "--from-image", image, "--out", tmp_path / "out", world=tmp_path,
                         env={"FLUXNB_MODEL": "tiny"})
    assert "asks for model" in err and "--model" in err and "configured model (tiny)" in err
    assert len(err) < 800
    assert "model_index" not in err and "no such folder" not in err


def test_the_message_is_the_same_whether_the_folder_exists_or_not(tmp_path):
    here, gone = tmp_path / "here", tmp_path / "gone"
    here.mkdir()
    errors = []
    for folder in (here, gone):
        image = fluxnb_png(tmp_path / f"{folder.name}.png", str(folder))
        with pytest.raises(FluxnbError) as e:
            read_settings(image)
        errors.append(str(e.value).replace(folder.name, "NAME"))
    assert errors[0] == errors[1]


def test_configured_known_and_named_models_are_used(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    monkeypatch.setenv("FLUXNB_MODEL", str(folder))
    assert read_settings(fluxnb_png(tmp_path / "a.png", str(folder))).model == str(folder)
    assert read_settings(fluxnb_png(tmp_path / "b.png", "tiny")).model == "tiny"
    dev = read_settings(fluxnb_png(tmp_path / "c.png", "black-forest-labs/FLUX.1-schnell", steps=4, guidance=0.0))
    assert dev.model == "black-forest-labs/FLUX.1-schnell"
    assert read_settings(fluxnb_png(tmp_path / "d.png", "schnell", steps=4, guidance=0.0)).model.endswith("schnell")
    other = fluxnb_png(tmp_path / "e.png", "someone/any-model")
    assert read_settings(other, model="tiny").model == "tiny"
    assert read_settings(other, model="someone/any-model").model == "someone/any-model"  # named: allowed


def test_model_flag_allows_it_on_the_command_line(tiny_model, tmp_path):
    image = fluxnb_png(tmp_path / "shared.png", "someone/any-model")
    out = tmp_path / "out"
    r, _ = run_hostile("generate", "--from-image", image, "--model", "tiny", "--out", out, "--json", world=tmp_path,
                       allowed=[out], fails=False, limit=120)
    assert json.loads(r.stdout)["images"][0]["model"] == "tiny"


def test_a1111_model_names_never_name_a_folder(tmp_path, monkeypatch):
    from PIL import Image, PngImagePlugin

    monkeypatch.setenv("FLUXNB_MODEL", "tiny")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a fox\nSteps: 4, Sampler: Euler, CFG scale: 1, Seed: 3, Size: 64x64, Model: /etc")
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", format="PNG", pnginfo=info)
    s = read_settings(tmp_path / "a1111.png")
    assert (s.model, s.seed, s.steps) == ("tiny", 3, 4)
