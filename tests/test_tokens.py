"""Token accounting: exact CLIP counts, the 77-token trim, routing to CLIP and T5, `fluxnb tokens`."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxnb.prompt import tokens
from fluxnb.front.cli import main

KNOWN = {
    "A painting of a squirrel eating a burger": [49406, 320, 3086, 539, 320, 14004, 4371, 320, 6548, 49407],
    "": [49406, 49407],
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
}
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Prompt-like text: words, punctuation, A1111 weights, emoji, CJK, accents, odd spaces and newlines.
_PIECES = ["a", "red", "fox", "in", "the", "snow", "(masterpiece:1.2)", "[castle]", "photorealistic", "don't",
           "it's", "🦊", "🔥🔥", "東京の夜", "猫", "café", "naïve", "Ærøskøbing", "İstanbul", "ﬁne", "ＡＢＣ", "½",
           "1024x1024", "--ar", "\n", "\n\n", "  ", "\t", "\u00a0", ",", ".", "!!", "...", "𝔣𝔬𝔵", "e\u0301"]
prompt_text = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(_PIECES), max_size=160).map(" ".join),
    st.lists(st.one_of(st.sampled_from(_PIECES), st.text(min_size=1, max_size=12)), max_size=120).map("".join),
)
# Mostly over CLIP's 77 tokens, so the trim is exercised.
long_prompt_text = st.one_of(
    st.text(min_size=80, max_size=600),
    st.lists(st.sampled_from(_PIECES), min_size=60, max_size=150).map(" ".join),
    st.lists(st.one_of(st.sampled_from(_PIECES), st.text(min_size=1, max_size=12)), min_size=40,
             max_size=160).map("".join),
)




@pytest.fixture(scope="module")
def reference():
    """transformers' own CLIPTokenizer, built from the same BPE (no download)."""
    from transformers import CLIPTokenizer

    vocab, merges = tokens.clip_vocab()
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77)


@pytest.mark.parametrize("text, ids", KNOWN.items())
def test_known_ids(text, ids):
    assert tokens.clip_tokenizer().encode(text).ids == ids
    assert tokens.count_clip(text) == len(ids)


def test_vocabulary_is_clip_l():
    vocab, merges = tokens.clip_vocab()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


@FEW
@given(text=prompt_text)
def test_equals_transformers_clip_tokenizer(reference, text):
    assert tokens.clip_tokenizer().encode(text).ids == reference(text)["input_ids"]


def test_equals_transformers_on_hard_cases(reference):
    for text in ["héllo  wörld\n\nCafé 🦊🔥 東京の夜 (word:1.2) [x] don't it's", "\t\u00a0x\u2003y\u200bz", "   ",
                 "a" * 500, "A1111 (((best quality))), <lora:foo:0.8>", "ÅNGSTRÖM ǅ ß ﬀ", "x\r\ny"]:
        assert tokens.clip_tokenizer().encode(text).ids == reference(text)["input_ids"], text


@FEW
@given(text=st.one_of(prompt_text, long_prompt_text))
def test_trim_properties(text):
    p = tokens.count_tokens(text)
    # 1. CLIP's part always fits, and the count is the untruncated one.
    assert tokens.count_clip(p.clip_prompt) <= tokens.CLIP_LIMIT
    assert p.clip_tokens == tokens.count_clip(text)
    assert bool(p.clip_dropped) == (p.clip_tokens > tokens.CLIP_LIMIT)
    # 2. Nothing is lost or reordered: prompt = clip_prompt + whitespace + clip_dropped.
    if p.clip_dropped:
        assert text.startswith(p.clip_prompt) and text.endswith(p.clip_dropped)
        middle = text[len(p.clip_prompt): len(text) - len(p.clip_dropped)]
        assert middle.strip() == "", (p.clip_prompt, middle, p.clip_dropped)
        assert text.split() == (p.clip_prompt + " " + p.clip_dropped).split() or middle == ""
    else:
        assert p.clip_prompt == text
    # 3. Trimming is idempotent.
    again = tokens.count_tokens(p.clip_prompt)
    assert again.clip_prompt == p.clip_prompt and again.clip_dropped == ""
    # 4. T5 gets the whole text up to its limit.
    if p.t5_tokens <= p.t5_limit:
        assert p.t5_prompt == text and p.t5_dropped == ""
    else:
        assert text.startswith(p.t5_prompt) and p.t5_dropped and len(p.t5_prompt) >= len(p.clip_prompt)


@FEW
@given(words=st.lists(st.sampled_from(["red", "fox", "snowy", "mountain", "watercolor", "🦊", "東京", "(glow:1.3)",
                                       "supercalifragilistic", ",", "lighthouse"]), min_size=40, max_size=120))
def test_trim_is_longest_whole_word_prefix(words):
    text = " ".join(words)
    p = tokens.count_tokens(text)
    if not p.clip_dropped:
        return
    # The next whole word would not have fitted: the prefix is as long as it can be.
    nxt = p.clip_dropped.split()[0]
    assert tokens.count_clip(p.clip_prompt + " " + nxt) > tokens.CLIP_LIMIT


def test_single_overlong_word_is_cut_at_a_token_boundary():
    text = "a" * 2000
    p = tokens.count_tokens(text)
    assert 0 < len(p.clip_prompt) < len(text)
    assert tokens.count_clip(p.clip_prompt) <= 77 and p.clip_prompt + p.clip_dropped == text


def test_t5_limit_cuts_with_a_warning(caplog):
    text = " ".join(["lighthouse"] * 60)
    with caplog.at_level(logging.WARNING, logger="fluxnb"):
        p = tokens.count_tokens(text, t5_limit=20)
    assert p.t5_tokens > 20 and p.t5_dropped and p.t5_prompt
    assert text.startswith(p.t5_prompt)
    assert any("T5" in r.getMessage() and "cut" in r.getMessage() for r in caplog.records)


def test_summary_and_render_show_counts_and_the_dropped_tail():
    text = ", ".join(["a very detailed red fox sitting in fresh snow"] * 9)
    p = tokens.count_tokens(text)
    assert p.clip_dropped
    assert f"CLIP {p.clip_tokens}/77" in tokens.summary(p)
    plain = tokens.render(p, colour=False)
    assert f"CLIP {p.clip_tokens}/77 tokens ({p.clip_tokens - 77} over" in plain
    assert f"[[dropped by CLIP: {p.clip_dropped}]]" in plain
    coloured = tokens.render(p, colour=True)
    assert f"\033[9;31m{p.clip_dropped}\033[0m" in coloured


# ---------------------------------------------------------------------------------------
# fluxnb tokens
# ---------------------------------------------------------------------------------------

def test_cli_tokens_json(capsys):
    text = "A painting of a squirrel eating a burger, " * 12
    assert main(["tokens", text, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("clip_tokens", "clip_limit", "clip_prompt", "clip_dropped", "t5_tokens", "t5_limit", "t5_prompt"):
        assert key in out
    assert out["clip_limit"] == 77 and out["clip_tokens"] == tokens.count_clip(text) > 77
    assert out["t5_limit"] == 512 and out["t5_prompt"] == text
    assert tokens.count_clip(out["clip_prompt"]) <= 77


def test_t5_counts_say_when_they_are_estimates(capsys, tiny_model):
    """Without the model's own T5 tokenizer on disk the T5 count is the offline estimate,
    flagged `t5_exact: false` and said in the table; with it (tiny's), exact."""
    from transformers import AutoTokenizer

    text = "a lighthouse on a cliff at dusk, oil painting"
    assert main(["tokens", text, "--json", "--model", "black-forest-labs/FLUX.1-dev"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["t5_exact"] is False
    assert main(["tokens", text, "--model", "black-forest-labs/FLUX.1-dev"]) == 0
    assert f"T5   {out['t5_tokens']}/512 tokens (estimate: the model's T5 tokenizer is not cached)" in \
        capsys.readouterr().out
    assert main(["tokens", text, "--json", "--model", "tiny"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["t5_exact"] is True
    assert out["t5_tokens"] == len(AutoTokenizer.from_pretrained(str(tiny_model / "tokenizer_2"))(text).input_ids)
    assert main(["tokens", text, "--model", "tiny"]) == 0
    assert "estimate" not in capsys.readouterr().out


def test_cli_tokens_plain_highlights_the_tail(capsys):
    text = " ".join(["crimson"] * 100)
    assert main(["tokens", text]) == 0
    out = capsys.readouterr().out
    assert "CLIP 102/77 tokens (25 over" in out
    assert re.search(r"\[\[dropped by CLIP: (crimson ?){25}\]\]", out)


def test_cli_tokens_does_not_import_torch():
    code = ("import sys; from fluxnb.front.cli import main; main(['tokens', 'a red fox', '--json']); "
            "bad = [m for m in ('torch', 'transformers', 'diffusers', 'anthropic') if m in sys.modules]; "
            "sys.exit(3 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["clip_tokens"] == 5


# ---------------------------------------------------------------------------------------
# Routing: the pipeline's CLIP encoder gets clip_prompt, its T5 encoder the whole prompt
# ---------------------------------------------------------------------------------------

def test_tokenizers_for_a_pipeline_are_its_own(tiny_model):
    from fluxnb.model.pipeline import get_pipeline
    from fluxnb.config.settings import resolve

    pipe = get_pipeline(resolve(model="tiny").load).pipe
    clip, t5, exact = tokens.tokenizers_for(pipe=pipe)
    assert exact and clip is pipe.tokenizer.backend_tokenizer and t5 is pipe.tokenizer_2.backend_tokenizer


def test_generation_routes_clip_prompt_and_t5_prompt(tiny_model, outdir):
    import fluxnb
    from fluxnb import runlog
    from fluxnb.model.pipeline import get_pipeline
    from fluxnb.config.settings import resolve

    pipe = get_pipeline(resolve(model="tiny").load).pipe
    seen = {}

    def hook(name):
        def record(module, args, kwargs):
            seen[name] = (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0])[0].tolist()
        return record

    prompt = ", ".join(["a lighthouse on a basalt cliff above a stormy green sea"] * 8) + ", routing-check"
    handles = [pipe.text_encoder.register_forward_pre_hook(hook("clip"), with_kwargs=True),
               pipe.text_encoder_2.register_forward_pre_hook(hook("t5"), with_kwargs=True)]
    try:
        [img] = fluxnb.generate(prompt, model="tiny", seed=1, steps=1, output_dir=str(outdir), progress=False)
    finally:
        for h in handles:
            h.remove()
    p = tokens.count_tokens(prompt, pipe=pipe, t5_limit=img.settings.max_sequence_length)
    assert p.clip_dropped and not p.t5_dropped
    # CLIP: exactly clip_prompt's ids (no truncation inside diffusers), padded to 77.
    clip_ids = pipe.tokenizer.backend_tokenizer.encode(p.clip_prompt).ids
    assert seen["clip"][: len(clip_ids)] == clip_ids and len(seen["clip"]) == 77
    assert set(seen["clip"][len(clip_ids):]) <= {pipe.tokenizer.pad_token_id}
    # T5: the whole prompt's ids, padded to max_sequence_length.
    t5_ids = pipe.tokenizer_2.backend_tokenizer.encode(prompt).ids
    assert seen["t5"][: len(t5_ids)] == t5_ids and len(seen["t5"]) == img.settings.max_sequence_length
    assert set(seen["t5"][len(t5_ids):]) <= {pipe.tokenizer_2.pad_token_id}
    # Both prompts and the counts are on record, in the run log and in the image.
    [rec] = runlog.read(outdir)
    for where in (rec, fluxnb.read_metadata(img.path)["fluxnb"]):
        assert where["clip_prompt"] == p.clip_prompt and where["t5_prompt"] == prompt
        assert where["clip_dropped"] == p.clip_dropped
        assert where["clip_tokens"] == p.clip_tokens and where["t5_tokens"] == p.t5_tokens
