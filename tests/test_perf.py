"""Performance options: the offload auto table, fp8 / fp8-fast precision, regional compile
and its compile_s, the flags on every front end, the fast CLI exit, and the benchmark
scripts' argument parsing and tables. No timed assertions: speed lives in benchmarks/."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from support import ROOT, run_cli, tiny_pipeline
from support import tiny_pixels as pixels

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_generate  # noqa: E402


def gen(**kw):
    import fluxnb

    base = dict(prompt="a red fox in the snow", model="tiny", seed=3, steps=2, size="64x64", progress=False)
    base.update(kw)
    return fluxnb.generate(**base)


@pytest.fixture
def tiny_pipe(tiny_model):
    return tiny_pipeline(tiny_model)


# ---------------------------------------------------------------------------------------
# offload auto
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("free, precision, want", [
    (79.0, "bf16", ("none", "bf16")),           # H100 80 GB: resident bf16
    (39.5, "bf16", ("none", "bf16")),           # A100 40 GB
    (31.3, "bf16", ("encoders", "bf16")),       # RTX 5090 32 GB: text encoders streamed
    (31.3, "fp8", ("none", "fp8")),             # fp8 asked: resident fp8 fits
    (23.3, "bf16", ("encoders", "fp8")),        # RTX 4090 24 GB: fp8-resident transformer, not model offload
    (23.3, "fp8-fast", ("encoders", "fp8-fast")),
    (15.5, "bf16", ("group", "bf16")),
    (15.5, "fp8", ("group", "fp8")),            # no fp8 row fits: the bf16 rows still do, precision kept
    (2.0, "bf16", ("sequential", "bf16")),      # nothing fits: the least memory
])
def test_pick_offload_auto_follows_the_table(free, precision, want):
    from fluxnb.model.pipeline import pick_offload

    offload, chosen, note = pick_offload("auto", "cuda", precision, free_gib=free)
    assert (offload, chosen) == want
    assert f"{free:.1f} GiB" in note and offload in note


def test_pick_offload_24gb_card_fits_the_goal_and_says_why():
    from fluxnb.model.pipeline import offload_table, pick_offload

    offload, precision, note = pick_offload("auto", "cuda", "bf16", free_gib=23.3)
    row = next(r for r in offload_table() if (r["offload"], r["precision"]) == (offload, precision))
    assert row["peak_gib"] * 2**30 <= 23e9          # the goal: at most 23 GB under a 24 GB cap
    assert offload != "model"
    assert "bf16 does not fit" in note


def test_pick_offload_reads_free_vram_when_not_given(monkeypatch):
    from fluxnb.model import pipeline

    monkeypatch.setattr(pipeline, "free_vram_gib", lambda: 20.0)
    assert pipeline.pick_offload("auto", "cuda", "bf16")[:2] == ("encoders", "fp8")
    monkeypatch.setattr(pipeline, "free_vram_gib", lambda: None)   # mps: unified memory
    assert pipeline.pick_offload("auto", "mps", "bf16") == ("none", "bf16", "")


def test_pick_offload_explicit_and_cpu():
    from fluxnb.model.pipeline import pick_offload

    assert pick_offload("group", "cuda", "fp8") == ("group", "fp8", "")
    assert pick_offload("auto", "cpu", "fp8") == ("none", "fp8", "")
    offload, _, note = pick_offload("model", "cpu", "bf16")
    assert offload == "none" and "needs a GPU" in note


def test_pick_offload_takes_the_fastest_fitting_row_not_the_first(monkeypatch):
    from fluxnb.model import pipeline

    table = {"offload_auto_margin_gib": 0.5, "offload_auto": [
        {"offload": "model", "precision": "bf16", "peak_gib": 5, "s_per_image": 20},
        {"offload": "group", "precision": "bf16", "peak_gib": 9, "s_per_image": 10},
        {"offload": "none", "precision": "bf16", "peak_gib": 30, "s_per_image": 5}]}
    monkeypatch.setattr(pipeline, "defaults", lambda: table)
    assert pipeline.pick_offload("auto", "cuda", "bf16", free_gib=12)[0] == "group"
    assert pipeline.pick_offload("auto", "cuda", "bf16", free_gib=9.4)[0] == "model"   # 9 + 0.5 margin > 9.4
    assert pipeline.pick_offload("auto", "cuda", "bf16", free_gib=31)[0] == "none"


def test_offload_table_is_well_formed():
    from fluxnb.model.pipeline import offload_table
    from fluxnb.config.settings import CHOICES, defaults

    rows = offload_table()
    assert rows and defaults()["offload_auto_margin_gib"] > 0
    for r in rows:
        assert r["offload"] in CHOICES["offload"] and r["offload"] != "auto"
        assert r["precision"] in ("bf16", "fp8")
        assert r["peak_gib"] > 0 and r["s_per_image"] > 0 and r["source"] in ("published", "estimate", "measured")
    assert [r["s_per_image"] for r in rows] == sorted(r["s_per_image"] for r in rows)
    assert min(rows, key=lambda r: r["peak_gib"])["offload"] == "sequential"


def test_free_vram_respects_a_per_process_cap(monkeypatch):
    import torch

    from fluxnb.model.pipeline import free_vram_gib

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (70 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda: 1.0)
    assert free_vram_gib() == pytest.approx(70)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda: 0.3)   # a 24 GiB cap
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda: 2 * 2**30)
    assert free_vram_gib() == pytest.approx(22)


def test_oom_error_names_a_policy_that_needs_less():
    from fluxnb.model.pipeline import oom_error
    from fluxnb.config.settings import LoadSettings

    err = oom_error(LoadSettings("m", "none", "bf16", False, "cuda"), "none")
    assert "--offload encoders" in err.fix and err.status == "oom"


# ---------------------------------------------------------------------------------------
# Memory policies and precision on the tiny model
# ---------------------------------------------------------------------------------------

def test_pick_dtype_is_bf16_on_accelerators_never_fp16(tiny_model, outdir):
    import torch

    from fluxnb.model.pipeline import pick_dtype

    for device in ("cuda", "cuda:1", "mps"):  # fp16 gives FLUX black (NaN) images
        assert pick_dtype(device) is torch.bfloat16, device
    assert pick_dtype("cpu") is torch.float32
    [item] = gen(seed=3, steps=1, output_dir=str(outdir))  # and what a CPU load records
    assert (item.record["device"], item.record["dtype"]) == ("cpu", "float32")


def test_encoders_policy_streams_only_the_text_encoders(tiny_pipe):
    from fluxnb.model.pipeline import apply_offload

    before = pixels(tiny_pipe)
    apply_offload(tiny_pipe, "encoders", "cpu")
    from fluxnb.model.perf import _has_hooks as hooked

    assert hooked(tiny_pipe.text_encoder) and hooked(tiny_pipe.text_encoder_2)
    assert not hooked(tiny_pipe.transformer) and not hooked(tiny_pipe.vae)
    np.testing.assert_allclose(pixels(tiny_pipe), before, atol=1e-5)   # same image, other placement


def test_unknown_offload_is_refused(tiny_pipe):
    from fluxnb.errors import FluxnbError
    from fluxnb.model.pipeline import apply_offload

    with pytest.raises(FluxnbError, match="offload 'fast'"):
        apply_offload(tiny_pipe, "fast", "cpu")


def test_fp8_stores_transformer_weights_in_float8_and_still_draws(tiny_model, outdir):
    import torch

    from fluxnb.model.pipeline import current

    [img] = gen(precision="fp8", output_dir=str(outdir))
    loaded = current()
    assert loaded.precision == "fp8" and img.record["precision"] == "fp8"
    linears = [m for n, m in loaded.pipe.transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    stored = {m.weight.dtype for m in linears}
    assert torch.float8_e4m3fn in stored                           # the big linears
    assert loaded.pipe.text_encoder_2.dtype == torch.float32       # only the transformer changes
    px = np.asarray(img.image)
    assert px.max() > 2 and px.std() > 1                           # not black, not flat

    [ref] = gen(precision="bf16", output_dir=str(outdir))
    diff = np.abs(np.asarray(ref.image).astype(int) - px.astype(int))
    assert 0 < diff.mean() < 64                                     # close to full precision, not identical


def test_fp8_fast_without_cuda_is_a_clear_error(tiny_model, outdir, capsys):
    from fluxnb.front.cli import main

    rc = main(["generate", "a fox", "--model", "tiny", "--precision", "fp8-fast", "--seed", "1", "--steps", "1",
               "--out", str(outdir)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "precision fp8-fast" in err and "--precision fp8" in err and "Traceback" not in err
    assert not list(outdir.glob("*.jpg"))


def test_fp8_fast_quantizes_the_transformer_with_torchao(monkeypatch, tiny_pipe):
    """The torchao call itself (it needs an Ada/Hopper GPU), with a stand-in module."""
    from fluxnb.model import perf

    calls = []
    fake = types.ModuleType("torchao.quantization")
    fake.PerRow = type("PerRow", (), {})
    fake.Float8DynamicActivationFloat8WeightConfig = lambda granularity: ("f8dq", granularity)
    fake.quantize_ = lambda model, config, device=None: calls.append((model, config, device))
    monkeypatch.setitem(sys.modules, "torchao", types.ModuleType("torchao"))
    monkeypatch.setitem(sys.modules, "torchao.quantization", fake)
    monkeypatch.setattr(perf, "fp8_fast_problem", lambda: None)
    perf.apply_precision(tiny_pipe, "fp8-fast", "cuda", resident=True)
    perf.apply_precision(tiny_pipe, "fp8-fast", "cuda", resident=False)
    assert [c[0] for c in calls] == [tiny_pipe.transformer] * 2
    assert calls[0][1][0] == "f8dq" and isinstance(calls[0][1][1], fake.PerRow)
    assert [c[2] for c in calls] == ["cuda", None]   # quantized straight onto the GPU only when it stays there


def test_fp8_fast_problem_names_the_gpu_requirement(monkeypatch):
    import torch

    from fluxnb.model.perf import fp8_fast_problem

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))   # A100
    assert "8.9" in fp8_fast_problem() and "8.0" in fp8_fast_problem()


# ---------------------------------------------------------------------------------------
# compile
# ---------------------------------------------------------------------------------------

def test_apply_compile_wraps_every_repeated_block(tiny_pipe, monkeypatch):
    import torch

    from fluxnb.model.perf import apply_compile, compiled_blocks

    seen = []
    original = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: (seen.append(kw), original(self, **kw)))
    cfg = tiny_pipe.transformer.config
    assert compiled_blocks(tiny_pipe.transformer) == []
    n = apply_compile(tiny_pipe)
    assert n == cfg.num_layers + cfg.num_single_layers == len(compiled_blocks(tiny_pipe.transformer))
    assert seen and all(kw["fullgraph"] for kw in seen)


def test_apply_compile_drops_fullgraph_over_fp8_hooks(tiny_pipe, monkeypatch):
    import torch

    from fluxnb.model.perf import apply_compile, apply_fp8

    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    apply_fp8(tiny_pipe, "cpu")
    apply_compile(tiny_pipe)
    assert seen and not any(kw["fullgraph"] for kw in seen)


@pytest.mark.parametrize("steps, want", [([10.0, 1.0, 1.0, 1.0], 9.0), ([5.0, 1.0], 4.0), ([1.0, 1.0, 1.0], 0.0),
                                         ([3.0], None), ([8.0, 1.2, 1.0, 1.1, 1.0], 6.9)])
def test_compile_seconds(steps, want):
    from fluxnb.model.perf import compile_seconds

    got = compile_seconds(steps)
    assert got == (None if want is None else pytest.approx(want, abs=0.11))


def test_compile_s_is_recorded_apart_for_the_first_image_at_a_size(tiny_model, outdir, monkeypatch):
    """compile=True with the compile itself stubbed: a slow first step stands in for it."""
    import time

    from fluxnb import runlog
    from fluxnb.model import perf
    from fluxnb.model.pipeline import current

    monkeypatch.setattr(perf, "apply_compile", lambda pipe, **kw: 0)
    first = {"left": 1}

    def slow_first_step(pipe, i, t, kwargs):
        if i == 0 and first["left"]:
            first["left"] = 0
            time.sleep(1.0)
        return kwargs

    a = gen(compile=True, seed=11, steps=4, output_dir=str(outdir), callbacks=[slow_first_step])[0].record
    b = gen(compile=True, seed=12, steps=4, output_dir=str(outdir))[0].record
    first["left"] = 1
    c = gen(compile=True, seed=13, steps=4, size="80x80", output_dir=str(outdir), callbacks=[slow_first_step])[0].record
    # The 1 s sleep is measured as compile time; the bounds leave room for a busy machine.
    assert a["compile"] is True and a["compile_s"] >= 0.5
    assert a["denoise_s"] < a["elapsed_s"] - a["compile_s"] + 0.05   # denoise_s is the steady part
    assert b["compile_s"] == 0.0                                       # same size: compiled already
    assert c["compile_s"] >= 0.5 and current().compiled_sizes == {(64, 64), (80, 80)}  # a new size: measured again
    df = runlog.load(outdir)
    assert str(df["compile_s"].dtype) == "float64"
    assert df.set_index("seed")["compile_s"].loc[[11, 12]].tolist() == [a["compile_s"], 0.0]
    plain = gen(seed=14, output_dir=str(outdir))[0].record
    assert plain["compile_s"] == 0.0 and plain["compile"] is False


@pytest.mark.slow
@pytest.mark.skipif("'slow' not in (config.getoption('markexpr') or '') and not os.environ.get('CI')",
                    reason="a real CPU compile takes 1-2 minutes: run with -m slow (CI=1 runs it too)")
def test_real_compile_on_the_cpu(tiny_model, outdir):
    [a] = gen(compile=True, seed=21, steps=3, output_dir=str(outdir))
    [b] = gen(compile=False, seed=21, steps=3, output_dir=str(outdir))
    assert a.record["compile_s"] > 0
    assert np.abs(np.asarray(a.image).astype(int) - np.asarray(b.image).astype(int)).mean() < 2


# ---------------------------------------------------------------------------------------
# Front ends: flags, settings, params files, the fast exit
# ---------------------------------------------------------------------------------------

def test_cli_flags_reach_the_settings():
    from fluxnb.front.cli import build_parser
    from fluxnb.front.commands import settings_from_args

    args = build_parser().parse_args(["generate", "x", "--precision", "fp8-fast", "--compile", "--offload", "encoders"])
    s = settings_from_args(args, prompt="x")
    assert (s.precision, s.compile, s.offload) == ("fp8-fast", True, "encoders")
    assert s.load.precision == "fp8-fast" and s.load.compile is True
    s = settings_from_args(build_parser().parse_args(["generate", "x", "--no-compile", "--precision", "fp8"]),
                           prompt="x")
    assert (s.precision, s.compile) == ("fp8", False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "x", "--precision", "fp16"])


def test_precision_and_compile_from_params_env_and_call(tmp_path, monkeypatch):
    from fluxnb.errors import FluxnbError
    from fluxnb.config.params import load_params
    from fluxnb.config.settings import resolve

    p = tmp_path / "p.yaml"
    p.write_text("precision: fp8\ncompile: true\noffload: encoders\n")
    s = resolve(load_params(p))
    assert (s.precision, s.compile, s.offload) == ("fp8", True, "encoders")
    monkeypatch.setenv("FLUXNB_PRECISION", "fp8-fast")
    assert resolve().precision == "fp8-fast"
    with pytest.raises(FluxnbError) as e:
        resolve(precision="fp16")
    assert "precision" in str(e.value) and "fp8-fast" in e.value.fix


def test_config_shows_where_precision_came_from(capsys):
    from fluxnb.front.cli import main

    assert main(["config", "--precision", "fp8", "--compile", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["settings"]
    assert out["precision"]["value"] == "fp8" and out["compile"]["value"] is True
    assert out["precision"]["source"] != "defaults"


def test_command_exits_fast_without_losing_output(tiny_model, outdir, session_env):
    """`fluxnb` ends with os._exit once torch is loaded: stdout, the log file and the run
    log must all be complete, and the exit status kept."""
    r = run_cli("generate", "a fox", "--model", "tiny", "--seed", "4", "--steps", "1", "--out", outdir, "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["images"][0]
    assert Path(rec["path"]).is_file() and "compile_s" in rec
    assert [x["status"] for x in map(json.loads, (outdir / "runlog.jsonl").read_text().splitlines())] == ["ok"]
    logs = list(Path(session_env["FLUXNB_LOG_DIR"]).glob("*"))
    assert logs and any("a fox" in f.read_text(errors="replace") for f in logs if f.is_file())
    bad = run_cli("generate", "a fox", "--model", "tiny", "--steps", "0", "--out", outdir)
    assert bad.returncode == 2 and "steps" in bad.stderr


# ---------------------------------------------------------------------------------------
# The benchmark scripts (their logic, not their timings)
# ---------------------------------------------------------------------------------------

def test_bench_generate_args_and_commands(tmp_path):
    a = bench_generate.parse_args([])
    assert (a.runs, a.size, a.steps) == (5, 256, 8)
    with pytest.raises(SystemExit):
        bench_generate.parse_args(["--runs", "0"])
    with pytest.raises(SystemExit):
        bench_generate.parse_args(["--size", "250"])
    cmds = bench_generate.commands(a, tmp_path / "model", tmp_path)
    gen_cmd, plain = cmds["generate"], cmds["diffusers"]
    for flag, value in (("--size", "256x256"), ("--steps", "8"), ("--seed", "7"), ("--format", "jpg")):
        assert gen_cmd[gen_cmd.index(flag) + 1] == value
    for flag, value in (("--size", "256"), ("--steps", "8"), ("--seed", "7")):
        assert plain[plain.index(flag) + 1] == value
    assert str(tmp_path / "model") in gen_cmd and str(tmp_path / "model") in plain
    assert bench_generate.PROMPT in gen_cmd and bench_generate.PROMPT in plain


def test_bench_generate_summary_and_table():
    times = {"generate": [5.0, 5.4, 5.2], "diffusers": [5.0, 4.8, 5.1], "import": [0.2, 0.23, 0.3],
             "tokens": [1.5, 1.4, 1.6], "help": [0.1, 0.1, 0.1], "generate-teardown": [6.0, 6.1, 6.2],
             "generate:cpu": [9.0, 9.0, 9.0], "diffusers:cpu": [10.0, 10.0, 10.0]}
    res = bench_generate.summarize(times)
    rows = {r[0].split(" (")[0]: r for r in res["rows"]}
    gen_row = rows["fluxnb generate vs plain diffusers"]
    assert gen_row[3] == pytest.approx(5.2 / 5.0) and gen_row[-1] is True
    assert rows["import fluxnb"][1] == pytest.approx(0.23) and rows["import fluxnb"][-1] is True
    assert rows["fluxnb tokens PROMPT"][-1] is False                   # 1.5 s misses the 1 s goal
    assert rows["  same, with Python's full teardown"][3] == pytest.approx(6.1 / 5.0)
    assert rows["  same, CPU seconds"][3] == pytest.approx(0.9)
    assert rows["  same, best of the runs"][3] == pytest.approx(5.0 / 4.8)
    table = bench_generate.format_table(res["rows"])
    assert "1.040" in table and "NO" in table and "<= 1.10x" in table
