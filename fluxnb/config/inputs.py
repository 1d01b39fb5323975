"""Image inputs as settings: the init image and mask paths, the outpainting pad, the strength,
and the size an image-conditioned job renders at.

The settings table (`schema`) reads `init_image` and `mask` with `input_path` (an existing
image file, made absolute), `pad` with `pad_spec` and `strength` with `strength_value`.
`settings.resolve` then calls `condition`: a mask or a pad needs an init image, and without
a size of the user's own the job renders at the init image's size (plus the pad), rounded
down to multiples of 16 (the image path crops the input to it and says so).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FluxnbError
from .values import as_float, as_int, as_text, defaults

PATH_SETTINGS = ("init_image", "mask")  # settings holding a file path (relative to a params file there)
_EXIF_ORIENTATION = 0x0112


def input_path(name: str, value) -> str:
    """An input image setting's reader: "" (none) or the absolute path of a readable image."""
    if value is None:
        return ""
    text = as_text(name, value).strip()
    if not text or text.lower() == "none":
        return ""
    p = Path(text).expanduser()
    if p.is_dir():
        raise FluxnbError(f"{name} {text!r}: is a folder", field=name, value=text, fix="give an image file (PNG, "
                          "JPEG or WebP)")
    if not p.is_file():
        raise FluxnbError(f"{name} {text!r}: no such file", field=name, value=text,
                          fix="check the path (relative paths start at the current folder, or at the params file's)")
    image_size(name, p)  # refuses what is not an image, or too large a one
    return str(p.resolve())


def image_size(name: str, path) -> tuple[int, int]:
    """(width, height) of an image file as it will be used (EXIF rotation applied), read from
    its header; refuses a file that is not an image, or one over the input limits."""
    from PIL import Image, UnidentifiedImageError

    lim = defaults()["limits"]
    mb = Path(path).stat().st_size / 2**20
    if mb > lim["input_mb"]:
        raise FluxnbError(f"{name} {str(path)!r}: {mb:.0f} MB, more than {lim['input_mb']} MB", field=name,
                          value=str(path), fix="give a smaller image file")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated a quarter turn
                w, h = h, w
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError):
        raise FluxnbError(f"{name} {str(path)!r}: not an image file fluxnb can read", field=name, value=str(path),
                          fix="give a PNG, JPEG or WebP image") from None
    if max(w, h) > lim["input_side"]:
        raise FluxnbError(f"{name} {str(path)!r}: {w}x{h}, more than {lim['input_side']} pixels a side", field=name,
                          value=str(path), fix="scale the image down first")
    return w, h


def pad_spec(name: str, value) -> str:
    """The pad setting's reader: "" (none), or `LEFT,TOP,RIGHT,BOTTOM` pixels to add around
    the init image (one number: every side)."""
    if value is None:
        return ""
    text = str(as_int(name, value) if isinstance(value, (int, float)) else as_text(name, value)).strip()
    if text.lower() in ("", "none", "0"):
        return ""
    parts = [p.strip() for p in text.split(",")]
    fix = "give LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. --pad 0,0,256,0 (or one number for every side)"
    if len(parts) not in (1, 4) or not all(p.isdigit() for p in parts):
        raise FluxnbError(f"{name} {value!r}: not LEFT,TOP,RIGHT,BOTTOM", field=name, value=value, fix=fix)
    sides = [int(p) for p in parts] * (4 if len(parts) == 1 else 1)
    hi = defaults()["limits"]["side"][1]
    if max(sides) > hi:
        raise FluxnbError(f"{name} {value!r}: at most {hi} pixels a side", field=name, value=value, fix=fix)
    return "" if not any(sides) else ",".join(map(str, sides))


def parse_pad(text: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a pad setting ("": no pad)."""
    return tuple(int(p) for p in text.split(",")) if text else (0, 0, 0, 0)


def strength_value(name: str, value) -> float:
    """The strength setting's reader: above 0 (0 would leave the input as it is) and at most 1."""
    v = as_float(name, value)
    lo, hi = defaults()["limits"][name]
    if not lo < v <= hi:
        raise FluxnbError(f"{name} {v:g}: must be above {lo:g} and at most {hi:g}", field=name, value=value,
                          fix="e.g. --strength 0.75 (lower keeps more of the input; 1 repaints it all)")
    return v


def fitted_size(path: str, pad: str = "") -> tuple[int, int]:
    """The size a job renders at when the size is not given: the init image's (plus the pad),
    rounded down to multiples of 16; refused when it falls outside the size limits."""
    w, h = image_size("init_image", path)
    left, top, right, bottom = parse_pad(pad)
    w, h = w + left + right, h + top + bottom
    lim = defaults()["limits"]
    m, (lo, hi) = lim["multiple"], lim["side"]
    fw, fh = w // m * m, h // m * m
    if min(fw, fh) < lo:
        raise FluxnbError(f"init_image {path!r}: {w}x{h}{' with the pad' if pad else ''} is smaller than {lo} "
                          "pixels a side", field="init_image", value=path, fix="give a larger image, or --size WxH")
    if max(fw, fh) > hi:
        scale = (1024 * 1024 / (w * h)) ** 0.5
        near = f"{max(lo, round(w * scale / m) * m)}x{max(lo, round(h * scale / m) * m)}"
        raise FluxnbError(f"init_image {path!r}: {w}x{h}{' with the pad' if pad else ''} is larger than {hi} pixels "
                          "a side", field="init_image", value=path, fix=f"give --size WxH to resize it, e.g. "
                          f"--size {near} (about 1 MP, the size FLUX.1 was trained at)")
    return fw, fh


def size_given(source: str) -> bool:
    """Whether a size came from the user (a flag, a call, a params file, the environment, an
    image's metadata) rather than from the defaults, a model's defaults or an init image."""
    return source not in ("defaults", "pod", "init_image") and not source.startswith("model:")


def condition(values: dict, sources: dict, default_size: str) -> None:
    """The checks and the size that image inputs bring to resolved settings (in place): a mask
    or a pad needs an init image; without a size of the user's own, the job renders at the
    init image's (`fitted_size`), and goes back to `default_size` when the input is taken away."""
    if not values.get("init_image"):
        for name in ("mask", "pad"):
            if values.get(name):
                raise FluxnbError(f"{name} {values[name]!r}: needs an init image", field=name, value=values[name],
                                  fix=f"give the image to {'repaint' if name == 'mask' else 'extend'} with "
                                      "--init-image PATH (init_image)")
        if sources.get("size") == "init_image":
            values["size"], sources["size"] = default_size, "defaults"
        return
    if not size_given(sources.get("size", "defaults")):
        w, h = fitted_size(values["init_image"], values.get("pad", ""))
        values["size"], sources["size"] = f"{w}x{h}", "init_image"
