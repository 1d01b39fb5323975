"""The images a job starts from (an init image, a mask): read and checked, hashed, and kept.

Every input is copied once, content-addressed, into the output folder's `inputs/` folder
(`inputs/<sha256>.<ext>`, written with the one atomic write), so an image's metadata (which
records each input's path, size and sha256) can be reproduced after the input has moved:
`locate` finds it at its recorded path or by its hash there, and otherwise names it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from ..config.inputs import image_size
from ..errors import FluxnbError
from ..files import write_atomic

log = logging.getLogger(__name__)

INPUTS_DIR = "inputs"
_HASHES: dict = {}  # (path, size, mtime_ns) -> sha256
_ALPHA: dict = {}   # sha256 -> whether the image has transparent pixels


def _stat_key(path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns)


def sha256_of(path) -> str:
    """The sha256 of a file's bytes (cached while the file is unchanged)."""
    key = _stat_key(path)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if len(_HASHES) > 256:
            _HASHES.clear()
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def digest(path) -> str:
    """sha256_of, or "" for no path or a file that is gone (for records of failed attempts)."""
    try:
        return sha256_of(path) if path else ""
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------

def read_image(name: str, path):
    """An input image, decoded, turned as its EXIF orientation says, in RGB or RGBA (alpha
    kept: its transparent pixels count as the mask). Refuses what is not an image."""
    from PIL import Image, ImageOps

    image_size(name, path)  # the same checks as the setting's reader: an image, within the limits
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise FluxnbError(f"{name} {str(path)!r}: the image cannot be decoded ({e})", field=name, value=str(path),
                          fix="re-save it as PNG or JPEG") from None
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    return im.convert("RGBA" if has_alpha else "RGB")


def alpha_mask(image):
    """The mask an RGBA image's transparent pixels (alpha below half) make, white = repaint;
    None when no pixel is transparent."""
    if image.mode != "RGBA":
        return None
    mask = image.getchannel("A").point(lambda a: 255 if a < 128 else 0)
    return mask if mask.getbbox() else None


def transparent(path) -> bool:
    """Whether the image at `path` has transparent pixels (False when it cannot be read)."""
    sha = digest(path)
    if not sha:
        return False
    if sha not in _ALPHA:
        try:
            _ALPHA[sha] = alpha_mask(read_image("init_image", path)) is not None
        except FluxnbError:
            return False
    return _ALPHA[sha]


def read_mask(path, size: tuple[int, int]):
    """A mask image as a greyscale image (white = repaint) of `size` (the init image's): one of
    the same shape and another size is resized (with a note); another shape is refused."""
    from PIL import Image

    im = read_image("mask", path)
    mask = im.convert("L") if im.mode == "RGB" else _rgba_mask(im)
    if mask.size != size:
        (mw, mh), (w, h) = mask.size, size
        if abs(mw / mh - w / h) > 0.01 * (w / h):
            raise FluxnbError(f"mask {str(path)!r}: {mw}x{mh}, another shape than the init image ({w}x{h})",
                              field="mask", value=str(path), fix=f"give a mask of {w}x{h} pixels (white = repaint)")
        log.info("mask %s: %dx%d resized to the init image's %dx%d", Path(path).name, mw, mh, w, h)
        mask = mask.resize(size, Image.NEAREST)
    return mask


def _rgba_mask(im):
    """A mask drawn on a transparent layer: its opaque white counts, its transparent pixels not."""
    from PIL import ImageChops

    return ImageChops.multiply(im.convert("L"), im.getchannel("A"))


# ---------------------------------------------------------------------------------------
# Keeping and finding
# ---------------------------------------------------------------------------------------

def kept_name(path) -> str:
    """The name an input is kept under in `inputs/`: its sha256 and its extension."""
    return sha256_of(path) + (Path(path).suffix.lower() or ".png")


def keep(path, output_dir) -> Path:
    """Copy an input into the output folder's `inputs/` once (content-addressed, atomic)."""
    target = Path(output_dir) / INPUTS_DIR / kept_name(path)
    return target if target.is_file() else store(Path(path).read_bytes(), Path(path).suffix, output_dir)


def store(data: bytes, suffix: str, output_dir) -> Path:
    """Write image bytes (an upload) into the output folder's `inputs/` under their sha256,
    once; the path to use as an input."""
    folder = Path(output_dir) / INPUTS_DIR
    target = folder / (hashlib.sha256(data).hexdigest() + (suffix.lower() or ".png"))
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
    return target


def describe(path) -> dict:
    """What an image's metadata records of an input: its path, size, sha256, kept name."""
    w, h = image_size("input", path)
    return {"path": str(path), "width": w, "height": h, "sha256": sha256_of(path),
            "kept": f"{INPUTS_DIR}/{kept_name(path)}"}


def locate(name: str, recorded: dict, folders) -> str:
    """The path of a recorded input with the recorded sha256: at its recorded path, else
    by its hash in `inputs/` of one of `folders`. A missing or changed input is named, with
    its hash, in the error."""
    path, sha = str(recorded.get("path") or ""), str(recorded.get("sha256") or "")
    if not re.fullmatch(r"[0-9a-f]{64}", sha):  # from an image's metadata: never a pattern or a path
        raise FluxnbError(f"{name} {path[:200]!r}: the image records no valid sha256 for it", field=name,
                          value=path[:200], fix=f"give --{name.replace('_', '-')} yourself")
    if path and Path(path).is_file() and digest(path) == sha:
        return path
    for folder in folders:
        for copy in sorted((Path(folder) / INPUTS_DIR).glob(f"{sha}.*")) if sha else ():
            if digest(copy) == sha:
                log.info("%s %s: %s; using the copy %s", name, path, "changed" if Path(path).is_file() else "missing",
                         copy)
                return str(copy)
    state = "has changed" if path and Path(path).is_file() else "is missing"
    where = " or ".join(str(Path(f) / INPUTS_DIR) for f in folders)
    raise FluxnbError(f"{name} {path!r} (sha256 {sha}) {state}, and no copy with that hash is in {where}",
                      field=name, value=path, fix=f"put the original back at {path}, or copy it into an inputs/ "
                      f"folder as {sha}{Path(path).suffix.lower() or '.png'}")
