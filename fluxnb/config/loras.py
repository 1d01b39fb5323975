"""LoRA adapters as settings: `--lora SPEC` (the `loras` setting), A1111's `<lora:NAME:WEIGHT>`
prompt tags, the LoRA folder, the weight range, and the hashes an image records.

A SPEC is `PATH_OR_NAME_OR_HUBID[:WEIGHT]` (weight 1 by default): a `.safetensors` file, a
NAME in the LoRA folder (`NAME.safetensors`), or a Hugging Face id (`owner/repo`, or
`owner/repo/file.safetensors` naming the file). The `loras` setting holds them canonical,
`SOURCE:WEIGHT` (SOURCE an absolute path, or the hub id), in the order given; params files
and the Python API may give a list of spec strings or `{path, weight}` maps.

The LoRA folder is $FLUXNB_LORA_DIR, else /workspace/loras on a pod, else loras/. A tag in
the prompt loads NAME.safetensors from it; `strip_tags` removes the tags from the text the
encoders see. `effective(s)` is every adapter of a job: the `loras` setting, then the tags.

Hashes (`hashes`, computed once per file and cached): the file's sha256 (recorded in full in
the JSON) and A1111's LoRA hash, which Civitai resolves (its "AutoV3"): the sha256 of a
safetensors file's bytes after its header (kohya's `addnet` hash), of which A1111's
`Lora hashes: "name: HASH"` field writes the first 12 hex digits.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import FluxnbError
from .environment import getenv, on_pod, workspace
from .values import as_float, defaults

FIELD = "loras"
TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>", re.IGNORECASE)
_WEIGHTS = re.compile(r"\s*[-+0-9.eE,\s()\[\]]*\d[-+0-9.eE,\s()\[\]]*")  # a weight, or (sweeps) several
_HUB = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(/[^:]+\.safetensors)?")
FIX = ("give --lora PATH.safetensors[:WEIGHT], a NAME in the LoRA folder ($FLUXNB_LORA_DIR), or a hub id "
       "owner/repo/file.safetensors")


@dataclass(frozen=True)
class Lora:
    """One adapter of a job: its name (the file's stem), source (a path or hub id) and weight."""

    name: str
    source: str
    weight: float

    @property
    def spec(self) -> str:
        return f"{self.source}:{self.weight:.10g}"

    @property
    def hub(self) -> bool:
        return not os.path.isabs(self.source)


def lora_dir() -> Path:
    """The LoRA folder: $FLUXNB_LORA_DIR, else <workspace>/loras on a pod, else loras/."""
    explicit = getenv("FLUXNB_LORA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return workspace() / "loras" if on_pod() else Path("loras")


def weight_range() -> tuple[float, float]:
    """The weights allowed: `limits: lora_weight` in defaults.yaml, or ±$FLUXNB_LORA_WEIGHT_LIMIT."""
    own = getenv("FLUXNB_LORA_WEIGHT_LIMIT")
    if own:
        hi = abs(as_float("FLUXNB_LORA_WEIGHT_LIMIT", own))
        return -hi, hi
    lo, hi = defaults()["limits"]["lora_weight"]
    return float(lo), float(hi)


def check_weight(name: str, value, field: str = FIELD) -> float:
    w = as_float(field, value)
    lo, hi = weight_range()
    if not lo <= w <= hi:
        raise FluxnbError(f"{field} {name}:{value}: weight {w:g} is outside {lo:g}..{hi:g}", field=field, value=value,
                          fix=f"give a weight from {lo:g} to {hi:g} (FLUXNB_LORA_WEIGHT_LIMIT widens the range)")
    return w


def name_of(source: str) -> str:
    return Path(source.rstrip("/")).stem if source.endswith(".safetensors") else source.rstrip("/").split("/")[-1]


# ---------------------------------------------------------------------------------------
# Reading specs
# ---------------------------------------------------------------------------------------

def split_spec(text: str) -> tuple[str, str | None]:
    """(source, weight text or None) of `SOURCE[:WEIGHT]`; the weight text may list several."""
    head, sep, tail = text.rpartition(":")
    if sep and head.strip() and _WEIGHTS.fullmatch(tail):
        return head.strip(), tail.strip()
    return text.strip(), None


def locate(text: str, field: str = FIELD) -> str:
    """The source of a LoRA named by a path, a NAME in the LoRA folder or a hub id: an absolute
    path, or the hub id as given. A missing file is refused, naming where it was looked for."""
    p = Path(text).expanduser()
    if p.is_dir():
        raise FluxnbError(f"{field} {text!r}: is a folder", field=field, value=text, fix=FIX)
    if p.is_file():
        return str(p.resolve())
    folder = lora_dir()
    for cand in (folder / text, folder / f"{text}.safetensors"):
        if not p.is_absolute() and cand.is_file():
            return str(cand.resolve())
    parts = text.split("/")
    if _HUB.fullmatch(text) and not text.startswith(".") and (len(parts) > 2 or not text.endswith(".safetensors")):
        return text
    raise FluxnbError(f"{field} {text!r}: no such LoRA file (looked here and in the LoRA folder {str(folder)!r})",
                      field=field, value=text, fix=FIX)


def one(item, field: str = FIELD) -> Lora:
    """One adapter from a spec string or a {path, weight} map (one weight)."""
    if isinstance(item, dict):
        unknown = set(item) - {"path", "weight", "name", "sha256"}
        if "path" not in item or unknown:
            raise FluxnbError(f"{field} {item!r}: a LoRA map needs path (and weight)", field=field, value=item, fix=FIX)
        source, weight = str(item["path"]).strip(), item.get("weight", 1.0)
    elif isinstance(item, str) and item.strip():
        source, weight = split_spec(item)
        weight = 1.0 if weight is None else weight
    else:
        raise FluxnbError(f"{field} {item!r}: not a LoRA spec", field=field, value=item, fix=FIX)
    if isinstance(weight, str) and "," in weight:
        raise FluxnbError(f"{field} {item!r}: several weights make a sweep", field=field, value=item,
                          fix="sweep them with fluxnb sweep (fluxnb.sweep), or give one weight")
    source = locate(source, field)
    return Lora(name_of(source), source, check_weight(name_of(source), weight, field))


def items(value) -> list:
    if value is None or value == "" or (isinstance(value, str) and value.strip().lower() == "none"):
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise FluxnbError(f"{FIELD} {value!r}: not a list of LoRA specs", field=FIELD, value=value, fix=FIX)


def relative_to(value, folder: Path) -> list:
    """A params file's `loras` with relative paths of files beside it made absolute."""
    out = []
    for it in items(value):
        path = it.get("path") if isinstance(it, dict) else split_spec(it)[0] if isinstance(it, str) else None
        if isinstance(path, str) and not Path(path).expanduser().is_absolute() and (folder / path).is_file():
            new = str(folder / path)
            weight = None if isinstance(it, dict) else split_spec(it)[1]
            it = dict(it, path=new) if isinstance(it, dict) else new + (f":{weight}" if weight else "")
        out.append(it)
    return out


def read_loras(name: str, value) -> tuple:
    """The `loras` setting's reader: a list of canonical `SOURCE:WEIGHT` specs, each file
    checked (it exists, its weight is in range), none given twice."""
    out = [one(it, name) for it in items(value)]
    check_unique(out, name)
    return [x.spec for x in out]


def check_unique(loras: list, field: str = FIELD) -> None:
    seen: dict = {}
    for x in loras:
        if x.source in seen or x.name in seen.values():
            raise FluxnbError(f"{field} {x.name!r}: given twice", field=field, value=x.source,
                              fix="give each LoRA once (in --lora or as a <lora:...> tag, not both)")
        seen[x.source] = x.name


# ---------------------------------------------------------------------------------------
# Prompt tags and a job's adapters
# ---------------------------------------------------------------------------------------

def prompt_tags(prompt: str) -> list[Lora]:
    """The `<lora:NAME:WEIGHT>` tags of a prompt, each NAME.safetensors in the LoRA folder."""
    out = []
    for m in TAG.finditer(prompt or ""):
        name, weight = m.group(1).strip(), (m.group(2) or "1").strip() or "1"
        path = lora_dir() / (name if name.endswith(".safetensors") else f"{name}.safetensors")
        if not path.is_file():
            raise FluxnbError(f"prompt tag {m.group(0)!r}: no LoRA {path.name!r} in the LoRA folder "
                              f"{str(lora_dir())!r}", field="prompt", value=m.group(0),
                              fix="put the file there, or set FLUXNB_LORA_DIR to the folder that holds it")
        out.append(Lora(name_of(str(path)), str(path.resolve()), check_weight(name, weight, "prompt")))
    return out


def strip_tags(prompt: str) -> str:
    """The prompt without its `<lora:...>` tags (what both encoders see)."""
    if not prompt or "<" not in prompt or not TAG.search(prompt):
        return prompt
    text = re.sub(r"[ \t]*\0[ \t]*", " ", TAG.sub("\0", prompt))  # a tag and the spaces around it: one space
    text = re.sub(r",[ \t]*(?=,)", "", re.sub(r"[ \t]+([,.;])", r"\1", text))  # no space before, no empty item
    return text.strip().strip(",").strip()


def parse(spec: str) -> Lora:
    """A canonical `SOURCE:WEIGHT` (as the `loras` setting holds) back to a Lora."""
    source, weight = split_spec(spec)
    return Lora(name_of(source), source, float(weight if weight is not None else 1.0))


def effective(s) -> list[Lora]:
    """Every adapter of settings `s`: its `loras`, then the prompt's tags; none given twice."""
    out = [parse(x) for x in getattr(s, "loras", ()) or ()] + prompt_tags(s.prompt)
    check_unique(out)
    return out


def summary(loras: list[Lora]) -> str:
    """The run log's `loras` column: `name:weight, ...` ("" without adapters)."""
    return ", ".join(f"{x.name}:{x.weight:g}" for x in loras)


# ---------------------------------------------------------------------------------------
# Hashes
# ---------------------------------------------------------------------------------------

_HASHES: dict = {}
_DISK: dict | None = None   # the hash cache file's entries, read once


def _cache_file() -> Path:
    from .environment import cache_dir

    return cache_dir() / "lora_hashes.json"


def _disk() -> dict:
    global _DISK
    if _DISK is None:
        import json

        try:
            _DISK = json.loads(_cache_file().read_text(encoding="utf-8"))
            _DISK = _DISK if isinstance(_DISK, dict) else {}
        except (OSError, ValueError):
            _DISK = {}
    return _DISK


def _remember(key: tuple, value: tuple) -> None:
    """Keep a file's hashes in the cache file (at most 512 files; a failed write costs a rehash later)."""
    import json

    from ..files import write_atomic

    disk = _disk()
    disk["|".join(map(str, key))] = list(value)
    while len(disk) > 512:
        disk.pop(next(iter(disk)))
    try:
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_cache_file(), json.dumps(disk))
    except OSError:
        pass


def hashes(path: str) -> tuple[str, str]:
    """(sha256 of the whole file, A1111's addnet sha256 of the bytes after the safetensors
    header), read in one pass once per file version (path, size, mtime), and kept in fluxnb's
    cache folder (`lora_hashes.json`) for the next process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    kept = _disk().get("|".join(map(str, key)))
    if key not in _HASHES and isinstance(kept, list) and len(kept) == 2:
        _HASHES[key] = tuple(kept)
    if key not in _HASHES:
        full, after = hashlib.sha256(), hashlib.sha256()
        with open(path, "rb") as f:
            head = f.read(8)
            full.update(head)
            skip = int.from_bytes(head, "little") if len(head) == 8 else 0
            while skip > 0:
                chunk = f.read(min(skip, 2**20))
                if not chunk:
                    break
                full.update(chunk)
                skip -= len(chunk)
            for chunk in iter(lambda: f.read(2**22), b""):
                full.update(chunk)
                after.update(chunk)
        _HASHES[key] = (full.hexdigest(), after.hexdigest())
        _remember(key, _HASHES[key])
    return _HASHES[key]


def short_hash(path: str) -> str:
    """A1111's LoRA short hash (Civitai's AutoV3): 12 hex digits."""
    return hashes(path)[1][:12]


def lora_fields(entries) -> dict:
    """A1111's `Lora hashes` field from an image's recorded adapters: `name: HASH, ...` (the
    names without `:` and `,`, as A1111 writes them); {} without adapters."""
    if not isinstance(entries, list) or not entries:
        return {}
    return {"Lora hashes": ", ".join(f"{str(e.get('name', '')).translate(str.maketrans('', '', ':,'))}: "
                                     f"{e.get('short_hash', '')}" for e in entries if isinstance(e, dict))}


def with_tags(prompt: str, entries) -> str:
    """The infotext's prompt line: the prompt with a `<lora:NAME:WEIGHT>` tag for each adapter,
    as A1111 writes it (and reads it back from its LoRA folder)."""
    if not isinstance(entries, list):
        return prompt
    tags = "".join(f" <lora:{e.get('name')}:{float(e.get('weight', 1.0)):g}>" for e in entries if isinstance(e, dict))
    return prompt + tags


def from_record(image: str, entries: list, folders=()) -> list[str]:
    """The `loras` setting that reproduces an image from its recorded adapters: each at its
    recorded path (else a file of the same name in the LoRA folder or `folders`), its sha256
    checked; a missing file or one whose hash differs is refused, naming the adapter and hash."""
    out = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("path"), str):
            continue
        name, want, path = str(e.get("name", "")), str(e.get("sha256", "")), e["path"]
        hub = not os.path.isabs(path) and bool(_HUB.fullmatch(path)) and not Path(path).is_file()
        kept = e.get("file") if isinstance(e.get("file"), str) else ""
        if hub and want and kept and os.path.isfile(kept) and hashes(kept)[0] != want:
            raise FluxnbError(f"image {image!r}: LoRA {name!r} ({path}): the hub's file {kept!r} has sha256 "
                              f"{hashes(kept)[0][:12]}…, not sha256 {want[:12]}…", field=FIELD, value=path,
                              fix="the repository's file changed: download the version the image was made with")
        if not hub:  # a file: at its path, or of its name in the LoRA folder
            tried = [Path(path), *(Path(d) / Path(path).name for d in (lora_dir(), *folders))]
            found = next((p for p in tried if p.is_file() and (not want or hashes(str(p))[0] == want)), None)
            if found is None:
                other = next((p for p in tried if p.is_file()), None)
                why = (f"{str(other)!r} has sha256 {hashes(str(other))[0][:12]}…, not" if other else
                       "no such file, nor one of its name in the LoRA folder, with")
                raise FluxnbError(f"image {image!r}: LoRA {name!r} ({path}): {why} sha256 {want[:12]}…", field=FIELD,
                                  value=path, fix="put that LoRA file back (same content), or give the settings "
                                                  "as flags instead of --from-image")
            path = str(found.resolve())
        out.append(f"{path}:{float(e.get('weight', 1.0)):.10g}")
    return out
