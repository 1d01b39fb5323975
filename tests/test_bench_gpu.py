"""benchmarks/bench_gpu.py, the harness the GPU figures come from: its rows, estimates and
budget, the JSON that survives a time limit, the memory cap put back, pixels compared with
the baseline. Its logic on the tiny model on the CPU, never its timings."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gpu  # noqa: E402
import bench_gpu_rows as rows_mod  # noqa: E402


def names(configs):
    return [c.name for c in configs]


# ---------------------------------------------------------------------------------------
# Arguments and rows
# ---------------------------------------------------------------------------------------

def test_default_run_is_the_core_set_at_1024_28_steps_3_runs():
    a = bench_gpu.parse_args([])
    assert (a.scale, a.size, a.steps, a.runs, a.budget_s) == ("full", 1024, [28], 3, None)
    assert names(a.configs) == ["baseline", "default", "compile", "fp8-fast+compile", "cap:auto",
                                "cap:encoders+fp8-fast+compile"]
    a = bench_gpu.parse_args(["--scale", "small", "--configs", "fp8,compile,fp8", "--steps", "8,4"])
    assert (a.size, a.steps) == (256, [8, 4])
    assert names(a.configs) == ["baseline", "fp8", "compile"]   # the baseline always runs, first, once
    every = names(bench_gpu.parse_args(["--configs", "all"]).configs)
    assert len(every) == len(set(every)) and {"cap:sequential", "fuse-qkv+compile", "attn-cudnn+compile"} <= set(every)


@pytest.mark.parametrize("bad", [["--configs", "turbo"], ["--configs", "autotune"], ["--configs", "attn-bogus"],
                                 ["--steps", "a,b"], ["--size", "1000"], ["--steps", "0"], ["--budget-s", "0"]])
def test_bad_arguments_are_refused(bad, capsys):
    with pytest.raises(SystemExit):
        bench_gpu.parse_args(bad)
    assert "error" in capsys.readouterr().err


def test_row_names_say_what_runs():
    cfg = rows_mod.parse_config("cap:encoders+fp8-fast+fuse-qkv+compile+autotune+vae+attn-cudnn")
    assert (cfg.cap, cfg.offload, cfg.precision, cfg.compile, cfg.compile_mode) == (
        True, "encoders", "fp8-fast", True, "max-autotune-no-cudagraphs")
    assert cfg.levers() == {"fuse_qkv": True, "attention_backend": "_native_cudnn",
                            "compile_mode": "max-autotune-no-cudagraphs", "compile_vae": True, "compile_cache": True}
    assert cfg.cuda_only
    assert rows_mod.parse_config("default").offload == "auto"
    flex = rows_mod.parse_config("attn-flex")
    assert flex.attention_backend == "flex" and not flex.cuda_only and flex.levers()["compile_cache"] is None
    assert rows_mod.parse_config("attn-cudnn+compile").cuda_only   # cuDNN attention needs a GPU
    assert rows_mod.parse_config("baseline").diffusers


@pytest.mark.parametrize("old, new", [("fuse-qkv+compile", "compile+fuse-qkv"),
                                      ("compile+autotune", "compile+max-autotune-no-cudagraphs"),
                                      ("compile+vae", "compile+compile-vae"), ("attn-flex", "attn-flex")])
def test_rows_are_named_with_the_settings_words_and_the_old_names_run_the_same(old, new):
    """A row's parts are fluxnb's settings: the settings' own words parse to the same
    configure arguments as the short names RESULTS.md uses, and each row says the
    `fluxnb generate` flags that load a pipeline the same way."""
    from fluxnb.config.settings import resolve
    from fluxnb.front.cli import build_parser
    from fluxnb.front.flags import settings_from_args

    a, b = rows_mod.parse_config(old), rows_mod.parse_config(new)
    assert (a.levers(), a.compile, a.offload, a.precision) == (b.levers(), b.compile, b.offload, b.precision)
    args = build_parser().parse_args(["generate", "x", *a.flags().split()])
    s = settings_from_args(args, prompt="x")
    load = s.load
    assert {k: getattr(load, k) for k in a.settings()} == a.settings()
    assert resolve(**a.settings()).load == load


def test_the_fastest_row_is_a_command_line():
    cfg = rows_mod.parse_config("cap:encoders+" + rows_mod.FAST)
    assert cfg.flags() == ("--offload encoders --precision fp8-fast --compile --fuse-qkv --compile-mode "
                           "max-autotune-no-cudagraphs --compile-vae")
    assert rows_mod.parse_config("fuse-qkv").flags() == "--offload none --fuse-qkv"   # no cache flag: nothing compiles


def test_estimates_follow_what_the_run_has_measured():
    cal = rows_mod.Calibration()
    base, comp = rows_mod.parse_config("baseline"), rows_mod.parse_config("compile")
    kw = dict(scale="full", steps=[28], runs=3, device="cuda")
    prior = rows_mod.estimate(base, cal=cal, **kw)
    assert prior == pytest.approx((20 + 4 * (0.22 * 28 + 0.4)) * 1.15, abs=0.1)
    cal.build_s, cal.image_s = 10.0, {28: 5.0}
    assert rows_mod.estimate(base, cal=cal, **kw) == pytest.approx((10 + 4 * 5.0) * 1.15, abs=0.1)
    assert rows_mod.estimate(comp, cal=cal, **kw) == pytest.approx((10 + 2 + 45 + 4 * 5.0 * 0.64) * 1.15, abs=0.1)
    cal.compile_ratio = 0.5   # a compile that took half the prior halves the next estimate's compile part
    assert rows_mod.estimate(comp, cal=cal, **kw) == pytest.approx((10 + 2 + 22.5 + 4 * 5.0 * 0.64) * 1.15, abs=0.1)
    cap = rows_mod.parse_config("cap:model")
    assert rows_mod.estimate(cap, cal=cal, **kw) > rows_mod.estimate(base, cal=cal, **kw) * 3   # model offload: 3.3x
    assert cal.image("full", 4) == pytest.approx(5.0 * (0.22 * 4 + 0.4) / (0.22 * 28 + 0.4))


# ---------------------------------------------------------------------------------------
# Pieces: pixels, the memory cap, freeing, the table
# ---------------------------------------------------------------------------------------

def test_pixels_are_compared_with_the_baseline_of_the_same_seed():
    from PIL import Image

    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[2, 3, 1] = 103
    baseline = {(4, 0): Image.fromarray(a), (4, 1): Image.fromarray(a)}
    row = bench_gpu.new_row(rows_mod.parse_config("fp8"))
    bench_gpu.compare(row, {(4, 0): Image.fromarray(a), (4, 1): Image.fromarray(b), (4, 2): Image.fromarray(b)},
                      baseline, 4)
    assert row["max_px_diff"] == 3 and row["px_compared"] == 2   # seed 2 has no baseline image
    assert row["sha256"] == hashlib.sha256(b.tobytes()).hexdigest()


def test_cap_rows_put_the_memory_fraction_back(monkeypatch):
    import torch

    state = {"fraction": 0.5}
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda *a: state["fraction"], raising=False)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, *a: state.update(fraction=f))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: type("P", (), {"total_memory": 96 * 2**30}))
    cap = rows_mod.parse_config("cap:auto")
    with bench_gpu.memory_cap(cap, 24, "cuda"):
        assert state["fraction"] == pytest.approx(0.25)
    assert state["fraction"] == 0.5
    with pytest.raises(RuntimeError), bench_gpu.memory_cap(cap, 24, "cuda"):
        raise RuntimeError("out of memory")
    assert state["fraction"] == 0.5                                  # also after a failure
    with bench_gpu.memory_cap(rows_mod.parse_config("default"), 24, "cuda"):
        assert state["fraction"] == 0.5                              # uncapped rows leave it alone


def test_free_memory_drops_compiled_graphs_before_collecting(monkeypatch):
    import gc

    import torch

    order = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: order.append("dynamo.reset"))
    monkeypatch.setattr(gc, "collect", lambda *a: order.append("gc.collect"))
    bench_gpu.free_memory()
    assert order == ["dynamo.reset", "gc.collect"]


def test_table_shows_ratios_memory_pixels_and_why_rows_did_not_run():
    def row(name, **kw):
        r = bench_gpu.new_row(rows_mod.parse_config(name))
        r.update(kw)
        return r

    rows = [
        row("baseline", status="ok", s={28: 6.6}, best_s={28: 6.0}, peak_alloc_gib=31.9, peak_reserved_gib=33.9,
            max_px_diff=0, estimate_s=40, wall_s=35, settings={"offload": "none", "precision": "bf16"}),
        row("fp8-fast+compile", status="ok", s={28: 2.2}, best_s={28: 1.5}, peak_alloc_gib=21.0,
            peak_reserved_gib=22.1, compile_s=41.0, max_px_diff=37, estimate_s=90, wall_s=80,
            settings={"offload": "none", "precision": "fp8-fast", "compile": True}),
        row("cap:model", status="not run", error="budget: needs ~120 s, 30 s left"),
        row("cap:auto", status="killed", error="killed at the time limit", wall_s=12, estimate_s=70,
            settings={"offload": "encoders", "precision": "fp8", "cap_gib": 24}),
    ]
    lines = bench_gpu.format_table(rows, [28]).splitlines()
    assert "x baseline@28" in lines[0] and "reserved GiB" in lines[0] and "px diff" in lines[0]
    assert "1.00x" in lines[2] and "plain diffusers" in lines[2] and "33.90" in lines[2]
    assert "0.33x" in lines[3] and "0.25x" in lines[3] and "none/fp8-fast+compile" in lines[3]
    assert "41.0" in lines[3] and " 37 " in lines[3] and "90/80" in lines[3]
    assert "budget: needs ~120 s" in lines[4]
    assert "killed at the time limit; cap 24 GiB" in lines[5] and "encoders/fp8" in lines[5]


# ---------------------------------------------------------------------------------------
# Whole runs on the tiny model
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("interleave", [False, True])
def test_cpu_run_under_a_budget_writes_every_row(tiny_model, tmp_path, interleave, capsys):
    out = tmp_path / "gpu.json"
    rc = bench_gpu.main(["--scale", "tiny", "--steps", "2", "--runs", "2", "--budget-s", "40", "--json", str(out),
                         "--configs", "default,fuse-qkv,compile,fp8-fast",
                         "--interleave" if interleave else "--no-interleave"])
    assert rc == 0
    got = json.loads(out.read_text())
    rows = {r["name"]: r for r in got["rows"]}
    assert got["status"] == "done" and list(rows) == ["baseline", "default", "fuse-qkv", "compile", "fp8-fast"]
    base, default, fused = rows["baseline"], rows["default"], rows["fuse-qkv"]
    assert base["status"] == default["status"] == fused["status"] == "ok"
    assert base["max_px_diff"] == 0 and len(base["sha256"]) == 64 and base["px_compared"] == 3
    assert default["max_px_diff"] <= 2 and fused["max_px_diff"] <= 2            # the same image, to a pixel
    assert len(default["runs_s"]["2"]) == 2 and default["s"]["2"] > 0 and default["first_image_s"]["2"] > 0
    assert default["settings"]["offload"] == "none" and default["settings"]["precision"] == "bf16"
    assert fused["settings"]["fuse_qkv"] is True and default["settings"]["fuse_qkv"] is False
    assert base["settings"]["pipeline"] == "plain diffusers" and base["settings"]["device"] == "cpu"
    # The compile row's estimate (a CPU compile: a minute or more) does not fit 40 s: listed, not started.
    assert rows["compile"]["status"] == "not run" and "budget: needs" in rows["compile"]["error"]
    assert rows["compile"]["estimate_s"] > 40 and rows["compile"]["s"] == {}
    assert rows["fp8-fast"]["status"] == "needs CUDA"
    assert got["not_run"] == ["compile"]
    assert "budget: needs" in capsys.readouterr().out


def test_a_sigterm_keeps_every_finished_row(tiny_model, tmp_path):
    """What the outer `timeout` does at the time limit: the JSON keeps the finished rows and
    says which row was cut short; the exit status is 124."""
    out = tmp_path / "gpu.json"
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--scale", "tiny", "--steps",
                             "2", "--runs", "3", "--no-interleave", "--configs", "default,fp8,fuse-qkv", "--json",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=""))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = json.loads(out.read_text()) if out.exists() else {"rows": []}
            if any(r["status"] == "ok" for r in state["rows"]):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 124, output
    got = json.loads(out.read_text())
    assert got["status"] == "killed at the time limit"
    assert got["rows"][0]["name"] == "baseline" and got["rows"][0]["status"] == "ok" and got["rows"][0]["s"]["2"] > 0
    statuses = [r["status"] for r in got["rows"]]
    assert set(statuses) <= {"ok", "killed", "not run"} and statuses[-1] in ("killed", "not run")
    assert "killed at the time limit" in output and "baseline" in output   # the table is still printed


def test_a_compiled_row_says_which_cache_it_compiled_into(tiny_model, tmp_path, monkeypatch):
    """The compile itself stubbed (a real CPU compile takes minutes): the row reports the
    cache folder the levers chose and how full it was before the row compiled."""
    import torch

    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):   # put back afterwards, whatever the row sets
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "cache" / "inductor" / "ab").mkdir(parents=True)
    (tmp_path / "cache" / "inductor" / "ab" / "kernel.so").write_bytes(b"")
    monkeypatch.setattr(torch.nn.Module, "compile",   # marked as compiled, run as written
                        lambda self, **kw: setattr(self, "_compiled_call_impl", self._call_impl))
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--scale", "tiny", "--steps", "1", "--runs", "1", "--no-interleave", "--json", str(out),
                           "--configs", "compile+vae,fuse-qkv"]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    compiled, plain = rows["compile+vae"], rows["fuse-qkv"]
    assert compiled["status"] == "ok" and compiled["cache_files_before"] == 1
    assert compiled["settings"]["compile_cache"] == str((tmp_path / "cache" / "inductor").resolve())
    assert compiled["settings"]["channels_last_vae"] is True and compiled["compile_s"] is not None
    assert compiled["settings"]["flags"] == "--offload none --compile --compile-vae"
    assert plain["cache_files_before"] is None and plain["settings"]["compile_cache"] is None
