"""Exact CLIP/T5 token accounting, the 77-token CLIP trim and prompt routing.

FLUX reads a prompt twice: CLIP-L sees at most 77 tokens (start and end included) and
only its pooled output is used; T5-XXL sees up to `max_sequence_length` (512 for dev,
256 for schnell). We count with the real tokenizers, give CLIP the longest prefix that
fits (cut at a word boundary, so it decodes cleanly) and give T5 the whole text.

Only the `tokenizers` library is used here (no torch, no transformers), so counting
answers at once. The CLIP tokenizer is openai/clip-vit-large-patch14's, built from the
BPE file CLIP ships (`prompt/data/bpe_simple_vocab_16e6.txt.gz`, MIT licence).
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config.environment import PACKAGE_DIR

log = logging.getLogger(__name__)

CLIP_LIMIT = 77
BPE_FILE = PACKAGE_DIR / "prompt" / "data" / "bpe_simple_vocab_16e6.txt.gz"
CLIP_SPLIT = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
              r"[^\s\p{L}\p{N}]+")


# ---------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------

def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@functools.lru_cache(maxsize=1)
def clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """openai/clip-vit-large-patch14's vocabulary (49,408 entries) and BPE merges."""
    lines = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    chars = _bytes_to_unicode()
    names = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {name: i for i, name in enumerate(names)}, merges


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """The real CLIP tokenizer as a `tokenizers.Tokenizer`, identical to transformers'
    CLIPTokenizer for openai/clip-vit-large-patch14."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = clip_vocab()
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>", continuing_subword_prefix="",
                        end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", 49407), ("<|startoftext|>", 49406),
                                                      trim_offsets=False, add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken
    tok.add_special_tokens([AddedToken("<|startoftext|>", normalized=False, special=True),
                            AddedToken("<|endoftext|>", normalized=False, special=True)])
    return tok


def t5_style_vocab(size: int = 32000) -> list[tuple[str, float]]:
    """A small T5-style (SentencePiece unigram) vocabulary built offline from CLIP's
    word list: the test models' T5 tokenizer. Not FLUX's: counts from it are estimates."""
    import math

    vocab, _ = clip_vocab()
    words = [w[:-4] for w in vocab if w.endswith("</w>") and w[:-4].isascii() and w[:-4].isalpha()]
    chars = [chr(c) for c in range(33, 127)]
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {p for p, _ in pieces}
    for c in chars:  # every printable character, alone and word-initial, so nothing is <unk>
        for p in (c, "▁" + c):
            pieces.append((p, -10.0 - len(pieces) / 1000))
            seen.add(p)
    rank = 0
    for w in words:
        if len(pieces) >= size:
            break
        p = "▁" + w
        if p not in seen:
            rank += 1
            seen.add(p)
            pieces.append((p, -math.log(rank + 1)))
    return pieces


@functools.lru_cache(maxsize=1)
def t5_style_tokenizer():
    """The offline T5-style tokenizer as a `tokenizers.Tokenizer` (see t5_style_vocab)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    tok = Tokenizer(Unigram(t5_style_vocab(), unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], special_tokens=[("</s>", 1)])
    return tok


def _hf_hub_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def _cached_tokenizer_file(model: str, sub: str) -> Path | None:
    """A model's `<sub>/tokenizer.json`: in a local folder, the tiny model's cache, or the
    Hugging Face cache (looked up on disk only, never downloaded)."""
    from ..config.settings import normalize_model

    model = normalize_model(model)
    if model == "tiny":
        from ..config.environment import tiny_model_dir
        candidates = [tiny_model_dir() / sub / "tokenizer.json"]
    elif Path(model).is_dir():
        candidates = [Path(model) / sub / "tokenizer.json"]
    else:
        snaps = _hf_hub_dir() / ("models--" + model.replace("/", "--")) / "snapshots"
        candidates = sorted(snaps.glob(f"*/{sub}/tokenizer.json")) if snaps.is_dir() else []
    return next((p for p in candidates if p.is_file()), None)


@functools.lru_cache(maxsize=8)
def _tokenizer_from_file(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def tokenizers_for(model: str | None = None, pipe=None):
    """(clip, t5, t5_exact): the loaded pipeline's own tokenizers when there is one, else
    the real CLIP tokenizer and the model's cached T5 tokenizer (exact), else an offline
    T5-style estimate (t5_exact False)."""
    if pipe is not None:
        return _backend(pipe.tokenizer), _backend(pipe.tokenizer_2), True
    clip = clip_tokenizer()
    if model:
        path = _cached_tokenizer_file(model, "tokenizer_2")
        if path is not None:
            return clip, _tokenizer_from_file(str(path)), True
    return clip, t5_style_tokenizer(), False


def _backend(tok):
    """The `tokenizers.Tokenizer` inside a transformers tokenizer (or the thing itself)."""
    for attr in ("backend_tokenizer", "_tokenizer"):
        inner = getattr(tok, attr, None)
        if inner is not None and hasattr(inner, "encode"):
            return inner
    return tok


# ---------------------------------------------------------------------------------------
# Counting, trimming, routing
# ---------------------------------------------------------------------------------------

@dataclass
class TokenPlan:
    """What each text encoder will see of one prompt."""

    prompt: str
    clip_tokens: int          # CLIP tokens before truncation, start and end included
    clip_limit: int
    clip_prompt: str          # the longest prefix that fits, cut at a word boundary
    clip_dropped: str         # the rest ('' when it all fits)
    t5_tokens: int            # T5 tokens before truncation, end token included
    t5_limit: int
    t5_prompt: str            # the whole text, cut only beyond T5's limit
    t5_dropped: str
    t5_exact: bool            # False when counted with the offline T5-style estimate

    def to_dict(self) -> dict:
        return asdict(self)


def _fit_prefix(tok, text: str, limit: int, specials: int) -> tuple[str, str]:
    """Cut `text` so that its encoding holds at most `limit` tokens (`specials` of them
    added by the tokenizer): at the last word boundary that fits, else at a token boundary."""
    enc = tok.encode(text)
    offsets, words = enc.offsets, enc.word_ids
    content = [i for i, w in enumerate(words) if w is not None]
    budget = limit - specials
    if len(content) <= budget:
        return text, ""
    first_out = content[budget]
    # 1. Whole words: drop the word that straddles the limit.
    cut_tok = first_out
    while cut_tok > content[0] and words[cut_tok - 1] == words[first_out]:
        cut_tok -= 1
    candidates = []
    if cut_tok > content[0]:
        candidates.append(offsets[cut_tok - 1][1])
    # 2. A single word longer than the budget: cut inside it at a token boundary.
    candidates += [offsets[content[k] - 1][1] for k in range(budget, 0, -1) if content[k] - 1 >= content[0]]
    for end in candidates:
        head = text[:end].rstrip()
        if head and len(tok.encode(head).ids) <= limit:
            return head, text[end:].lstrip()
    return "", text.strip()


def count_tokens(prompt: str, *, model: str | None = None, pipe=None, t5_limit: int | None = None) -> TokenPlan:
    """Count and route one prompt: CLIP gets `clip_prompt`, T5 gets `t5_prompt`.

    `model` (whose cached T5 tokenizer counts) and `t5_limit` default to the configured
    settings: the model and its max_sequence_length (`fluxnb config`). A1111's `<lora:...>`
    tags are not text: they are removed first (neither encoder sees them)."""
    from ..config.loras import strip_tags

    prompt = strip_tags(prompt)
    if (model is None and pipe is None) or t5_limit is None:
        from ..config.settings import resolve

        s = resolve(**({"model": model} if model else {}))
        model = s.model if model is None and pipe is None else model
        t5_limit = s.max_sequence_length if t5_limit is None else t5_limit
    clip, t5, exact = tokenizers_for(model, pipe)
    clip_n = len(clip.encode(prompt).ids)
    clip_prompt, clip_dropped = _fit_prefix(clip, prompt, CLIP_LIMIT, 2) if clip_n > CLIP_LIMIT else (prompt, "")
    t5_n = len(t5.encode(prompt).ids)
    t5_prompt, t5_dropped = _fit_prefix(t5, prompt, t5_limit, 1) if t5_n > t5_limit else (prompt, "")
    if t5_dropped:
        log.warning("prompt is %d T5 tokens, over T5's limit of %d: the end is cut: %r", t5_n, t5_limit,
                    _shorten(t5_dropped))
    return TokenPlan(prompt, clip_n, CLIP_LIMIT, clip_prompt, clip_dropped, t5_n, t5_limit, t5_prompt, t5_dropped,
                     exact)


def count_clip(text: str) -> int:
    return len(clip_tokenizer().encode(text).ids)


def _shorten(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def summary(p: TokenPlan) -> str:
    """One line for showing next to a prompt: `CLIP 82/77 (5 dropped) · T5 95/512`."""
    clip = f"CLIP {p.clip_tokens}/{p.clip_limit}"
    if p.clip_dropped:
        clip += f" (drops: {_shorten(p.clip_dropped, 40)!r})"
    t5 = f"T5 {p.t5_tokens}/{p.t5_limit}" + ("" if p.t5_exact else " (estimate)")
    if p.t5_dropped:
        t5 += " (cut)"
    return f"{clip} · {t5}"


def use_colour(stream=None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def render(p: TokenPlan, *, colour: bool = False) -> str:
    """The counts and, when CLIP drops a tail, the prompt with that tail highlighted (struck
    through in red on a terminal, `[[dropped by CLIP: ...]]` elsewhere)."""
    over = p.clip_tokens - p.clip_limit
    lines = [f"CLIP {p.clip_tokens}/{p.clip_limit} tokens" + (f" ({over} over: CLIP drops the tail)" if p.clip_dropped
                                                              else ""),
             f"T5   {p.t5_tokens}/{p.t5_limit} tokens"
             + ("" if p.t5_exact else " (estimate: the model's T5 tokenizer is not cached)")
             + (f" ({p.t5_tokens - p.t5_limit} over: cut with a warning)" if p.t5_dropped else "")]
    if p.clip_dropped:
        tail = f"\033[9;31m{p.clip_dropped}\033[0m" if colour else f"[[dropped by CLIP: {p.clip_dropped}]]"
        lines += ["", f"CLIP sees: {p.clip_prompt} {tail}"]
        lines.append("T5 sees the whole prompt." if not p.t5_dropped else f"T5 loses: {p.t5_dropped}")
    elif p.t5_dropped:
        lines += ["", f"T5 loses: {p.t5_dropped}"]
    return "\n".join(lines)
