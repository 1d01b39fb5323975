"""The one exception fluxnb raises for anything a user can fix.

The message names the field, the value, what is allowed and the fix; front ends print
it without a traceback and exit non-zero (2 for bad input, 1 for a failure at run time).
"""

from __future__ import annotations

import os


class FluxnbError(Exception):
    """A problem the user can fix: bad input, a missing model, no key, out of memory."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, value=None, fix: str | None = None,
                 status: str = "error"):
        self.field = field
        self.value = value
        self.fix = fix
        self.status = status  # the run-log status an attempt that hit this gets
        text = message
        if fix and fix not in message:
            text = f"{message}; {fix}"
        super().__init__(text)


class RuntimeFailure(FluxnbError):
    """Something failed while running (out of memory, an API error): exit status 1."""

    exit_code = 1


def raise_if_strict(exc: BaseException) -> None:
    """Raise `exc` under strict mode (FLUXNB_STRICT=1, which notebooks/conftest.py sets for
    the nbval runs), where a form would otherwise show it: a notebook whose form hits an
    error then fails its test instead of passing with the error on display."""
    if os.environ.get("FLUXNB_STRICT", "").strip().lower() in ("1", "true", "yes", "on"):
        raise exc
