"""Hardening, class 3: a secret typed into a prompt, or echoed by an enhancer, reaches no
artifact: image metadata (text and JSON, PNG and JPEG), the run log, the enhance cache,
what the CLI prints, exports. One scrubber (`logs.scrub`) does it everywhere."""

from __future__ import annotations

import json
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import run_hostile, secrets_in, sentinels
from test_enhance import FakeClaude, message

from fluxnb.logs import scrub, scrub_data

SHAPED = ("sk-ant-api03-" + "Shaped" + secrets.token_hex(12), "hf_" + "Shaped" + secrets.token_hex(14))


def _prompt(keys) -> str:
    return f"a fox, {keys['ANTHROPIC_API_KEY']} {keys['HF_TOKEN']} {keys['JUPYTER_TOKEN']} {' '.join(SHAPED)}"


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_a_key_in_the_prompt_reaches_no_file_and_no_output(fmt, tiny_model, tmp_path):
    from fluxnb.outputs import runlog
    from fluxnb.outputs.metadata import read_metadata

    keys, out = sentinels(), tmp_path / "out"
    r, _ = run_hostile("generate", _prompt(keys), "--model", "tiny", "--steps", "1", "--seed", "3", "--format", fmt,
                       "--out", out, "--json", world=tmp_path, allowed=[out], keys=keys, fails=False, limit=120)
    rec = json.loads(r.stdout)["images"][0]
    for f in out.iterdir():
        assert not secrets_in(f, [*keys.values(), *SHAPED]), f
    meta = read_metadata(rec["path"])
    assert meta["fluxnb"]["prompt"].count("***") == 5 and "a fox" in meta["parameters"]
    assert "***" in meta["parameters"] and "***" in runlog.read(out)[0]["prompt"]


def test_enhance_output_and_cache_hold_no_key(tmp_path):
    keys = sentinels()
    fake = FakeClaude()
    fake.script = [message(f"A red fox by a river, {keys['ANTHROPIC_API_KEY']} {SHAPED[1]}, soft morning light")]
    fake.thread.start()
    try:
        env = {"FLUXNB_ENHANCE_BASE_URL": fake.url, "FLUXNB_ENHANCE_BACKOFF_S": "0.05"}
        for extra in ((), ("--json",)):
            r, _ = run_hostile("enhance", f"a fox {keys['HF_TOKEN']}", "--backend", "claude", *extra, world=tmp_path,
                               keys=keys, env=env, fails=False, limit=30)
            assert "A red fox by a river, ***" in r.stdout and SHAPED[1] not in r.stdout
        r, _ = run_hostile("enhance", f"a fox {keys['HF_TOKEN']}", "--backend", "local", "--json", world=tmp_path,
                           keys=keys, fails=False, limit=30)
        assert "***" in json.loads(r.stdout)["prompt"]
    finally:
        fake.server.shutdown()
        fake.server.server_close()
    assert len(fake.requests) == 2  # no answer holding a secret was cached


def test_printed_json_is_scrubbed(tmp_path):
    keys = sentinels()
    r, _ = run_hostile("sweep", _prompt(keys), "--model", "tiny", "--seeds", "1,2", "--dry-run", "--json",
                       world=tmp_path, keys=keys, fails=False)
    assert json.loads(r.stdout)["prompt"].count("***") == 5


def test_a_secret_as_a_batch_value_is_refused(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(f"prompts: ['a fox {SHAPED[0]}']\n")
    r, err = run_hostile("batch", params, "--out", tmp_path / "out", world=tmp_path)
    assert "holds a secret" in err and SHAPED[0] not in r.stderr


def test_scrub_masks_values_and_shapes(monkeypatch):
    keys = sentinels()
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    text = " | ".join([*keys.values(), *SHAPED, "hf_hub_download", "sk-ant-", "a plain prompt"])
    clean = scrub(text)
    assert not any(v in clean for v in [*keys.values(), *SHAPED])
    assert clean.count("***") == len(keys) + len(SHAPED) and "hf_hub_download" in clean and "a plain prompt" in clean
    shared = [keys["HF_TOKEN"]]
    data = scrub_data({"a": shared, "b": shared, keys["RAY_AUTH_TOKEN"]: (1, 2.5, None, True)})
    assert data == {"a": ["***"], "b": ["***"], "***": [1, 2.5, None, True]}


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60), st.sampled_from(["sk-ant-api03-", "hf_"]),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=24, max_size=60))
def test_a_shaped_key_never_survives_scrubbing(before, after, head, body):
    key = head + body
    assert key not in scrub(before + key + after)
