"""Test hooks for tests/test_batch.py, loaded into `fluxnb batch` and its notebook kernel
through PYTHONPATH (never installed). They act only when their variables are set:

FLUXNB_TEST_NAN_SEEDS=5,7   those seeds' latents become NaN: a real black-image failure
FLUXNB_TEST_OOM_SEEDS=3     those seeds raise torch.OutOfMemoryError while denoising
FLUXNB_TEST_DELAY_S=0.4     sleep before each image (so a test can kill a run part-way)
"""

import os


def _seeds(name):
    return {int(s) for s in os.environ.get(name, "").split(",") if s.strip()}


if any(os.environ.get(n) for n in ("FLUXNB_TEST_NAN_SEEDS", "FLUXNB_TEST_OOM_SEEDS", "FLUXNB_TEST_DELAY_S")):
    import time

    import fluxnb.image.make as _path

    _denoise = _path.denoise

    def _nan_latents(pipe, i, t, kwargs):
        return {"latents": kwargs["latents"] * float("nan")}

    def denoise(loaded, jobs, embeds, hooks, **kwargs):  # one pipeline call (a batch item: one image)
        time.sleep(float(os.environ.get("FLUXNB_TEST_DELAY_S") or 0))
        seeds = {job.seed for job in jobs}
        if seeds & _seeds("FLUXNB_TEST_OOM_SEEDS"):
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (test hook)")
        if seeds & _seeds("FLUXNB_TEST_NAN_SEEDS"):
            hooks = hooks.extended(_nan_latents)
        return _denoise(loaded, jobs, embeds, hooks, **kwargs)

    _path.denoise = denoise
