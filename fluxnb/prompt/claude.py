"""The Claude backend: one Messages API call (the anthropic SDK) with explicit timeouts,
retries with backoff and a time budget, and clear errors for every way it can fail.

The key is read only from ANTHROPIC_API_KEY (environment or config.env); messages and
logs never contain it (API error texts are scrubbed before they are shown).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time

from ..errors import FluxnbError, RuntimeFailure
from ..config.environment import getenv

log = logging.getLogger(__name__)

KEY_NAME = "ANTHROPIC_API_KEY"
DEFAULT_BASE_URL = "https://api.anthropic.com"
_REFUSAL = re.compile(r"^(refused\.?|i can(?:no|')t\b|i cannot\b|i won't\b|i will not\b|i'm sorry\b|i am sorry\b|"
                      r"sorry, i\b|i'm not able\b|i am not able\b|i'm unable\b|i am unable\b)", re.IGNORECASE)


def _api_key() -> str:
    key = (getenv(KEY_NAME) or "").strip()
    if not key:
        raise FluxnbError(f"enhance claude: no API key: {KEY_NAME} is not set", field=KEY_NAME,
                          fix=f"export {KEY_NAME}=... or put {KEY_NAME}=... in config.env (it is git-ignored); "
                              "or use --enhance local")
    return key


def _short(text, n: int = 200) -> str:
    from ..logs import scrub

    text = scrub(" ".join(str(text).split()))
    return text if len(text) <= n else text[: n - 1] + "…"


def _retry_after(exc) -> float | None:
    """What the server asks us to wait (retry-after-ms, retry-after in seconds)."""
    resp = getattr(exc, "response", None)
    if resp is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(resp.headers.get(name)) * scale)
        except (TypeError, ValueError):
            continue
    return None


def _retryable(exc) -> bool:
    import anthropic

    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, anthropic.APIStatusError):
        if exc.response.headers.get("x-should-retry") == "false":
            return False
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _cause(exc, cfg: dict, timeout: float) -> str:
    """The cause of a (retryable) failure, in words."""
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return f"no answer within {timeout:g} s (timeout; enhance.timeout_s is {cfg['timeout_s']:g})"
    if isinstance(exc, anthropic.APIConnectionError):
        return f"cannot reach {cfg['base_url'] or DEFAULT_BASE_URL} ({_short(exc.__cause__ or exc, 120)})"
    code = exc.status_code
    label = {429: "rate limited", 529: "overloaded", 408: "request timeout", 409: "conflict"}.get(code, "server error")
    detail = getattr(exc, "api_message", None)
    return f"{label} (HTTP {code}{': ' + _short(detail, 120) if detail else ''})"


def _status_error(exc, model: str) -> FluxnbError:
    """A non-retryable HTTP error as a clear FluxnbError."""
    code = exc.status_code
    detail = _short(getattr(exc, "api_message", None) or exc.message, 200)
    where = f"enhance claude ({model}): "
    if code == 401:
        return FluxnbError(where + f"the API key in {KEY_NAME} was rejected (HTTP 401: {detail})", field=KEY_NAME,
                           fix=f"check {KEY_NAME} (a key from console.anthropic.com), or use --enhance local")
    if code == 403:
        return FluxnbError(where + f"permission denied (HTTP 403: {detail})", field=KEY_NAME,
                           fix=f"the key in {KEY_NAME} has no access to this model or API: check its workspace, "
                               "or use another --enhance-model")
    if code == 404:
        return FluxnbError(where + f"model {model!r} not found (HTTP 404: {detail})", field="enhance_model",
                           value=model, fix="set --enhance-model to a current model id, e.g. claude-sonnet-5-5")
    if code == 400 and "temperature" in detail.lower():
        return FluxnbError(where + f"the model does not accept a temperature (HTTP 400: {detail})",
                           field="temperature", fix="set FLUXNB_ENHANCE_TEMPERATURE=null (not sent)")
    return FluxnbError(where + f"the API refused the request (HTTP {code}: {detail})", field="enhance",
                       fix="check --enhance-model and the FLUXNB_ENHANCE_* settings")


def _request(prompt: str, model: str, system: str, cfg: dict) -> dict:
    kwargs = {"model": model, "max_tokens": cfg["max_tokens"], "system": system,
              "messages": [{"role": "user", "content": prompt}]}
    if cfg["effort"]:
        kwargs["output_config"] = {"effort": cfg["effort"]}
    if cfg["temperature"] is not None:  # not a parameter of the SDK 2.x: sent as-is when configured
        kwargs["extra_body"] = {"temperature": cfg["temperature"]}
    return kwargs


def call(prompt: str, model: str, system: str, cfg: dict):
    """One Messages API call with explicit timeouts and retries (429, 408/409, 5xx, 529,
    network errors) with exponential backoff, giving up within `give_up_after_s`. The
    request and, on success, the raw answer are logged at DEBUG (`fluxnb enhance --verbose`)."""
    import anthropic

    _deprecation_warning(model)
    base_url = cfg["base_url"] or DEFAULT_BASE_URL
    client = anthropic.Anthropic(api_key=_api_key(), base_url=base_url, max_retries=0, timeout=cfg["timeout_s"])
    kwargs = _request(prompt, model, system, cfg)
    log.debug("%s", describe_request(kwargs, base_url, cfg))
    start = time.monotonic()
    deadline = start + cfg["give_up_after_s"]
    attempt = 0
    tries: list[str] = []
    try:
        while True:
            # 1. One attempt, never past the deadline.
            attempt += 1
            timeout = min(cfg["timeout_s"], max(0.05, deadline - time.monotonic()))
            t0 = time.monotonic()
            try:
                message = client.messages.create(**kwargs, timeout=timeout)
                tries.append(f"answered in {time.monotonic() - t0:.2f} s")
                log.debug("%s", describe_answer(message, tries, time.monotonic() - start))
                return message
            except anthropic.APIStatusError as e:
                if not _retryable(e):
                    raise _status_error(e, model) from None
                last, cause = e, _cause(e, cfg, timeout)
            except anthropic.APIConnectionError as e:
                last, cause = e, _cause(e, cfg, timeout)
            except anthropic.AnthropicError as e:
                raise RuntimeFailure(f"enhance claude ({model}): {type(e).__name__}: {_short(e)}",
                                     field="enhance") from None
            # 2. Wait (as the server asks, else exponential backoff with jitter), or give up.
            asked = _retry_after(last)
            wait = asked if asked is not None else cfg["backoff_s"] * 2 ** (attempt - 1) * random.uniform(0.75, 1.0)
            wait = min(wait, cfg["backoff_max_s"]) if asked is None else wait
            left = deadline - time.monotonic()
            tries.append(f"{cause} after {time.monotonic() - t0:.2f} s")
            if attempt > cfg["max_retries"] or wait >= left or left <= 0.05:
                raise _give_up(model, cause, attempt, time.monotonic() - start, cfg, asked if wait >= left else None)
            log.info("enhance claude: %s; retrying in %.1f s (attempt %d of %d)", cause, wait, attempt + 1,
                     cfg["max_retries"] + 1)
            tries[-1] += f", waited {wait:.2f} s"
            time.sleep(wait)
    finally:
        client.close()


def describe_request(kwargs: dict, base_url: str, cfg: dict) -> str:
    """The request as `fluxnb enhance --verbose` shows it (the key is never part of it)."""
    system = kwargs["system"]
    extra = kwargs.get("extra_body") or {}
    effort = (kwargs.get("output_config") or {}).get("effort")
    lines = [f"enhance claude: request to {base_url.rstrip('/')}/v1/messages",
             f"  model:          {kwargs['model']}",
             f"  max_tokens:     {kwargs['max_tokens']}",
             f"  temperature:    {extra['temperature'] if 'temperature' in extra else 'not sent (the API default)'}",
             f"  effort:         {effort or 'not sent'}",
             f"  limits:         {cfg['timeout_s']:g} s per attempt, {cfg['max_retries']} retries, give up after "
             f"{cfg['give_up_after_s']:g} s",
             f"  system prompt:  {len(system)} characters, sha256 {hashlib.sha256(system.encode()).hexdigest()}"]
    lines += [f"    | {line}" for line in system.splitlines()]
    lines.append(f"  user message:   {kwargs['messages'][0]['content']}")
    return "\n".join(lines)


def describe_answer(message, tries: list[str], elapsed: float) -> str:
    """Claude's raw answer, before any cleaning, with the attempts and timings."""
    usage = getattr(message, "usage", None)
    blocks = list(getattr(message, "content", None) or [])
    text = "".join(getattr(b, "text", "") for b in blocks if getattr(b, "type", None) == "text")
    lines = [f"enhance claude: answer in {elapsed:.2f} s after {len(tries)} attempt{'s' if len(tries) > 1 else ''}"]
    lines += [f"  attempt {n}:      {t}" for n, t in enumerate(tries, 1)]
    lines += [f"  id:             {getattr(message, 'id', '?')} (model {getattr(message, 'model', '?')})",
              f"  stop reason:    {getattr(message, 'stop_reason', None)}",
              f"  usage:          {getattr(usage, 'input_tokens', '?')} input tokens, "
              f"{getattr(usage, 'output_tokens', '?')} output tokens",
              f"  content:        {len(blocks)} block(s): {', '.join(str(getattr(b, 'type', '?')) for b in blocks)}",
              f"  text:           {text!r}"]
    return "\n".join(lines)


def _give_up(model, cause, attempts, elapsed, cfg, asked) -> RuntimeFailure:
    why = (f"at once: the server asked to wait {asked:g} s, beyond the time limit" if asked is not None
           else f"after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f} s")
    return RuntimeFailure(
        f"enhance claude ({model}): {cause}; gave up {why} (max_retries {cfg['max_retries']}, "
        f"give_up_after_s {cfg['give_up_after_s']:g})", field="enhance",
        fix="try again later, raise FLUXNB_ENHANCE_GIVE_UP_AFTER_S, or use --enhance local "
            "(or --enhance-fallback local)")


def _deprecation_warning(model: str) -> None:
    try:
        from anthropic._data.deprecated_models import DEPRECATED_MODELS
    except ImportError:
        return
    if model in DEPRECATED_MODELS:
        log.warning("enhance_model %s is deprecated and retires on %s: choose a current model with --enhance-model",
                    model, DEPRECATED_MODELS[model])


def answer_text(message, model: str, cfg: dict) -> str:
    """The answer's text, cleaned; raises on an empty, refused or over-long answer."""
    from .tokens import count_clip

    where = f"enhance claude ({model}): "
    stop = getattr(message, "stop_reason", None)
    parts = [getattr(b, "text", "") for b in (message.content or []) if getattr(b, "type", None) == "text"]
    text = " ".join(" ".join(parts).split()).strip().strip("\"'`“”").strip()
    text = re.sub(r"^(enhanced\s+)?prompt\s*:\s*", "", text, flags=re.IGNORECASE)
    fix = "rephrase the prompt, or use --enhance local (or none)"
    if stop == "refusal" or _REFUSAL.match(text):
        raise RuntimeFailure(where + f"Claude declined to enhance this prompt (stop_reason {stop})",
                             field="enhance", fix=fix, status="enhance_refused")
    if not text:
        extra = f": the {cfg['max_tokens']}-token budget ran out first" if stop == "max_tokens" else ""
        raise RuntimeFailure(where + f"empty answer (stop_reason {stop}{extra})", field="enhance",
                             fix="try again, raise FLUXNB_ENHANCE_MAX_TOKENS, or use --enhance local")
    if stop in ("max_tokens", "model_context_window_exceeded"):
        raise RuntimeFailure(where + f"over-long answer: cut off at max_tokens {cfg['max_tokens']} "
                                     f"(stop_reason {stop}): {_short(text, 80)!r}", field="enhance",
                             fix="raise FLUXNB_ENHANCE_MAX_TOKENS or ask for less in the system prompt")
    n = count_clip(text)
    if n > cfg["max_answer_tokens"]:
        raise RuntimeFailure(where + f"over-long answer: {n} CLIP tokens, more than max_answer_tokens "
                                     f"{cfg['max_answer_tokens']}", field="enhance",
                             fix="check the system prompt's length budget, or raise FLUXNB_ENHANCE_MAX_ANSWER_TOKENS")
    if stop not in (None, "end_turn", "stop_sequence"):
        raise RuntimeFailure(where + f"unexpected stop_reason {stop!r}", field="enhance", fix=fix)
    return text
