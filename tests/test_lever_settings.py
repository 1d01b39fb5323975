"""The speed levers as settings (fuse_qkv, attention_backend, compile_mode, compile_vae,
compile_cache): flags, params keys and `fluxnb config` lines from the settings table; load
settings that reach pipeline.configure; recorded in the run log and the image's metadata;
refused combinations are one clear error before anything is read or changed. The tiny
model on the CPU; a real compile is stubbed (it takes minutes on the CPU)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from fluxnb import runlog
from fluxnb.errors import FluxnbError
from fluxnb.front.cli import main

from support import tiny_pipeline

TINY = ["--model", "tiny", "--steps", "2", "--size", "64x64", "--format", "png"]
LEVERS = ("fuse_qkv", "attention_backend", "compile_mode", "compile_vae", "compile_cache")


@pytest.fixture(autouse=True)
def fresh_pipeline():
    """No pipeline or process-wide attention backend left over from another test, nor for the next."""
    from fluxnb.model.perf_levers import reset_attention_backend
    from fluxnb.model.pipeline import unload

    unload(), reset_attention_backend()
    yield
    unload(), reset_attention_backend()


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.nn.Module.compile recorded instead of run."""
    import torch

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    return calls


@pytest.fixture
def configure_calls(monkeypatch):
    """pipeline.configure's arguments, recorded; the real configure then runs."""
    from fluxnb.model import pipeline

    calls, real = [], pipeline.configure

    def spy(pipe, *args, **kwargs):
        calls.append((args, kwargs))
        return real(pipe, *args, **kwargs)

    monkeypatch.setattr(pipeline, "configure", spy)
    return calls


def saved(outdir) -> list:
    return sorted(p for p in outdir.glob("*.png")) if outdir.exists() else []


# ---------------------------------------------------------------------------------------
# Flags and settings
# ---------------------------------------------------------------------------------------

def test_lever_flags_reach_configure_and_the_record(tiny_model, outdir, configure_calls, compile_calls, capsys):
    assert main(["generate", "a fox", "--seed", "2", "--out", str(outdir), *TINY, "--fuse-qkv",
                 "--attention-backend", "FLEX", "--compile-mode", "max-autotune", "--compile-vae",
                 "--no-compile-cache"]) == 0
    [(args, kwargs)] = configure_calls
    assert args == ("none", "bf16", False, "cpu")
    assert kwargs == {"fuse_qkv": True, "attention_backend": "flex", "compile_mode": "max-autotune",
                      "compile_vae": True, "compile_cache": False}
    assert compile_calls == [("Decoder", {"fullgraph": True, "mode": "max-autotune"})]   # the VAE decoder only
    [rec] = runlog.read(outdir)
    assert {k: rec[k] for k in LEVERS} == {"fuse_qkv": True, "attention_backend": "flex",
                                           "compile_mode": "max-autotune", "compile_vae": True,
                                           "compile_cache": False}
    df = runlog.load(outdir)
    assert str(df["fuse_qkv"].dtype) == "boolean" and df["attention_backend"].tolist() == ["flex"]


def test_the_defaults_load_no_lever_and_compile_options_count_only_when_compiling(monkeypatch):
    from fluxnb.config.settings import resolve

    s = resolve(model="tiny")
    assert (s.fuse_qkv, s.attention_backend, s.compile_mode, s.compile_vae, s.compile_cache) == (
        False, "default", "default", False, True)
    assert s.load.compile_cache is False and s.load.compile_mode == "default"   # nothing compiles
    # a compile mode without compiling loads the same pipeline (no reload)
    assert resolve(model="tiny", compile_mode="max-autotune").load == s.load
    on = resolve(model="tiny", compile=True, compile_mode="max-autotune")
    assert (on.load.compile_mode, on.load.compile_cache) == ("max-autotune", True) and on.load != s.load
    assert resolve(model="tiny", compile_vae=True, compile_cache=False).load.compile_cache is False
    assert resolve(model="tiny", fuse_qkv=True).load != s.load
    monkeypatch.setenv("FLUXNB_FUSE_QKV", "yes")
    monkeypatch.setenv("FLUXNB_ATTENTION_BACKEND", " _Native_Math ")
    s = resolve()
    assert (s.fuse_qkv, s.attention_backend) == (True, "_native_math")
    assert s.sources["fuse_qkv"] == "env:FLUXNB_FUSE_QKV"


def test_a_params_file_sets_the_levers_for_every_item():
    from fluxnb import batch

    p = batch.plan({"model": "tiny", "prompts": ["a"], "fuse_qkv": True, "attention_backend": "flex",
                    "compile": True, "compile_mode": "max-autotune-no-cudagraphs", "compile_cache": False})
    load = p.settings.load
    assert (load.fuse_qkv, load.attention_backend, load.compile_mode, load.compile_cache) == (
        True, "flex", "max-autotune-no-cudagraphs", False)
    with pytest.raises(FluxnbError) as e:
        batch.plan({"model": "tiny", "prompts": ["a"], "compile_mode": "fastest"})
    assert str(e.value).startswith("compile_mode 'fastest': unknown") and "max-autotune" in str(e.value)


def test_fluxnb_config_shows_the_levers_with_their_sources(tmp_path, monkeypatch, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("compile_vae: true\n")
    monkeypatch.setenv("FLUXNB_ATTENTION_BACKEND", "flex")
    assert main(["config", "--params", str(params), "--fuse-qkv", "--compile-mode", "max-autotune-no-cudagraphs"]) == 0
    lines = {ln.split()[0]: ln.split()[1:] for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    assert lines["fuse_qkv"] == ["true", "call"]
    assert lines["attention_backend"] == ['"flex"', "env:FLUXNB_ATTENTION_BACKEND"]
    assert lines["compile_mode"] == ['"max-autotune-no-cudagraphs"', "call"]
    assert lines["compile_vae"] == ["true", f"params:{params}"]
    assert lines["compile_cache"] == ["true", "defaults"]
    assert main(["config", "--json", "--no-compile-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["compile_cache"] == {"value": False, "source": "call"}


def test_fuse_qkv_generate_draws_the_same_image_and_records_it(tiny_model, outdir, capsys):
    from fluxnb.outputs.metadata import read_settings

    assert main(["generate", "a red fox in the snow", "--seed", "4", "--out", str(outdir / "plain"), *TINY]) == 0
    assert main(["generate", "a red fox in the snow", "--seed", "4", "--out", str(outdir / "fused"), *TINY,
                 "--fuse-qkv"]) == 0
    [plain], [fused] = saved(outdir / "plain"), saved(outdir / "fused")
    a, b = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (plain, fused))
    assert a.std() > 5 and np.abs(a - b).max() <= 1   # perf_levers' tolerance (2e-4) after 8-bit rounding
    [ra], [rb] = runlog.read(outdir / "plain"), runlog.read(outdir / "fused")
    assert (ra["fuse_qkv"], rb["fuse_qkv"]) == (False, True) and ra["id"] == rb["id"]   # same pixels, same id
    again = read_settings(fused)   # the image carries the setting: reloading it fuses again
    assert again.fuse_qkv is True and read_settings(plain).fuse_qkv is False


# ---------------------------------------------------------------------------------------
# Refused: one error line, before the weights are read or the pipeline changed
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, start", [
    (["--attention-backend", "turbo"], "error: attention_backend 'turbo': unknown"),
    (["--attention-backend", "_native_cudnn"], "error: attention_backend '_native_cudnn': needs a CUDA GPU"),
    (["--attention-backend", "flash attn"], "error: attention_backend 'flash attn': not an attention backend name"),
    (["--precision", "fp8-fast", "--fuse-qkv"], "error: precision fp8-fast: it needs a CUDA GPU"),
])
def test_a_refused_lever_is_one_error_line_and_no_file(tiny_model, outdir, monkeypatch, capsys, flags, start):
    from diffusers import FluxPipeline

    from fluxnb.model import pipeline

    def never(*a, **k):
        raise AssertionError("the model was found or read before the settings were checked")

    monkeypatch.setattr(FluxPipeline, "from_pretrained", never)
    monkeypatch.setattr(pipeline, "resolve_model", never)   # where a hub model would be downloaded
    assert main(["generate", "a fox", "--seed", "1", "--out", str(outdir), *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err, err
    assert saved(outdir) == []


def test_a_backend_whose_package_is_missing_is_named_before_loading():
    from fluxnb.model.pipeline import check_options

    with pytest.raises(FluxnbError) as e:
        check_options("bf16", "cuda", "flash")   # flash-attn is not installed here
    assert str(e.value).startswith("attention_backend 'flash': not usable here:") and "flash-attn" in str(e.value)
    assert e.value.field == "attention_backend"
    check_options("bf16", "cuda", "_native_cudnn")   # PyTorch's own: nothing to install


def test_fp8_fast_after_fuse_qkv_quantizes_the_fused_projection_and_refuses_before_fusing(
        tiny_model, monkeypatch):
    import sys
    import types

    from fluxnb.model import perf
    from fluxnb.model.perf_levers import is_fused
    from fluxnb.model.pipeline import configure

    pipe = tiny_pipeline(tiny_model)
    with pytest.raises(FluxnbError) as e:   # no CUDA, no torchao: refused with the pipeline untouched
        configure(pipe, "none", "fp8-fast", False, "cpu", fuse_qkv=True, attention_backend="flex")
    assert e.value.field == "precision" and not is_fused(pipe)
    from fluxnb.model.perf_levers import attention_backend_in_use

    assert attention_backend_in_use(pipe) == "default"

    seen = []   # where fp8-fast can run (a stand-in torchao): fused first, then quantized
    fake = types.ModuleType("torchao.quantization")
    fake.PerRow = type("PerRow", (), {})
    fake.Float8DynamicActivationFloat8WeightConfig = lambda granularity: "f8dq"
    fake.quantize_ = lambda model, config, device=None: seen.append(
        hasattr(model.transformer_blocks[0].attn, "to_qkv") and not hasattr(model.transformer_blocks[0].attn, "to_q"))
    monkeypatch.setitem(sys.modules, "torchao", types.ModuleType("torchao"))
    monkeypatch.setitem(sys.modules, "torchao.quantization", fake)
    monkeypatch.setattr(perf, "fp8_fast_problem", lambda: None)
    configure(pipe, "none", "fp8-fast", False, "cpu", fuse_qkv=True)
    assert seen == [True]


# ---------------------------------------------------------------------------------------
# compile_s counts the first compiled VAE decode
# ---------------------------------------------------------------------------------------

def test_compile_s_counts_the_first_compiled_vae_decode(tiny_model, outdir, compile_calls):
    """compile_vae with the compile stubbed: a slow first decode at each size stands in for it."""
    import time

    import fluxnb
    from fluxnb.config.settings import resolve
    from fluxnb.image.make import make
    from fluxnb.image.record import Job
    from fluxnb.model.pipeline import get_pipeline

    s = resolve(prompt="a fox", model="tiny", steps=2, size="64x64", compile_vae=True, output_dir=str(outdir))
    loaded = get_pipeline(s.load)
    real, first = loaded.pipe.vae.decode, set()

    def decode(latents, *a, **k):
        if tuple(latents.shape[-2:]) not in first:
            first.add(tuple(latents.shape[-2:]))
            time.sleep(0.3)
        return real(latents, *a, **k)

    loaded.pipe.vae.decode = decode
    gen = dict(prompt="a fox", model="tiny", steps=2, compile_vae=True, output_dir=str(outdir), progress=False)
    [a] = fluxnb.generate(seed=1, size="64x64", **gen)
    [b] = fluxnb.generate(seed=2, size="64x64", **gen)
    a, b = a.record, b.record
    assert a["compile_vae"] is True and a["compile"] is False
    assert a["compile_s"] >= 0.25 and a["decode_s"] == 0.0   # the whole first decode is compile time
    assert a["elapsed_s"] >= a["compile_s"] + a["denoise_s"] - 0.01
    assert b["compile_s"] == 0.0 and b["decode_s"] > 0.0      # same size: compiled already
    assert ("vae", 64, 64) in loaded.compiled_sizes and (64, 64) not in loaded.compiled_sizes
    # staged (denoise every call, then decode): a new size still counts its first decode
    [c] = make([Job(s.replace(size="80x80"), 3)], staged=True, progress=False)
    assert c.record["compile_s"] >= 0.25 and ("vae", 80, 80) in loaded.compiled_sizes
    plain = fluxnb.generate(seed=4, size="64x64", **{**gen, "compile_vae": False})[0].record
    assert plain["compile_s"] == 0.0 and plain["compile_vae"] is False


# ---------------------------------------------------------------------------------------
# compile_cache off after on puts torch's own cache back
# ---------------------------------------------------------------------------------------

def test_compile_cache_off_puts_back_what_fluxnb_changed(tmp_path, monkeypatch):
    from fluxnb.model.perf_levers import use_compile_cache

    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/elsewhere/triton")   # the user's own: kept throughout
    assert use_compile_cache(True) == str((tmp_path / "cache" / "inductor").resolve())
    assert use_compile_cache(False) is None
    import torch._inductor.runtime.cache_dir_utils as cdu

    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, cdu.default_cache_dir())   # torch's own again
    assert os.environ["TRITON_CACHE_DIR"] == "/elsewhere/triton"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))   # the user's: never undone
    assert use_compile_cache(True) == str(tmp_path / "mine")
    assert use_compile_cache(False) is None and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
