"""What one image is: the job that asks for it, its identity, its run-log record (built from
the one schema, `outputs.runlog.COLUMNS`), the metadata its file carries, and the failure
record every front end writes when an attempt fails.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..config import loras
from ..config.settings import FIELDS, Settings, draw_seed, resolve
from ..errors import FluxnbError
from . import conditioning

# The speed levers' load settings: recorded as the pipeline was loaded with them.
LEVERS = ("fuse_qkv", "attention_backend", "compile_mode", "compile_vae", "compile_cache")
IDENTITY_FIELDS = ("prompt", "enhance", "enhance_model", "steps", "guidance", "size", "model", "max_sequence_length",
                   "precision", "image_format", "jpeg_quality")


@dataclass
class GeneratedImage:
    """An image and its story: settings, seed, prompts, tokens, timings."""

    image: object                     # PIL.Image
    seed: int
    settings: Settings
    metadata: dict
    path: Path | None = None
    record: dict = field(default_factory=dict)

    def _repr_png_(self):
        import io

        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()

    def save(self, directory=None) -> Path:
        from ..outputs.metadata import save

        s = self.settings
        self.path = save(self.image, self.metadata, directory or s.output_dir, s.image_format, s.jpeg_quality)
        conditioning.keep(s, self.path.parent)  # the inputs, once each, beside it in inputs/
        return self.path


@dataclass
class Job:
    """One image to make: its settings (prompt, size, steps, ...; every per-image input is a
    setting), its seed, and what its run-log record adds (sweep id and coordinates, batch id,
    the Ray worker)."""

    settings: Settings
    seed: int
    extra: dict = field(default_factory=dict)


def item_id(settings: Settings, seed: int) -> str:
    """A stable identity for (settings that decide the pixels, seed). A new input that changes
    the pixels (LoRAs, an init image) joins the key only when set, so older ids stay valid."""
    key = {k: getattr(settings, k) for k in IDENTITY_FIELDS}
    key["seed"] = int(seed)
    if settings.init_image:
        key["inputs"] = conditioning.identity(settings)
    if settings.loras or "<lora:" in settings.prompt.lower():  # by content (a copy elsewhere: the same id)
        try:
            found = [[a["name"], a["sha256"], a["weight"]] for a in adapters(settings)]
        except (OSError, FluxnbError):  # a file gone since the settings were checked: by the specs
            found = [*settings.loras, *(m.group(0) for m in loras.TAG.finditer(settings.prompt))]
        key.update({"loras": found} if found else {})
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def seeds_for(settings: Settings, seeds=None) -> list[int]:
    """Explicit seeds, else seed, seed+1, ... (count of them); a random first seed when unset."""
    if seeds is not None:
        out = [resolve(seed=s, use_env=False).seed for s in seeds]
        if any(s is None for s in out):
            out = [draw_seed() if s is None else s for s in out]
        return out
    first = settings.seed if settings.seed is not None else draw_seed()
    return [(first + i) % 2**32 for i in range(settings.count)]


def versions() -> dict:
    import diffusers
    import torch
    import transformers

    return {"fluxnb": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def base_record(s: Settings, seed: int, *, plan=None, enh=None, loaded=None) -> dict:
    """The run-log record of one image before it is made: the `runlog.COLUMNS` known at this
    point, in their order. A column named after a setting takes the setting's value (so a new
    setting becomes a column by being added to COLUMNS); the rest come from the stages reached
    (`enh`: the enhancement, `plan`: the token plan, `loaded`: the pipeline). The timings are
    added by the path that makes the image, sweep and batch ids by the runs."""
    from ..outputs.runlog import COLUMNS

    known = {
        "id": item_id(s, seed), "path": "", "status": "", "error": "", "seed": seed, "step": None,
        "enhanced_prompt": enh.enhanced if enh and enh.backend != "none" else "",
        "clip_prompt": plan.clip_prompt if plan else "", "clip_dropped": plan.clip_dropped if plan else "",
        "t5_prompt": plan.t5_prompt if plan else "",
        "enhancer": enh.backend if enh else s.enhance, "enhancer_model": (enh.model or "") if enh else "",
        "system_prompt_sha256": (enh.system_prompt_sha256 or "") if enh else "",
        "clip_tokens": plan.clip_tokens if plan else None, "t5_tokens": plan.t5_tokens if plan else None,
        "model_name": loaded.model_name if loaded else "", "dtype": loaded.dtype if loaded else "",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "fluxnb_version": __version__,
    }
    if loaded:  # the load settings in effect (auto resolved; the compile mode and cache only when compiling)
        key = getattr(loaded, "key", None)
        known.update({k: getattr(key, k) for k in LEVERS if hasattr(key, k)})
        known.update(offload=loaded.offload, precision=loaded.precision, device=loaded.device)
    known.update(conditioning.record_fields(s, loaded))  # task, init image, hashes, strength
    known["loras"] = lora_summary(s)
    rec = {k: known[k] if k in known else getattr(s, k) for k in COLUMNS if k in known or k in FIELDS}
    if enh and enh.fallback_from:
        rec["enhancer_fallback_from"] = enh.fallback_from
        rec["enhancer_fallback_reason"] = getattr(enh, "fallback_reason", None) or ""
    return rec


def metadata(record: dict, s: Settings, seed: int) -> dict:
    """What an image file carries: its run-log record, the settings that reproduce it, versions,
    its inputs (path, size, sha256) and its LoRAs (`lora_adapters`: name, path, weight,
    sha256, A1111's short hash) when it has any."""
    inputs = {"inputs": conditioning.describe(s)} if s.init_image else {}
    found = adapters(s)
    inputs.update({"lora_adapters": found} if found else {})
    return dict(record, settings={**s.to_dict(), "seed": seed, "count": 1}, versions=versions(), **inputs)


def adapters(s: Settings) -> list[dict]:
    """Every LoRA of `s` (the `loras` setting, then the prompt's tags) as its image records it:
    name, path, weight, sha256 and A1111's short hash."""
    from ..model.loras import describe

    return [describe(x).describe(x.weight) for x in loras.effective(s)]


def lora_summary(s: Settings) -> str:
    """The run log's `loras` column: `name:weight, ...`; the names given when a file is gone."""
    try:
        return loras.summary(loras.effective(s))
    except FluxnbError:
        return ", ".join(s.loras)


def failure_record(s: Settings, seed: int, exc: BaseException | str, *, status: str | None = None,
                   extra: dict | None = None, **stage) -> dict:
    """The run-log record of a failed attempt: `base_record` (with whatever stages were
    reached: plan, enh, loaded), `extra`, the status and the (scrubbed) error. Every front
    end records a failure with this."""
    from ..logs import scrub

    rec = base_record(s, seed, **stage)
    rec.update(extra or {})
    if isinstance(exc, BaseException):
        status = status or getattr(exc, "status", None) or "error"
        exc = str(exc) if isinstance(exc, FluxnbError) else f"{type(exc).__name__}: {exc}"
    rec.update(status=status or "error", error=scrub(str(exc)))
    return rec
