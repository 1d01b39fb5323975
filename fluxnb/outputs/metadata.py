"""Image files: naming, atomic no-clobber writes, A1111-compatible metadata, reading back.

PNG: a `parameters` tEXt chunk in A1111/Forge's layout (line 1 the prompt, then
`Steps: N, Sampler: ..., CFG scale: 1, Distilled CFG Scale: G, Seed: S, Size: WxH,
Model: M, ...`) and a `fluxnb` iTXt chunk holding every setting as JSON.
JPEG: the same text in EXIF UserComment (UNICODE, as A1111 writes it; shortened when it
would pass EXIF's 64 KB) and the JSON in COM segments (split across several past 64 KB:
`outputs.jpegcom`). Both are scrubbed of secrets (`logs.scrub`) before they are written.

Reading is linear in the metadata's size and capped (`MAX_TEXT` characters a text); a file
that is not an image, a damaged or oversized chunk, or a value that is not what fluxnb or
A1111 writes ends in one FluxnbError naming the image, never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
from datetime import datetime
from pathlib import Path

from ..config.loras import from_record, lora_fields, with_tags
from ..errors import FluxnbError
from .files import file_name, write_new
from .jpegcom import MAX_SEGMENT, add_comments, comment_payloads, join_comments

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
JSON_KEY = "fluxnb"
MAX_TEXT = 2**21          # characters of a `parameters` text or JSON record read back (2 Mi)
# A1111 writes values holding ',' ':' or newlines as JSON strings. The `parameters` line is
# `Key: value, Key: "quoted, value", ...`, read in one pass (`params_line`).
_KEY = re.compile(r"\s*(\w[\w \-/]*)")
_QUOTED = re.compile(r'"(?:\\.|[^\\"])+"')


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
    fields.update(lora_fields(meta.get("lora_adapters")))  # A1111's `Lora hashes`, which Civitai resolves
    fields["Version"] = f"fluxnb {meta.get('fluxnb_version', '')}".strip()
    body = ", ".join(f"{k}: {_quote(v)}" for k, v in fields.items() if v is not None and v != "")
    return f"{with_tags(meta.get('t5_prompt') or meta.get('prompt', ''), meta.get('lora_adapters'))}\n{body}"


def params_line(line: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of an A1111 `parameters` line, values as written (quoted ones
    still quoted), in one left-to-right pass: time linear in the line's length."""
    out, i, n = [], 0, len(line)
    while i < n:
        m = _KEY.match(line, i)
        if not m:  # not a key's first character: the next one may be
            i += 1
            continue
        key, end = m.group(1), m.end()
        if len(key) < 2 or end >= n or line[end] != ":":
            i = max(end, i + 1)  # no key starts inside this run either
            continue
        j = end + 1
        while j < n and line[j].isspace():
            j += 1
        q = _QUOTED.match(line, j) if j < n and line[j] == '"' else None
        if q and (q.end() == n or line[q.end()] == ","):
            value, i = q.group(0), q.end() + 1
        else:
            comma = line.find(",", j)
            stop = n if comma < 0 else comma
            value, i = line[j:stop], stop + 1
        out.append((key, value))
    return out


def parse_infotext(text: str) -> dict:
    """A1111's `parameters` text -> {'prompt', 'negative_prompt', 'params': {key: value}}."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    params = {}
    pairs = params_line(last)
    if len(pairs) >= 3:
        params = {k.strip(): _unquote(v.strip()) for k, v in pairs}
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
    """The image file's bytes with its metadata embedded, scrubbed of secrets (the pixels
    are made from the prompt as typed; no file carries a secret)."""
    from PIL import PngImagePlugin

    from ..logs import scrub, scrub_data, secret_values

    secrets = secret_values()
    meta = scrub_data(meta, secrets)
    text = scrub(infotext(meta), secrets)
    blob = json.dumps(meta, ensure_ascii=False, default=str, sort_keys=True)
    buf = io.BytesIO()
    if image_format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        info.add_itxt(JSON_KEY, blob)
        image.save(buf, format="PNG", pnginfo=info)
    elif image_format == "jpg":
        image.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality, exif=_exif(meta, text))
        return add_comments(buf.getvalue(), comment_payloads(JSON_KEY, blob.encode("utf-8")))
    else:
        raise FluxnbError(f"image_format {image_format!r}: unknown", field="image_format", value=image_format,
                          fix="use jpg or png")
    return buf.getvalue()


def _exif(meta: dict, text: str) -> bytes:
    """EXIF holding the `parameters` text as UserComment (what A1111 writes and reads), its
    prompts shortened (`…`) until it fits EXIF's 64 KB; the whole record is in the JSON."""
    import piexif  # what A1111 writes and reads JPEG infotext with
    import piexif.helper

    keep = None
    while True:
        exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(text, "unicode")}})
        if len(exif) <= MAX_SEGMENT:
            return exif
        if keep == 0:  # nothing left to shorten: no UserComment (the JSON has it all)
            return b""
        keep = (max(len(str(meta.get(k) or "")) for k in _LONG) if keep is None else keep) // 2
        short = {k: _shorten(meta.get(k), keep) for k in _LONG if meta.get(k)}
        text = infotext({**meta, **short})


_LONG = ("prompt", "t5_prompt", "clip_prompt")   # the texts of the infotext that grow with the prompt


def _shorten(value, n: int) -> str:
    text = str(value)
    return text if len(text) <= n else text[:max(n - 1, 0)] + "…"


def save(image, meta: dict, directory: str | os.PathLike, image_format: str, jpeg_quality: int = 95,
         when: datetime | None = None) -> Path:
    """Encode with metadata and write under a fresh `flux_YYYYMMDD_HHMMSS_<seed>.<ext>` name."""
    data = encode(image, meta, image_format, jpeg_quality)
    return write_new(directory, file_name(meta["seed"], image_format, when), data)


# ---------------------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------------------

def _unreadable(p: Path, why: str) -> FluxnbError:
    return FluxnbError(f"image {str(p)!r}: {why}", field="from_image", value=str(p),
                       fix="use an image made by fluxnb, A1111 or Forge")


def read_metadata(path: str | os.PathLike) -> dict:
    """{'fluxnb': the JSON record (a dict) or None, 'parameters': the A1111 text or None}.
    A file that is not a readable image, or metadata past PIL's caps or `MAX_TEXT`, is a
    FluxnbError; a JSON record that is damaged or not an object reads as None."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise FluxnbError(f"image {str(p)!r}: no such file", field="from_image", value=str(p))
    # 1. Open it (PIL reads the chunks before the pixels: text, EXIF, comments, within its caps).
    try:
        img = Image.open(p)
    except OSError:
        raise _unreadable(p, "not an image file") from None
    except Exception as e:  # noqa: BLE001 - PIL's refusals: oversized chunks, decompression bombs
        raise _unreadable(p, f"its metadata cannot be read ({type(e).__name__}: {str(e)[:200]})") from None
    # 2. The two texts, as text, each within MAX_TEXT.
    with img:
        try:
            text, blob = _texts(img)
        except Exception as e:  # noqa: BLE001 - a damaged EXIF block or segment
            raise _unreadable(p, f"its metadata cannot be read ({type(e).__name__}: {str(e)[:200]})") from None
    for name, value in (("parameters", text), (JSON_KEY, blob)):
        if value is not None and len(value) > MAX_TEXT:
            raise _unreadable(p, f"its {name} metadata is {len(value)} characters, more than fluxnb reads "
                                 f"({MAX_TEXT})")
    # 3. The JSON record: an object, or None.
    meta = None
    if blob:
        try:
            meta = json.loads(blob)
        except (ValueError, RecursionError):
            meta = None
    return {JSON_KEY: meta if isinstance(meta, dict) else None, "parameters": text}


def _texts(img) -> tuple[str | None, str | None]:
    """(parameters text, JSON text) of an open image; bytes that are not UTF-8 are replaced."""
    if img.format == "PNG":
        text, blob = img.info.get("parameters"), img.info.get(JSON_KEY)
        return (text if isinstance(text, str) else None), (blob if isinstance(blob, str) else None)
    text = None
    raw = img.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    if raw:
        text = _decode_user_comment(raw) if isinstance(raw, (bytes, str)) else None
    comments = [body for marker, body in getattr(img, "applist", []) if marker == "COM"]
    data = join_comments(JSON_KEY, comments, 4 * MAX_TEXT)
    return text, (data.decode("utf-8", errors="replace") if data is not None else None)


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


def read_settings(path: str | os.PathLike, *, model: str | None = None):
    """The Settings that reproduce an image from its own file.

    fluxnb images: every setting from the embedded JSON, with the prompt that was actually
    rendered (an enhanced prompt is taken as it was, with enhance none, so the pixels come
    back without calling the enhancer again), and its inputs (init image, mask) at their
    recorded paths or, by hash, in the output folder's inputs/ (`inputs.locate`). Other
    A1111/Forge images: prompt, steps, seed, size, guidance and model from the `parameters` text.

    The model comes from the user: the image's own is used only when it is the configured
    model or a known FLUX model (`config.values.known_models`); `model` (`--model`) names
    the one to use instead, and allows any. Otherwise a FluxnbError says which model the
    image asks for and how to allow it (nothing is looked up on disk or on the hub)."""
    from ..config.settings import resolve

    name = f"image:{Path(path).name}"
    found = read_metadata(path)
    meta = found[JSON_KEY]
    if meta and isinstance(meta.get("settings"), dict):
        values = _settings_from_json(path, meta)
    elif found["parameters"]:
        values = _settings_from_infotext(path, found["parameters"])
    else:
        raise FluxnbError(f"image {str(path)!r}: carries no generation settings (no fluxnb or A1111 metadata)",
                          field="from_image", value=str(path), fix="use an image made by fluxnb, A1111 or Forge")
    if model is not None:
        values["model"] = model
    elif "model" in values:
        check_image_model(path, values["model"])
    try:
        return resolve(params=values, params_name=name)
    except FluxnbError as e:
        raise FluxnbError(f"image {str(path)!r}: its metadata holds {e}", field=e.field, value=e.value,
                          fix="give the settings as flags instead of --from-image") from None


def check_image_model(path, asked) -> None:
    """Refuse an image's model unless it is the configured one or a known FLUX model."""
    from ..config.settings import resolve
    from ..config.values import known_models, normalize_model

    asked = normalize_model(str(asked))
    configured = resolve().model
    if asked == configured or asked in known_models():
        return
    shown = asked if len(asked) <= 120 else asked[:119] + "…"
    raise FluxnbError(f"image {str(path)!r} asks for model {shown!r}, which is neither the configured model "
                      f"({configured}) nor a known FLUX model ({', '.join(known_models())})", field="model",
                      value=shown, fix=f"to use it, pass --model {shown} (model= in Python); to use the configured "
                                       f"model, pass --model {configured}")


_SHORT = 512   # characters of a setting other than the prompt that fluxnb ever writes


def _settings_from_json(path, meta: dict) -> dict:
    from ..config.settings import FIELDS
    from .inputs import locate

    values = {k: v for k, v in meta["settings"].items() if k in FIELDS and k not in ("output_dir", "width", "height")}
    t5 = meta.get("t5_prompt")
    values["prompt"] = t5 if isinstance(t5, str) and t5 else values.get("prompt", "")
    values["enhance"] = "none"
    values["seed"] = meta.get("seed", values.get("seed"))
    values["count"] = 1
    folders = [Path(path).resolve().parent, Path(str(meta["settings"].get("output_dir") or "."))]
    inputs = meta.get("inputs") if isinstance(meta.get("inputs"), dict) else {}
    for key, recorded in inputs.items():
        if key in ("init_image", "mask") and isinstance(recorded, dict):
            values[key] = locate(key, recorded, folders)
    if "loras" in values or isinstance(meta.get("lora_adapters"), list):  # every adapter, the tags too
        values["loras"] = from_record(str(path), meta.get("lora_adapters") or [], folders)
    for key, v in values.items():
        ok = (v is None or isinstance(v, (bool, float)) or (isinstance(v, int) and abs(v) < 2**64)
              or (key == "loras" and isinstance(v, list) and all(isinstance(x, str) and len(x) <= _SHORT for x in v))
              or (isinstance(v, str) and (key == "prompt" or len(v) <= _SHORT)))
        if not ok:
            what = f"{len(v)} characters" if isinstance(v, str) else f"a {type(v).__name__}"
            raise FluxnbError(f"image {str(path)!r}: its {key} setting is {what}, not a value fluxnb writes",
                              field=key, fix="give the settings as flags instead of --from-image")
    return values


def _settings_from_infotext(path, text: str) -> dict:
    from ..config.settings import defaults

    parsed = parse_infotext(text)
    p = parsed["params"]
    values: dict = {"prompt": parsed["prompt"]}
    if "Steps" in p:
        values["steps"] = _number(path, p, "Steps", int)
    if "Seed" in p:
        values["seed"] = _number(path, p, "Seed", int)
    if "Distilled CFG Scale" in p:
        values["guidance"] = _number(path, p, "Distilled CFG Scale", float)
    elif "CFG scale" in p and _number(path, p, "CFG scale", float) > 1:
        values["guidance"] = _number(path, p, "CFG scale", float)
    if "Size" in p:
        size = p["Size"][:_SHORT]
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


def _number(path, params: dict, key: str, conv):
    """A number of the `parameters` text, or a FluxnbError naming the image, the key and the value."""
    text = str(params[key]).strip()
    try:
        if len(text) > 40:
            raise ValueError
        value = float(text) if conv is float else int(text) if text.lstrip("+-").isdigit() else float(text)
        if conv is int:
            if not float(value).is_integer():
                raise ValueError
            value = int(value)
        return value
    except (ValueError, OverflowError):
        shown = repr(text) if len(text) <= 40 else f"of {len(text)} characters"
        kind = "a whole number" if conv is int else "a number"
        raise FluxnbError(f"image {str(path)!r}: {key} {shown} in its parameters is not {kind}", field=key,
                          fix="give the settings as flags instead of --from-image") from None
