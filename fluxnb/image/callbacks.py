"""Step callbacks: small named objects with one protocol, run through diffusers' `callback_on_step_end`.

Modelled on mflux's `callbacks/` (subscribers called before, in and after the denoising loop)
and on diffusers' `PipelineCallback` (`tensor_inputs` and one call per step). A callback is a
`Callback` subclass implementing any of:

    before(jobs)                a pipeline call for these jobs (one image, or a batch) starts
    step(pipe, i, t, tensors)   step i ended; `tensors` holds the `tensor_inputs` it asked for
                                (latents); a returned dict replaces those tensors
    after(jobs)                 that call ended (or failed)
    made(job, image)            one image (a GeneratedImage) is saved and recorded

`Hooks` is the one object handed to diffusers: it runs every callback in order. A plain
diffusers-style callable `fn(pipe, i, t, kwargs) -> dict` (and diffusers' own
`PipelineCallback` objects) is adapted by `StepFunction`, so `generate(..., callbacks=(fn,))`
keeps working. A Stop request is a callback whose `step` raises KeyboardInterrupt (the path
then records `interrupted` and saves nothing unfinished); a live preview is a callback whose
`step` turns `tensors["latents"]` into a small image every few steps.
"""

from __future__ import annotations

import time

from ..errors import FluxnbError


class Callback:
    """The protocol: every method is optional (the base does nothing)."""

    tensor_inputs: tuple = ()  # what `step` reads from the pipeline's tensors, beyond the latents

    def before(self, jobs: list) -> None:
        pass

    def step(self, pipe, i: int, t, tensors: dict) -> dict | None:
        return None

    def after(self, jobs: list) -> None:
        pass

    def made(self, job, image) -> None:
        pass


class StepFunction(Callback):
    """A diffusers-style callable `fn(pipe, i, t, kwargs) -> dict` as a callback."""

    def __init__(self, fn):
        if not callable(fn):
            raise FluxnbError(f"callbacks: {fn!r} is neither a callable nor a Callback", field="callbacks",
                              value=repr(fn), fix="pass fn(pipe, step, timestep, kwargs) -> dict, or a "
                              "fluxnb.image.callbacks.Callback")
        self.fn = fn
        self.tensor_inputs = tuple(getattr(fn, "tensor_inputs", None) or ())  # diffusers' PipelineCallback

    def step(self, pipe, i, t, tensors):
        return self.fn(pipe, i, t, tensors)


class ProgressBar(Callback):
    """A tqdm bar over the steps of each pipeline call, named after its seeds."""

    bar = None

    def before(self, jobs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=jobs[0].settings.steps, desc="seed " + ",".join(str(j.seed) for j in jobs),
                        unit="step", leave=False)

    def step(self, pipe, i, t, tensors):
        self.bar.update(1)

    def after(self, jobs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StepTimer(Callback):
    """When each step of a pipeline call ended: splits the call into denoising and decoding,
    and measures what compiling cost (the first steps of a compiled transformer at a new size)."""

    def __init__(self):
        self.start, self.ends = 0.0, []

    def before(self, jobs):
        self.start, self.ends = time.perf_counter(), []

    def step(self, pipe, i, t, tensors):
        self.ends.append(time.perf_counter())

    def split(self, end: float) -> tuple[float, float]:
        """(denoise seconds, decode seconds) of the call that ended at `end`."""
        denoised = self.ends[-1] if self.ends else end
        return denoised - self.start, end - denoised

    def compile_s(self) -> float | None:
        from ..model.perf import compile_seconds

        return compile_seconds([b - a for a, b in zip([self.start, *self.ends], self.ends)])


class Hooks:
    """Callbacks run in order: the `callback_on_step_end` of every pipeline call the path makes."""

    def __init__(self, callbacks=()):
        self.callbacks = [c if isinstance(c, Callback) else StepFunction(c) for c in callbacks]

    def extended(self, *callbacks) -> "Hooks":
        """These hooks, then `callbacks`."""
        return Hooks([*self.callbacks, *callbacks])

    @property
    def tensor_inputs(self) -> list[str]:
        """diffusers' `callback_on_step_end_tensor_inputs`: the latents and what any callback reads."""
        return list(dict.fromkeys(["latents", *(k for c in self.callbacks for k in c.tensor_inputs)]))

    def __call__(self, pipe, i, t, kwargs):
        for c in self.callbacks:
            out = c.step(pipe, i, t, kwargs)
            if isinstance(out, dict) and out is not kwargs:
                kwargs.update(out)
        return kwargs

    def before(self, jobs) -> None:
        for c in self.callbacks:
            c.before(jobs)

    def after(self, jobs) -> None:
        for c in self.callbacks:
            c.after(jobs)

    def made(self, job, image) -> None:
        for c in self.callbacks:
            c.made(job, image)
