"""fluxnb's JSON in a JPEG: comment (COM) segments, each at most 64 KB, so a long record is
split across several and joined again when read.

One segment holds `fluxnb:` + the JSON (as every fluxnb JPEG has); a longer JSON goes in
segments `fluxnb[1/N]:` ... `fluxnb[N/N]:` + its parts, in order. The segments go after the
APPn segments (JFIF, EXIF), where Pillow puts a comment; every JPEG reader skips them.
"""

from __future__ import annotations

import re

MAX_SEGMENT = 65533          # a marker segment's payload: its 16-bit length counts itself (2 bytes)
MAX_PARTS = 256              # 16 MB: more is not a record of ours (a reader stops there)
_PART = re.compile(rb"^(\w+)\[(\d{1,3})/(\d{1,3})\]:")


def comment_payloads(key: str, blob: bytes) -> list[bytes]:
    """The COM payloads that carry `blob` under `key`: one `KEY:` + blob when it fits, else
    `KEY[i/N]:` + parts."""
    single = key.encode() + b":" + blob
    if len(single) <= MAX_SEGMENT:
        return [single]
    room = MAX_SEGMENT - len(f"{key}[{MAX_PARTS}/{MAX_PARTS}]:")
    parts = [blob[i:i + room] for i in range(0, len(blob), room)]
    if len(parts) > MAX_PARTS:
        raise ValueError(f"{len(blob)} bytes of metadata: more than {MAX_PARTS} comment segments")
    return [f"{key}[{i}/{len(parts)}]:".encode() + p for i, p in enumerate(parts, 1)]


def add_comments(jpeg: bytes, payloads: list[bytes]) -> bytes:
    """`jpeg` with a COM segment per payload inserted after its APPn segments."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream")
    i = 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF and 0xE0 <= jpeg[i + 1] <= 0xEF:
        i += 2 + int.from_bytes(jpeg[i + 2:i + 4], "big")
    segments = b"".join(b"\xff\xfe" + (len(p) + 2).to_bytes(2, "big") + p for p in payloads)
    return jpeg[:i] + segments + jpeg[i:]


def join_comments(key: str, comments: list[bytes], max_bytes: int) -> bytes | None:
    """The blob stored under `key` in these COM payloads (in file order), or None: none,
    parts missing or out of order, or more than `max_bytes` in all."""
    head = key.encode() + b":"
    for c in comments:
        if c.startswith(head):
            return c[len(head):] if len(c) - len(head) <= max_bytes else None
    parts: dict[int, bytes] = {}
    total = None
    size = 0
    for c in comments:
        m = _PART.match(c)
        if not m or m.group(1).decode() != key:
            continue
        i, n = int(m.group(2)), int(m.group(3))
        if total is None:
            total = n
        if n != total or not 1 <= i <= n or i in parts:
            return None
        parts[i] = c[m.end():]
        size += len(parts[i])
        if size > max_bytes:
            return None
    if total is None or len(parts) != total:
        return None
    return b"".join(parts[i] for i in range(1, total + 1))
