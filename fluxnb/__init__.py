"""fluxnb: FLUX.1 image generation from Jupyter notebooks and the command line.

    import fluxnb
    images = fluxnb.generate("a lighthouse at dusk", seed=7, steps="fast")
    fluxnb.read_settings(images[0].path)

`import fluxnb` is light: torch, diffusers and transformers load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config.environment import apply_hub_env as _apply_hub_env  # noqa: E402

_apply_hub_env()  # before anything imports huggingface_hub (it reads HF_HOME once)

_LAZY = {
    "generate": ("fluxnb.image.make", "generate"),
    "GeneratedImage": ("fluxnb.image.record", "GeneratedImage"),
    "read_settings": ("fluxnb.outputs.metadata", "read_settings"),
    "read_metadata": ("fluxnb.outputs.metadata", "read_metadata"),
    "Settings": ("fluxnb.config.settings", "Settings"),
    "resolve": ("fluxnb.config.settings", "resolve"),
    "load_params": ("fluxnb.config.params", "load_params"),
    "FluxnbError": ("fluxnb.errors", "FluxnbError"),
    "get_pipeline": ("fluxnb.model.pipeline", "get_pipeline"),
    "unload_loras": ("fluxnb.model.loras", "unload"),
    "count_tokens": ("fluxnb.prompt.tokens", "count_tokens"),
    "enhance": ("fluxnb.prompt.enhancer", "enhance"),
    "sweep": ("fluxnb.runs.sweep.runner", "sweep"),
    "grid": ("fluxnb.outputs.gridlog", "grid"),
    "run_batch": ("fluxnb.runs.batch.runner", "run"),
    "pull": ("fluxnb.front.pull", "pull"),
}
# Modules reachable as attributes (`fluxnb.runlog.load(...)`), by their short names.
MODULES = {
    "runlog": "fluxnb.outputs.runlog", "settings": "fluxnb.config.settings", "pipeline": "fluxnb.model.pipeline",
    "output": "fluxnb.outputs.metadata", "metadata": "fluxnb.outputs.metadata", "testmodel": "fluxnb.model.testmodel",
    "tokens": "fluxnb.prompt.tokens", "ui": "fluxnb.front.ui", "lab": "fluxnb.front.lab", "batch": "fluxnb.runs.batch",
    "sweeps": "fluxnb.runs.sweep", "analysis": "fluxnb.front.analysis", "export": "fluxnb.front.export",
    "enhancer": "fluxnb.prompt.enhancer", "doctor": "fluxnb.front.doctor",
}
__all__ = ["__version__", *_LAZY]


class _ShortNames:
    """`import fluxnb.runlog` (and the other MODULES names) imports the module it names."""

    def find_spec(self, name, path=None, target=None):
        import importlib.util

        short = name[len("fluxnb."):] if name.startswith("fluxnb.") else None
        return importlib.util.spec_from_loader(name, self) if short in MODULES else None

    def create_module(self, spec):
        import importlib

        return importlib.import_module(MODULES[spec.name[len("fluxnb."):]])

    def exec_module(self, module):
        pass


import sys as _sys  # noqa: E402

_sys.meta_path.append(_ShortNames())


def __getattr__(name):
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in MODULES:
        return importlib.import_module(MODULES[name])
    raise AttributeError(f"module 'fluxnb' has no attribute {name!r}")
