"""Image files: naming, atomic no-clobber writes, A1111-compatible metadata, reading back.

PNG: a `parameters` tEXt chunk in A1111/Forge's layout (line 1 the prompt, then
`Steps: N, Sampler: ..., CFG scale: 1, Distilled CFG Scale: G, Seed: S, Size: WxH,
Model: M, ...`) and a `fluxnb` iTXt chunk holding every setting as JSON.
JPEG: the same text in EXIF UserComment (UNICODE, as A1111 writes it) and the JSON in a
COM segment.
"""

from __future__ import annotations

import io
import json
import os
import re
from datetime import datetime
from pathlib import Path

from ..errors import FluxnbError
from .files import file_name, write_new

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
JSON_KEY = "fluxnb"
# A1111 writes values holding ',' ':' or newlines as JSON strings.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


# ---------------------------------------------------------------------------------------
# A1111 infotext
# ---------------------------------------------------------------------------------------

def _quote(value) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def infotext(meta: dict) -> str:
    """The A1111/Forge `parameters` text for an image's metadata record."""
    fields = {
        "Steps": meta["steps"],
        "Sampler": "Euler",
        "Schedule type": "Simple",
        "CFG scale": 1,
        "Distilled CFG Scale": meta["guidance"],
        "Seed": meta["seed"],
        "Size": f"{meta['width']}x{meta['height']}",
        "Model": meta.get("model_name") or meta.get("model"),
    }
    if meta.get("enhancer") and meta["enhancer"] != "none":
        fields["Prompt enhancer"] = meta["enhancer"] + (f" ({meta['enhancer_model']})" if meta.get("enhancer_model") else "")
        fields["Original prompt"] = meta.get("prompt", "")
    if meta.get("clip_dropped"):
        fields["CLIP prompt"] = meta.get("clip_prompt", "")
    if meta.get("strength") is not None:  # img2img and inpaint (A1111's names)
        fields["Denoising strength"] = meta["strength"]
    if meta.get("task") == "inpaint" and (meta.get("settings") or {}).get("mask_blur"):
        fields["Mask blur"] = meta["settings"]["mask_blur"]
    fields["Version"] = f"fluxnb {meta.get('fluxnb_version', '')}".strip()
    body = ", ".join(f"{k}: {_quote(v)}" for k, v in fields.items() if v is not None and v != "")
    return f"{meta.get('t5_prompt') or meta.get('prompt', '')}\n{body}"


def parse_infotext(text: str) -> dict:
    """A1111's `parameters` text -> {'prompt', 'negative_prompt', 'params': {key: value}}."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    params = {}
    if len(_PARAM_RE.findall(last)) >= 3:
        params = {k.strip(): _unquote(v.strip()) for k, v in _PARAM_RE.findall(last)}
        lines = lines[:-1]
    prompt, negative, in_neg = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_neg = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_neg else prompt).append(line)
    return {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip(), "params": params}


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------

def encode(image, meta: dict, image_format: str, jpeg_quality: int = 95) -> bytes:
    """The image file's bytes with its metadata embedded."""
    from PIL import PngImagePlugin

    text = infotext(meta)
    blob = json.dumps(meta, ensure_ascii=False, default=str, sort_keys=True)
    buf = io.BytesIO()
    if image_format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        info.add_itxt(JSON_KEY, blob)
        image.save(buf, format="PNG", pnginfo=info)
    elif image_format == "jpg":
        import piexif  # what A1111 writes and reads JPEG infotext with
        import piexif.helper

        exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(text, "unicode")}})
        image.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality, exif=exif,
                                  comment=(JSON_KEY + ":" + blob).encode("utf-8"))
    else:
        raise FluxnbError(f"image_format {image_format!r}: unknown", field="image_format", value=image_format,
                          fix="use jpg or png")
    return buf.getvalue()


def save(image, meta: dict, directory: str | os.PathLike, image_format: str, jpeg_quality: int = 95,
         when: datetime | None = None) -> Path:
    """Encode with metadata and write under a fresh `flux_YYYYMMDD_HHMMSS_<seed>.<ext>` name."""
    data = encode(image, meta, image_format, jpeg_quality)
    return write_new(directory, file_name(meta["seed"], image_format, when), data)


# ---------------------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------------------

def read_metadata(path: str | os.PathLike) -> dict:
    """{'fluxnb': the JSON record or None, 'parameters': the A1111 text or None}."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise FluxnbError(f"image {str(p)!r}: no such file", field="from_image", value=str(p))
    try:
        img = Image.open(p)
    except OSError:
        raise FluxnbError(f"image {str(p)!r}: not an image file", field="from_image", value=str(p)) from None
    with img:
        text, blob = None, None
        if img.format == "PNG":
            text = img.info.get("parameters")
            blob = img.info.get(JSON_KEY)
        else:
            raw = img.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
            if raw:
                text = _decode_user_comment(raw)
            comment = img.info.get("comment")
            if isinstance(comment, bytes) and comment.startswith((JSON_KEY + ":").encode()):
                blob = comment[len(JSON_KEY) + 1:].decode("utf-8")
    meta = None
    if blob:
        try:
            meta = json.loads(blob)
        except ValueError:
            meta = None
    return {JSON_KEY: meta, "parameters": text}


def _decode_user_comment(raw) -> str:
    if isinstance(raw, str):
        return raw
    head, body = raw[:8], raw[8:]
    if head == b"UNICODE\x00":
        # A1111 writes big-endian; some writers use little-endian: pick the one that decodes to text.
        be = body.decode("utf-16-be", errors="replace")
        le = body.decode("utf-16-le", errors="replace")
        return be if be.count("\ufffd") <= le.count("\ufffd") and _printable(be) >= _printable(le) else le
    return body.decode("utf-8", errors="replace") if head in (b"ASCII\x00\x00\x00", b"\x00" * 8) else raw.decode(
        "utf-8", errors="replace")


def _printable(s: str) -> int:
    return sum(c.isprintable() or c == "\n" for c in s)


def read_settings(path: str | os.PathLike):
    """The Settings that reproduce an image from its own file.

    fluxnb images: every setting from the embedded JSON, with the prompt that was actually
    rendered (an enhanced prompt is taken as it was, with enhance none, so the pixels come
    back without calling the enhancer again), and its inputs (init image, mask) at their
    recorded paths or, by hash, in the output folder's inputs/ (`inputs.locate`). Other
    A1111/Forge images: prompt, steps, seed, size, guidance and model from the `parameters` text."""
    from ..config.settings import FIELDS, resolve
    from .inputs import locate

    found = read_metadata(path)
    meta = found[JSON_KEY]
    if meta and isinstance(meta.get("settings"), dict):
        values = {k: v for k, v in meta["settings"].items() if k in FIELDS and k not in ("output_dir", "width", "height")}
        values["prompt"] = meta.get("t5_prompt") or values.get("prompt", "")
        values["enhance"] = "none"
        values["seed"] = meta.get("seed", values.get("seed"))
        values["count"] = 1
        folders = [Path(path).resolve().parent, Path(meta["settings"].get("output_dir") or ".")]
        for name, recorded in (meta.get("inputs") or {}).items():
            values[name] = locate(name, recorded, folders)
        return resolve(params=values, params_name=f"image:{Path(path).name}")
    if found["parameters"]:
        return resolve(params=_settings_from_infotext(found["parameters"]), params_name=f"image:{Path(path).name}")
    raise FluxnbError(f"image {str(path)!r}: carries no generation settings (no fluxnb or A1111 metadata)",
                      field="from_image", value=str(path), fix="use an image made by fluxnb, A1111 or Forge")


def _settings_from_infotext(text: str) -> dict:
    from ..config.settings import defaults

    parsed = parse_infotext(text)
    p = parsed["params"]
    values: dict = {"prompt": parsed["prompt"]}
    if "Steps" in p:
        values["steps"] = int(p["Steps"])
    if "Seed" in p:
        values["seed"] = int(p["Seed"])
    if "Distilled CFG Scale" in p:
        values["guidance"] = float(p["Distilled CFG Scale"])
    elif "CFG scale" in p and float(p["CFG scale"]) > 1:
        values["guidance"] = float(p["CFG scale"])
    if "Size" in p:
        size = p["Size"]
        for name, preset in defaults()["presets"]["size"].items():  # hd is stored by its cropped size
            if preset == size:
                size = name
        values["size"] = size
    model = p.get("Model", "")
    if model.lower() in ("flux.1-dev", "flux1-dev"):
        values["model"] = "black-forest-labs/FLUX.1-dev"
    elif model.lower() in ("flux.1-schnell", "flux1-schnell"):
        values["model"] = "black-forest-labs/FLUX.1-schnell"
    elif model == "tiny":
        values["model"] = "tiny"
    return values
