"""A sweep's axes and their values: lists, A1111's X/Y/Z-plot ranges (`1-5`, `1-10 (+2)`,
`1-10 [5]`) and random seeds (`random:4`), each value checked by the settings.
"""

from __future__ import annotations

import itertools
import math
import re

from ...config.settings import ALIASES, CELL_MAX, Settings, draw_seed, require_prompt
from ...errors import FluxnbError

# Sweepable settings and how their values are read; the default order of the axes
# (the first two become rows and columns, unless rows=/cols= say otherwise).
AXES = {"prompt": "prompt", "enhance": "text", "seed": "int", "guidance": "float", "steps": "int", "size": "size",
        "max_sequence_length": "int", "enhance_model": "text", "precision": "text", "model": "text",
        "strength": "float", "loras": "loras"}
AXIS_ALIASES = {"seeds": "seed", "prompts": "prompt", "sizes": "size", "models": "model", "enhancer": "enhance",
                **ALIASES}
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)"
_RANGE = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})\s*(?:\(\s*({_NUM})\s*\)|\[\s*({_NUM})\s*\])?\s*")
_RANDOM = re.compile(r"\s*random(?:\s*:\s*(\d+))?\s*", re.IGNORECASE)


# ---------------------------------------------------------------------------------------
# Values: lists, A1111 ranges, random seeds
# ---------------------------------------------------------------------------------------

def _bad(axis: str, value, message: str, fix: str | None = None) -> FluxnbError:
    shown = repr(value)
    if len(shown) > 80:  # a value long enough to bury the message: its start and its length
        shown = f"{shown[:40]}… ({len(str(value))} characters)"
    return FluxnbError(f"{axis} {shown}: {message}", field=axis, value=value, fix=fix)


def range_count(text: str, kind: str, axis: str = "value") -> tuple | None:
    """(low, high, step or None, how many values) of an A1111 range, counted arithmetically
    (nothing is built); None when `text` is not a range. Refuses a bad step, count or order."""
    m = _RANGE.fullmatch(text)
    if not m or kind not in ("int", "float"):
        return None
    a, b, step, count = m.groups()
    if not all(math.isfinite(float(x)) for x in (a, b, step, count) if x is not None):
        raise _bad(axis, text, "a number too large for a range", fix="e.g. 1-10 (+2)")
    if kind == "int" and any(x is not None and "." in x for x in (a, b)):
        raise _bad(axis, text, "a range of whole numbers cannot have decimals", fix="e.g. 1-10 (+2)")
    conv = int if kind == "int" else float
    lo, hi = conv(float(a)), conv(float(b))
    if count is not None:
        n = float(count)
        if n < 1 or not n.is_integer():
            raise _bad(axis, text, f"[{count}] must be a whole number of values, 1 or more", fix="e.g. 1-10 [5]")
        return lo, hi, None, int(n)
    st = conv(float(step)) if step is not None else conv(1)
    if st <= 0:
        raise _bad(axis, text, f"the range step {step} must be positive",
                   fix=f"count up with a positive step, e.g. {a}-{b} (+1); to go down, list the values")
    if hi < lo:
        raise _bad(axis, text, "the range ends below its start",
                   fix=f"write it low to high ({b}-{a}), use [N] for N values, or list the values")
    q = (hi - lo) / st
    return lo, hi, st, math.floor(q + 1e-9) + 1 if math.isfinite(q) else 2**63


def expand_range(text: str, kind: str, axis: str = "value") -> list | None:
    """A1111 X/Y/Z ranges: `1-5` (step 1), `1-10 (+2)` (step 2), `1-10 [5]` (5 values evenly
    spaced; whole-number axes truncate like A1111). None when `text` is not a range. More
    than CELL_MAX values are refused before any is made."""
    counted = range_count(text, kind, axis)
    if counted is None:
        return None
    lo, hi, st, n = counted
    if n > CELL_MAX:
        raise _bad(axis, text, f"{n} values, more than a sweep ever makes ({CELL_MAX})", fix="use a larger step or [N]")
    if st is None:
        vals = [lo + (hi - lo) * i / (n - 1) for i in range(n)] if n > 1 else [lo]
        return [int(v) for v in vals] if kind == "int" else [round(v, 6) for v in vals]
    return [lo + i * st for i in range(n)] if kind == "int" else [round(lo + i * st, 6) for i in range(n)]


def count_values(name: str, value) -> int:
    """How many values axis `name` will have, from what was written (lists, ranges,
    random:N), without building them; a lower bound past CELL_MAX (a list is not read
    beyond that). What is not a value is refused later, by `parse_axis`."""
    kind = AXES[name]
    if kind == "loras":
        return len(lora_axis(value)[0])
    if not isinstance(value, str) and is_list(value):
        try:
            if len(value) > CELL_MAX:
                return len(value)
        except TypeError:
            pass
    total = 0
    for it in _items(value, "|" if kind == "prompt" else ","):
        text = it.strip() if isinstance(it, str) else it
        m = _RANDOM.fullmatch(text) if name == "seed" and isinstance(text, str) else None
        counted = range_count(text, kind, name) if isinstance(text, str) and not m else None
        if m:
            total += _random_count(m)
        else:
            total += counted[3] if counted else 1
        if total > CELL_MAX:
            break
    return total


def _items(value, sep: str) -> list:
    if isinstance(value, str):
        return value.split(sep)
    if is_list(value):
        items = list(value.tolist() if hasattr(value, "tolist") else value)
        return [x for it in items for x in (it.split(sep) if isinstance(it, str) and sep != "|" else [it])]
    return [value]


def parse_axis(name: str, value, base: Settings) -> tuple[list, list, list]:
    """One axis's values: (values, labels, drawn seeds). Validated against `base`; refuses
    empty values, duplicates and bad ranges."""
    kind = AXES[name]
    if kind == "loras":
        return (*lora_axis(value), [])
    spec = value if isinstance(value, str) else ""
    items = _items(value, "|" if kind == "prompt" else ",")
    if not items or (isinstance(value, str) and not value.strip()):
        raise _bad(name, value, "the axis is empty", fix=f"give at least one value, e.g. {_example(name)}")
    raw, drawn = [], []
    for it in items:
        text = it.strip() if isinstance(it, str) else it
        if text == "" or text is None:
            raise _bad(name, value, "an empty value in the list", fix=f"e.g. {_example(name)}")
        if name == "seed" and isinstance(text, str) and _RANDOM.fullmatch(text) or text in (-1, "-1"):
            m = _RANDOM.fullmatch(str(text))
            n = _random_count(m) if m else 1
            if not 1 <= n <= 10000:
                raise _bad(name, text, "random:N draws N seeds: N must be 1 to 10000", fix="e.g. random:4")
            new = _draw(n, set(raw) | set(drawn))
            drawn += new
            raw += new
            continue
        rng = expand_range(text, kind, name) if isinstance(text, str) else None
        raw += rng if rng is not None else [text]
    values, labels, seen = [], [], {}
    for v in raw:
        norm, key, label = _validate(name, v, base)
        if key in seen:
            raise _bad(name, spec or value, f"{norm!r} appears twice" + (f" ({seen[key]!r} and {v!r})"
                                                                      if str(seen[key]) != str(v) else ""),
                       fix="give each value once")
        seen[key] = v
        values.append(norm)
        labels.append(label)
    return values, labels, drawn


def _random_count(m) -> int:
    """N of a `random:N` match (1 without N); past 10 digits, a number larger than any cap."""
    digits = m.group(1)
    return 1 if not digits else int(digits) if len(digits) <= 10 else 10**10


def _draw(n: int, taken: set) -> list:
    out = []
    while len(out) < n:
        s = draw_seed()
        if s not in taken and s not in out:
            out.append(s)
    return out


def _validate(name: str, value, base: Settings):
    """(normalised value, duplicate key, label) for one axis value, checked by the settings."""
    if name == "prompt":
        text = require_prompt(value, "prompt")
        return text, text.strip(), text
    s = base.replace(**{name: value})
    norm = getattr(s, name)
    if name == "size":
        label = f"size: {norm} ({s.width}x{s.height})" if norm != f"{s.width}x{s.height}" else f"size: {norm}"
        return norm, (s.width, s.height), label
    if name == "model":
        from ...model.hub import display_name
        return norm, norm, f"model: {display_name(norm)}"
    shown = f"{norm:g}" if isinstance(norm, float) else norm
    return norm, norm, f"{name}: {shown}"


def _example(name: str) -> str:
    return {"seed": "1,2,3 or 1-5 or random:4", "guidance": "1.5,3.5,5 or 1-5 (+0.5)", "steps": "4,20 or 10-50 [5]",
            "size": "square,portrait or 512x512,768x768", "prompt": '"a fox|a hare"', "enhance": "none,claude",
            "strength": "0.3,0.6,0.9 or 0.2-1 (+0.2)"}.get(name, "a,b")


def is_list(value) -> bool:
    return isinstance(value, (list, tuple, range)) or getattr(value, "ndim", 0) > 0  # numpy arrays too




def lora_axis(value) -> tuple[list, list]:
    """The `loras` axis: (values, labels). Each LoRA spec may list weights (`style:0,0.5,1`, or
    a range `style:0-1 [5]`); the values are every combination, each a `loras` setting (a
    tuple of canonical specs), labelled with the names and weights of the adapters that vary
    (the others are in the grid's title)."""
    from ...config.loras import check_unique, items, one, split_spec

    choices = []
    for it in items(value):
        source, weights = (split_spec(it) if isinstance(it, str) else (it.get("path"), it.get("weight", 1.0))
                           if isinstance(it, dict) else (it, None))
        if isinstance(weights, str):
            weights = expand_range(weights, "float", "loras") or [w for w in weights.split(",")]
        ws = weights if is_list(weights) else [1.0 if weights is None else weights]
        if any(isinstance(w, str) and not w.strip() for w in ws):
            raise _bad("loras", it, "an empty weight in the list", fix="e.g. --lora style.safetensors:0,0.5,1")
        opts = [one({"path": source, "weight": w}) if source is not None else one(it) for w in ws]
        if len({x.weight for x in opts}) < len(opts):
            raise _bad("loras", it, "a weight appears twice", fix="give each weight once")
        choices.append(opts)
    values, labels = [], []
    varies = [len(c) > 1 for c in choices]
    for combo in itertools.product(*choices):
        check_unique(list(combo))
        values.append(tuple(x.spec for x in combo))
        shown = [x for x, v in zip(combo, varies) if v] or list(combo)  # the adapters whose weight varies
        labels.append(", ".join(f"lora {x.name}: {x.weight:g}" for x in shown) or "no LoRA")
    return values or [()], labels or ["no LoRA"]
