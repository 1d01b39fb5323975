"""Logging: INFO to the console (coloured on a terminal), DEBUG to a file in `logs/`.

A filter on every handler replaces the values of known secrets with `***`, so a key
that slips into a message never reaches a console, a notebook or a log file.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime

from .config.environment import SECRET_NAMES, getenv, log_dir

_COLOURS = {"DEBUG": "\033[2m", "INFO": "", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}


def secret_values() -> list[str]:
    vals = []
    for name in SECRET_NAMES:
        v = getenv(name)
        if v and len(v) >= 6:
            vals.append(v)
    return vals


def scrub(text: str) -> str:
    for v in secret_values():
        text = text.replace(v, "***")
    return text


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


class _ConsoleFormatter(logging.Formatter):
    def __init__(self, colour: bool):
        super().__init__("%(message)s")
        self.colour = colour

    def format(self, record):
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if self.colour:
            text = f"{_COLOURS.get(record.levelname, '')}{text}\033[0m"
        return text


def setup(level: int = logging.INFO, *, file: bool = True, stream=None) -> None:
    """Configure the `fluxnb` logger once (console + file); safe to call again."""
    logger = logging.getLogger("fluxnb")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        if getattr(h, "_fluxnb", False):
            logger.removeHandler(h)
            h.close()
    stream = stream or sys.stderr
    console = logging.StreamHandler(stream)
    console.setLevel(level)
    colour = hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")
    console.setFormatter(_ConsoleFormatter(bool(colour)))
    console.addFilter(SecretFilter())
    console._fluxnb = True
    logger.addHandler(console)
    if file:
        try:
            folder = log_dir()
            folder.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(folder / f"fluxnb_{datetime.now():%Y%m%d}.log", encoding="utf-8")
        except OSError:
            return
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
        fh.addFilter(SecretFilter())
        fh._fluxnb = True
        logger.addHandler(fh)
