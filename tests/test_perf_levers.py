"""The opt-in speed levers (fluxnb.model.perf_levers) on the tiny model on the CPU: fused QKV,
the attention backend, the channels-last compiled VAE decode, the compile mode and the
persistent inductor cache, each through pipeline.configure as the loader applies them.
No timed assertions: speed lives in benchmarks/bench_gpu.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from support import ROOT, tiny_pipeline
from support import tiny_pixels as pixels


@pytest.fixture
def tiny_pipe(tiny_model):
    return tiny_pipeline(tiny_model)


@pytest.fixture(autouse=True)
def default_attention():
    """diffusers' process-wide attention backend as it was (a test may set flex)."""
    from fluxnb.model.perf_levers import reset_attention_backend

    reset_attention_backend()
    yield
    reset_attention_backend()


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.nn.Module.compile recorded instead of run (a real CPU compile takes minutes)."""
    import torch

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    return calls


# ---------------------------------------------------------------------------------------
# Fused QKV
# ---------------------------------------------------------------------------------------

def test_fuse_qkv_draws_the_same_image_with_one_projection(tiny_pipe):
    from fluxnb.model.perf_levers import fuse_qkv, levers_in_effect

    before = pixels(tiny_pipe)
    cfg = tiny_pipe.transformer.config
    assert fuse_qkv(tiny_pipe) == cfg.num_layers + cfg.num_single_layers
    double = tiny_pipe.transformer.transformer_blocks[0].attn
    single = tiny_pipe.transformer.single_transformer_blocks[0].attn
    assert hasattr(double, "to_qkv") and hasattr(double, "to_added_qkv") and hasattr(single, "to_qkv")
    for attn in (double, single):   # the separate projections are gone, not kept twice
        assert not any(hasattr(attn, n) for n in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"))
    assert any(hasattr(m, "to_qkv") for m in tiny_pipe.vae.modules())   # the VAE's attention too
    np.testing.assert_allclose(pixels(tiny_pipe), before, atol=2e-4)
    assert levers_in_effect(tiny_pipe)["fuse_qkv"] is True


def test_fuse_qkv_comes_before_fp8_so_the_fused_projection_is_stored_in_float8(tiny_pipe):
    import torch

    from fluxnb.model.pipeline import configure

    configure(tiny_pipe, "none", "fp8", False, "cpu", fuse_qkv=True)
    attn = tiny_pipe.transformer.transformer_blocks[0].attn
    assert attn.to_qkv.weight.dtype == torch.float8_e4m3fn
    px = pixels(tiny_pipe)
    assert px.std() > 0.01   # still draws (not flat)


def test_fuse_qkv_refuses_over_lora_adapters(tiny_pipe):
    """A stand-in for a peft LoRA layer (peft wraps the Linear it adapts as base_layer)."""
    import torch

    from fluxnb.errors import FluxnbError
    from fluxnb.model.perf_levers import fuse_qkv

    attn = tiny_pipe.transformer.transformer_blocks[0].attn
    wrapper = torch.nn.Module()
    wrapper.base_layer = attn.to_q
    attn.to_q = wrapper
    with pytest.raises(FluxnbError) as e:
        fuse_qkv(tiny_pipe)
    assert e.value.field == "fuse_qkv" and "LoRA" in str(e.value) and "turn fuse_qkv off" in str(e.value)
    assert not any(getattr(m, "fused_projections", False) for m in tiny_pipe.transformer.modules())


# ---------------------------------------------------------------------------------------
# Attention backend
# ---------------------------------------------------------------------------------------

def test_unknown_attention_backend_is_a_clear_error_before_anything_changes(tiny_pipe):
    from fluxnb.errors import FluxnbError
    from fluxnb.model.perf_levers import is_fused
    from fluxnb.model.pipeline import configure

    with pytest.raises(FluxnbError) as e:
        configure(tiny_pipe, "none", "bf16", False, "cpu", fuse_qkv=True, attention_backend="turbo")
    msg = str(e.value)
    assert e.value.field == "attention_backend" and e.value.value == "turbo"
    assert "attention_backend 'turbo': unknown" in msg and "_native_cudnn" in msg and "flex" in msg
    assert not is_fused(tiny_pipe)   # checked first: the pipeline is as it was


def test_gpu_only_attention_backend_on_the_cpu_says_so():
    from fluxnb.errors import FluxnbError
    from fluxnb.model.perf_levers import check_attention_backend

    with pytest.raises(FluxnbError) as e:
        check_attention_backend("_native_cudnn", "cpu")
    assert "needs a CUDA GPU" in str(e.value) and "flex" in e.value.fix
    assert check_attention_backend("FLEX", "cpu") == "flex" and check_attention_backend(None, "cpu") == "default"
    assert check_attention_backend("_native_cudnn", "cuda") == "_native_cudnn"


def test_missing_attention_package_is_a_clear_error(tiny_pipe, monkeypatch):
    from fluxnb.errors import FluxnbError
    from fluxnb.model.perf_levers import apply_attention_backend

    def refuse(backend):
        raise RuntimeError("Flash Attention backend 'flash' is not usable: install flash-attn>=2.6.3.")

    monkeypatch.setattr(tiny_pipe.transformer, "set_attention_backend", refuse)
    with pytest.raises(FluxnbError) as e:
        apply_attention_backend(tiny_pipe, "flash", "cuda")
    assert "attention_backend 'flash': not usable here" in str(e.value) and "flash-attn" in str(e.value)


@pytest.mark.parametrize("backend", ["flex", "_native_math"])
def test_cpu_attention_backends_draw_the_same_image(tiny_pipe, backend):
    from fluxnb.model.perf_levers import attention_backend_in_use
    from fluxnb.model.pipeline import configure

    before = pixels(tiny_pipe)
    assert attention_backend_in_use(tiny_pipe) == "default"
    configure(tiny_pipe, "none", "bf16", False, "cpu", attention_backend=backend)
    assert attention_backend_in_use(tiny_pipe) == backend
    np.testing.assert_allclose(pixels(tiny_pipe), before, atol=2e-4)


# ---------------------------------------------------------------------------------------
# Compile mode, compiled VAE decode
# ---------------------------------------------------------------------------------------

def test_compile_mode_reaches_every_block_and_the_vae_decoder(tiny_pipe, compile_calls):
    from fluxnb.model.perf_levers import levers_in_effect
    from fluxnb.model.pipeline import configure

    before = pixels(tiny_pipe)
    configure(tiny_pipe, "none", "bf16", True, "cpu", compile_mode="max-autotune-no-cudagraphs", compile_vae=True)
    cfg = tiny_pipe.transformer.config
    blocks = [kw for name, kw in compile_calls if name.startswith("Flux")]
    decoder = [kw for name, kw in compile_calls if name == "Decoder"]
    assert len(blocks) == cfg.num_layers + cfg.num_single_layers and len(decoder) == 1
    assert all(kw == {"fullgraph": True, "mode": "max-autotune-no-cudagraphs"} for kw in blocks + decoder)
    assert levers_in_effect(tiny_pipe)["channels_last_vae"] is True
    np.testing.assert_allclose(pixels(tiny_pipe), before, atol=2e-4)   # channels-last: the same image


def test_default_compile_mode_passes_no_mode_and_unknown_mode_is_refused(tiny_pipe, compile_calls):
    from fluxnb.errors import FluxnbError
    from fluxnb.model.pipeline import configure

    configure(tiny_pipe, "none", "bf16", True, "cpu")
    assert compile_calls and all(kw == {"fullgraph": True} for _, kw in compile_calls)
    with pytest.raises(FluxnbError) as e:
        configure(tiny_pipe, "none", "bf16", True, "cpu", compile_mode="fastest")
    assert e.value.field == "compile_mode" and "max-autotune-no-cudagraphs" in str(e.value)


def test_vae_decoder_under_offload_hooks_is_not_compiled_as_one_graph(tiny_pipe, compile_calls):
    from fluxnb.model.pipeline import configure

    configure(tiny_pipe, "none", "bf16", False, "cpu", compile_vae=True)
    tiny_pipe.vae.decoder.conv_in._diffusers_hook = type("Registry", (), {"hooks": {"offload": object()}})()
    from fluxnb.model.perf_levers import apply_compile_vae

    assert apply_compile_vae(tiny_pipe) is False
    assert compile_calls[-1] == ("Decoder", {"fullgraph": False})


# ---------------------------------------------------------------------------------------
# Persistent inductor cache
# ---------------------------------------------------------------------------------------

def test_compile_cache_goes_under_fluxnbs_cache_folder(tmp_path, monkeypatch):
    from fluxnb.model.perf_levers import use_compile_cache

    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/tmp/torchinductor_someone/triton/0")   # set by an earlier compile
    import torch._inductor.runtime.cache_dir_utils as cdu

    monkeypatch.setattr(cdu, "default_cache_dir", lambda: "/tmp/torchinductor_someone")
    want = str((tmp_path / "cache" / "inductor").resolve())
    assert use_compile_cache(True) == want
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == want and os.path.isdir(want)
    assert "TRITON_CACHE_DIR" not in os.environ   # Triton's cache follows inductor's
    # torch's own default, set by inductor itself earlier in the process, is replaced too
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")
    assert use_compile_cache(True) == want
    # an explicit folder wins; None leaves torch's default alone
    assert use_compile_cache(tmp_path / "elsewhere") == str((tmp_path / "elsewhere").resolve())
    assert use_compile_cache(None) is None and os.environ["TORCHINDUCTOR_CACHE_DIR"].endswith("elsewhere")


def test_compile_cache_keeps_a_folder_the_user_chose(tmp_path, monkeypatch):
    from fluxnb.model.perf_levers import use_compile_cache

    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache(True) == str(tmp_path / "mine")
    assert not (tmp_path / "cache" / "inductor").exists()


@pytest.mark.slow
@pytest.mark.skipif("'slow' not in (config.getoption('markexpr') or '')",
                    reason="two real CPU compiles in fresh processes take ~30 s: run with -m slow")
def test_a_second_process_reuses_the_compiled_kernels(tmp_path):
    script = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from fluxnb.model.perf_levers import use_compile_cache;"
              "use_compile_cache(True); f = torch.compile(lambda x: torch.sin(x) * 2 + 1, fullgraph=True);"
              "print(float(f(torch.ones(8)).sum()))")
    env = dict(os.environ, FLUXNB_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    env.pop("TRITON_CACHE_DIR", None)
    cache = tmp_path / "cache" / "inductor"
    first = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    built = sorted(p for p in cache.rglob("*") if p.is_file())
    assert any(p.suffix == ".so" for p in built) and (cache / "fxgraph").is_dir()
    second = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True, text=True, env=env)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == built   # nothing compiled again


def test_a_default_load_after_another_backend_uses_the_default_again(tiny_model):
    """diffusers' set_attention_backend also sets a process-wide backend that every pipeline
    without its own follows: a later default load must not inherit flex."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    from fluxnb.model.perf_levers import attention_backend_in_use
    from fluxnb.model.pipeline import configure

    first = tiny_pipeline(tiny_model)
    configure(first, "none", "bf16", False, "cpu", attention_backend="flex")
    second = tiny_pipeline(tiny_model)
    assert attention_backend_in_use(second) == "flex"   # what diffusers alone would leave it with
    configure(second, "none", "bf16", False, "cpu")
    assert _AttentionBackendRegistry.get_active_backend()[0] == "native"
    assert attention_backend_in_use(second) == "default" and attention_backend_in_use(first) == "flex"
