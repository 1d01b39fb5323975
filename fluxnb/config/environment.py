"""Where fluxnb runs and what its environment says: config.env, FLUXNB_* and secrets,
whether this is a RunPod pod, and where fluxnb's cache, logs and models live.

One rule for "are we on a pod?" (the same as runpod_setup.sh's): RUNPOD_POD_ID is set, or
the workspace folder ($FLUXNB_WORKSPACE, default /workspace) exists and is writable.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]   # the fluxnb package
SECRET_NAMES = ("ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "JUPYTER_TOKEN", "JUPYTER_PASSWORD",
                "RAY_AUTH_TOKEN")
TINY_BUILD = "1"  # bump when the tiny test model's configuration changes: its cache folder is keyed by it


def workspace() -> Path:
    """The pod's persistent volume: $FLUXNB_WORKSPACE, else /workspace."""
    return Path(os.environ.get("FLUXNB_WORKSPACE") or "/workspace")


def on_pod() -> bool:
    """RUNPOD_POD_ID is set, or the workspace folder exists and is writable (runpod_setup.sh's rule)."""
    ws = workspace()
    return bool(os.environ.get("RUNPOD_POD_ID")) or (ws.is_dir() and os.access(ws, os.W_OK))


def cache_dir() -> Path:
    """fluxnb's cache: $FLUXNB_CACHE_DIR, else <workspace>/.cache/fluxnb on a pod, else ~/.cache/fluxnb."""
    explicit = getenv("FLUXNB_CACHE_DIR")
    if explicit:
        return Path(explicit)
    if on_pod():
        return workspace() / ".cache" / "fluxnb"
    return Path(os.path.expanduser("~")) / ".cache" / "fluxnb"


def log_dir() -> Path:
    """$FLUXNB_LOG_DIR, else <workspace>/logs on a pod, else logs/ here."""
    explicit = getenv("FLUXNB_LOG_DIR")
    if explicit:
        return Path(explicit)
    return workspace() / "logs" if on_pod() else Path("logs")


def tiny_model_dir() -> Path:
    """Where the tiny random-weight test model is built (once) and found."""
    return cache_dir() / "models" / f"tiny-v{TINY_BUILD}"


def hf_hub_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"



def config_env_path() -> Path | None:
    """The ignored `config.env` in use: $FLUXNB_CONFIG_ENV, else ./config.env, else the
    checkout's, else the workspace's (/workspace/config.env). None when there is none."""
    explicit = os.environ.get("FLUXNB_CONFIG_ENV")
    if explicit is not None:
        p = Path(explicit)
        return p if p.is_file() else None
    for p in (Path.cwd() / "config.env", PACKAGE_DIR.parent / "config.env", workspace() / "config.env"):
        if p.is_file():
            return p
    return None


def read_env_file(path: Path | None) -> dict[str, str]:
    """KEY=VALUE lines (optionally `export KEY=...`, quotes stripped, # comments)."""
    out: dict[str, str] = {}
    if not path:
        return out
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, val = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        out[key] = val
    return out


def getenv(name: str, default: str | None = None) -> str | None:
    """The environment first, then config.env: how secrets and FLUXNB_* are read."""
    if name in os.environ:
        return os.environ[name]
    return read_env_file(config_env_path()).get(name, default)


HUB_ENV_NAMES = ("HF_HOME", "HF_HUB_CACHE")


def apply_hub_env() -> None:
    """The Hugging Face client reads only the environment: copy HF_HOME / HF_HUB_CACHE from
    config.env (where runpod_setup.sh puts them) into it, unless already set. On a RunPod pod
    with neither, HF_HOME defaults to the volume, so the model is never fetched twice."""
    file_env = None
    for name in HUB_ENV_NAMES:
        if name not in os.environ:
            file_env = read_env_file(config_env_path()) if file_env is None else file_env
            if file_env.get(name):
                os.environ[name] = file_env[name]
    if "HF_HOME" not in os.environ and on_pod():
        os.environ["HF_HOME"] = str(workspace() / ".cache" / "huggingface")


