"""LoRA adapters on the loaded pipeline: loaded once each, weighted per job, never a reload
of the base model.

`apply(loaded, loras)` makes the pipeline's active adapters exactly `loras` (config.loras.Lora)
at their weights: each file is loaded once with diffusers' `load_lora_weights` (the peft
backend; kohya/Civitai `lora_unet_...` files converted by diffusers), as an adapter named
after the file and its hash, and `set_adapters` sets the weights. A job without LoRAs turns
the adapters off (`disable_lora`: the base layers alone, the very pixels of no LoRA); `unload`
removes them all (diffusers' `unload_lora_weights`: the base modules back as they were). The
img2img / inpaint pipelines share the transformer, so they see the same adapters.

Refused, with one clear error and the pipeline as it was: a file that is not a LoRA, one for
another architecture (no key matches a FLUX transformer module), one with text-encoder
weights (fluxnb encodes prompts once, before the adapters are set), and LoRAs on a pipeline
loaded with fp8 weights (layerwise float8 casting), torch.compile'd blocks or fused QKV
projections, where the adapters would be wrong or silently ignored.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

from ..config.loras import FIELD, Lora, hashes, short_hash
from ..errors import FluxnbError

log = logging.getLogger(__name__)
MAX_LOADED = 8  # adapters kept loaded (least recently used dropped first)


@dataclass
class Adapter:
    """A loaded adapter: its peft name, the Lora that asked for it, its local file and hashes."""

    adapter: str
    lora: Lora
    path: str
    sha256: str
    short_hash: str

    def describe(self, weight: float) -> dict:
        """What an image's metadata records of it."""
        return {"name": self.lora.name, "path": self.lora.source if self.lora.hub else self.path, "file": self.path,
                "weight": weight, "sha256": self.sha256, "short_hash": self.short_hash}


_HUB_FILES: dict = {}  # hub id -> the local file (once per process: no request per image)


def local_path(lora: Lora) -> str:
    """The local file of a LoRA: its path, or a hub file downloaded (or found) in the cache."""
    if not lora.hub:
        return lora.source
    if lora.source not in _HUB_FILES:
        _HUB_FILES[lora.source] = _download(lora)
    return _HUB_FILES[lora.source]


def _download(lora: Lora) -> str:
    from huggingface_hub import hf_hub_download, list_repo_files

    from .hub import find_token, hub_error

    parts = lora.source.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    token, source = find_token()
    try:
        if not filename:
            files = [f for f in list_repo_files(repo, token=token) if f.endswith(".safetensors")]
            if len(files) != 1:
                raise FluxnbError(f"{FIELD} {lora.source!r}: the repository holds {len(files)} .safetensors files",
                                  field=FIELD, value=lora.source, fix="name the file: owner/repo/file.safetensors")
            filename = files[0]
        return hf_hub_download(repo, filename, token=token)
    except FluxnbError:
        raise
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one clear error
        raise hub_error(e, repo, source) from None


def describe(lora: Lora) -> Adapter:
    """The adapter a Lora loads as: its file's hashes, its peft name (the file's name and hash)."""
    path = local_path(lora)
    full = hashes(path)[0]
    safe = re.sub(r"[^A-Za-z0-9_]", "_", lora.name)[:48] or "lora"
    return Adapter(f"{safe}_{full[:10]}", lora, path, full, short_hash(path))


def check_pipeline(loaded, loras: list) -> None:
    """Refuse LoRAs on a pipeline whose transformer they cannot be trusted on."""
    key = getattr(loaded, "key", None)
    first = loras[0].name
    why = fix = ""
    if loaded.precision in ("fp8", "fp8-fast"):
        chosen = " (chosen by --offload auto for the free VRAM)" if getattr(key, "precision", "") == "bf16" else ""
        why = f"the transformer's weights are float8 (precision {loaded.precision}{chosen})"
        fix = "use --precision bf16 with an --offload that fits (model, group or sequential) for LoRAs"
    elif getattr(key, "compile", False):
        why = "the transformer's blocks are torch.compile'd (their graphs would not see the adapters)"
        fix = "leave --compile out with LoRAs"
    elif getattr(key, "fuse_qkv", False):
        why = "the attention projections are fused (fuse_qkv), and LoRAs act on the separate ones"
        fix = "turn fuse_qkv off with LoRAs"
    if why:
        raise FluxnbError(f"{FIELD} {first!r}: LoRA adapters are refused here: {why}", field=FIELD, value=first,
                          fix=fix)


def apply(loaded, loras: list) -> list[dict]:
    """Make `loaded`'s active adapters exactly `loras` at their weights (each file loaded once);
    returns what the image's metadata records of each. No LoRAs: every adapter off."""
    pipe, state = loaded.pipe, loaded.loras
    if not loras:
        if state.get("adapters") and state.get("active") != []:
            pipe.disable_lora()
            state["active"] = []
        return []
    check_pipeline(loaded, loras)
    adapters = [describe(x) for x in loras]
    known = state.setdefault("adapters", {})
    before, new = state.get("active"), []
    try:
        for a in adapters:
            if a.adapter not in known:
                load(loaded, a)
                new.append(a.adapter)
            known[a.adapter] = known.pop(a.adapter)  # most recently used last
    except FluxnbError:  # the adapters loaded for this job go again; the active ones are as they were
        for name in new:
            _drop(pipe, name)
            known.pop(name, None)
        _restore(loaded, before)
        raise
    names, weights = [a.adapter for a in adapters], [x.weight for x in loras]
    if state.get("active") != list(zip(names, weights)):
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=weights)
        state["active"] = list(zip(names, weights))
    evict(loaded, keep=set(names))
    return [a.describe(x.weight) for a, x in zip(adapters, loras)]


def load(loaded, a: Adapter) -> None:
    """Load one adapter's file onto the pipeline; on any refusal the pipeline is left as it was."""
    pipe = loaded.pipe
    where = f"{FIELD} {a.lora.name!r} ({a.path})"
    # 1. Read it as diffusers reads LoRAs (kohya / Civitai files converted) and check its keys.
    try:
        sd = pipe.lora_state_dict(a.path)
    except Exception as e:  # noqa: BLE001 - not a file diffusers reads as a LoRA
        raise FluxnbError(f"{where}: not a FLUX LoRA diffusers can read ({type(e).__name__}: {_short(e)})",
                          field=FIELD, value=a.path, fix="give a LoRA trained for FLUX.1, in diffusers/PEFT or kohya "
                                                         ".safetensors format") from None
    sd = sd[0] if isinstance(sd, tuple) else sd
    keys = list(sd)
    if any(k.startswith("text_encoder") for k in keys):
        raise FluxnbError(f"{where}: it also trains the text encoder (CLIP), which fluxnb does not apply", field=FIELD,
                          value=a.path, fix="use a transformer-only FLUX LoRA")
    if not any(k.startswith("transformer.") and "lora" in k for k in keys):
        raise FluxnbError(f"{where}: no LoRA weights for a FLUX transformer in it ({len(keys)} keys)", field=FIELD,
                          value=a.path, fix="give a LoRA trained for FLUX.1")
    del sd
    # 2. Load it as a named adapter; it must reach the transformer's modules.
    try:
        with warnings.catch_warnings():  # peft's "multiple adapters" notice: that is the intent
            warnings.simplefilter("ignore", UserWarning)
            pipe.load_lora_weights(a.path, adapter_name=a.adapter)
        if a.adapter not in (getattr(pipe.transformer, "peft_config", None) or {}) or not _reached(pipe, a.adapter):
            raise ValueError("its keys match no module of this FLUX transformer")
    except Exception as e:  # noqa: BLE001 - cleaned up, then one clear error
        _drop(pipe, a.adapter)
        raise FluxnbError(f"{where}: could not be loaded onto this model: {_short(e)}", field=FIELD, value=a.path,
                          fix="give a LoRA trained for this FLUX model (its layer names must match)") from None
    loaded.loras.setdefault("adapters", {})[a.adapter] = a
    loaded.loras["active"] = None  # set_adapters before the next image
    log.info("LoRA %s loaded (%s, sha256 %s)", a.lora.name, a.path, a.sha256[:12])


def _short(e: Exception, n: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _reached(pipe, adapter: str) -> bool:
    return any(adapter in getattr(m, "lora_A", {}) for m in pipe.transformer.modules())


def _drop(pipe, adapter: str) -> None:
    try:
        if adapter in (getattr(pipe.transformer, "peft_config", None) or {}):
            with warnings.catch_warnings():  # peft's "was active" notice: the caller sets the active ones
                warnings.simplefilter("ignore", UserWarning)
                pipe.delete_adapters(adapter)
    except Exception:  # noqa: BLE001 - nothing more to undo
        log.debug("could not delete adapter %s", adapter, exc_info=True)


def _restore(loaded, active) -> None:
    """The adapters active as they were before a failed load (`active`: [(name, weight)], [] off)."""
    pipe = loaded.pipe
    if not loaded.loras.get("adapters"):
        loaded.loras["active"] = []
        return
    if active:
        pipe.enable_lora()
        pipe.set_adapters([n for n, _ in active], adapter_weights=[w for _, w in active])
    else:
        pipe.disable_lora()
    loaded.loras["active"] = list(active or [])


def evict(loaded, keep: set) -> None:
    """Drop the least recently used adapters past MAX_LOADED."""
    known = loaded.loras.get("adapters", {})
    for name in [n for n in known if n not in keep][: max(0, len(known) - MAX_LOADED)]:
        _drop(loaded.pipe, name)
        known.pop(name)


def unload(loaded=None) -> None:
    """Remove every adapter (of `loaded`, else the pipeline in memory): the transformer's
    modules back exactly as before any LoRA; the base model stays loaded. `fluxnb.unload_loras()`."""
    if loaded is None:
        from .pipeline import current

        loaded = current()
    if loaded is not None and loaded.loras.get("adapters"):
        loaded.pipe.unload_lora_weights()
        loaded.loras.clear()
