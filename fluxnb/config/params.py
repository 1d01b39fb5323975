"""Params files (YAML), read strictly: no tags, no duplicate keys, none of the YAML 1.1
readings that silently change meaning (`no` -> false, `012` -> 10, `1:20` -> 80), and
bounded: aliases (`*name`) may not make the document grow past MAX_NODES values (a
"billion laughs" is refused before anything is built), nesting stops at MAX_DEPTH, and the
file must be UTF-8 text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import FluxnbError

MAX_NODES = 10_000   # values in a document with every alias expanded (a params file has dozens)
MAX_DEPTH = 32       # lists and mappings inside each other

_YAML11_BOOL = re.compile(r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_SURPRISE_INT = re.compile(r"^[-+]?(0[0-7_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+|[0-9][0-9_]*(:[0-5]?[0-9])+|\d+_[\d_]*)$")
_SURPRISE_FLOAT = re.compile(r"^[-+]?([0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*"  # sexagesimal: 1:20.5 -> 80.5
                             r"|[0-9_]*_[0-9_]*\.[0-9_]*|[0-9_]*\.[0-9_]*_[0-9_]*)$")  # underscores: 1_0.5 -> 10.5


def _strict_loader(source: str):
    """A SafeLoader that refuses tags, YAML 1.1 readings that silently change meaning
    (`no` -> false, `012` -> 10, `1:20` -> 80, `1_000` -> 1000) and duplicate keys (the
    first one silently lost), and keeps dates as the text written (`2024-05-01`)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            # Nesting past MAX_DEPTH is refused before Python's own recursion limit is reached.
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise FluxnbError(f"{source}: line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep",
                                      field="params", value=source, fix="a params file is a flat mapping of settings")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def compose_document(self):
            node = super().compose_document()
            size = expanded_size(node)
            if size > MAX_NODES:
                raise FluxnbError(f"{source}: aliases (*name) expand it to {size} values, more than {MAX_NODES}",
                                  field="params", value=source,
                                  fix="write the values out, or use fewer aliases (a YAML alias bomb is refused)")
            return node

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise FluxnbError(f"{source}: line {key_node.start_mark.line + 1}: the key {key!r} is "
                                          "given twice (YAML would silently keep only the last)", field=str(key),
                                          fix="give each key once")
                    seen.add(key)
                except TypeError:  # an unhashable key: let PyYAML say so
                    pass
            return super().construct_mapping(node, deep)

    def _bool_ctor(loader, node):
        if _YAML11_BOOL.match(node.value):
            raise FluxnbError(
                f"{source}: line {node.start_mark.line + 1}: {node.value!r} would be read as a boolean by YAML 1.1",
                value=node.value, fix=f"quote it (\"{node.value}\") or write true/false")
        return loader.construct_yaml_bool(node)

    def _strict_number(pattern, construct):
        def ctor(loader, node):
            if pattern.match(node.value):
                raise FluxnbError(
                    f"{source}: line {node.start_mark.line + 1}: {node.value!r} would be read as the number "
                    f"{construct(loader, node)} by YAML 1.1", value=node.value,
                    fix=f"write the number plainly or quote it (\"{node.value}\")")
            return construct(loader, node)
        return ctor

    _int_ctor = _strict_number(_SURPRISE_INT, yaml.SafeLoader.construct_yaml_int)
    _float_ctor = _strict_number(_SURPRISE_FLOAT, yaml.SafeLoader.construct_yaml_float)

    StrictLoader.add_constructor("tag:yaml.org,2002:bool", _bool_ctor)
    StrictLoader.add_constructor("tag:yaml.org,2002:int", _int_ctor)
    StrictLoader.add_constructor("tag:yaml.org,2002:float", _float_ctor)
    StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
    return StrictLoader


def expanded_size(root) -> int:
    """How many values a composed YAML document holds with every alias expanded, counted
    without expanding (each node once: its size is its own plus its children's)."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = [] if isinstance(node.value, str) else [
            c for item in node.value for c in (item if isinstance(item, tuple) else (item,))]
        if done:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), 2**62)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def parse_yaml(text: str, source: str = "params") -> Any:
    """Parse YAML text with the strict rules of `load_params` (any type, not only a mapping);
    how `fluxnb batch -p KEY VALUE` reads its values."""
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader(source))  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as e:
        raise FluxnbError(f"{source}: {e.problem} (only plain YAML is allowed; tags such as !!python/... are refused)",
                          field="params", value=source) from None
    except yaml.YAMLError as e:
        raise FluxnbError(f"{source}: not valid YAML: {e}", field="params", value=source) from None
    except RecursionError:
        raise FluxnbError(f"{source}: nested too deeply", field="params", value=source,
                          fix="a params file is a flat mapping of settings") from None


def load_params(path: str | os.PathLike) -> dict:
    """Read a params YAML file with `safe_load` semantics, refusing tags, duplicate keys and
    the YAML 1.1 readings that silently change meaning (`no` -> false, `012` -> 10, `1:20` -> 80).
    Relative image paths (init_image, mask) are taken from the file's folder."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FluxnbError(f"params file {str(path)!r}: no such file", field="params", value=str(path)) from None
    except IsADirectoryError:
        raise FluxnbError(f"params file {str(path)!r}: is a folder", field="params", value=str(path)) from None
    except UnicodeDecodeError as e:
        raise FluxnbError(f"params file {str(path)!r}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                          f"{e.start})", field="params", value=str(path),
                          fix="save it as UTF-8 (a params file is YAML text)") from None
    except OSError as e:
        raise FluxnbError(f"params file {str(path)!r}: cannot be read ({e.strerror})", field="params",
                          value=str(path)) from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FluxnbError(f"{path}: expected a mapping of settings, got {type(data).__name__}",
                          field="params", value=str(path))
    return relative_to(data, Path(path).resolve().parent)


def relative_to(params: dict, folder: Path) -> dict:
    """`params` with its relative file paths (init_image, mask) taken from `folder`, the
    params file's own, so that a batch runs the same from any working folder."""
    from .inputs import PATH_SETTINGS

    out = dict(params)
    for key in PATH_SETTINGS:
        value = out.get(key)
        if isinstance(value, str) and value.strip() and not Path(value.strip()).expanduser().is_absolute():
            out[key] = str(folder / value.strip())
    if out.get("loras"):  # LoRA files beside the params file (names in the LoRA folder and hub ids stay)
        from .loras import relative_to as loras_relative

        out["loras"] = loras_relative(out["loras"], folder)
    return out

