"""Prompt enhancement (placeholder until the enhancer issue lands): `none` only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import FluxnbError


@dataclass
class Enhancement:
    prompt: str
    enhanced: str
    backend: str
    model: str | None = None
    system_prompt_sha256: str | None = None
    elapsed_s: float = 0.0
    cached: bool = False
    fallback_from: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def enhance(prompt: str, backend: str = "none", **_kw) -> Enhancement:
    if backend == "none":
        return Enhancement(prompt, prompt, "none")
    raise FluxnbError(f"enhance {backend!r}: not available yet", field="enhance", value=backend)
