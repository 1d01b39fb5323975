"""Prompt enhancement with provenance: Claude (the anthropic SDK) or the offline enhancer.

    enh = fluxnb.enhance("a red fox in the snow", backend="claude")
    enh.enhanced, enh.model, enh.system_prompt_sha256

No silent fallback: every Claude failure (no key, a rejected key, rate limits or overload
after the retries, a timeout, an empty, refused or over-long answer) raises a FluxnbError
naming the cause. `fallback="local"` opts in to the offline enhancer, and says so in the
result (`fallback_from`, `fallback_reason`). Answers are cached on disk, keyed by prompt,
backend, model, system prompt, temperature, max_tokens and effort. The API key comes only
from ANTHROPIC_API_KEY (environment or config.env) and never appears in a message or log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import FluxnbError
from ..files import write_atomic
from ..config.environment import PACKAGE_DIR, getenv
from ..config.settings import defaults, require_prompt

log = logging.getLogger(__name__)

BACKENDS = ("none", "local", "claude")
EFFORTS = ("low", "medium", "high", "xhigh", "max")
# The `enhance:` keys of defaults.yaml and how to read each (None allowed where marked).
_KINDS = {"system_prompt_file": ("str", True), "system_prompt": ("str", True), "base_url": ("str", True),
          "temperature": ("float", True), "max_tokens": ("int", False), "effort": ("str", True),
          "timeout_s": ("float", False), "max_retries": ("int", False), "give_up_after_s": ("float", False),
          "backoff_s": ("float", False), "backoff_max_s": ("float", False), "max_answer_tokens": ("int", False),
          "local_vocabulary_file": ("str", True)}


@dataclass
class Enhancement:
    """One enhanced prompt and where it came from."""

    prompt: str
    enhanced: str
    backend: str                          # none | local | claude (what produced `enhanced`)
    model: str | None = None              # Claude model id, or fluxnb-local-v<N>
    system_prompt_sha256: str | None = None
    elapsed_s: float = 0.0
    cached: bool = False
    fallback_from: str | None = None      # 'claude' when the local enhancer stood in (opt-in)
    fallback_reason: str | None = None    # why it had to
    seed: int | None = None               # the local enhancer's seed

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------
# Configuration: defaults.yaml `enhance:` < FLUXNB_ENHANCE_<KEY> (env, config.env) < call
# ---------------------------------------------------------------------------------------

def _coerce(key: str, value):
    kind, nullable = _KINDS[key]
    if isinstance(value, str) and value.strip().lower() in ("", "null", "none"):
        value = None
    if value is None:
        if nullable:
            return None
        raise FluxnbError(f"enhance.{key}: a value is needed", field=key, value=value)
    try:
        if isinstance(value, bool):
            raise ValueError
        out = {"str": str, "int": int, "float": float}[kind](value)
    except (TypeError, ValueError):
        raise FluxnbError(f"enhance.{key} {value!r}: expected a{'n integer' if kind == 'int' else ' number'}",
                          field=key, value=value) from None
    if (kind in ("int", "float") and out < 0) or (
            key in ("max_tokens", "timeout_s", "give_up_after_s", "max_answer_tokens") and out <= 0):
        raise FluxnbError(f"enhance.{key} {value!r}: must be positive", field=key, value=value)
    if key == "temperature" and not 0 <= out <= 1:
        raise FluxnbError(f"enhance.temperature {value!r}: must be between 0 and 1, or null (not sent)",
                          field=key, value=value)
    if key == "effort" and out not in EFFORTS:
        raise FluxnbError(f"enhance.effort {value!r}: unknown", field=key, value=value,
                          fix=f"use one of {', '.join(EFFORTS)}, or null (not sent)")
    return out


def config(**overrides) -> dict:
    """The enhancer's configuration, validated. `overrides` are `enhance:` keys."""
    unknown = [k for k in overrides if k not in _KINDS]
    if unknown:
        raise FluxnbError(f"unknown enhance option {unknown[0]!r}", field=unknown[0],
                          fix=f"valid options: {', '.join(_KINDS)}")
    raw = {k: v for k, v in (defaults().get("enhance") or {}).items() if k in _KINDS}
    base_url = getenv("ANTHROPIC_BASE_URL")
    if base_url:
        raw["base_url"] = base_url
    for key in _KINDS:
        env = getenv(f"FLUXNB_ENHANCE_{key.upper()}")
        if env is not None:
            raw[key] = env
    raw.update(overrides)
    return {key: _coerce(key, raw.get(key)) for key in _KINDS}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def system_prompt(cfg: dict | None = None) -> str:
    """The Claude system prompt: `system_prompt`, else the text of `system_prompt_file`
    (a path of yours, or relative to the fluxnb package)."""
    cfg = cfg or config()
    if cfg["system_prompt"]:
        return cfg["system_prompt"].strip()
    name = cfg["system_prompt_file"] or "prompt/data/claude_system.txt"
    path = Path(name).expanduser()
    if not path.is_absolute() and not path.is_file():
        path = PACKAGE_DIR / path
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise FluxnbError(f"enhance.system_prompt_file {name!r}: cannot read it ({e.strerror or e})",
                          field="system_prompt_file", value=name,
                          fix="point FLUXNB_ENHANCE_SYSTEM_PROMPT_FILE at a text file") from None
    if not text:
        raise FluxnbError(f"enhance.system_prompt_file {name!r}: the file is empty", field="system_prompt_file",
                          value=name)
    return text


# ---------------------------------------------------------------------------------------
# The disk cache: <cache_dir>/enhance/<key[:2]>/<key>.json, written atomically
# ---------------------------------------------------------------------------------------

def cache_key(**fields) -> str:
    return sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False))


def cache_path(key: str) -> Path:
    from ..config.environment import cache_dir

    return cache_dir() / "enhance" / key[:2] / f"{key}.json"


def cache_get(key: str, prompt: str) -> dict | None:
    path = cache_path(key)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("ignoring a damaged enhancement cache entry %s (%s)", path, e)
        return None
    if not isinstance(rec, dict) or rec.get("prompt") != prompt or not isinstance(rec.get("enhanced"), str):
        return None
    return rec


def cache_put(key: str, rec: dict) -> None:
    """Keep an answer; never one whose prompt or answer holds a secret (`logs.scrub`): the
    cache would keep the secret, and a scrubbed entry could never answer that prompt."""
    from ..logs import scrub_data

    if scrub_data(rec) != rec:
        log.debug("enhance: not cached (the prompt or the answer holds a secret)")
        return
    path = cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(rec, ensure_ascii=False, indent=1))
    except OSError as e:
        log.warning("could not cache the enhancement in %s (%s)", path.parent, e)


# ---------------------------------------------------------------------------------------
# Claude (the call itself is in claude.py)
# ---------------------------------------------------------------------------------------

def enhance_claude(prompt: str, model: str, *, cfg: dict, use_cache: bool = True) -> Enhancement:
    """Claude's enhancement of `prompt` (from the cache when it has one)."""
    t0 = time.perf_counter()
    system = system_prompt(cfg)
    sys_sha = sha256(system)
    key = cache_key(prompt=prompt, backend="claude", model=model, system_prompt_sha256=sys_sha,
                    temperature=cfg["temperature"], max_tokens=cfg["max_tokens"], effort=cfg["effort"])
    if use_cache:
        rec = cache_get(key, prompt)
        if rec is not None:
            log.debug("enhance claude: answer from the cache, no request (%s; --no-cache asks again)", cache_path(key))
            return Enhancement(prompt, rec["enhanced"], "claude", model, sys_sha,
                               round(time.perf_counter() - t0, 4), cached=True)
    from . import claude

    message = claude.call(prompt, model, system, cfg)
    text = claude.answer_text(message, model, cfg)
    elapsed = round(time.perf_counter() - t0, 4)
    cache_put(key, {"prompt": prompt, "enhanced": text, "backend": "claude", "model": model,
                    "system_prompt_sha256": sys_sha, "temperature": cfg["temperature"],
                    "max_tokens": cfg["max_tokens"], "effort": cfg["effort"], "elapsed_s": elapsed,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return Enhancement(prompt, text, "claude", model, sys_sha, elapsed)


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------

def enhance_local(prompt: str, *, seed: int | None = None, cfg: dict | None = None) -> Enhancement:
    from . import local_enhancer

    cfg = cfg or config()
    t0 = time.perf_counter()
    text = local_enhancer.expand(prompt, seed, vocabulary_file=cfg["local_vocabulary_file"])
    return Enhancement(prompt, text, "local", local_enhancer.model_id(cfg["local_vocabulary_file"]), None,
                       round(time.perf_counter() - t0, 4), seed=0 if seed is None else int(seed))


def _choice(name: str, value, allowed) -> str:
    v = str(value or "none").strip().lower()
    if v not in allowed:
        raise FluxnbError(f"{name} {value!r}: unknown", field=name, value=value, fix=f"use one of {', '.join(allowed)}")
    return v


def enhance(prompt: str, backend: str = "none", *, model: str | None = None, seed: int | None = None,
            use_cache: bool = True, fallback: str = "none", **options) -> Enhancement:
    """Enhance `prompt` with `backend` (none | local | claude).

    `model`: the Claude model id (default: settings' enhance_model). `seed`: the local
    enhancer's seed. `use_cache=False` asks Claude again (and refreshes the cache).
    `fallback="local"`: on a Claude failure, use the local enhancer and record why.
    `options`: any key of the `enhance:` section of defaults.yaml (timeout_s, base_url...)."""
    # 1. Validate.
    backend = _choice("enhance", backend, BACKENDS)
    fallback = _choice("enhance_fallback", fallback, ("none", "local"))
    require_prompt(prompt)
    if backend == "none":
        return Enhancement(prompt, prompt, "none", seed=seed)
    cfg = config(**options)
    if backend == "local":
        return enhance_local(prompt, seed=seed, cfg=cfg)
    model = (model or defaults()["settings"]["enhance_model"]).strip()
    if not model:
        raise FluxnbError("enhance_model '': no model id", field="enhance_model", fix="e.g. claude-sonnet-5-5")

    # 2. Ask Claude; fall back to the local enhancer only when asked to.
    try:
        return enhance_claude(prompt, model, cfg=cfg, use_cache=use_cache)
    except FluxnbError as e:
        if fallback != "local":
            raise
        log.warning("%s -- using the local enhancer instead (enhance_fallback local)", e)
        enh = enhance_local(prompt, seed=seed, cfg=cfg)
        enh.fallback_from, enh.fallback_reason = "claude", str(e)
        return enh
