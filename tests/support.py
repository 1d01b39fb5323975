"""Plain helpers for the tests (import them with `from support import ...`; a `conftest`
module name is shared by tests/ and notebooks/, so nothing is imported from conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_cli(*args, env=None, timeout=300, input=None):
    """Run the real `fluxnb` command in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(BIN / "fluxnb"), *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout, input=input)
