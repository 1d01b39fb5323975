"""Prompt enhancement: the Claude backend against a local Messages API server (the real
anthropic SDK over real HTTP on 127.0.0.1), the offline enhancer, the cache, `fluxnb
enhance`, and provenance through `fluxnb generate`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxnb.prompt import enhancer, local_enhancer, tokens
from fluxnb.front.cli import main
from fluxnb.errors import FluxnbError, RuntimeFailure

SYSTEM_FILE = Path(enhancer.__file__).parent / "data" / "claude_system.txt"
ANSWER = ("A red fox curled in fresh snow at the edge of a birch forest, frost on its whiskers, low winter sun "
          "raking across the drifts, shallow depth of field, 85mm lens, muted blues and warm orange fur")


# ---------------------------------------------------------------------------------------
# A Messages API server on 127.0.0.1
# ---------------------------------------------------------------------------------------

def message(text=ANSWER, stop_reason="end_turn", content=None):
    blocks = [{"type": "text", "text": text}] if content is None else content
    return 200, {}, {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
                     "content": blocks, "stop_reason": stop_reason, "stop_sequence": None,
                     "usage": {"input_tokens": 12, "output_tokens": 40}}


def error(status, kind, text, headers=None):
    return status, dict(headers or {}), {"type": "error", "error": {"type": kind, "message": text}}


DROP = (None, {}, None)  # the server closes the connection without answering


class FakeClaude:
    """Answers POST /v1/messages from a script (the last entry repeats); records requests."""

    def __init__(self):
        self.script = [message()]
        self.requests: list[dict] = []
        self.delay = 0.0
        self.stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                     "t": time.monotonic()})
                status, headers, payload = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                if fake.delay and fake.stop.wait(fake.delay):
                    return
                if status is None:  # DROP: the connection closes without an answer
                    self.close_connection = True
                    return
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def bodies(self):
        return [r["body"] for r in self.requests]


@pytest.fixture
def key():
    return "sk-ant-test-" + secrets.token_hex(16)


@pytest.fixture
def claude(monkeypatch, key):
    """A running fake server; the enhancer points at it with a test key and short waits."""
    fake = FakeClaude()
    fake.thread.start()
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("FLUXNB_ENHANCE_BASE_URL", fake.url)
    monkeypatch.setenv("FLUXNB_ENHANCE_BACKOFF_S", "0.05")
    monkeypatch.setenv("FLUXNB_ENHANCE_GIVE_UP_AFTER_S", "5")
    yield fake
    fake.stop.set()
    fake.server.shutdown()
    fake.server.server_close()




def all_text_under(folder) -> str:
    folder = Path(folder)
    if not folder.exists():
        return ""
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------
# Claude: success and what the server received
# ---------------------------------------------------------------------------------------

def test_default_model_is_current():
    from anthropic._data.deprecated_models import DEPRECATED_MODELS

    from fluxnb.config.settings import defaults, resolve

    model = defaults()["settings"]["enhance_model"]
    assert model and model not in DEPRECATED_MODELS
    assert resolve(use_env=False).enhance_model == model
    assert "claude-sonnet-4-5" in DEPRECATED_MODELS  # the list is the real one


def test_success_and_what_the_server_received(claude, key):
    enh = enhancer.enhance("a red fox in the snow", "claude", use_cache=False)
    assert enh.enhanced == ANSWER and enh.backend == "claude" and not enh.cached
    assert enh.model == "claude-sonnet-5-5" and enh.prompt == "a red fox in the snow"
    system = SYSTEM_FILE.read_text(encoding="utf-8").strip()
    assert enh.system_prompt_sha256 == hashlib.sha256(system.encode()).hexdigest()
    [req] = claude.requests
    assert req["path"] == "/v1/messages"
    body = req["body"]
    assert body["model"] == "claude-sonnet-5-5" and body["max_tokens"] == 120
    assert body["system"] == system
    assert body["messages"] == [{"role": "user", "content": "a red fox in the snow"}]
    # API 2026-10-21 (the SDK's) has no temperature: not sent unless configured.
    assert "temperature" not in body and "output_config" not in body
    assert key in req["headers"].get("Authorization", "") + req["headers"].get("x-api-key", "")
    assert req["headers"]["anthropic-version"]


def test_configured_options_reach_the_server(claude, monkeypatch, tmp_path):
    (tmp_path / "mine.txt").write_text("Describe the picture in twelve words.\n", encoding="utf-8")
    monkeypatch.setenv("FLUXNB_ENHANCE_TEMPERATURE", "0.7")
    monkeypatch.setenv("FLUXNB_ENHANCE_SYSTEM_PROMPT_FILE", str(tmp_path / "mine.txt"))
    enh = enhancer.enhance("a lighthouse", "claude", model="claude-opus-5", use_cache=False, max_tokens=80,
                           effort="low")
    body = claude.bodies[-1]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 80 and body["model"] == "claude-opus-5"
    assert body["system"] == "Describe the picture in twelve words."
    assert body["output_config"] == {"effort": "low"}
    assert enh.system_prompt_sha256 == hashlib.sha256(b"Describe the picture in twelve words.").hexdigest()


def test_system_prompt_asks_for_a_vivid_description_within_the_budget():
    text = enhancer.system_prompt().lower()
    for words in ("vivid", "concrete", "77 tokens", "60 words", "do not add new subjects", "prompt only"):
        assert words in text


def test_bad_option_values_are_refused(monkeypatch):
    monkeypatch.setenv("FLUXNB_ENHANCE_TIMEOUT_S", "soon")
    with pytest.raises(FluxnbError, match=r"enhance.timeout_s 'soon'"):
        enhancer.config()
    with pytest.raises(FluxnbError, match="temperature"):
        enhancer.config(timeout_s=1, temperature=3)
    with pytest.raises(FluxnbError, match="unknown enhance option 'colour'"):
        enhancer.config(colour="red")


# ---------------------------------------------------------------------------------------
# Claude: retries, giving up, timeouts
# ---------------------------------------------------------------------------------------

def test_429_then_success(claude):
    claude.script = [error(429, "rate_limit_error", "Number of requests exceeded", {"retry-after-ms": "300"}),
                     message()]
    enh = enhancer.enhance("a red fox", "claude", use_cache=False)
    assert enh.enhanced == ANSWER
    assert len(claude.requests) == 2
    assert claude.requests[1]["t"] - claude.requests[0]["t"] >= 0.3  # the server's retry-after was honoured
    assert claude.bodies[0] == claude.bodies[1]


@pytest.mark.parametrize("first", [
    error(408, "timeout_error", "Request timeout"), error(409, "conflict_error", "Conflict"),
    error(500, "api_error", "Internal server error"), error(502, "api_error", "Bad gateway"),
    error(503, "api_error", "Service unavailable"), DROP,
], ids=["408", "409", "500", "502", "503", "dropped-connection"])
def test_retried_failures_then_success(claude, first):
    claude.script = [first, message()]
    enh = enhancer.enhance("a red fox", "claude", use_cache=False)
    assert enh.enhanced == ANSWER and len(claude.requests) == 2
    assert claude.bodies[0] == claude.bodies[1]


def test_529_every_time_gives_up_after_the_retries(claude, monkeypatch):
    claude.script = [error(529, "overloaded_error", "Overloaded")]
    monkeypatch.setenv("FLUXNB_ENHANCE_MAX_RETRIES", "3")
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure) as err:
        enhancer.enhance("a red fox", "claude", use_cache=False)
    assert len(claude.requests) == 4
    assert time.monotonic() - t0 < 5  # short backoffs (0.05 s doubling), not the 5 s budget
    msg = str(err.value)
    assert "overloaded (HTTP 529" in msg and "4 attempts" in msg and err.value.exit_code == 1


def test_529_gives_up_within_the_time_budget(claude, monkeypatch):
    claude.script = [error(529, "overloaded_error", "Overloaded")]
    monkeypatch.setenv("FLUXNB_ENHANCE_MAX_RETRIES", "50")
    monkeypatch.setenv("FLUXNB_ENHANCE_BACKOFF_S", "0.2")
    monkeypatch.setenv("FLUXNB_ENHANCE_GIVE_UP_AFTER_S", "1.0")
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"overloaded .*give_up_after_s 1"):
        enhancer.enhance("a red fox", "claude", use_cache=False)
    assert time.monotonic() - t0 < 6  # the 1 s budget (and a busy machine), not 50 backoffs
    assert 2 <= len(claude.requests) <= 4


def test_a_retry_after_beyond_the_budget_gives_up_at_once(claude):
    claude.script = [error(429, "rate_limit_error", "slow down", {"retry-after": "120"})]
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"rate limited \(HTTP 429.*asked to wait 120 s"):
        enhancer.enhance("a red fox", "claude", use_cache=False)
    assert len(claude.requests) == 1 and time.monotonic() - t0 < 4  # at once: not the 120 s, nor the 5 s budget


def test_timeout(claude, monkeypatch):
    claude.delay = 10
    monkeypatch.setenv("FLUXNB_ENHANCE_TIMEOUT_S", "0.3")
    monkeypatch.setenv("FLUXNB_ENHANCE_GIVE_UP_AFTER_S", "1.2")
    t0 = time.monotonic()
    # The last attempt gets what is left of the budget, so its own limit may be under 0.3 s;
    # the message names the configured one either way.
    with pytest.raises(RuntimeFailure, match=r"no answer within [\d.]+ s \(timeout; enhance.timeout_s is 0.3\)"):
        enhancer.enhance("a red fox", "claude", use_cache=False)
    assert time.monotonic() - t0 < 6  # the 1.2 s budget (and a busy machine), not the server's 10 s
    assert len(claude.requests) >= 2  # a timeout is retried while the budget lasts


def test_unreachable_server(monkeypatch, key):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    with pytest.raises(RuntimeFailure, match=f"cannot reach http://127.0.0.1:{port}"):
        enhancer.enhance("a red fox", "claude", use_cache=False, base_url=f"http://127.0.0.1:{port}",
                         give_up_after_s=1, backoff_s=0.05)


# ---------------------------------------------------------------------------------------
# Claude: answers that are not usable, and errors that are not retried
# ---------------------------------------------------------------------------------------

def test_empty_answer(claude):
    claude.script = [message(content=[], stop_reason="max_tokens")]
    with pytest.raises(RuntimeFailure, match=r"empty answer \(stop_reason max_tokens: the 120-token budget"):
        enhancer.enhance("a red fox", "claude", use_cache=False)
    assert len(claude.requests) == 1


def test_answer_cut_off_at_max_tokens_is_over_long(claude):
    claude.script = [message(text="A red fox in the snow, with its fur catching the", stop_reason="max_tokens")]
    with pytest.raises(RuntimeFailure, match="over-long answer: cut off at max_tokens 120"):
        enhancer.enhance("a red fox", "claude", use_cache=False)


def test_over_long_answer(claude):
    claude.script = [message(text=" ".join(["a luminous fox"] * 120))]
    with pytest.raises(RuntimeFailure, match=r"over-long answer: 3\d\d CLIP tokens, more than max_answer_tokens 200"):
        enhancer.enhance("a red fox", "claude", use_cache=False)


@pytest.mark.parametrize("reply", [message(text="", stop_reason="refusal"), message(text="REFUSED"),
                                   message(text="I can't help with that request.")])
def test_refusal(claude, reply):
    claude.script = [reply]
    with pytest.raises(RuntimeFailure, match="Claude declined to enhance this prompt") as err:
        enhancer.enhance("a red fox", "claude", use_cache=False)
    assert err.value.status == "enhance_refused"


def test_answer_is_cleaned(claude):
    claude.script = [message(content=[{"type": "text", "text": '  "Prompt: A red fox,\n\n   in snow."  '}])]
    assert enhancer.enhance("a red fox", "claude", use_cache=False).enhanced == "A red fox, in snow."


@pytest.mark.parametrize("status, kind, pattern, field", [
    (401, "authentication_error", r"the API key in ANTHROPIC_API_KEY was rejected \(HTTP 401", "ANTHROPIC_API_KEY"),
    (403, "permission_error", r"permission denied \(HTTP 403", "ANTHROPIC_API_KEY"),
    (404, "not_found_error", r"model 'claude-sonnet-5-5' not found \(HTTP 404", "enhance_model"),
    (400, "invalid_request_error", r"does not accept a temperature", "temperature"),
])
def test_client_errors_are_not_retried(claude, key, status, kind, pattern, field):
    claude.script = [error(status, kind, "`temperature` is deprecated for this model." if status == 400 else "nope")]
    with pytest.raises(FluxnbError, match=pattern) as err:
        enhancer.enhance("a red fox", "claude", use_cache=False)
    assert len(claude.requests) == 1
    assert err.value.field == field and err.value.exit_code == 2
    assert key not in str(err.value)


def test_no_key_names_the_variable(claude, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(FluxnbError, match="ANTHROPIC_API_KEY is not set") as err:
        enhancer.enhance("a red fox", "claude", use_cache=False)
    assert "config.env" in str(err.value) and claude.requests == []


def test_key_from_config_env(claude, monkeypatch, tmp_path, key):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    (tmp_path / "config.env").write_text(f"ANTHROPIC_API_KEY='{key}'\n", encoding="utf-8")
    monkeypatch.setenv("FLUXNB_CONFIG_ENV", str(tmp_path / "config.env"))
    assert enhancer.enhance("a red fox", "claude", use_cache=False).enhanced == ANSWER
    assert key in claude.requests[0]["headers"]["Authorization"]


# ---------------------------------------------------------------------------------------
# Fallback and cache
# ---------------------------------------------------------------------------------------

def test_fallback_to_local_is_opt_in_and_recorded(claude):
    claude.script = [error(401, "authentication_error", "invalid x-api-key")]
    with pytest.raises(FluxnbError):
        enhancer.enhance("a red fox", "claude", use_cache=False)
    enh = enhancer.enhance("a red fox", "claude", use_cache=False, fallback="local", seed=4)
    assert enh.backend == "local" and enh.fallback_from == "claude" and "HTTP 401" in enh.fallback_reason
    assert enh.enhanced == local_enhancer.expand("a red fox", 4) and enh.model == "fluxnb-local-v1"


def test_cache(claude, monkeypatch, tmp_path):
    cache = Path(os.environ["FLUXNB_CACHE_DIR"]) / "enhance"
    prompt = f"a red fox {time.time_ns()}"
    first = enhancer.enhance(prompt, "claude")
    again = enhancer.enhance(prompt, "claude")
    assert len(claude.requests) == 1 and again.cached and not first.cached
    assert again.enhanced == first.enhanced and again.system_prompt_sha256 == first.system_prompt_sha256
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert any(prompt in p.read_text(encoding="utf-8") for p in entries)
    assert not [p for p in entries if p.name.startswith(".tmp-")]
    # Each part of the key asks again: model, system prompt, temperature, max_tokens, effort;
    # --no-cache too. Asked twice, each is answered from the cache the second time.
    variants = [{"model": "claude-opus-5"}, {"system_prompt": "Just describe it."}, {"temperature": 0.7},
                {"max_tokens": 80}, {"effort": "low"}]
    for n, kw in enumerate(variants, start=2):
        assert not enhancer.enhance(prompt, "claude", **kw).cached and len(claude.requests) == n, kw
        assert enhancer.enhance(prompt, "claude", **kw).cached and len(claude.requests) == n, kw
    assert claude.bodies[-2]["max_tokens"] == 80 and claude.bodies[-1]["output_config"] == {"effort": "low"}
    enhancer.enhance(prompt, "claude", use_cache=False)
    assert len(claude.requests) == 7
    # A damaged entry is ignored (and replaced), not fatal.
    for p in cache.rglob("*.json"):
        p.write_text("{not json", encoding="utf-8")
    assert enhancer.enhance(prompt, "claude").enhanced == ANSWER and len(claude.requests) == 8


# ---------------------------------------------------------------------------------------
# The offline enhancer
# ---------------------------------------------------------------------------------------

def test_local_is_deterministic_and_varies_with_the_seed():
    a = enhancer.enhance("a red fox in the snow", "local", seed=7)
    b = enhancer.enhance("a red fox in the snow", "local", seed=7)
    assert a.enhanced == b.enhanced and a.backend == "local" and a.model == "fluxnb-local-v1" and a.seed == 7
    variants = {enhancer.enhance("a red fox in the snow", "local", seed=s).enhanced for s in range(12)}
    assert len(variants) >= 6


def test_local_keeps_the_subject_and_adds_each_kind():
    voc = local_enhancer.vocabulary()
    prompt = "a red fox in the snow"
    enh = enhancer.enhance(prompt, "local", seed=3).enhanced
    assert enh.startswith(prompt + ", ")
    added = enh[len(prompt) + 2:].split(", ")
    media = [p for k in voc["_kinds"] for p in voc["medium"]["phrases"][k]]
    assert added[0] in media
    assert any(p in voc["lighting"]["day"] for p in added)
    assert any(p in voc["composition"]["phrases"] for p in added)
    details = [p for k in voc["_kinds"] + ["general"] for p in voc["detail"][k]]
    assert any(p in details for p in added)
    every = media + voc["lighting"]["day"] + voc["lighting"]["night"] + voc["composition"]["phrases"] + details
    assert all(p in every for p in added)


def test_local_respects_what_the_prompt_already_says():
    voc = local_enhancer.vocabulary()
    prompt = "a watercolor of a lighthouse at sunset, close-up"
    for seed in range(8):
        added = enhancer.enhance(prompt, "local", seed=seed).enhanced[len(prompt) + 2:].split(", ")
        media = [p for k in voc["_kinds"] for p in voc["medium"]["phrases"][k]]
        assert not set(added) & set(media)                       # the medium is the user's
        assert not set(added) & set(voc["lighting"]["day"] + voc["lighting"]["night"])  # so is the light
        assert not set(added) & set(voc["composition"]["phrases"])                      # and the framing
        assert set(added) & set(voc["detail"]["painting"])       # detail suits a watercolor
    night = enhancer.enhance("a quiet harbour at night", "local", seed=1).enhanced
    assert any(p in night for p in voc["lighting"]["night"])


def test_local_never_repeats_words():
    enh = enhancer.enhance("a photograph of a fox, intricate detail, shallow depth of field", "local", seed=2).enhanced
    assert enh.count("intricate") == 1 and enh.count("depth of field") == 1 and "photograph," not in enh[40:]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=st.text(min_size=1, max_size=300).filter(str.strip), seed=st.integers(0, 2**32 - 1))
def test_local_stays_within_clip_and_keeps_the_prompt(prompt, seed):
    enh = enhancer.enhance(prompt, "local", seed=seed).enhanced
    if tokens.count_clip(prompt) <= tokens.CLIP_LIMIT:
        assert tokens.count_clip(enh) <= tokens.CLIP_LIMIT
    # The prompt is kept as written (less trailing separators); phrases only follow it.
    core = re.sub(r"[\s,;:.]+$", "", prompt.strip())
    assert enh == prompt.strip() or (core and enh.startswith(core + ", "))


def test_local_leaves_a_full_prompt_alone():
    prompt = " ".join(["lighthouse"] * 80)
    assert enhancer.enhance(prompt, "local", seed=1).enhanced == prompt


def test_bad_backend_and_empty_prompt():
    with pytest.raises(FluxnbError, match="enhance 'gpt': unknown"):
        enhancer.enhance("a fox", "gpt")
    with pytest.raises(FluxnbError, match="the prompt is empty"):
        enhancer.enhance("  ", "local")


# ---------------------------------------------------------------------------------------
# fluxnb enhance, and provenance through fluxnb generate
# ---------------------------------------------------------------------------------------

def test_cli_enhance_json_and_the_key_stays_secret(claude, key, capsys, tmp_path):
    assert main(["-v", "enhance", "a red fox in the snow", "--backend", "claude", "--json", "--no-cache"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    for k in ("prompt", "enhanced", "backend", "model", "system_prompt_sha256", "clip_prompt", "t5_prompt",
              "clip_tokens", "elapsed_s"):
        assert k in out, k
    assert out["enhanced"] == ANSWER and out["backend"] == "claude" and out["model"] == "claude-sonnet-5-5"
    assert out["clip_prompt"] == ANSWER and out["clip_tokens"] == tokens.count_clip(ANSWER)
    assert out["t5_prompt"] == ANSWER and out["fallback_from"] is None
    # The key went to the server, and nowhere else: output, logs, cache.
    assert key in claude.requests[0]["headers"]["Authorization"]
    assert key not in cap.out + cap.err
    assert key not in all_text_under(os.environ["FLUXNB_LOG_DIR"]) + all_text_under(os.environ["FLUXNB_CACHE_DIR"])


def test_cli_enhance_plain_shows_counts(capsys):
    assert main(["enhance", "a red fox in the snow", "--backend", "local", "--seed", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == local_enhancer.expand("a red fox in the snow", 2)
    assert out[2].startswith("local (fluxnb-local-v1)")
    assert out[3] == f"CLIP {tokens.count_clip(out[0])}/77 tokens"


def test_cli_enhance_failure_is_one_line_and_secret(claude, key, capsys, monkeypatch):
    claude.script = [error(529, "overloaded_error", f"Overloaded (echo {key})")]
    monkeypatch.setenv("FLUXNB_ENHANCE_MAX_RETRIES", "1")
    assert main(["enhance", "a red fox", "--no-cache"]) == 1
    cap = capsys.readouterr()
    assert cap.out == ""
    errors = [line for line in cap.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "overloaded (HTTP 529" in errors[0] and "Traceback" not in cap.err
    assert key not in cap.err and key not in all_text_under(os.environ["FLUXNB_LOG_DIR"])


def test_generate_enhance_local_end_to_end(tiny_model, outdir, capsys):
    from fluxnb import runlog
    from fluxnb.outputs.metadata import read_metadata

    prompt = "a lighthouse on a cliff"
    assert main(["generate", prompt, "--enhance", "local", "--model", "tiny", "--seed", "11", "--steps", "1",
                 "--out", str(outdir), "--json"]) == 0
    [printed] = json.loads(capsys.readouterr().out)["images"]
    [rec] = runlog.read(outdir)
    expected = local_enhancer.expand(prompt, 11)
    meta = read_metadata(rec["path"])
    for where in (rec, printed, meta["fluxnb"]):
        assert where["prompt"] == prompt and where["enhanced_prompt"] == expected
        assert where["enhancer"] == "local" and where["enhancer_model"] == "fluxnb-local-v1"
        assert where["clip_prompt"] == expected and where["t5_prompt"] == expected
        assert where["clip_tokens"] == tokens.count_clip(expected)
    assert "Prompt enhancer: local (fluxnb-local-v1)" in meta["parameters"]
    assert meta["parameters"].startswith(expected + "\n")


def test_generate_enhance_claude_provenance(tiny_model, outdir, claude):
    import fluxnb
    from fluxnb import runlog

    prompt = f"a red fox {time.time_ns()}"
    [img] = fluxnb.generate(prompt, model="tiny", seed=5, steps=1, enhance="claude", output_dir=str(outdir),
                            progress=False)
    sha = hashlib.sha256(SYSTEM_FILE.read_text(encoding="utf-8").strip().encode()).hexdigest()
    [rec] = runlog.read(outdir)
    for where in (rec, fluxnb.read_metadata(img.path)["fluxnb"]):
        assert where["prompt"] == prompt and where["enhanced_prompt"] == ANSWER
        assert where["enhancer"] == "claude" and where["enhancer_model"] == "claude-sonnet-5-5"
        assert where["system_prompt_sha256"] == sha
    assert claude.bodies[0]["messages"][0]["content"] == prompt


def test_generate_enhance_claude_without_key_fails_on_record(outdir, capsys):
    from fluxnb import runlog

    assert main(["generate", "a red fox", "--enhance-ai", "--model", "tiny", "--out", str(outdir)]) == 2
    err = capsys.readouterr().err
    assert "ANTHROPIC_API_KEY" in err
    [rec] = runlog.read(outdir)
    assert rec["status"] == "enhance_failed" and "ANTHROPIC_API_KEY" in rec["error"]
    assert not [p for p in outdir.iterdir() if p.suffix in (".jpg", ".png")]


def test_generate_with_opt_in_fallback_records_it(tiny_model, outdir):
    import fluxnb
    from fluxnb import runlog

    [img] = fluxnb.generate("a red fox", model="tiny", seed=9, steps=1, enhance="claude", enhance_fallback="local",
                            output_dir=str(outdir), progress=False)
    [rec] = runlog.read(outdir)
    for where in (rec, fluxnb.read_metadata(img.path)["fluxnb"]):
        assert where["enhancer"] == "local" and where["enhancer_fallback_from"] == "claude"
        assert where["enhanced_prompt"] == local_enhancer.expand("a red fox", 9)


# ---------------------------------------------------------------------------------------
# --verbose: the request and the raw answer (what the seed's test-enhance-verbose.py showed)
# ---------------------------------------------------------------------------------------

def test_cli_enhance_verbose_shows_request_answer_timings_and_retries(claude, key, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FLUXNB_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("FLUXNB_ENHANCE_TEMPERATURE", "0.7")
    raw = f'"Prompt: {ANSWER}"'  # what Claude said, before fluxnb cleans it
    claude.script = [error(429, "rate_limit_error", "Number of requests exceeded", {"retry-after-ms": "50"}),
                     message(text=raw)]
    prompt = "a red fox in the snow"
    assert main(["enhance", prompt, "--backend", "claude", "--no-cache", "--verbose"]) == 0
    cap = capsys.readouterr()
    system = SYSTEM_FILE.read_text(encoding="utf-8").strip()
    cfg = enhancer.config()
    err = cap.err
    # The request.
    assert f"enhance claude: request to {claude.url}/v1/messages" in err
    assert "  model:          claude-sonnet-5-5" in err
    assert f"  max_tokens:     {cfg['max_tokens']}" in err and "  temperature:    0.7" in err
    assert f"system prompt:  {len(system)} characters, sha256 {hashlib.sha256(system.encode()).hexdigest()}" in err
    assert all(f"    | {line}" in err for line in system.splitlines())
    assert f"  user message:   {prompt}" in err
    # The raw answer (before cleaning), the attempts and the timings.
    assert re.search(r"enhance claude: answer in \d+\.\d\d s after 2 attempts", err)
    assert re.search(r"attempt 1: +rate limited \(HTTP 429: Number of requests exceeded\) after \d+\.\d\d s, "
                     r"waited 0\.05 s", err)
    assert re.search(r"attempt 2: +answered in \d+\.\d\d s", err)
    assert "  stop reason:    end_turn" in err and "  usage:          12 input tokens, 40 output tokens" in err
    assert f"  text:           {raw!r}" in err
    assert "msg_01 (model claude-sonnet-5-5)" in err
    # stdout: the cleaned prompt, as without --verbose.
    assert cap.out.splitlines()[0] == ANSWER
    # The successful call is in the log file too (DEBUG), and the key nowhere.
    logged = all_text_under(tmp_path / "logs")
    assert "enhance claude: request to" in logged and "stop reason:    end_turn" in logged and ANSWER in logged
    assert key not in cap.out + err + logged
    assert key in claude.requests[0]["headers"]["Authorization"]  # it was sent, so it could have leaked


def test_without_verbose_the_exchange_is_only_in_the_log_file(claude, key, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FLUXNB_LOG_DIR", str(tmp_path / "logs"))
    assert main(["enhance", "a red fox", "--backend", "claude", "--no-cache"]) == 0
    cap = capsys.readouterr()
    assert "system prompt:" not in cap.err and "stop reason" not in cap.err
    logged = all_text_under(tmp_path / "logs")
    assert "  user message:   a red fox" in logged and "answer in" in logged and key not in logged
    # From the cache: no request, and -v says so.
    assert main(["enhance", "a red fox", "--backend", "claude", "-v"]) == 0
    err = capsys.readouterr().err
    assert "answer from the cache, no request" in err and "request to" not in err
    assert len(claude.requests) == 1


def test_verbose_and_quiet_after_the_subcommand_or_before_it():
    from fluxnb.front.cli import build_parser

    parser = build_parser()
    for argv, verbose, quiet in ((["generate", "x", "-v"], True, False), (["-v", "generate", "x"], True, False),
                                 (["generate", "x"], False, False), (["enhance", "x", "--verbose"], True, False),
                                 (["generate", "x", "--quiet"], False, True), (["-q", "generate", "x"], False, True),
                                 (["doctor", "-q"], False, True)):
        args = parser.parse_args(argv)
        assert (args.verbose, args.quiet) == (verbose, quiet), argv


def test_generate_v_shows_the_claude_exchange(tiny_model, outdir, claude, key, capsys):
    prompt = f"a red fox {time.time_ns()}"
    assert main(["generate", prompt, "--enhance", "claude", "--model", "tiny", "--steps", "1", "--size", "64x64",
                 "--out", str(outdir), "-v"]) == 0
    cap = capsys.readouterr()
    assert f"  user message:   {prompt}" in cap.err and "  stop reason:    end_turn" in cap.err
    assert key not in cap.err + cap.out
    assert cap.out.strip().endswith(".jpg") and len(cap.out.splitlines()) == 1
