"""`fluxnb doctor`: is this machine ready to make images? One row per thing that matters,
each failing row with how to fix it. Offline: it reads the disk and asks nobody.
Secrets are reported present or missing, never shown."""

from __future__ import annotations

import logging
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

STATUSES = ("ok", "info", "warn", "fail")
MODEL_NEED_BYTES = 35 * 10**9   # FLUX.1-dev's folders plus headroom
MIN_FREE_BYTES = 2 * 2**30      # room for images and logs


@dataclass
class Check:
    name: str
    status: str       # ok | info | warn | fail
    value: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _settings():
    from ..config.settings import resolve

    return resolve()


def _is_tiny(model: str) -> bool:
    return model == "tiny"


def _is_hub_id(model: str) -> bool:
    from ..model.hub import looks_like_hub_id

    return looks_like_hub_id(model)


# ---------------------------------------------------------------------------------------
# The checks (each returns one row; an unexpected error becomes a failing row)
# ---------------------------------------------------------------------------------------

def check_python(s) -> Check:
    return Check("python", "ok", f"{platform.python_version()} ({sys.executable})")


def check_gpu(s) -> Check:
    try:
        import torch
    except ImportError:
        return Check("gpu", "fail", "torch is not installed", "rerun ./runpod_setup.sh")
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        more = f" (+{torch.cuda.device_count() - 1} more)" if torch.cuda.device_count() > 1 else ""
        return Check("gpu", "ok", f"{name}{more}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB VRAM free")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Check("gpu", "ok", "Apple MPS (unified memory)")
    tiny = _is_tiny(s.model)
    return Check("gpu", "warn" if tiny else "fail", "none: CPU only",
                 "fine for the tiny test model; for FLUX.1-dev rent a GPU pod (24 GB RTX 4090 or 80 GB H100)"
                 if tiny else f"model {s.model} needs a CUDA GPU: rent a GPU pod (24 GB RTX 4090 or 80 GB H100), "
                              "or use --model tiny")


def check_versions(s) -> list[Check]:
    rows = []
    for pkg in ("torch", "diffusers", "transformers"):
        try:
            version = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            rows.append(Check(pkg, "fail", "not installed", "rerun ./runpod_setup.sh"))
            continue
        if pkg == "torch":
            try:
                import torch
                version += f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU build)"
            except ImportError:
                pass
        rows.append(Check(pkg, "ok", version))
    return rows


def check_offload(s) -> Check:
    from ..model.pipeline import pick_device, pick_offload

    device = pick_device("auto" if s.device == "auto" else s.device)
    offload, precision, note = pick_offload("auto", device, s.precision)
    value = f"auto -> {offload} ({precision}) on {device}"
    if note:
        value += f": {note.removeprefix('offload auto: ')}"
    if s.offload != "auto":
        value += f"; configured: {s.offload}"
    return Check("offload", "info", value)


def check_hf_token(s) -> Check:
    from ..model.hub import TOKENS_URL, find_token

    token, source = find_token()
    if token:
        return Check("hf_token", "ok", f"present, from {source} (not shown)")
    needed = _is_hub_id(s.model)
    return Check("hf_token", "fail" if needed else "warn", "missing",
                 f"accept the licence at https://huggingface.co/black-forest-labs/FLUX.1-dev, create a read token at "
                 f"{TOKENS_URL} and put HF_TOKEN=... in config.env")


def model_cached(model: str) -> tuple[bool, str]:
    """(cached, description) for a hub id, from the disk only."""
    from ..model.hub import gb
    from ..model.fetch import verified_snapshot
    from ..model.hub import ALLOW_PATTERNS

    done = verified_snapshot(model)
    if done is not None:
        return True, f"downloaded and verified ({gb(done.bytes)}, {done.path})" + _reused_note()
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(model, allow_patterns=ALLOW_PATTERNS, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss means "not here"
        return False, "not downloaded"
    return True, f"in the Hugging Face cache, not verified by fluxnb ({path})" + _reused_note()


def _reused_note() -> str:
    from ..config.environment import REUSED_HUB_CACHE

    if not REUSED_HUB_CACHE:
        return ""
    return f"; reused from {REUSED_HUB_CACHE['path']} ({REUSED_HUB_CACHE['instead_of']} lacked it)"


def check_model(s) -> Check:
    model = s.model
    if _is_tiny(model):
        return Check("model", "warn", "tiny: the random-weight test model (its images are noise)",
                     "with a GPU and HF_TOKEN, ./runpod_setup.sh fetches FLUX.1-dev and switches to it")
    if not _is_hub_id(model):
        ok = (Path(model).expanduser() / "model_index.json").is_file()
        return Check("model", "ok" if ok else "fail", f"{model} ({'a local pipeline' if ok else 'no model_index.json'})",
                     "" if ok else "point FLUXNB_MODEL / --model at a folder written by save_pretrained")
    cached, text = model_cached(model)
    return Check("model", "ok" if cached else "fail", f"{model}: {text}",
                 "" if cached else f"fluxnb model fetch {model}  (or ./runpod_setup.sh)")


def check_disk(s) -> Check:
    from ..config.environment import on_pod, workspace
    from ..model.hub import free_bytes, gb

    where = workspace() if on_pod() and workspace().is_dir() else Path(s.output_dir).expanduser().absolute()
    free = free_bytes(where)
    value = f"{gb(free)} free on {where}"
    if free < MIN_FREE_BYTES:
        return Check("disk", "fail", value, f"free space on {where}: images, logs and exports need room")
    if _is_hub_id(s.model) and not model_cached(s.model)[0] and free_bytes(_hub_cache()) < MODEL_NEED_BYTES:
        return Check("disk", "fail", value + f"; {gb(free_bytes(_hub_cache()))} where the model goes",
                     f"FLUX.1-dev needs about 35 GB in {_hub_cache()}: free space or use a bigger volume")
    return Check("disk", "ok", value)


def _hub_cache() -> Path:
    from ..model.hub import hub_cache

    return hub_cache()


def check_anthropic(s) -> Check:
    from ..config.environment import getenv

    if (getenv("ANTHROPIC_API_KEY") or "").strip():
        return Check("anthropic_key", "ok", "present (not shown)")
    return Check("anthropic_key", "fail" if s.enhance == "claude" else "warn", "missing",
                 "only --enhance claude needs it: put ANTHROPIC_API_KEY=... in config.env or the environment")


def check_lab(s) -> Check:
    from . import lab

    st = lab.status()
    if st["running"]:
        return Check("jupyterlab", "ok" if st.get("answers") else "warn",
                     f"running (pid {st['pid']}): {st['url']}/lab" + ("" if st.get("answers") else ", not answering"),
                     "" if st.get("answers") else "restart it: fluxnb lab --stop, then fluxnb lab --background")
    return Check("jupyterlab", "warn", "not running", "start it: fluxnb lab --background (or ./runpod_setup.sh)")


def check_config_env(s) -> Check:
    from ..config.environment import SECRET_NAMES, config_env_path, read_env_file, seed_keys, seed_keys_note

    path = config_env_path()
    if path is None:
        return Check("config.env", "info", "none (settings and keys come from the environment only)",
                     "copy .env.example to config.env to keep keys and settings")
    has_secret = any(v.strip() for k, v in read_env_file(path).items() if k in SECRET_NAMES)
    if has_secret and path.stat().st_mode & 0o077:
        return Check("config.env", "warn", f"{path}: holds keys and others can read it", f"chmod 600 {path}")
    old = seed_keys(path)
    if old:  # flux-generate.sh's keys: harmless, said
        return Check("config.env", "info", f"{path} (with {len(old)} key(s) fluxnb does not read)", seed_keys_note(old))
    return Check("config.env", "ok", str(path))


# ---------------------------------------------------------------------------------------
# --hub: asks the Hugging Face hub (the only checks that use the network)
# ---------------------------------------------------------------------------------------

def check_hub(s) -> list[Check]:
    """The token valid (whoami) and the configured model readable with it (licence accepted),
    without downloading the weights; the messages are `model fetch`'s."""
    from ..config.environment import SEED_MODEL
    from ..errors import FluxnbError
    from ..model.hub import check_access, find_token, whoami

    repo = s.model if _is_hub_id(s.model) else SEED_MODEL
    try:
        user, source = whoami(repo)
        token = Check("hub_token", "ok", f"valid: account {user}, token from {source} (not shown)")
    except FluxnbError as e:
        token = Check("hub_token", "fail" if _is_hub_id(s.model) else "warn", *_message_and_fix(e))
    if not _is_hub_id(s.model):
        return [token, Check("hub_access", "info", f"{s.model}: not a hub model, nothing to check")]
    if token.status != "ok" and find_token()[0]:  # a refused token or no hub: asking again says the same
        return [token, Check("hub_access", "fail", f"{repo}: not asked (the hub_token row says why)")]
    try:
        revision = check_access(repo)
    except FluxnbError as e:
        return [token, Check("hub_access", "fail", *_message_and_fix(e))]
    return [token, Check("hub_access", "ok", f"{repo}: licence accepted, model_index.json readable "
                                             f"(revision {revision[:12] or '?'}); nothing downloaded")]


CHECKS = (check_python, check_gpu, check_versions, check_offload, check_hf_token, check_model, check_disk,
          check_anthropic, check_lab, check_config_env)


def _message_and_fix(e) -> tuple[str, str]:
    text, fix = str(e), e.fix or ""
    return (text.removesuffix(f"; {fix}") if fix else text), fix


def run_checks(*, hub: bool = False) -> list[Check]:
    """Every row, in order (`hub`: also ask the hub, `check_hub`). A check that breaks becomes
    a failing row; doctor itself does not."""
    try:
        s = _settings()
    except Exception as e:  # noqa: BLE001 - a bad setting is itself the finding
        return [Check("settings", "fail", str(e), "fix the setting named (fluxnb config shows where it comes from)")]
    rows: list[Check] = []
    for fn in CHECKS + ((check_hub,) if hub else ()):
        name = fn.__name__.removeprefix("check_")
        try:
            out = fn(s)
        except Exception as e:  # noqa: BLE001
            log.debug("doctor: %s failed", name, exc_info=True)
            out = Check(name, "fail", f"could not check: {type(e).__name__}: {e}", "run fluxnb -v doctor for details")
        rows.extend(out if isinstance(out, list) else [out])
    from ..logs import scrub

    for r in rows:  # secrets never shown, whatever a message carried
        r.value, r.fix = scrub(r.value), scrub(r.fix)
    return rows


def ready(checks: list[Check]) -> bool:
    return not any(c.status == "fail" for c in checks)


def to_json(checks: list[Check]) -> dict:
    return {"ready": ready(checks), "checks": [c.to_dict() for c in checks]}


def table(checks: list[Check], *, colour: bool = False) -> str:
    """The readiness table: status, name, value; a failing or warning row's fix under it."""
    marks = {"ok": "ok", "info": "--", "warn": "WARN", "fail": "FAIL"}
    colours = {"ok": "\033[32m", "info": "\033[2m", "warn": "\033[33m", "fail": "\033[31m"}
    width = max(len(c.name) for c in checks)
    cols = shutil.get_terminal_size((100, 20)).columns
    lines = []
    for c in checks:
        mark = f"{marks[c.status]:<4}"
        if colour:
            mark = f"{colours[c.status]}{mark}\033[0m"
        lines.append(f"{mark}  {c.name:<{width}}  {c.value}")
        if c.fix and c.status in ("warn", "fail", "info"):
            lines.append(f"{'':4}  {'':<{width}}  -> {c.fix}"[: max(cols, 200)])
    fails = sum(c.status == "fail" for c in checks)
    lines.append("")
    lines.append("ready" if not fails else f"not ready: {fails} row(s) marked FAIL")
    return "\n".join(lines)
