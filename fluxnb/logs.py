"""Logging: INFO to the console (coloured on a terminal), DEBUG to a file in `logs/`, and
`scrub`, the one scrubber every writer of an artifact uses.

`scrub` replaces with `***` the values of the known secrets (`SECRET_NAMES`: ANTHROPIC_API_KEY,
HF_TOKEN and its aliases, JUPYTER_TOKEN, JUPYTER_PASSWORD, RAY_AUTH_TOKEN; from the environment
or config.env) and anything shaped like an Anthropic key (`sk-ant-...`) or a Hugging Face
token (`hf_...`). A filter on every log handler applies it, so a key that slips into a message
never reaches a console, a notebook or a log file; image metadata, the enhance cache, the run
log, exports, papermill notebooks and what the CLI prints go through it too (`scrub_data` for
JSON-like data).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import datetime

from .config.environment import SECRET_NAMES, config_env_path, log_dir, read_env_file

_COLOURS = {"DEBUG": "\033[2m", "INFO": "", "WARNING": "\033[33m", "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}


# Secrets by their shape, whatever variable holds them (or none): Anthropic keys
# (`sk-ant-api03-...`) and Hugging Face tokens (`hf_` and 30-odd letters and digits).
SECRET_SHAPES = re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}|hf_[A-Za-z0-9]{20,}")
MASK = "***"


def secret_values() -> list[str]:
    """The values of the known secrets (`SECRET_NAMES`), from the environment, then config.env;
    longest first (so one holding another is masked whole). Values under 6 characters are
    left out: masking them would mangle ordinary text."""
    file_env = None
    vals = []
    for name in SECRET_NAMES:
        v = os.environ.get(name)
        if v is None:
            if file_env is None:
                try:
                    file_env = read_env_file(config_env_path())
                except (OSError, UnicodeDecodeError):
                    file_env = {}
            v = file_env.get(name)
        for one in {v, v.strip()} if v else ():
            if len(one) >= 6 and one not in vals:
                vals.append(one)
    return sorted(vals, key=len, reverse=True)


def scrub(text: str, secrets: list[str] | None = None) -> str:
    """`text` with every secret value and secret-shaped string replaced by `***`."""
    if not isinstance(text, str):
        return text
    for v in secret_values() if secrets is None else secrets:
        if v in text:
            text = text.replace(v, MASK)
    return SECRET_SHAPES.sub(MASK, text)


def scrub_data(value, secrets: list[str] | None = None):
    """A copy of JSON-like data (dicts, lists, strings, numbers) with every string scrubbed,
    keys too; tuples become lists. Shared containers are copied once, and nesting of any
    depth is walked without recursion; other values are returned as they are."""
    secrets = secret_values() if secrets is None else secrets
    copies: dict[int, object] = {}
    todo: list[tuple] = []

    def convert(v):
        if isinstance(v, str):
            return scrub(v, secrets)
        if not isinstance(v, (dict, list, tuple)):
            return v
        if id(v) not in copies:
            copies[id(v)] = {} if isinstance(v, dict) else []
            todo.append((v, copies[id(v)]))
        return copies[id(v)]

    out = convert(value)
    while todo:
        src, dst = todo.pop()
        if isinstance(src, dict):
            for k, x in src.items():
                dst[convert(k) if isinstance(k, str) else k] = convert(x)
        else:
            dst.extend(convert(x) for x in src)
    return out


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


def say(text: str, logger: logging.Logger | None = None) -> None:
    """A line of good news a person follows (a batch item made): to stdout, scrubbed, where
    a notebook shows it plainly (its stderr box is red, for warnings and errors); the log
    file gets it too (at DEBUG, through `logger`)."""
    text = scrub(text)
    print(text, file=sys.stdout, flush=True)
    if logger is not None:
        logger.debug("%s", text)
