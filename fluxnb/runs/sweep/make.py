"""Making a sweep's cells: every prompt encoded once, cells batched, stages kept apart.

Cells that share a pipeline (load settings) are made together: first all text (enhance,
plan tokens, encode each distinct prompt once), then the images in batches of cells that
differ only in seed and prompt (one CPU generator per seed: the same noise as a single
image). Under model offload every batch is denoised before any is decoded, so each
component moves to the GPU once per sweep rather than once per image. Each cell is saved
and recorded as `generate` saves and records an image, plus the sweep id and coordinates.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ...errors import FluxnbError, RuntimeFailure
from ...config.settings import Settings

log = logging.getLogger(__name__)


def reuse(p, c, rec: dict) -> bool:
    """Take a recorded cell's image; a cell made outside this sweep gets a record here too."""
    from PIL import Image

    from ...outputs import runlog

    try:
        with Image.open(rec["path"]) as im:
            c.image = im.convert("RGB")
    except OSError:
        return False
    c.path, c.reused, c.record = Path(rec["path"]), True, rec
    if {k: rec.get(k) for k in c.extra(p.sweep_id)} != c.extra(p.sweep_id):  # made elsewhere: record it here too
        c.record = dict(rec, **c.extra(p.sweep_id), reused=True, elapsed_s=0.0, load_s=0.0, enhance_s=0.0,
                        encode_s=0.0, denoise_s=0.0, decode_s=0.0, save_s=0.0)
        runlog.append(p.base.output_dir, c.record)
    return True


def groups(items, key) -> list:
    """[(key, items)] in order of first appearance."""
    out: dict = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return list(out.items())


def make(p, cells: list, bar, batch_size, staged, callbacks) -> None:
    """Make cells sharing one pipeline: all text first, then denoising (and decoding) in
    batches of cells that differ only in seed and prompt."""
    from ...prompt import enhancer
    from ...outputs import runlog
    from ...image.make import as_error
    from ...image.render import encode
    from ...model.pipeline import get_pipeline, oom_error
    from ...prompt.tokens import count_tokens as token_plan

    first = cells[0]

    def fail(exc, batch, texts=None, loaded=None):
        for c in batch:
            t = (texts or {}).get(_text_key(c.settings))
            rec = _record(c, p, t, loaded)
            rec.update(status=getattr(exc, "status", "error"), error=str(exc))
            runlog.append(c.settings.output_dir, rec)

    # 1. Load (once per process) and encode each distinct prompt once for the sweep.
    try:
        loaded = get_pipeline(first.settings.load)
    except FluxnbError as e:
        fail(e, [first])
        raise
    texts: dict = {}
    for c in cells:
        s, k = c.settings, _text_key(c.settings)
        if k in texts:
            continue
        t0 = time.perf_counter()
        try:
            enh = enhancer.enhance(s.prompt, backend=s.enhance, model=s.enhance_model, seed=first.seed,
                                   use_cache=s.enhance_cache, fallback=s.enhance_fallback)
        except FluxnbError as e:
            e.status = "enhance_failed"
            fail(e, [c])
            raise
        t1 = time.perf_counter()
        tp = token_plan(enh.enhanced, pipe=loaded.pipe, t5_limit=s.max_sequence_length)
        try:
            embeds = encode(loaded, tp.clip_prompt, tp.t5_prompt, s.max_sequence_length)
        except Exception as e:  # noqa: BLE001 - recorded, then raised as a clear error
            err = as_error(e, loaded, oom_error)
            fail(err, [c], {k: (enh, tp, None, 0, 0)}, loaded)
            raise err from None
        texts[k] = (enh, tp, embeds, round(t1 - t0, 4), round(time.perf_counter() - t1, 4))

    # 2. Batches of cells that share everything but seed and prompt.
    n = batch_size or (4 if loaded.device == "cpu" else 1)
    staged = loaded.offload == "model" if staged is None else staged
    batches = [b[i:i + n] for _k, b in groups(cells, _render_key) for i in range(0, len(b), n)]
    log.info("%d cells in %d pipeline call(s)%s", len(cells), len(batches), ", staged" if staged else "")
    timing = {"load_s": round(loaded.load_s, 4)}
    charged: set = set()

    def save(batch, images, denoise_s, decode_s):
        for c, image in zip(batch, images):
            t = texts[_text_key(c.settings)]
            _save_cell(c, p, t, loaded, image, denoise_s / len(batch), decode_s / len(batch),
                       timing if not charged else {}, (t[3], t[4]) if id(t) not in charged else (0.0, 0.0))
            charged.update({"load", id(t)})
            if bar is not None:
                bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in c.values.items() if k != "prompt")[:60])
                bar.update(1)

    # 3. Denoise and decode; under model offload all denoising first, then all decoding,
    #    so the transformer and the VAE each move to the GPU once.
    active = {"cells": batches[0]}
    try:
        if not staged:
            for batch in batches:
                active["cells"] = batch
                images, den, dec = _render(loaded, batch, texts, callbacks)
                save(batch, images, den, dec)
            return
        pending = []
        try:
            with _kept_on_device(loaded.pipe):
                try:
                    for batch in batches:
                        active["cells"] = batch
                        t0 = time.perf_counter()
                        pending.append((batch, _denoise(loaded, batch, texts, callbacks, "latent"),
                                        time.perf_counter() - t0))
                except KeyboardInterrupt:
                    stopped = active["cells"]
                    _decode_all(loaded, pending, save, active)  # keep what was denoised
                    active["cells"] = stopped
                    raise
            _decode_all(loaded, pending, save, active)
        finally:
            loaded.pipe.maybe_free_model_hooks()
    except KeyboardInterrupt:
        fail(RuntimeFailure("interrupted", status="interrupted"), [c for c in active["cells"] if c.path is None],
             texts, loaded)
        raise
    except Exception as e:  # noqa: BLE001
        err = as_error(e, loaded, oom_error)
        fail(err, [c for c in active["cells"] if c.path is None], texts, loaded)
        raise err from None


def _text_key(s: Settings) -> tuple:
    return (s.prompt, s.enhance, s.enhance_model, s.max_sequence_length)


def _render_key(c) -> tuple:
    s = c.settings
    return (s.size, s.steps, s.guidance, s.max_sequence_length, s.vae_tiling)


def _denoise(loaded, batch, texts, callbacks, output_type):
    from ...image.render import render_many

    embeds = [texts[_text_key(c.settings)][2] for c in batch]
    return render_many(loaded, batch[0].settings, [c.seed for c in batch], embeds, callbacks=callbacks,
                       output_type=output_type)


def _render(loaded, batch, texts, callbacks):
    """(final images, denoise seconds, decode seconds) for one batch, not staged."""
    from ...image.render import finish_image, render

    c = batch[0]
    if len(batch) == 1:  # the very path `generate` takes
        image, t = render(loaded, c.settings, c.seed, texts[_text_key(c.settings)][2], callbacks=callbacks,
                          progress=False)
        return [image], t["denoise_s"], t["decode_s"]
    marks = {}

    def mark(pipe, i, t, kwargs):
        if i == c.settings.steps - 1:
            marks["denoised"] = time.perf_counter()
        return kwargs

    t0 = time.perf_counter()
    images = _denoise(loaded, batch, texts, (*callbacks, mark), "pil")
    t1 = time.perf_counter()
    den = marks.get("denoised", t1)
    return [finish_image(im, b.settings, b.seed) for im, b in zip(images, batch)], den - t0, t1 - den


def _decode_all(loaded, pending, save, active) -> None:
    from ...image.render import decode_latents, finish_image

    while pending:
        batch, lat, den = pending.pop(0)
        active["cells"] = batch
        t0 = time.perf_counter()
        images = [finish_image(im, c.settings, c.seed) for im, c in zip(decode_latents(loaded, batch[0].settings, lat),
                                                                       batch)]
        save(batch, images, den, time.perf_counter() - t0)


class _kept_on_device:
    """Under model offload a pipeline call ends by moving every component back to the CPU;
    between the calls of one stage, keep them where they are (stateful caches still reset)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def __enter__(self):
        pipe = self.pipe

        def reset_only():
            for comp in pipe.components.values():
                if hasattr(comp, "_reset_stateful_cache"):
                    comp._reset_stateful_cache()

        pipe.maybe_free_model_hooks = reset_only
        return self

    def __exit__(self, *exc):
        del self.pipe.maybe_free_model_hooks
        return False


def _record(c, p, text, loaded) -> dict:
    from ...image.record import base_record

    enh, tp = (text[0], text[1]) if text else (None, None)
    rec = base_record(c.settings, c.seed, plan=tp, enh=enh, loaded=loaded)
    rec.update(c.extra(p.sweep_id))
    return rec


def _save_cell(c, p, text, loaded, image, denoise_s, decode_s, load, text_s) -> None:
    """Save and record one cell exactly as `generate` saves and records an image."""
    from ...outputs import runlog
    from ...image.record import GeneratedImage, versions

    s = c.settings
    rec = _record(c, p, text, loaded)
    rec.update(denoise_s=round(denoise_s, 4), decode_s=round(decode_s, 4), load_s=load.get("load_s", 0.0),
               enhance_s=text_s[0], encode_s=text_s[1], status="ok")
    rec["elapsed_s"] = round(denoise_s + decode_s + text_s[0] + text_s[1], 4)
    meta = dict(rec, settings={**s.to_dict(), "seed": c.seed, "count": 1}, versions=versions())
    item = GeneratedImage(image=image, seed=c.seed, settings=s, metadata=meta)
    t0 = time.perf_counter()
    c.path = item.save()  # a failure is recorded by make()
    rec.update(save_s=round(time.perf_counter() - t0, 4), path=str(c.path))
    runlog.append(s.output_dir, rec)
    c.image, c.record = image, rec
