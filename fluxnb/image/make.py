"""The one path that makes images: enhance -> token plan -> encode (cached) -> denoise ->
decode -> save -> record. `generate`, sweep cells, batch items, Ray workers and the widgets
all make their images through `make` (or `generate` / `attempt`, which call it).

`make(jobs)` takes a list of jobs sharing one pipeline (load settings). Each distinct prompt
is enhanced, planned and encoded once; the images are made in pipeline calls of up to
`batch_size` jobs that share everything but seed and prompt (`render.render_key`); `staged`
denoises every call before decoding any, so under model offload the transformer and the
VAE each move to the GPU once. Every image is saved with its metadata and recorded in the
run log; every failed attempt is recorded once (`record.failure_record`) and raised.

Where a new input goes: a setting (config), its column (outputs.runlog.COLUMNS), and the
two seams in `render`: `prepare` (the pipeline for a job: LoRA adapters, an img2img /
inpaint / Kontext pipeline from `from_pipe`) and `call_kwargs` (the diffusers arguments:
init image, mask, strength). Step hooks (progress, timers, stop, preview) are
`callbacks.Callback` objects.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..config.loras import strip_tags
from ..config.settings import Settings, check_output_dir, require_prompt, resolve
from ..errors import FluxnbError, RuntimeFailure
from .callbacks import Hooks, ProgressBar, StepTimer
from .control import Skipped, Stopped
from .record import GeneratedImage, Job, base_record, failure_record, metadata, seeds_for
from .render import decode_latents, denoise, encode, finish_image, kept_on_device, render_key

log = logging.getLogger(__name__)


def generate(prompt: str | None = None, *, settings: Settings | None = None, seeds=None, callbacks=(),
             progress: bool = True, save: bool = True, record: bool = True, extra: dict | None = None,
             **overrides) -> list[GeneratedImage]:
    """Make `count` images (or one per seed in `seeds`) from settings, one pipeline call each.

    `settings`: a Settings to start from; `overrides`: any setting by name (they win).
    `callbacks`: diffusers-style `callback_on_step_end` callables, or `callbacks.Callback`
    objects. `extra`: more fields for each run-log record (sweep_id, batch_id, ...). Saves
    each image with its metadata and appends a run-log record unless told not to; a
    failure is recorded and raised."""
    # 1. Validate.
    if prompt is not None:
        overrides["prompt"] = prompt
    s = settings.replace(**overrides) if settings is not None else resolve(**overrides)
    require_prompt(s.prompt)
    if save:
        check_output_dir(s.output_dir)  # before anything loads
    # 2. One job per seed, made one at a time.
    jobs = [Job(s, seed, dict(extra or {})) for seed in seeds_for(s, seeds)]
    return make(jobs, callbacks=callbacks, progress=progress, save=save, record=record)


def attempt(job: Job, *, save: bool = True, record: bool = True) -> tuple[GeneratedImage | None, dict | None]:
    """Make one job and never raise for its failure (a batch item, a Ray task): (the image,
    None) or (None, its failure record). The failure is recorded once when `record`: by the
    path, or here for an error the path did not see. An interrupt (Ctrl-C) is raised."""
    s = job.settings
    try:
        [made] = generate(settings=s, seeds=[job.seed], progress=False, save=save, record=record, extra=job.extra)
    except FluxnbError as e:  # recorded by the path
        return None, failure_record(s, job.seed, e, extra=job.extra)
    except Exception as e:  # noqa: BLE001 - recorded here, and the caller goes on
        rec = failure_record(s, job.seed, e, extra=job.extra)
        if record:
            from ..outputs import runlog

            runlog.append(s.output_dir, rec)
        return None, rec
    return made, None


@dataclass
class Text:
    """A prompt ready for the model: its enhancement, token plan, embeddings, and their cost."""

    enh: object
    enhance_s: float
    plan: object = None
    embeds: object = None
    encode_s: float = 0.0


def text_key(s: Settings) -> tuple:
    """Jobs with the same key share one enhancement, token plan and encoding."""
    return (s.prompt, s.enhance, s.enhance_model, s.max_sequence_length)


def make(jobs: list[Job], *, callbacks=(), progress: bool = True, save: bool = True, record: bool = True,
         batch_size: int | None = 1, staged: bool | None = False, loaded=None) -> list[GeneratedImage]:
    """Make `jobs` (sharing load settings); returns the images in job order.

    `batch_size`: jobs per pipeline call (None: 4 on the CPU, where it is faster, 1 on a
    GPU); `staged`: all denoising before any decoding (None: under model offload).
    `callbacks`: see `generate`; each one's `made(job, image)` hears of every saved image.
    `loaded`: a pipeline to use (a benchmark's own) instead of `get_pipeline`'s."""
    from ..model.pipeline import get_pipeline

    if not jobs:
        return []
    if len({j.settings.load for j in jobs}) > 1:
        raise ValueError("make: jobs with different load settings (group them by settings.load)")
    timer = StepTimer()
    run = _Run(jobs, Hooks([timer, *([ProgressBar()] if progress else []), *callbacks]), timer, save, record)
    # 1. Enhance each distinct prompt once, with the first job's seed (before loading: a
    #    failed enhancer costs no load).
    for job in jobs:
        if text_key(job.settings) not in run.texts:
            run.enhance(job, jobs[0].seed)
    # 2. Load the pipeline (once per process); plan and encode each distinct prompt once.
    try:
        run.loaded = loaded or get_pipeline(jobs[0].settings.load)
    except FluxnbError as e:
        run.fail([jobs[0]], e)
        raise
    for job in jobs:
        if run.texts[text_key(job.settings)].embeds is None:
            run.encode(job)
    # 3. Pipeline calls: jobs sharing render settings, batch_size at a time.
    n = batch_size or (4 if run.loaded.device == "cpu" else 1)
    staged = run.loaded.offload == "model" if staged is None else staged
    groups: dict = {}
    for job in jobs:
        groups.setdefault(render_key(job.settings), []).append(job)
    calls = [g[i:i + n] for g in groups.values() for i in range(0, len(g), n)]
    if len(calls) < len(jobs) or staged:
        log.info("%d images in %d pipeline call(s)%s", len(jobs), len(calls), ", staged" if staged else "")
    # 4. Denoise, decode, save and record.
    try:
        if staged:
            run.staged(calls)
        else:
            run.unstaged(calls)
    except KeyboardInterrupt as e:
        how = "stopped" if isinstance(e, Stopped) else "interrupted"
        run.fail(run.unmade(), RuntimeFailure(f"{how} at step {run.step()}", status="interrupted"), step=run.step())
        raise
    except Exception as e:  # noqa: BLE001 - recorded, then raised as a clear error
        err = as_error(e, run.loaded)
        run.fail(run.unmade(), err)
        raise err from None
    return [run.made[id(j)] for j in jobs if id(j) in run.made]  # all but the skipped


class _Run:
    """The state of one `make`: texts, the loaded pipeline, the call in progress, what is made."""

    def __init__(self, jobs: list[Job], hooks: Hooks, timer: StepTimer, save: bool, record: bool):
        self.hooks, self.timer, self.save, self.record = hooks, timer, save, record
        self.texts: dict = {}
        self.loaded = None
        self.active: list = jobs[:1]       # the jobs of the pipeline call in progress
        self.made: dict = {}               # id(job) -> GeneratedImage
        self.charged: set = set()          # load and text costs already put on an image's record
        self.skips: list = []              # jobs skipped (Skip): recorded, not made
        self.t_start = time.perf_counter()

    def stage(self, job: Job) -> dict:
        text = self.texts.get(text_key(job.settings))
        return {"enh": text.enh if text else None, "plan": text.plan if text else None, "loaded": self.loaded}

    def fail(self, jobs: list[Job], exc: BaseException, step: int | None = None) -> None:
        if not self.record:
            return
        from ..outputs import runlog

        for job in jobs:
            rec = failure_record(job.settings, job.seed, exc, extra=job.extra, **self.stage(job))
            rec["elapsed_s"] = round(time.perf_counter() - self.t_start, 4)
            if step is not None:
                rec["step"] = step  # the last step that ended before the interrupt
            runlog.append(job.settings.output_dir, rec)

    def step(self) -> int:
        """The steps the pipeline call in progress finished."""
        return len(self.timer.ends)

    def skipped(self, jobs: list[Job], e: Skipped) -> None:
        """A Skip: this call's images are recorded `interrupted`; the run goes on."""
        log.info("skipped seed(s) %s at step %d", ",".join(str(j.seed) for j in jobs), self.step())
        self.fail(jobs, RuntimeFailure(str(e), status="interrupted"), step=self.step())
        self.skips.extend(jobs)

    def unmade(self) -> list[Job]:
        return [j for j in self.active if id(j) not in self.made and j not in self.skips]

    def enhance(self, job: Job, seed: int) -> None:
        from ..prompt import enhancer

        s = job.settings
        t0 = time.perf_counter()
        try:
            enh = enhancer.enhance(strip_tags(s.prompt), backend=s.enhance, model=s.enhance_model, seed=seed,
                                   use_cache=s.enhance_cache, fallback=s.enhance_fallback)
        except FluxnbError as e:
            e.status = "enhance_failed"
            self.fail([job], e)
            raise
        self.texts[text_key(s)] = Text(enh, round(time.perf_counter() - t0, 4))

    def encode(self, job: Job) -> None:
        from ..prompt.tokens import count_tokens as token_plan
        from ..prompt.tokens import summary

        s, text = job.settings, self.texts[text_key(job.settings)]
        try:
            text.plan = token_plan(text.enh.enhanced, pipe=self.loaded.pipe, t5_limit=s.max_sequence_length)
            log.info("prompt %r (%s)", _short(text.enh.enhanced), summary(text.plan))
            if text.plan.clip_dropped:
                log.info("CLIP sees the first %d tokens; T5 gets the whole prompt", text.plan.clip_limit)
            t0 = time.perf_counter()
            text.embeds = encode(self.loaded, text.plan.clip_prompt, text.plan.t5_prompt, s.max_sequence_length)
        except Exception as e:  # noqa: BLE001 - recorded, then raised as a clear error
            err = as_error(e, self.loaded)
            self.fail([job], err)
            raise err from None
        text.encode_s = round(time.perf_counter() - t0, 4)

    def call(self, jobs: list[Job], output_type: str) -> list:
        self.active = jobs
        embeds = [self.texts[text_key(j.settings)].embeds for j in jobs]
        return denoise(self.loaded, jobs, embeds, self.hooks, output_type=output_type)

    def unstaged(self, calls: list) -> None:
        """Each call denoises and decodes; its images are saved before the next call."""
        for jobs in calls:
            try:
                images = self.call(jobs, "pil")
            except Skipped as e:
                self.skipped(jobs, e)
                continue
            den, dec = self.timer.split(time.perf_counter())
            images = [finish_image(im, j.settings, j.seed) for im, j in zip(images, jobs)]
            s = jobs[0].settings
            self.finish(jobs, images, den, dec, self.compile_s(s, "denoise", den), self.compile_s(s, "decode", dec))

    def staged(self, calls: list) -> None:
        """Every call denoises (latents kept) before any is decoded; the components stay on
        the device between the calls of a stage. An interrupt keeps what was denoised."""
        pending = []
        try:
            with kept_on_device(self.loaded.pipe):
                try:
                    for jobs in calls:
                        t0 = time.perf_counter()
                        try:
                            latents = self.call(jobs, "latent")
                        except Skipped as e:
                            self.skipped(jobs, e)
                            continue
                        den = time.perf_counter() - t0
                        pending.append((jobs, latents, den, self.compile_s(jobs[0].settings, "denoise", den)))
                except KeyboardInterrupt:
                    stopped = self.active
                    self.decode(pending)
                    self.active = stopped
                    raise
            self.decode(pending)
        finally:
            self.loaded.pipe.maybe_free_model_hooks()

    def decode(self, pending: list) -> None:
        while pending:
            jobs, latents, den, den_compile = pending.pop(0)
            self.active = jobs
            t0 = time.perf_counter()
            images = [finish_image(im, j.settings, j.seed)
                      for im, j in zip(decode_latents(self.loaded, jobs[0].settings, latents), jobs)]
            dec = time.perf_counter() - t0
            self.finish(jobs, images, den, dec, den_compile, self.compile_s(jobs[0].settings, "decode", dec))

    def compile_s(self, s: Settings, part: str, seconds: float) -> float:
        """What compiling cost in a call's `part` (its `seconds`), on the first call at a size:
        `denoise` with compile (the first steps above the steady step time), `decode` with
        compile_vae (the whole first decode: a steady one is a small part of it)."""
        loaded, size = self.loaded, s.render_size
        on = getattr(getattr(loaded, "key", None), "compile" if part == "denoise" else "compile_vae", False)
        mark = size if part == "denoise" else ("vae", *size)
        if not on or mark in loaded.compiled_sizes:
            return 0.0
        loaded.compiled_sizes.add(mark)
        measured = self.timer.compile_s() if part == "denoise" else None
        compile_s = measured if measured is not None else seconds
        log.info("compile: %.1f s (%s) for the first image at %dx%d (later images skip it)", compile_s,
                 "transformer" if part == "denoise" else "VAE decoder", *size)
        return compile_s

    def finish(self, jobs: list[Job], images: list, denoise_s: float, decode_s: float, den_compile: float,
               dec_compile: float) -> None:
        """Save and record each image of a call; the call's time is shared among its images,
        compiling apart from denoising (`den_compile`) and decoding (`dec_compile`)."""
        from ..outputs import runlog

        n = len(jobs)
        compile_s, denoise_s, decode_s = den_compile + dec_compile, denoise_s - den_compile, decode_s - dec_compile
        for job, image in zip(jobs, images):
            s, text = job.settings, self.texts[text_key(job.settings)]
            rec = base_record(s, job.seed, plan=text.plan, enh=text.enh, loaded=self.loaded)
            first_load, first_text = "load" not in self.charged, id(text) not in self.charged
            self.charged.update({"load", id(text)})
            rec.update(job.extra, denoise_s=round(denoise_s / n, 4), decode_s=round(decode_s / n, 4),
                       compile_s=round(compile_s / n, 4),
                       load_s=round(self.loaded.load_s, 4) if first_load else 0.0,
                       enhance_s=text.enhance_s if first_text else 0.0, encode_s=text.encode_s if first_text else 0.0,
                       status="ok")
            rec["elapsed_s"] = round((denoise_s + decode_s + compile_s) / n + rec["enhance_s"] + rec["encode_s"], 4)
            item = GeneratedImage(image=image, seed=job.seed, settings=s.replace(seed=job.seed, count=1),
                                  metadata=metadata(rec, s, job.seed))
            if self.save:
                t0 = time.perf_counter()
                item.save()
                rec.update(save_s=round(time.perf_counter() - t0, 4), path=str(item.path))
                log.info("saved %s: %dx%d, %d steps, guidance %g, seed %d, %.2f s", item.path, s.width, s.height,
                         s.steps, s.guidance, job.seed, rec["elapsed_s"])
            if self.record:
                runlog.append(s.output_dir, rec)
            item.record = rec
            self.made[id(job)] = item
            self.hooks.made(job, item)


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def as_error(e: Exception, loaded) -> FluxnbError:
    """Any failure while making an image as a FluxnbError: out of memory names the offload that fits."""
    if isinstance(e, FluxnbError):
        return e
    try:
        import torch

        if isinstance(e, torch.OutOfMemoryError):
            from ..model.pipeline import oom_error

            return oom_error(loaded.key, loaded.offload)
    except ImportError:
        pass
    return RuntimeFailure(f"generation failed: {type(e).__name__}: {e}")
