"""The JupyterLab token of `fluxnb lab`: where it comes from and the private file it is kept in.

- It comes from JUPYTER_TOKEN, else JUPYTER_PASSWORD (the RunPod templates' variable),
  else the token saved by an earlier start, else a new random one. An empty token is refused,
  and so is one under MIN_LENGTH (32) characters: anyone who guesses it gets a shell on the
  machine. A short token saved by an older fluxnb is never reused (a new one is made).
- It is kept in a 0600 file (`<cache>/lab/token`, on the volume on a pod), written with the
  one atomic write; the server reads it from there (JUPYTER_TOKEN_FILE), so it never
  reaches a command line. A generated token is shown once, when it is made.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..config.environment import cache_dir, getenv
from ..errors import FluxnbError
from ..files import write_atomic

log = logging.getLogger(__name__)

TOKEN_NAMES = ("JUPYTER_TOKEN", "JUPYTER_PASSWORD")
MIN_LENGTH = 32   # characters; a generated token has 43


def lab_dir() -> Path:
    return cache_dir() / "lab"


def token_file() -> Path:
    return lab_dir() / "token"


@dataclass
class Token:
    value: str
    source: str       # JUPYTER_TOKEN, JUPYTER_PASSWORD, saved, generated
    new: bool = False  # generated just now: show it once

    def __repr__(self) -> str:  # never shown by accident
        return f"Token(source={self.source!r}, new={self.new})"


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically in a 0700 folder (no trailing newline: Jupyter reads the
    file verbatim)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, text, mode=0o600)


def resolve_token(*, save: bool = True) -> Token:
    """The token to start with (see the module's notes); `save`: keep it in the 0600 token file."""
    # 1. An explicit token: the environment, then config.env.
    for name in TOKEN_NAMES:
        value = getenv(name)
        if value is None:
            continue
        if not value.strip():
            raise FluxnbError(f"{name} is set but empty: fluxnb lab never starts JupyterLab without a token",
                              field=name, value="", fix=f"unset {name} to use a generated token, or set it to a "
                                                         "long random string")
        if len(value.strip()) < MIN_LENGTH:
            raise FluxnbError(f"{name} is {len(value.strip())} characters: fluxnb lab needs a token of at least "
                              f"{MIN_LENGTH} (anyone who guesses it gets a shell on this machine)", field=name,
                              value=f"({len(value.strip())} characters)",
                              fix=f"unset {name} to use a generated token, or set a long random one: python3 -c "
                                  "'import secrets; print(secrets.token_urlsafe(32))'")
        token = Token(value.strip(), name)
        break
    else:
        # 2. The one saved by an earlier start (never a short one), else a new one.
        path = token_file()
        saved = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        if saved and len(saved) < MIN_LENGTH:
            log.info("the saved JupyterLab token is short (%d characters): making a new one", len(saved))
            saved = ""
        token = Token(saved, "saved") if saved else Token(secrets.token_urlsafe(32), "generated", new=True)
    if not token.value.strip():  # belt and braces: never an empty token
        raise FluxnbError("the JupyterLab token is empty", field="token", fix="set JUPYTER_TOKEN")
    # 3. The server reads it from the private file.
    path = token_file()
    if save and (not path.is_file() or path.read_text(encoding="utf-8") != token.value
                 or path.stat().st_mode & 0o077):
        write_private(path, token.value)
    return token
