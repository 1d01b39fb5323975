"""One call that makes N images from settings, each with an explicit seed.

Every result carries its own metadata (the run-log record plus the settings that
reproduce it); saving embeds that metadata, and every image and every failed attempt
appends one record to the run log.
"""

from __future__ import annotations

import logging
import time

from ..config.settings import Settings, require_prompt, resolve
from ..errors import FluxnbError, RuntimeFailure
from .record import GeneratedImage, base_record, seeds_for, versions
from .render import encode, render

log = logging.getLogger(__name__)


def generate(prompt: str | None = None, *, settings: Settings | None = None, seeds=None, callbacks=(),
             progress: bool = True, save: bool = True, record: bool = True, extra: dict | None = None,
             **overrides) -> list[GeneratedImage]:
    """Make `count` images (or one per seed in `seeds`) from settings.

    `settings`: a Settings to start from; `overrides`: any setting by name (they win).
    `callbacks`: diffusers-style `callback_on_step_end` callables. `extra`: more fields
    for each run-log record (sweep_id, batch_id, ...). Saves each image with its metadata
    and appends a run-log record unless told not to; a failure is recorded and raised."""
    from ..model.pipeline import get_pipeline, oom_error
    from ..outputs import runlog
    from ..outputs.metadata import save as save_image
    from ..prompt import enhancer as enhance_mod
    from ..prompt.tokens import count_tokens as token_plan
    from ..prompt.tokens import summary

    # 1. Validate.
    if prompt is not None:
        overrides["prompt"] = prompt
    s = settings.replace(**overrides) if settings is not None else resolve(**overrides)
    require_prompt(s.prompt)
    seed_list = seeds_for(s, seeds)
    extra = dict(extra or {})
    t_start = time.perf_counter()

    def fail(exc: Exception, seed: int, stage_rec: dict | None = None) -> None:
        if record:
            rec = dict(stage_rec or base_record(s, seed))
            rec.update(extra, status=getattr(exc, "status", "error"), error=str(exc),
                       elapsed_s=round(time.perf_counter() - t_start, 4))
            runlog.append(s.output_dir, rec)

    # 2. Enhance the prompt (once for all seeds).
    t0 = time.perf_counter()
    try:
        enh = enhance_mod.enhance(s.prompt, backend=s.enhance, model=s.enhance_model, seed=seed_list[0],
                                  use_cache=s.enhance_cache, fallback=s.enhance_fallback)
    except FluxnbError as e:
        e.status = "enhance_failed"
        fail(e, seed_list[0])
        raise
    enhance_s = round(time.perf_counter() - t0, 4)

    # 3. Load the pipeline (once per process) and plan the tokens with its tokenizers.
    try:
        loaded = get_pipeline(s.load)
    except FluxnbError as e:
        fail(e, seed_list[0])
        raise
    plan = token_plan(enh.enhanced, pipe=loaded.pipe, t5_limit=s.max_sequence_length)
    log.info("prompt %r (%s)", _short(enh.enhanced), summary(plan))
    if plan.clip_dropped:
        log.info("CLIP sees the first %d tokens; T5 gets the whole prompt", plan.clip_limit)

    # 4. Encode the prompt once.
    t0 = time.perf_counter()
    try:
        embeds = encode(loaded, plan.clip_prompt, plan.t5_prompt, s.max_sequence_length)
    except Exception as e:  # noqa: BLE001 - recorded, then raised as a clear error
        err = as_error(e, loaded, oom_error)
        fail(err, seed_list[0], base_record(s, seed_list[0], plan=plan, enh=enh, loaded=loaded))
        raise err from None
    encode_s = round(time.perf_counter() - t0, 4)

    # 5. Denoise, decode, save and record each image.
    results = []
    for n, seed in enumerate(seed_list):
        rec = base_record(s, seed, plan=plan, enh=enh, loaded=loaded)
        rec.update(extra)
        t_img = time.perf_counter()
        try:
            image, timings = render(loaded, s, seed, embeds, callbacks=callbacks, progress=progress)
        except KeyboardInterrupt:
            fail(RuntimeFailure("interrupted", status="interrupted"), seed, rec)
            raise
        except Exception as e:  # noqa: BLE001
            err = as_error(e, loaded, oom_error)
            fail(err, seed, rec)
            raise err from None
        rec.update(timings, load_s=round(loaded.load_s, 4) if n == 0 else 0.0, enhance_s=enhance_s if n == 0 else 0.0,
                   encode_s=encode_s if n == 0 else 0.0, status="ok")
        rec["elapsed_s"] = round(time.perf_counter() - t_img + (enhance_s + encode_s if n == 0 else 0.0), 4)
        meta = dict(rec, settings={**s.to_dict(), "seed": seed, "count": 1}, versions=versions())
        item = GeneratedImage(image=image, seed=seed, settings=s.replace(seed=seed, count=1), metadata=meta)
        if save:
            t0 = time.perf_counter()
            try:
                item.path = save_image(image, meta, s.output_dir, s.image_format, s.jpeg_quality)
            except FluxnbError as e:
                fail(e, seed, rec)
                raise
            rec["save_s"] = round(time.perf_counter() - t0, 4)
            rec["path"] = str(item.path)
            log.info("saved %s: %dx%d, %d steps, guidance %g, seed %d, %.2f s", item.path, s.width, s.height, s.steps,
                     s.guidance, seed, rec["elapsed_s"])
        if record:
            runlog.append(s.output_dir, rec)
        item.record = rec
        results.append(item)
    return results


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def as_error(e: Exception, loaded, oom_error) -> FluxnbError:
    if isinstance(e, FluxnbError):
        return e
    try:
        import torch

        if isinstance(e, torch.OutOfMemoryError):
            return oom_error(loaded.key, loaded.offload)
    except ImportError:
        pass
    return RuntimeFailure(f"generation failed: {type(e).__name__}: {e}")


