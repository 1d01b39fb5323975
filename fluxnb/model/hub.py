"""The Hugging Face hub: naming a model, finding the token, downloading, and one mapping
of the hub client's errors to messages that name the cause and the fix (never the token).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..config.environment import config_env_path, on_pod, read_env_file
from ..config.settings import normalize_model
from ..errors import FluxnbError, RuntimeFailure

# Only the diffusers-format folders: FLUX.1-dev also carries a 24 GB single-file checkpoint.
ALLOW_PATTERNS = ["model_index.json", "scheduler/*", "text_encoder/*", "text_encoder_2/*", "tokenizer/*",
                  "tokenizer_2/*", "transformer/*", "vae/*"]
TOKEN_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN")  # the last: flux-generate.sh's
TOKENS_URL = "https://huggingface.co/settings/tokens"
SET_TOKEN = (f"create a read token at {TOKENS_URL} and put HF_TOKEN=... in config.env or the environment "
             "(or run `hf auth login`)")


# ---------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------

def looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or os.sep in model and not looks_like_hub_id(model)


def looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not Path(model).exists()


def display_name(model: str) -> str:
    return "tiny" if model == "tiny" else Path(model.rstrip("/")).name


# ---------------------------------------------------------------------------------------
# The token and the cache
# ---------------------------------------------------------------------------------------

def find_token() -> tuple[str | None, str]:
    """(token, where it came from): TOKEN_NAMES in the environment, then in config.env, then
    the token files (`token_files`). The token itself is never logged."""
    for name in TOKEN_NAMES:
        value = os.environ.get(name, "").strip()
        if value:
            return value, f"the environment ({name})"
    path = config_env_path()
    file_env = read_env_file(path)
    for name in TOKEN_NAMES:
        value = file_env.get(name, "").strip()
        if value:
            return value, f"config.env ({path}: {name})"
    for tok_path in token_files():
        try:
            value = tok_path.read_text(encoding="utf-8").strip()
        except OSError:
            value = ""
        if value:
            return value, f"the Hugging Face token file ({tok_path})"
    return None, ""


def token_file_path() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_TOKEN_PATH)


def token_files() -> list[Path]:
    """The client's token file ($HF_TOKEN_PATH, else $HF_HOME/token) and, on a pod, where
    flux-generate.sh and a plain `hf auth login` put it (~/.cache/huggingface/token), which
    the client misses once HF_HOME points at the volume."""
    files = [token_file_path()]
    seed = Path(os.path.expanduser("~")) / ".cache" / "huggingface" / "token"
    if on_pod() and seed not in files:
        files.append(seed)
    return files


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str) -> Path:
    return hub_cache() / ("models--" + repo_id.replace("/", "--"))


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds `path` (or would, once made)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def gb(n: int) -> str:
    """Bytes as text: 31.4 GB, 246 MB, 12 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------------------------------
# Hub errors -> messages that say what to do
# ---------------------------------------------------------------------------------------

def hub_error(e: Exception, repo_id: str, token_source: str) -> FluxnbError:
    """A hub client exception as a FluxnbError naming the cause and the fix (never the token)."""
    from huggingface_hub import errors as hf

    status = getattr(getattr(e, "response", None), "status_code", None)
    page = f"https://huggingface.co/{repo_id}"
    set_token = SET_TOKEN
    if isinstance(e, hf.LocalEntryNotFoundError):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        return FluxnbError(f"model {repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached"
                           + (" (HF_HUB_OFFLINE is set)" if offline else ""), field="model", value=repo_id,
                           fix="download it once with network access (runpod_setup.sh does), or use --model tiny")
    if isinstance(e, hf.GatedRepoError) or (status in (401, 403) and "gated" in str(e).lower()):
        if not token_source:
            return FluxnbError(f"model {repo_id!r} is gated and no Hugging Face token was found (looked in "
                               f"{', '.join(TOKEN_NAMES)}, config.env and the token file)", field="HF_TOKEN",
                               value=repo_id, fix=f"accept the licence at {page}, then {set_token}")
        if status == 401:
            return FluxnbError(f"model {repo_id!r} is gated and the hub refused the token from {token_source} (401)",
                               field="HF_TOKEN", value=repo_id,
                               fix=f"accept the licence at {page} with the token's account, or {set_token}")
        return FluxnbError(f"model {repo_id!r} is gated and the account of the token from {token_source} has not "
                           f"accepted its licence ({status or 403})", field="HF_TOKEN", value=repo_id,
                           fix=f"log in at {page} with that account, accept the licence (access is granted at "
                               "once), then rerun")
    if status == 401 and not isinstance(e, hf.RepositoryNotFoundError):
        return FluxnbError(f"model {repo_id!r}: the hub rejected the token from {token_source or 'nowhere'} as "
                           "invalid (401)", field="HF_TOKEN", value=repo_id, fix=set_token)
    if isinstance(e, hf.RepositoryNotFoundError):
        hint = "" if token_source else " (a private or gated model needs a token)"
        return FluxnbError(f"model {repo_id!r}: no such model on the Hugging Face hub{hint}", field="model",
                           value=repo_id, fix="check the id (e.g. black-forest-labs/FLUX.1-dev)"
                                              + ("" if token_source else f"; for a gated model {set_token}"))
    if status == 403:
        return FluxnbError(f"model {repo_id!r}: the hub refused access with the token from {token_source} (403)",
                           field="HF_TOKEN", value=repo_id,
                           fix=f"use a token with read access to public gated repos, and accept the licence at {page}")
    if isinstance(e, OSError) and getattr(e, "errno", None) == errno.ENOSPC:
        return RuntimeFailure(f"model {repo_id!r}: the disk filled up while downloading into {hub_cache()}",
                              field="model", value=repo_id, status="disk_full",
                              fix="free space (FLUX.1-dev needs about 35 GB) and rerun: the download resumes")
    if isinstance(e, hf.OfflineModeIsEnabled) or "offline" in type(e).__name__.lower():
        return RuntimeFailure(f"model {repo_id!r}: HF_HUB_OFFLINE is set, so nothing can be downloaded",
                              field="model", value=repo_id, fix="unset HF_HUB_OFFLINE and rerun")
    if not isinstance(e, (hf.HfHubHTTPError, OSError, ConnectionError, TimeoutError)):
        raise e  # not the hub's: a bug, not a message
    what = f"{type(e).__name__}" + (f" ({status})" if status else "")
    return RuntimeFailure(f"model {repo_id!r}: the hub could not be reached or failed: {what}", field="model",
                          value=repo_id, fix="check the network and rerun: the download resumes where it stopped")



# ---------------------------------------------------------------------------------------
# Resolving and downloading
# ---------------------------------------------------------------------------------------

def resolve_model(model: str) -> str:
    """A local folder holding the diffusers-format pipeline for `model` (hub id, folder or
    `tiny`), downloading from the hub into the cache when allowed."""
    model = normalize_model(model)
    if model == "tiny":
        from .testmodel import ensure_tiny
        return str(ensure_tiny())
    p = Path(os.path.expanduser(model))
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise FluxnbError(f"model {model!r}: the folder has no model_index.json, so it is not a diffusers pipeline",
                              field="model", value=model,
                              fix="point --model at a folder written by save_pretrained or fluxnb model build")
        return str(p)
    if looks_like_path(model) or not looks_like_hub_id(model):
        raise FluxnbError(f"model {model!r}: no such folder, and not a hub id (owner/name)", field="model", value=model,
                          fix="use a hub id such as black-forest-labs/FLUX.1-dev, an existing folder, or tiny")
    return download(model)


def download(repo_id: str, *, local_files_only: bool | None = None) -> str:
    """Fetch (or find in the cache) the diffusers folders of a hub model. Errors name the
    cause and the fix (`hub_error`); the token is never shown."""
    from huggingface_hub import snapshot_download

    token, source = find_token()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return snapshot_download(repo_id, allow_patterns=ALLOW_PATTERNS, token=token,
                                 local_files_only=offline if local_files_only is None else local_files_only)
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one clear error
        raise hub_error(e, repo_id, source) from None


# ---------------------------------------------------------------------------------------
# Access, without downloading (fluxnb doctor --hub)
# ---------------------------------------------------------------------------------------

def whoami(repo_id: str) -> tuple[str, str]:
    """(account name, token source) of the token fluxnb finds, asked of the hub; a missing
    or invalid token raises hub_error's message for `repo_id` (the same as `model fetch`'s)."""
    from huggingface_hub import HfApi

    token, source = find_token()
    if not token:
        raise FluxnbError(f"no Hugging Face token found (looked in {', '.join(TOKEN_NAMES)}, config.env and "
                          f"{', '.join(map(str, token_files()))})", field="HF_TOKEN", fix=SET_TOKEN)
    try:
        who = HfApi().whoami(token=token)
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one clear error
        raise hub_error(e, repo_id, source) from None
    return str(who.get("name") or "?"), source


def check_access(repo_id: str) -> str:
    """May the token's account read `repo_id`? The hub's auth-check (gated: the licence
    accepted) and a HEAD of model_index.json; nothing is downloaded. Returns the revision;
    a refusal raises hub_error's message."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    token, source = find_token()
    auth = token if token else False
    try:
        HfApi().auth_check(repo_id, token=auth)
        meta = get_hf_file_metadata(hf_hub_url(repo_id, "model_index.json"), token=auth)
    except Exception as e:  # noqa: BLE001
        raise hub_error(e, repo_id, source if token else "") from None
    return str(meta.commit_hash or "")
