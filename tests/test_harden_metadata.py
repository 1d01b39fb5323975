"""Hardening, classes 4, 7 and 11 (metadata): reading any image's metadata is linear and
capped, and odd metadata ends in one `error:` line; a long prompt's JPEG is written,
recorded and read back whole."""

from __future__ import annotations

import io
import json
import re
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import run_hostile

from fluxnb.config.values import MAX_PROMPT
from fluxnb.errors import FluxnbError
from fluxnb.outputs.jpegcom import add_comments, comment_payloads, join_comments
from fluxnb.outputs.metadata import MAX_TEXT, params_line, parse_infotext, read_metadata, read_settings

A1111 = "a fox\nSteps: {steps}, Sampler: Euler, CFG scale: {cfg}, Seed: {seed}, Size: 64x64, Model: tiny"


def png(path, text_chunks=(), ztxt=(), itxt=()):
    """A small PNG with these (key, value) text chunks: tEXt, zTXt (compressed), iTXt."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in text_chunks:
        info.add_text(k, v)
    for k, v in ztxt:
        info.add_text(k, v, zip=True)
    for k, v in itxt:
        info.add_itxt(k, v)
    Image.new("RGB", (8, 8)).save(path, format="PNG", pnginfo=info)
    return path


def jpeg(path, comments=()):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    path.write_bytes(add_comments(buf.getvalue(), list(comments)))
    return path


def zbomb(path, key="parameters", size=200 * 2**20):
    """A PNG whose zTXt chunk is a few hundred KB that inflate to `size` bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    data = buf.getvalue()
    body = key.encode() + b"\0\0" + zlib.compress(b"\0" * size, 9)
    chunk = len(body).to_bytes(4, "big") + b"zTXt" + body + zlib.crc32(b"zTXt" + body).to_bytes(4, "big")
    path.write_bytes(data[:33] + chunk + data[33:])  # after the 8-byte signature and the 25-byte IHDR
    return path


def _odd_images(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    meta = {"id": "x", "settings": {"prompt": "a fox", "steps": 4, "model": "tiny"}, "seed": 1}
    return {
        "steps abc": png(tmp_path / "a.png", [("parameters", A1111.format(steps="abc", cfg=1, seed=1))]),
        "cfg xyz": png(tmp_path / "b.png", [("parameters", A1111.format(steps=4, cfg="xyz", seed=1))]),
        "5000-digit seed": png(tmp_path / "c.png", [("parameters", A1111.format(steps=4, cfg=1, seed="9" * 5000))]),
        "json list": png(tmp_path / "d.png", itxt=[("fluxnb", "[1, 2, 3]")]),
        "json string": png(tmp_path / "e.png", itxt=[("fluxnb", '"settings"')]),
        "deep json": png(tmp_path / "f.png", itxt=[("fluxnb", "[" * 100000 + "]" * 100000)]),
        "json 5000-digit seed": png(tmp_path / "g.png", itxt=[("fluxnb", json.dumps(meta)[:-1] + ', "x": 1'
                                                                 + "0" * 5000 + "}")]),
        "json steps text": png(tmp_path / "h.png", itxt=[("fluxnb", json.dumps(
            {**meta, "settings": {**meta["settings"], "steps": "9" * 5000}}))]),
        "json settings list": png(tmp_path / "i.png", itxt=[("fluxnb", json.dumps(
            {**meta, "settings": {**meta["settings"], "steps": [1, 2]}}))]),
        "jpeg comment not utf-8": jpeg(tmp_path / "j.jpg", [b"fluxnb:\xff\xfe{\"settings\": \xc3(}"]),
        "jpeg parts missing": jpeg(tmp_path / "k.jpg", [b"fluxnb[1/3]:{\"settings\"", b"fluxnb[3/3]:}"]),
        "ztxt bomb": zbomb(tmp_path / "l.png"),
        "huge text": png(tmp_path / "m.png", [("parameters", "a fox\n" + "x" * (MAX_TEXT + 10))]),
        "quadratic line": png(tmp_path / "n.png", [("parameters", "a fox\nSteps: 4, " + "ab cd" * 20000)]),
        "not an image": _write(tmp_path / "o.png", b"just text"),
        "truncated png": _write(tmp_path / "p.png", png(tmp_path / "p0.png", [("parameters", "x" * 100)]
                                                        ).read_bytes()[:60]),
        "empty file": _write(tmp_path / "q.jpg", b""),
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_odd_metadata_is_one_line_fast_and_writes_nothing(tmp_path):
    images = _odd_images(tmp_path / "in")
    out = tmp_path / "out"
    for what, path in images.items():
        r, err = run_hostile("generate", "--from-image", path, "--model", "tiny", "--out", out, world=tmp_path,
                             allowed=[], limit=10)
        assert str(path.name) in err, (what, err)
        assert len(err) < 600, (what, err)
    assert not out.exists()


def test_odd_metadata_in_python_is_a_fluxnb_error(tmp_path):
    for what, path in _odd_images(tmp_path).items():
        t0 = time.perf_counter()
        with pytest.raises(FluxnbError):
            read_settings(path)
        assert time.perf_counter() - t0 < 5, what


def test_read_metadata_reads_what_it_can(tmp_path):
    images = _odd_images(tmp_path)
    assert read_metadata(images["json list"]) == {"fluxnb": None, "parameters": None}
    assert read_metadata(images["deep json"])["fluxnb"] is None
    assert read_metadata(images["jpeg comment not utf-8"])["fluxnb"] is None
    for what in ("ztxt bomb", "huge text", "not an image"):
        with pytest.raises(FluxnbError, match="image"):
            read_metadata(images[what])


@pytest.mark.parametrize("line", [
    "a" * 2**20, "a " * 2**19, "ab," * 2**18, "ab:" * 2**18, "ab: " + '"' * 2**20, "ab: \"" + "\\\"" * 2**19,
    "Steps: 20, " * 50000, "a-b/c d" * 100000, ":" * 2**20, "\t" * 2**20 + "a",
])
def test_parsing_is_linear(line):
    t0 = time.perf_counter()
    parse_infotext("a fox\n" + line)
    assert time.perf_counter() - t0 < 5


# The old reading of the `parameters` line (a regular expression, quadratic on long lines):
# on short lines it is the reference the one-pass reader must agree with.
_OLD = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet='ab _-/:,"\\\t é1', max_size=40))
def test_the_one_pass_reader_reads_as_a1111_does(line):
    assert params_line(line) == _OLD.findall(line)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_any_parameters_text_gives_settings_or_one_error(tmp_path, text):
    path = png(tmp_path / "fuzz.png", [("parameters", text)])
    try:
        s = read_settings(path)
    except FluxnbError as e:  # anything else fails the test
        assert str(e).startswith("image ")
    else:
        assert s.count == 1 and s.enhance == "none"


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 400_000), st.binary(min_size=1, max_size=7))
def test_comment_segments_carry_any_blob(size, pattern):
    from PIL import Image

    blob = (pattern * (size // len(pattern) + 1))[:size]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    data = add_comments(buf.getvalue(), comment_payloads("fluxnb", blob))
    with Image.open(io.BytesIO(data)) as img:
        comments = [body for marker, body in img.applist if marker == "COM"]
        img.load()  # the pixels still decode
    assert all(len(c) <= 65533 for c in comments)
    assert join_comments("fluxnb", comments, 2**24) == blob


@pytest.mark.parametrize("fmt, enhance", [("jpg", "none"), ("jpg", "local"), ("png", "local")])
def test_a_long_prompt_is_saved_recorded_and_read_back_whole(fmt, enhance, tiny_model, outdir):
    import fluxnb
    from fluxnb.outputs import runlog

    prompt = "a fox in the snow, " + " ".join(f"detail{i} «ü»" for i in range(MAX_PROMPT // 14))
    prompt = prompt[:MAX_PROMPT]
    [r] = fluxnb.generate(prompt, model="tiny", steps=1, seed=4, image_format=fmt, enhance=enhance,
                          output_dir=str(outdir), progress=False)
    assert runlog.read(outdir)[-1]["status"] == "ok" and runlog.read(outdir)[-1]["path"] == str(r.path)
    meta = read_metadata(r.path)
    assert meta["fluxnb"]["settings"]["prompt"] == prompt and meta["fluxnb"] == json.loads(json.dumps(r.metadata))
    assert read_settings(r.path).prompt == r.record["t5_prompt"]  # what T5 read: the same pixels
    text = meta["parameters"]
    assert "Steps: 1" in text and "Seed: 4" in text
    if fmt == "jpg":
        from PIL import Image

        with Image.open(r.path) as img:
            assert sum(marker == "COM" for marker, _ in img.applist) > 1
        if enhance == "local":  # the original prompt too: shortened to fit EXIF; the JSON holds it whole
            assert "…" in text and "Original prompt" in text


def test_a_prompt_past_the_cap_is_one_line(tmp_path):
    r, err = run_hostile("generate", "x" * (MAX_PROMPT + 1), "--model", "tiny", "--out", tmp_path / "out",
                         world=tmp_path, limit=10)
    assert f"{MAX_PROMPT + 1} characters, more than {MAX_PROMPT}" in err and "xxxxxxxx" not in err
