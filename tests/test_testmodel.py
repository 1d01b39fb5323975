"""Random-weight test models: FLUX architecture, deterministic weights, loadable by diffusers."""

from __future__ import annotations

import hashlib

import pytest

from fluxnb.model import testmodel
from fluxnb.errors import FluxnbError


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.safetensors")):
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_tiny_weights_are_deterministic(tmp_path, tiny_model):
    other = testmodel.build(tmp_path / "again", "tiny")
    assert _digest(other) == _digest(tiny_model)
    assert testmodel.is_test_model(other)


def test_full_scale_is_flux1_dev_architecture():
    counts = testmodel.parameter_counts("full")  # on the meta device: nothing allocated
    assert counts["transformer"] == 11_901_408_320
    assert counts["text_encoder_2"] == 4_762_310_656
    assert counts["text_encoder"] == 123_060_480
    assert counts["vae"] == 83_819_683


# openai/clip-vit-large-patch14's ids for these (its model card and transformers' tests)
CLIP_IDS = {"a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
            "A painting of a squirrel eating a burger": [49406, 320, 3086, 539, 320, 14004, 4371, 320, 6548, 49407]}


def test_scales_share_the_real_clip_vocabulary(tiny_model):
    from transformers import CLIPTokenizer

    for scale in testmodel.SCALES:
        assert testmodel.CONFIGS[scale]["transformer"]["in_channels"] == 64  # 16 latent channels, 2x2 packed
        parts = testmodel.build_components(scale, device="meta")  # nothing allocated
        tok, clip = parts["tokenizer"], parts["text_encoder"].config
        assert len(tok) == clip.vocab_size == 49408 and clip.max_position_embeddings == 77, scale
        for text, ids in CLIP_IDS.items():
            assert tok(text).input_ids == ids, (scale, text)
    saved = CLIPTokenizer.from_pretrained(str(tiny_model / "tokenizer"))  # as diffusers loads it from the folder
    assert len(saved) == 49408 and all(saved(text).input_ids == ids for text, ids in CLIP_IDS.items())


def test_unknown_scale():
    with pytest.raises(FluxnbError, match="scale 'huge'"):
        testmodel.build_components("huge")


def test_build_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(FluxnbError, match="not empty"):
        testmodel.build(tmp_path / "x", "tiny")
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"


def test_tiny_generates_64x64_with_diffusers_directly(tiny_model):
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a cat", height=64, width=64, num_inference_steps=2,
               generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert img.size == (64, 64)
    assert type(pipe.tokenizer_2).__name__.startswith("T5Tokenizer")
