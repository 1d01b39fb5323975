"""The offline prompt enhancer: curated vocabularies, deterministic for a given seed.

In the spirit of Fooocus's prompt expansion: the user's prompt is kept word for word (the
subject never changes) and a few phrases are appended after it: a medium when the prompt
names none, lighting and composition when it names none, and detail that suits the
medium. Words already in the prompt are never added again, and the result stays within
CLIP's 77 tokens (a prompt already at the limit comes back unchanged). Unlike Fooocus's
GPT-2 sampler it needs no model: the word lists live in `prompt/data/local_vocabulary.yaml`.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from pathlib import Path

from ..errors import FluxnbError
from ..config.environment import PACKAGE_DIR

DEFAULT_VOCABULARY = PACKAGE_DIR / "prompt" / "data" / "local_vocabulary.yaml"
# Short words that say nothing about the picture: they never block a phrase.
_STOPWORDS = {"with", "and", "the", "of", "on", "in", "a", "an", "by", "at", "to", "for", "from", "into", "style",
              "view", "shot", "light", "composition"}
_TRAILING = re.compile(r"[\s,;:.]+$")


def vocabulary_path(path: str | Path | None = None) -> Path:
    """The vocabulary file: `path` as given (or relative to the package), else the bundled one."""
    if not path:
        return DEFAULT_VOCABULARY
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.is_file():
        p = PACKAGE_DIR / p
    if not p.is_file():
        raise FluxnbError(f"enhance.local_vocabulary_file {str(path)!r}: no such file", field="local_vocabulary_file",
                          value=str(path), fix="give a YAML file shaped like fluxnb/prompt/data/local_vocabulary.yaml")
    return p


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict:
    import yaml

    raw = Path(path).read_bytes()
    try:
        voc = yaml.safe_load(raw)
        kinds = list(voc["medium"]["phrases"])
        for kind in kinds:
            assert voc["medium"]["detect"][kind] and voc["detail"][kind], kind
        for key in ("day", "night", "detect", "night_words"):
            assert voc["lighting"][key], f"lighting.{key}"
        assert voc["composition"]["phrases"] and voc["composition"]["detect"] and voc["detail"]["general"]
    except (yaml.YAMLError, KeyError, TypeError, AssertionError) as e:
        raise FluxnbError(f"enhance.local_vocabulary_file {path!r}: not a valid vocabulary ({type(e).__name__}: {e})",
                          field="local_vocabulary_file", value=path,
                          fix="compare it with fluxnb/prompt/data/local_vocabulary.yaml") from None
    voc["_kinds"] = kinds
    voc["_sha256"] = hashlib.sha256(raw).hexdigest()
    return voc


def vocabulary(path: str | Path | None = None) -> dict:
    return _load(str(vocabulary_path(path)))


def model_id(path: str | Path | None = None) -> str:
    """`fluxnb-local-v<version>`, plus the file's hash when it is not the bundled one."""
    p = vocabulary_path(path)
    voc = _load(str(p))
    name = f"fluxnb-local-v{voc.get('version', 0)}"
    return name if p == DEFAULT_VOCABULARY else f"{name}+{voc['_sha256'][:8]}"


@functools.lru_cache(maxsize=512)
def _pattern(term: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(term.lower()) + r"(?!\w)")


def _find(text: str, terms) -> int | None:
    """Where the first of `terms` (whole words or phrases) occurs in lower-cased `text`."""
    hits = [m.start() for t in terms if (m := _pattern(t).search(text))]
    return min(hits) if hits else None


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if w not in _STOPWORDS and len(w) > 2}


def detect_medium(prompt: str, voc: dict) -> str | None:
    """The medium the prompt names (the one named first), or None."""
    low = prompt.lower()
    found = [(pos, kind) for kind in voc["_kinds"] if (pos := _find(low, voc["medium"]["detect"][kind])) is not None]
    return min(found)[1] if found else None


def candidates(prompt: str, seed: int, voc: dict) -> list[str]:
    """The phrases to try appending, in order: medium, lighting, composition, detail.
    Phrases that repeat a word of the prompt are never drawn."""
    low, said = prompt.lower(), _words(prompt)
    digest = hashlib.sha256(f"{int(seed)}\x00{prompt}".encode()).hexdigest()
    rng = random.Random(int(digest[:16], 16))

    def draw(pool, k=1):
        fresh = [p for p in pool if not _words(p) & said]
        return rng.sample(fresh, min(k, len(fresh)))

    out = []
    # 1. Medium: the prompt's own, else one drawn by weight.
    kind = detect_medium(prompt, voc)
    if kind is None:
        weights = [float(voc["medium"].get("weights", {}).get(k, 1)) for k in voc["_kinds"]]
        kind = rng.choices(voc["_kinds"], weights=weights)[0]
        out += draw(voc["medium"]["phrases"][kind])
    # 2. Lighting, unless the prompt sets it (night scenes get night light).
    light = voc["lighting"]
    if _find(low, light["detect"]) is None:
        out += draw(light["night"] if _find(low, light["night_words"]) is not None else light["day"])
    # 3. Composition, unless the prompt sets it.
    if _find(low, voc["composition"]["detect"]) is None:
        out += draw(voc["composition"]["phrases"])
    # 4. Detail: two of the medium's own, then a general one.
    return out + draw(voc["detail"][kind], 2) + draw(voc["detail"]["general"])


def expand(prompt: str, seed: int | None = None, *, vocabulary_file: str | Path | None = None,
           limit: int | None = None) -> str:
    """The prompt with phrases appended, within `limit` CLIP tokens (77)."""
    from .tokens import CLIP_LIMIT, count_clip

    limit = limit or CLIP_LIMIT
    voc = vocabulary(vocabulary_file)
    base = _TRAILING.sub("", prompt.strip())
    if not base or count_clip(base) >= limit:
        return prompt.strip()
    text, used = base, _words(base)
    for phrase in candidates(base, 0 if seed is None else seed, voc):
        words = _words(phrase)
        if words & used:
            continue  # never repeat what the prompt (or an earlier phrase) already says
        trial = f"{text}, {phrase}"
        if count_clip(trial) > limit:
            continue  # a shorter phrase further on may still fit
        text, used = trial, used | words
    return text
