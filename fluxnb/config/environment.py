"""Where fluxnb runs and what its environment says: config.env, FLUXNB_* and secrets,
whether this is a RunPod pod, and where fluxnb's cache, logs and models live.

One rule for "are we on a pod?" (the same as runpod_setup.sh's): RUNPOD_POD_ID is set, or
the workspace folder ($FLUXNB_WORKSPACE, default /workspace) exists and is writable.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]   # the fluxnb package
SECRET_NAMES = ("ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "JUPYTER_TOKEN",
                "JUPYTER_PASSWORD", "RAY_AUTH_TOKEN")
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
    with neither, HF_HOME defaults to the volume, so the model is never fetched twice; and a
    model already downloaded elsewhere on the pod is used there (`reuse_model_cache`)."""
    file_env = None
    for name in HUB_ENV_NAMES:
        if name not in os.environ:
            file_env = read_env_file(config_env_path()) if file_env is None else file_env
            if file_env.get(name):
                os.environ[name] = file_env[name]
    if "HF_HOME" not in os.environ and on_pod():
        os.environ["HF_HOME"] = str(workspace() / ".cache" / "huggingface")
    if "HF_HUB_CACHE" not in os.environ and on_pod():
        reuse_model_cache(file_env if file_env is not None else read_env_file(config_env_path()))


# ---------------------------------------------------------------------------------------
# Coming from flux-generate.sh: its model cache, its config.env keys
# ---------------------------------------------------------------------------------------

SEED_MODEL = "black-forest-labs/FLUX.1-dev"   # what flux-generate.sh downloaded
SEED_KEYS = ("RUNPOD_HOST", "RUNPOD_PORT", "SSH_KEY", "OUTPUT_DIR_WSL", "OUTPUT_DIR_WINDOWS")
REUSED_HUB_CACHE: dict = {}   # path, instead_of, model: once reuse_model_cache chose another cache


def hub_caches(file_env: dict | None = None) -> list[Path]:
    """Every Hugging Face hub cache this machine may hold, first the one in use: HF_HUB_CACHE
    or HF_HOME from config.env, the volume's and the home folder's defaults, and any
    `<workspace>/*/hub`, `<workspace>/*/huggingface/hub` (wherever an HF_HOME pointed)."""
    file_env = read_env_file(config_env_path()) if file_env is None else file_env
    ws, home = workspace(), Path(os.path.expanduser("~"))
    found = [hf_hub_dir()]
    if file_env.get("HF_HUB_CACHE"):
        found.append(Path(file_env["HF_HUB_CACHE"]))
    if file_env.get("HF_HOME"):
        found.append(Path(file_env["HF_HOME"]) / "hub")
    found += [ws / ".cache" / "huggingface" / "hub", home / ".cache" / "huggingface" / "hub", ws]
    for pattern in ("*/hub", "*/huggingface/hub", ".cache/*/hub", "*"):
        found += sorted(p for p in ws.glob(pattern) if p.is_dir())
    out: list[Path] = []
    for p in found:
        if p not in out:
            out.append(p)
    return out


def holds_model(hub_cache: Path, repo_id: str) -> Path | None:
    """The snapshot of `repo_id` with a model_index.json in this hub cache (disk only), or None."""
    snaps = Path(hub_cache) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    try:
        return next((p for p in sorted(snaps.iterdir()) if (p / "model_index.json").is_file()), None)
    except OSError:
        return None


def reuse_model_cache(file_env: dict | None = None) -> Path | None:
    """On a pod whose hub cache lacks the model, point the Hugging Face client (HF_HUB_CACHE)
    at another cache on this machine that holds it (flux-generate.sh's, or wherever an
    HF_HOME pointed), so 32 GB are not fetched twice. Returns that cache, or None."""
    model = (getenv("FLUXNB_MODEL") or SEED_MODEL).strip()
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        model = SEED_MODEL
    caches = hub_caches(file_env)
    if holds_model(caches[0], model) is not None:
        return None
    for cache in caches[1:]:
        if holds_model(cache, model) is not None:
            os.environ["HF_HUB_CACHE"] = str(cache)
            REUSED_HUB_CACHE.update(path=str(cache), instead_of=str(caches[0]), model=model)
            return cache
    return None


def seed_keys(path: Path | None = None) -> list[str]:
    """flux-generate.sh's keys found in config.env (fluxnb reads none of them)."""
    file_env = read_env_file(config_env_path() if path is None else path)
    return [k for k in SEED_KEYS if k in file_env]


def seed_keys_note(keys: list[str]) -> str:
    return (f"config.env: {', '.join(keys)} (flux-generate.sh's) not needed: fluxnb runs on the pod itself (JupyterLab "
            "or its terminal), no SSH; `fluxnb pull URL --to DIR` brings images home instead of download.sh")


def note_seed_keys_once(show: bool = True) -> None:
    """Say `seed_keys_note` once per config.env (a marker in the cache); doctor says it every time."""
    path = config_env_path()
    try:
        keys = seed_keys(path) if path and show else []
    except (OSError, UnicodeDecodeError):  # an unreadable config.env is reported where it is read
        return
    if not keys:
        return
    digest = hashlib.sha256(f"{Path(path).resolve()}:{','.join(keys)}".encode()).hexdigest()[:16]
    mark = cache_dir() / "notes" / f"seed-keys-{digest}"
    if mark.exists():
        return
    logging.getLogger("fluxnb.config").info("note: %s", seed_keys_note(keys))
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError:
        pass


