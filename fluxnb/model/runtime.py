"""The libraries underneath: quiet logging, and the dtype keyword diffusers takes."""

from __future__ import annotations

import os
import warnings


def quiet_libraries() -> None:
    """Keep diffusers/transformers chatter (progress bars, optional-backend notices) out of
    the console; fluxnb logs what matters itself."""
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    warnings.filterwarnings("ignore", message=".*should be kept in float32.*")
    warnings.filterwarnings("ignore", message=".*torch_dtype.*is deprecated.*")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def dtype_kwarg(dtype) -> dict:
    """`dtype=` for diffusers that have it (0.36+), else the older `torch_dtype=`."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
        return {"dtype": dtype}
    except ImportError:
        return {"torch_dtype": dtype}
