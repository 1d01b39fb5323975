"""Test hook for tests/test_interrupt.py (on PYTHONPATH of the `fluxnb` subprocess and its
batch kernel): with FLUXNB_TEST_STEP_MARKS=1 every denoising step that ends prints
`[step N ended]` on stderr, so the test presses Ctrl-C in the middle of denoising."""

import os
import sys

if os.environ.get("FLUXNB_TEST_STEP_MARKS"):
    from fluxnb.image import callbacks

    _step = callbacks.StepTimer.step

    def step(self, pipe, i, t, tensors):
        sys.stderr.write(f"[step {i + 1} ended]\n")
        sys.stderr.flush()
        return _step(self, pipe, i, t, tensors)

    callbacks.StepTimer.step = step
