"""The one table of settings (fluxnb/config/schema.py) drives the flags, their choices and help,
the params keys and their checks, the batch notebook's parameters cell and the widgets' options;
and the CLI is thin: what it used to work out itself, the library functions do."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from support import ROOT
from fluxnb import batch
from fluxnb.config import schema, settings
from fluxnb.errors import FluxnbError
from fluxnb.front import cli
from fluxnb.front.flags import add_settings_flags, settings_from_args

NOTEBOOK = ROOT / "notebooks" / "batch.ipynb"
# The flags, aliases and params keys as they were before the table: a contract.
FLAGS = {
    "steps": ["--fast", "--balanced", "--quality", "--steps"],
    "size": ["--square", "--portrait", "--landscape", "--hd", "--4k", "--size", "--custom"],
    "seed": ["--seed", "--random-seed"], "guidance": ["--creative", "--strict", "--guidance"],
    "image_format": ["--format", "--image-format"], "jpeg_quality": ["--jpeg-quality"],
    "output_dir": ["--out", "--output-dir"], "count": ["-n", "--count"], "model": ["--model"],
    "offload": ["--offload", "--cpu-offload", "--no-cpu-offload"], "precision": ["--precision"],
    "compile": ["--compile", "--no-compile"], "device": ["--device"], "max_sequence_length": ["--max-sequence-length"],
    "fuse_qkv": ["--fuse-qkv", "--no-fuse-qkv"], "attention_backend": ["--attention-backend"],
    "compile_mode": ["--compile-mode"], "compile_vae": ["--compile-vae", "--no-compile-vae"],
    "compile_cache": ["--compile-cache", "--no-compile-cache"],
    "vae_tiling": ["--vae-tiling"], "enhance": ["--enhance", "--enhance-ai"], "enhance_model": ["--enhance-model"],
    "enhance_fallback": ["--enhance-fallback"], "enhance_cache": ["--no-enhance-cache"],
    "init_image": ["--init-image"], "strength": ["--strength"], "mask": ["--mask"], "mask_blur": ["--mask-blur"],
    "pad": ["--pad"], "kontext_resize": ["--kontext-resize"], "loras": ["--lora", "--loras"],
}
PARAMS_KEYS = ["prompts", "seeds", "steps", "size", "guidance", "model", "image_format", "jpeg_quality", "enhance",
               "offload", "output_dir", "precision", "device", "compile", "fuse_qkv", "attention_backend",
               "compile_mode", "compile_vae", "compile_cache", "max_sequence_length", "vae_tiling",
               "enhance_model", "enhance_fallback", "init_image", "strength", "mask", "mask_blur", "pad",
               "kontext_resize", "loras", "batch_name", "force", "backend", "address", "workers",
               "gpus_per_worker", "ray_results"]


def parser_with(*names: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    add_settings_flags(p, lists=names)
    return p


def cell_comments() -> dict:
    """{key: comment} of the batch notebook's parameters cell, as papermill reads it."""
    import papermill

    return {name: p["help"] for name, p in papermill.inspect_notebook(str(NOTEBOOK)).items()}


# ---------------------------------------------------------------------------------------
# The table and the Settings dataclass agree
# ---------------------------------------------------------------------------------------

def test_the_table_names_every_setting_with_its_type_and_default():
    fields = {f.name: f.type for f in dataclasses.fields(settings.Settings)}
    assert sorted(s.name for s in schema.TABLE) == sorted(settings.INPUT_FIELDS)
    for s in schema.TABLE:
        assert s.type.__name__ in str(fields[s.name]), s.name
        assert s.name in settings.defaults()["settings"], f"{s.name}: no default in defaults.yaml"
        assert s.group in (*schema.GROUPS, ""), s.name
    assert settings.CHOICES is schema.CHOICES and settings.ALIASES is schema.ALIASES


def test_flags_aliases_and_params_keys_are_the_contract():
    assert {s.name: s.all_flags for s in schema.TABLE if s.all_flags} == FLAGS
    assert schema.ALIASES == {"format": "image_format", "out": "output_dir", "quality": "steps", "cfg": "guidance",
                              "lora": "loras"}
    assert list(batch.PARAMS) == PARAMS_KEYS
    p = parser_with()
    for name, flags in FLAGS.items():
        for flag in flags:
            action = next(a for a in p._actions if flag in a.option_strings)  # a test may look inside argparse
            assert action.dest == name and action.default is None, flag


@pytest.mark.parametrize("args, name, value", [
    (["--offload", "encoders"], "offload", "encoders"), (["--precision", "fp8-fast"], "precision", "fp8-fast"),
    (["--format", "jpeg"], "image_format", "jpeg"), (["--no-compile"], "compile", False),
    (["--compile"], "compile", True), (["--4k"], "size", "4k"), (["--no-enhance-cache"], "enhance_cache", False),
])
def test_every_flag_parses_to_its_setting(args, name, value):
    assert getattr(parser_with().parse_args(args), name) == value


def test_every_choice_is_an_argparse_choice_a_widget_option_and_in_the_notebook():
    from fluxnb.front.ui.widgets import options

    p, comments = parser_with(), cell_comments()
    for name, choices in schema.CHOICES.items():
        action = next(a for a in p._actions if a.dest == name and a.choices)
        assert set(choices) <= set(action.choices), name
        for choice in choices:
            assert parser_with().parse_args([action.option_strings[0], choice]).__dict__[name] == choice
        with pytest.raises(argparse.ArgumentError):
            parser_with().parse_args([action.option_strings[0], "no-such-choice"])
        assert options(name) == list(choices)
        if name in batch.PARAMS:
            said = re.findall(r"[\w-]+", comments[name].split("(")[0])  # the values named before any notes
            for choice in choices:
                assert choice in said, f"{name}: {choice} missing from the notebook's comment {comments[name]!r}"
            assert schema.or_list(choices) in batch.PARAMS[name][1] or ", ".join(choices) in batch.PARAMS[name][1]


def test_the_notebook_parameters_cell_is_what_the_table_says():
    import nbformat

    from fluxnb.runs.batch.params import parameters_cell

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == parameters_cell(), ("the parameters cell differs from the settings table: run "
                                              "python -c 'from fluxnb.runs.batch.params import write_parameters_cell;"
                                              " write_parameters_cell()'")
    assert list(cell_comments()) == PARAMS_KEYS
    assert "encoders" in cell_comments()["offload"] and "fp8-fast" in cell_comments()["precision"]


def test_the_generator_form_offers_the_tables_choices_and_ranges(tmp_path):
    from fluxnb import ui

    form = ui.generator(model="tiny", output_dir=str(tmp_path))
    assert list(form.enhance.options) == list(schema.CHOICES["enhance"])
    assert list(form.image_format.options) == list(schema.CHOICES["image_format"])
    lo, hi = settings.defaults()["limits"]["jpeg_quality"]
    assert (form.jpeg_quality.min, form.jpeg_quality.max) == (lo, hi)
    assert [v for _, v in form.steps.options][:-1] == list(settings.defaults()["presets"]["steps"])


# ---------------------------------------------------------------------------------------
# Help reads as before, from the table
# ---------------------------------------------------------------------------------------

def test_generate_help_reads_from_the_table(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--fast 4 steps", "--balanced 20 steps (default)", "--steps N 1-150, or a preset name",
                 "--hd 1920x1080, rendered at 1920x1088 and cropped", "--size WxH, --custom WxH multiples of 16",
                 "--seed N 0 to 4294967295", "--random-seed draw a seed and record it (the default)",
                 "--creative 1.5", "--guidance X 1.0-7.0 (default 3.5), or a preset name",
                 "--offload {auto,none,encoders,model,group,sequential}", "--cpu-offload = --offload model",
                 "--precision {bf16,fp8,fp8-fast}", "--model ID|DIR|tiny hub id (default black-forest-labs/FLUX.1-dev)",
                 "--enhance-ai = --enhance claude", "--no-enhance-cache ask the enhancer again"):
        assert text in out, text
    assert out.index("quality (steps):") < out.index("size:") < out.index("model and memory:")


def test_sweep_flags_take_lists_and_keep_their_choices_in_the_help(capsys):
    p = parser_with("precision", "guidance")
    assert p.parse_args(["--precision", "bf16,fp8", "--guidance", "1-5 [3]"]).precision == "bf16,fp8"
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--precision LIST fp8: transformer weights stored in float8" in out
    assert "a comma list of bf16, fp8, fp8-fast to sweep" in out
    assert "--offload {auto,none,encoders,model,group,sequential}" in out  # not an axis: still a choice


# ---------------------------------------------------------------------------------------
# A new setting is one entry: it becomes a flag, a params key, a notebook line, and is checked
# ---------------------------------------------------------------------------------------

NEW_SETTING = r'''
import contextlib, dataclasses, io, json
from fluxnb.config import schema, settings, values
from fluxnb.errors import FluxnbError

new = schema.Setting("grain", float, "how much film grain to add, {range} (default {default})",
                     ("--grain",), "G", group="output")
schema.TABLE += (new,)
schema.SETTINGS[new.name] = new
values.defaults()["settings"]["grain"] = 0.75        # its default in defaults.yaml
values.defaults()["limits"]["grain"] = [0.0, 1.0]
settings.Settings = dataclasses.make_dataclass("Settings", [("grain", float, 0.75)], bases=(settings.Settings,))
settings.FIELDS.append("grain"), settings.INPUT_FIELDS.append("grain")

from fluxnb.front import cli, flags
from fluxnb.runs.batch import params
out = {}
parser = cli.build_parser()
with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.suppress(SystemExit):
    parser.parse_args(["generate", "--help"])
out["help"] = shown.getvalue()
args = parser.parse_args(["generate", "x", "--grain", "0.3"])
out["flag"] = flags.settings_from_args(args, prompt="x").grain
for bad in (["--grain", "2"], ["--grain", "lots"]):
    try:
        flags.settings_from_args(parser.parse_args(["generate", "x", *bad]), prompt="x")
    except FluxnbError as e:
        out.setdefault("refused", []).append(str(e))
out["param"] = [[t.__name__ for t in params.PARAMS["grain"][0]], params.PARAMS["grain"][1]]
out["cell"] = [ln for ln in params.parameters_cell().splitlines() if ln.startswith("grain")]
out["planned"] = params.plan({"model": "tiny", "prompts": ["a"], "grain": 0.5}).settings.grain
try:
    params.plan({"model": "tiny", "prompts": ["a"], "grain": "much"})
except FluxnbError as e:
    out["bad_param"] = str(e)
out["env"] = settings.resolve().grain
print(json.dumps(out))
'''


def test_a_new_table_entry_is_a_flag_a_params_key_a_notebook_line_and_validated(tmp_path):
    r = subprocess.run([sys.executable, "-c", NEW_SETTING], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**os.environ, "FLUXNB_GRAIN": "0.25"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "--grain G" in out["help"] and "0.0-1.0 (default 0.75)" in " ".join(out["help"].split())
    assert out["flag"] == 0.3
    assert out["refused"][0].startswith("grain 2.0: must be between 0.0 and 1.0")
    assert out["refused"][1].startswith("grain 'lots': expected a number")
    assert out["param"] == [["int", "float"], "a number 0.0-1.0"]
    assert out["cell"] == ["grain: Optional[float] = None  # a number 0.0-1.0 (default 0.75)"]
    assert out["planned"] == 0.5
    assert out["bad_param"] == "grain 'much': expected a number 0.0-1.0, got text"
    assert out["env"] == 0.25  # FLUXNB_GRAIN, like every setting


# ---------------------------------------------------------------------------------------
# A thin CLI: defaults and checks live in the library
# ---------------------------------------------------------------------------------------

def test_run_log_functions_default_to_the_configured_output_folder(tmp_path, monkeypatch, capsys):
    from fluxnb import runlog

    out = tmp_path / "configured"
    monkeypatch.setenv("FLUXNB_OUTPUT_DIR", str(out))
    runlog.append(out, {"id": "a", "status": "error", "error": "boom", "created_at": "2026-01-01T00:00:00+00:00"})
    assert runlog.path_for() == out / "runlog.jsonl" and len(runlog.read()) == 1
    assert runlog.summary().startswith(f"{out / 'runlog.jsonl'}: 1 records")
    assert cli.main(["log"]) == 0 and "1 records" in capsys.readouterr().out


def test_token_counts_default_to_the_configured_model_and_limit(monkeypatch):
    from fluxnb.prompt import tokens

    assert tokens.count_tokens("a fox").t5_limit == 512
    assert tokens.count_tokens("a fox", model="schnell").t5_limit == 256  # the model's max_sequence_length
    monkeypatch.setenv("FLUXNB_MAX_SEQUENCE_LENGTH", "100")
    assert tokens.count_tokens("a fox").t5_limit == 100
    assert tokens.count_tokens("a fox", t5_limit=7).t5_limit == 7
    import fluxnb

    assert fluxnb.count_tokens is tokens.count_tokens and not hasattr(tokens, "plan")


@pytest.fixture
def params_file(tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text("model: tiny\nprompts: [a]\nseeds: [1]\nsteps: 1\nsize: 64x64\noutput_dir: out\n")
    return f


@pytest.mark.parametrize("kwargs, expected", [
    ({"parameters": [("steps", "4"), ("steps", "8")]}, "-p steps: given twice"),
    ({"parameters": [("steps", "4")], "overrides": {"steps": 2}}, "-p steps: given twice"),
    ({"parameters": [("backend", "local")], "backend": "local"}, "backend: given with -p and as a flag"),
    ({"parameters": [("api_token", "abcdefgh")]}, "'api_token' looks like a secret"),
    ({"parameters": [("seeds", "[1, 012]")]}, "'012' would be read as the number 10"),
    ({"parameters": [("steps", "[4, 8]")]}, "steps [4, 8]: expected a number of steps"),
    ({"parameters": [("stpes", "4")]}, "-p stpes: unknown key 'stpes' (did you mean 'steps'?)"),
])
def test_batch_run_takes_the_raw_p_pairs_and_checks_them_before_a_kernel(params_file, tmp_path, kwargs, expected):
    with pytest.raises(FluxnbError) as e:
        batch.run(params_file, **kwargs)
    assert expected in str(e.value)
    assert not (tmp_path / "out").exists()


def test_batch_flag_and_p_for_the_same_key_is_one_error_line(params_file, tmp_path, capsys):
    assert cli.main(["batch", str(params_file), "-p", "backend", "local", "--backend", "local"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: backend: given with -p and as a flag") and err.count("\n") == 1


def test_export_download_url_is_where_the_running_lab_serves_the_file(tmp_path, monkeypatch):
    from fluxnb.front import lab, labfiles

    root = tmp_path / "root"
    (root / "my run").mkdir(parents=True)
    monkeypatch.setattr(lab, "status", lambda: {"running": True, "root_dir": str(root), "url": "http://h:8888"})
    assert labfiles.download_url(root / "my run" / "a.zip") == "http://h:8888/files/my%20run/a.zip"
    assert labfiles.download_url(tmp_path / "elsewhere.zip") is None
    monkeypatch.setattr(lab, "status", lambda: {"running": False})
    assert labfiles.download_url(root / "my run" / "a.zip") is None


def test_settings_from_args_keeps_only_given_flags():
    p = parser_with()
    s = settings_from_args(p.parse_args(["--jpeg-quality", "70"]))
    assert s.jpeg_quality == 70 and s.sources["jpeg_quality"] == "call" and s.sources["image_format"] == "defaults"
