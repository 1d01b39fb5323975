"""Image-conditioned jobs: img2img, inpainting (and outpainting), FLUX.1 Kontext editing and
FLUX.1 Fill, through diffusers' own pipelines.

The task follows from the settings and the loaded model (`task_of`): no init image is
txt2img; an init image is img2img (`FluxImg2ImgPipeline`), with a mask, a pad or transparent
pixels inpaint (`FluxInpaintPipeline`, or the loaded `FluxFillPipeline` of a Fill model), and
with a Kontext model (`FluxKontextPipeline`) the image to edit. The img2img and inpaint
pipelines are made once from the loaded pipeline's components and kept on it (`pipeline_for`):
the same modules, so no second copy of the model, its memory policy's hooks and its precision
(fp8 weights) apply as they are. (diffusers' `from_pipe` would do the same but then casts every
shared module to one dtype, float32 unless told, turning fp8-stored weights back into bf16.)

`prepared` reads the inputs once per distinct input and size: the init image (and pad) fitted
to the render size (cropped to multiples of 16, or resized to a size given), the mask
binarised (white = repaint), and the weight `composite` blends with: 0 outside the mask, so
the input's own pixels come back there exactly, as A1111 pastes its overlay back; feathered
(`mask_blur`) only inside the mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config.inputs import parse_pad
from ..config.settings import Settings, defaults
from ..errors import FluxnbError
from ..outputs import inputs

log = logging.getLogger(__name__)

TASKS = ("txt2img", "img2img", "inpaint", "edit")
DERIVED = {"img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline"}  # made from a FluxPipeline
STRENGTH_TASKS = ("img2img", "inpaint")  # the tasks a strength applies to (A1111's "Denoising strength")


def kind(pipe) -> str:
    """What a loaded pipeline is: kontext (FluxKontextPipeline), fill (FluxFillPipeline) or flux."""
    name = type(pipe).__name__
    return "kontext" if "Kontext" in name else "fill" if "Fill" in name else "flux"


def loaded_kind(loaded) -> str:
    return kind(loaded.pipe) if loaded is not None else "flux"


def masked(s: Settings) -> bool:
    """Whether part of the init image is to be repainted: a mask, a pad or transparent pixels."""
    return bool(s.init_image) and bool(s.mask or s.pad or inputs.transparent(s.init_image))


def task_of(s: Settings, model_kind: str = "flux") -> str:
    """txt2img, img2img, inpaint or edit (not checked: see `check`)."""
    if not s.init_image:
        return "txt2img"
    if model_kind == "kontext":
        return "edit"
    return "inpaint" if model_kind == "fill" or masked(s) else "img2img"


def check(s: Settings, model_kind: str, model: str) -> None:
    """Refuse what the loaded model cannot do with these inputs."""
    name = Path(model.rstrip("/")).name
    if s.kontext_resize != defaults()["settings"]["kontext_resize"] and model_kind != "kontext":
        raise FluxnbError(f"kontext_resize {s.kontext_resize!r}: model {name} is not a FLUX.1 Kontext model",
                          field="kontext_resize", value=s.kontext_resize,
                          fix="leave --kontext-resize out, or use a Kontext model (black-forest-labs/FLUX.1-Kontext-dev)")
    if model_kind == "fill" and not masked(s):
        raise FluxnbError(f"model {name}: a FLUX.1 Fill model repaints the masked part of an image", field="mask",
                          value=s.mask, fix="give --init-image PATH with --mask PATH (or --pad, or transparent pixels)")
    if model_kind == "kontext" and masked(s):
        what = "mask" if s.mask else "pad" if s.pad else "init_image"
        raise FluxnbError(f"{what} {getattr(s, what)!r}: model {name} (FLUX.1 Kontext) edits the whole image from "
                          "the prompt; it does not inpaint", field=what, value=getattr(s, what),
                          fix="leave the mask (and pad, transparency) out, or inpaint with FLUX.1-dev or FLUX.1-Fill-dev")


# ---------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------

def pipeline_for(loaded, s: Settings):
    """The pipeline for settings `s`: the loaded one (txt2img, Kontext, Fill), or an img2img /
    inpaint pipeline made once from its components and kept on `loaded`."""
    model_kind = kind(loaded.pipe)
    check(s, model_kind, loaded.model)
    name = DERIVED.get(task_of(s, model_kind)) if model_kind == "flux" else None
    if name is None:
        return loaded.pipe
    if name not in loaded.pipes:
        loaded.pipes[name] = derive(loaded.pipe, name)
    return loaded.pipes[name]


def derive(pipe, class_name: str):
    """A diffusers pipeline of `class_name` made of `pipe`'s own component objects (nothing
    copied, cast or moved). Its end-of-call offload step is `pipe`'s, so that model offload
    leaves every component where `pipe` would (and `render.kept_on_device` holds for it too)."""
    import inspect

    import diffusers

    cls = getattr(diffusers, class_name)
    wanted = inspect.signature(cls.__init__).parameters
    new = cls(**{k: v for k, v in pipe.components.items() if k in wanted})
    new.set_progress_bar_config(disable=True)
    new.maybe_free_model_hooks = lambda: pipe.maybe_free_model_hooks()
    return new


def call_inputs(pipe, jobs: list) -> dict:
    """The image arguments of a diffusers call for `jobs` (sharing `render_key`): the init image
    and mask (one per job in a batch, so each job's generator encodes its own copy, exactly as
    a single call does), the strength; for Kontext the output's area and the resize rule."""
    s = jobs[0].settings
    if kind(pipe) == "kontext":
        w, h = s.render_size
        out = {"max_area": w * h, "_auto_resize": s.kontext_resize == "preferred"}
        return out | ({"image": prepared(s).image} if s.init_image else {})
    if not s.init_image:
        return {}
    p = prepared(s)

    def each(x):
        return x if len(jobs) == 1 else [x] * len(jobs)

    out = {"image": each(p.image), "strength": s.strength}
    if p.mask is not None:
        out["mask_image"] = each(p.mask)
    return out


# ---------------------------------------------------------------------------------------
# The inputs at the render size, and the composite
# ---------------------------------------------------------------------------------------

@dataclass
class Prepared:
    image: object          # PIL RGB at the render size
    mask: object = None    # PIL L, 0 or 255 (white = repaint), at the render size; None: no mask
    weight: object = None  # numpy float32 HxW in [0, 1]: how much of the generated image each pixel takes


_PREPARED: dict = {}


def prepared(s: Settings) -> Prepared:
    """The init image, mask and composite weight for settings `s` (read once per distinct input)."""
    key = (inputs.digest(s.init_image), inputs.digest(s.mask), s.pad, s.mask_blur, s.render_size)
    if key not in _PREPARED:
        if len(_PREPARED) >= 8:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = _prepare(s)
    return _PREPARED[key]


def _prepare(s: Settings) -> Prepared:
    from PIL import ImageChops

    # 1. The init image; transparent pixels and the mask file make the mask.
    image = inputs.read_image("init_image", s.init_image)
    mask = inputs.alpha_mask(image)
    image = image.convert("RGB")
    if s.mask:
        drawn = inputs.read_mask(s.mask, image.size).point(lambda v: 255 if v >= 128 else 0)
        mask = drawn if mask is None else ImageChops.lighter(mask, drawn)
    # 2. Outpainting: a larger canvas, its new border (filled with the nearest edge pixels) masked.
    if s.pad:
        image, mask = pad(image, mask, parse_pad(s.pad))
    # 3. The render size: cropped to multiples of 16, or resized to a size given.
    image, mask = fit(image, mask, s.render_size, Path(s.init_image).name)
    if mask is None:
        return Prepared(image)
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    if not mask.getbbox():
        raise FluxnbError(f"mask {s.mask!r}: no white pixel left to repaint at {image.width}x{image.height}",
                          field="mask", value=s.mask, fix="paint the part to repaint white (black is kept)")
    return Prepared(image, mask, feather(mask, s.mask_blur))


def pad(image, mask, sides: tuple):
    """The image on a canvas grown by (left, top, right, bottom), the border filled with the
    nearest edge pixels; the mask grown with the border white (to be painted)."""
    import numpy as np
    from PIL import Image

    left, top, right, bottom = sides
    rgb = np.pad(np.asarray(image), ((top, bottom), (left, right), (0, 0)), mode="edge")
    old = np.asarray(mask) if mask is not None else np.zeros((image.height, image.width), np.uint8)
    m = np.pad(old, ((top, bottom), (left, right)), constant_values=255)
    return Image.fromarray(rgb), Image.fromarray(m)


def fit(image, mask, size: tuple, name: str):
    """The image (and mask) at `size`: cropped about the centre when `size` is the image's own
    rounded down to multiples of 16, else resized (LANCZOS; the mask NEAREST). Says which."""
    from PIL import Image

    (w, h), (iw, ih) = size, image.size
    m = defaults()["limits"]["multiple"]
    if (iw, ih) == (w, h):
        return image, mask
    if (iw // m * m, ih // m * m) == (w, h):
        box = ((iw - w) // 2, (ih - h) // 2, (iw - w) // 2 + w, (ih - h) // 2 + h)
        log.info("init image %s: %dx%d cropped about the centre to %dx%d (sizes are multiples of %d)", name, iw, ih,
                 w, h, m)
        return image.crop(box), mask.crop(box) if mask is not None else None
    log.info("init image %s: %dx%d resized to %dx%d (the size asked for)", name, iw, ih, w, h)
    return image.resize((w, h), Image.LANCZOS), mask.resize((w, h), Image.NEAREST) if mask is not None else None


def feather(mask, blur: int):
    """The composite weight of a binary mask: 1 inside, 0 outside; with `blur`, a ramp over
    about `blur` pixels on the inside of the edge only (2 * gaussian - 1, clipped at 0)."""
    import numpy as np
    from PIL import ImageFilter

    inside = np.asarray(mask, dtype=np.float32) / 255.0
    if blur <= 0:
        return inside
    soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255.0
    return np.clip(2.0 * soft - 1.0, 0.0, 1.0) * inside


def composite(image, s: Settings):
    """An inpainted image (at the render size) with the input's own pixels outside the mask."""
    if not s.init_image:
        return image
    p = prepared(s)
    if p.weight is None or image.size != p.image.size:
        return image
    import numpy as np
    from PIL import Image

    wgt = p.weight[..., None]
    out = wgt * np.asarray(image.convert("RGB"), np.float32) + (1.0 - wgt) * np.asarray(p.image, np.float32)
    return Image.fromarray(np.rint(out).clip(0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------
# What is recorded
# ---------------------------------------------------------------------------------------

def record_fields(s: Settings, loaded=None) -> dict:
    """The run-log columns of the inputs: task, init image, hashes, the strength (where it applies)."""
    task = task_of(s, loaded_kind(loaded))
    return {"task": task, "init_image": s.init_image, "init_sha256": inputs.digest(s.init_image),
            "mask_sha256": inputs.digest(s.mask), "strength": s.strength if task in STRENGTH_TASKS else None}


def identity(s: Settings) -> dict:
    """What the inputs add to an image's identity (`record.item_id`): {} without an init image."""
    if not s.init_image:
        return {}
    return {"init_sha256": inputs.digest(s.init_image), "mask_sha256": inputs.digest(s.mask),
            "strength": s.strength, "mask_blur": s.mask_blur, "pad": s.pad, "kontext_resize": s.kontext_resize}


def describe(s: Settings) -> dict:
    """What an image's metadata records of its inputs: each one's path, size, sha256, kept copy."""
    return {name: inputs.describe(getattr(s, name)) for name in ("init_image", "mask") if getattr(s, name)}


def keep(s: Settings, output_dir) -> None:
    """Copy the inputs into the output folder's inputs/ (once each)."""
    for name in ("init_image", "mask"):
        if getattr(s, name):
            inputs.keep(getattr(s, name), output_dir)
