"""The `fluxnb` command: generate, config, log, model build; bad input exits non-zero with a
clear message, no traceback and no file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fluxnb import runlog
from fluxnb.front.cli import main

from support import run_cli

TINY = ["--model", "tiny", "--steps", "2", "--size", "64x64"]


def test_generate_prints_the_path(tiny_model, outdir, capsys):
    assert main(["generate", "a lighthouse", "--seed", "5", "--out", str(outdir), *TINY]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith("_5.jpg") and Image.open(path).size == (64, 64)


def test_generate_summary_line_per_image_and_quiet(tiny_model, outdir, capsys):
    import re

    assert main(["generate", "a lighthouse", "--seed", "8", "-n", "2", "--guidance", "4.5", "--out", str(outdir),
                 *TINY]) == 0
    cap = capsys.readouterr()
    paths = cap.out.splitlines()
    assert [p.rsplit("_", 1)[1] for p in paths] == ["8.jpg", "9.jpg"]  # stdout: the paths alone
    for path, seed in zip(paths, (8, 9)):
        assert re.search(rf"saved {re.escape(path)}: 64x64, 2 steps, guidance 4\.5, seed {seed}, \d+\.\d\d s$",
                         cap.err, re.M), cap.err
    # --quiet after the subcommand (or -q before it): the path alone, nothing on stderr.
    for argv in (["generate", "a lighthouse", "--seed", "3", "--quiet"],
                 ["-q", "generate", "a lighthouse", "--seed", "4"]):
        assert main([*argv, "--out", str(outdir), *TINY]) == 0
        cap = capsys.readouterr()
        assert len(cap.out.splitlines()) == 1 and cap.out.strip().endswith(".jpg") and cap.err == ""


def test_generate_json(tiny_model, outdir, capsys):
    assert main(["generate", "a lighthouse", "--seed", "6", "-n", "2", "--format", "png", "--out", str(outdir),
                 "--json", *TINY]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [i["seed"] for i in out["images"]] == [6, 7]
    assert all(i["status"] == "ok" and i["path"].endswith(".png") for i in out["images"])


@pytest.mark.parametrize("flag,steps", [("--fast", 4), ("--balanced", 20), ("--quality", 50)])
def test_quality_flags(flag, steps, capsys):
    assert main(["config", "--json", flag]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["steps"]["value"] == steps


@pytest.mark.parametrize("flags,key,value", [
    (["--portrait"], "size", "portrait"), (["--hd"], "height", 1080), (["--custom", "512x768"], "width", 512),
    (["--creative"], "guidance", 1.5), (["--strict"], "guidance", 5.0), (["--cpu-offload"], "offload", "model"),
    (["--no-cpu-offload"], "offload", "none"), (["--enhance-ai"], "enhance", "claude"),
    (["--random-seed"], "seed", None), (["--format", "jpeg"], "image_format", "jpg"),
])
def test_flags_map_to_settings(flags, key, value, capsys):
    assert main(["config", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["settings"][key]["value"] == value


def test_config_shows_sources(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FLUXNB_JPEG_QUALITY", "70")
    params = tmp_path / "p.yaml"
    params.write_text("steps: 12\n")
    assert main(["config", "--params", str(params), "--seed", "9"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("jpeg_quality") and "70" in line and "env:FLUXNB_JPEG_QUALITY" in line
               for line in out.splitlines())
    assert any(line.startswith("steps") and "12" in line and f"params:{params}" in line for line in out.splitlines())
    assert any(line.startswith("seed") and "9" in line and "call" in line for line in out.splitlines())


@pytest.mark.parametrize("args,words", [
    (["generate", ""], ["prompt", "empty"]),
    (["generate", "x", "--size", "1000x1000"], ["multiples of 16", "992x992"]),
    (["generate", "x", "--guidance", "12"], ["guidance 12.0", "1.0 and 7.0"]),
    (["generate", "x", "--steps", "0"], ["steps 0"]),
    (["generate", "x", "--jpeg-quality", "0"], ["jpeg_quality 0"]),
    (["generate", "x", "--seed", "-3"], ["seed -3"]),
    (["generate", "x", "--seed", "99999999999"], ["seed 99999999999"]),
    (["generate", "x", "--model", "./no/such/folder"], ["no such folder"]),
    (["generate", "x", "--model", "someone/not-cached-model"], ["not in the local Hugging Face cache"]),
    (["generate", "x", "--steps", "turbo"], ["steps 'turbo'"]),
])
def test_bad_input_exits_2_with_a_message_and_no_file(args, words, outdir, capsys):
    assert main([*args, "--out", str(outdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for w in words:
        assert w in err
    assert not list(outdir.glob("*.jpg")) and not list(outdir.glob("*.png"))


def test_folder_that_is_not_a_pipeline(tmp_path, outdir, capsys):
    (tmp_path / "empty_model").mkdir()
    assert main(["generate", "x", "--model", str(tmp_path / "empty_model"), "--out", str(outdir)]) == 2
    assert "model_index.json" in capsys.readouterr().err


def test_unknown_preset_flag_is_an_argparse_error():
    r = run_cli("generate", "x", "--ultra")
    assert r.returncode == 2 and "unrecognized arguments: --ultra" in r.stderr and "Traceback" not in r.stderr


def test_bad_input_in_a_real_process_has_no_traceback(outdir):
    r = run_cli("generate", "a cat", "--size", "100x100", "--out", outdir)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: size 100x100: width and height must be multiples of 16 (nearest: 96x96 or 112x112)"
    assert not outdir.exists()


def test_from_image_reproduces_and_overrides(tiny_model, outdir, capsys):
    assert main(["generate", "a tower", "--seed", "31", "--format", "png", "--out", str(outdir), *TINY]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["generate", "--from-image", first, "--out", str(outdir)]) == 0
    second = capsys.readouterr().out.strip()
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    assert main(["generate", "--from-image", first, "--seed", "32", "--out", str(outdir), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)["images"][0]
    assert rec["seed"] == 32 and rec["prompt"] == "a tower" and rec["steps"] == 2


def test_log_summary_and_export(tiny_model, outdir, tmp_path, capsys):
    main(["generate", "a", "--seed", "1", "--out", str(outdir), *TINY])
    capsys.readouterr()
    assert main(["log", str(outdir)]) == 0
    assert "1 records" in capsys.readouterr().out
    assert main(["log", str(outdir), "--export", str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("id,path,status")


def test_model_build_and_load_with_diffusers(tmp_path, capsys):
    target = tmp_path / "m"
    assert main(["model", "build", str(target), "--scale", "tiny"]) == 0
    assert (target / "model_index.json").is_file()
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(target)
    assert pipe.tokenizer("A painting of a squirrel eating a burger").input_ids == [
        49406, 320, 3086, 539, 320, 14004, 4371, 320, 6548, 49407]


def test_import_and_help_do_not_load_torch():
    code = ("import sys, fluxnb, fluxnb.front.cli\n"
            "try:\n    fluxnb.front.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('torch', 'diffusers', 'transformers', 'anthropic') if m in sys.modules]\n"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "[]"


def _fake_hub(status, headers):
    """A stand-in Hugging Face hub on 127.0.0.1 that answers every request with `status`."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"error": headers.get("X-Error-Message", "no")}).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status,headers,words", [
    (401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model black-forest-labs/FLUX.1-dev is restricted."},
     ["gated", "accept the licence at https://huggingface.co/black-forest-labs/FLUX.1-dev", "HF_TOKEN"]),
    (404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
     ["no such model on the Hugging Face hub"]),
])
def test_hub_errors_are_explained(status, headers, words, outdir):
    server = _fake_hub(status, headers)
    try:
        r = run_cli("generate", "x", "--model", "black-forest-labs/FLUX.1-dev", "--out", outdir,
                    env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                         "HF_TOKEN": "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00"})
    finally:
        server.shutdown()
    assert r.returncode == 2, r.stderr
    for w in words:
        assert w in r.stderr
    assert "Traceback" not in r.stderr and "SENTINEL" not in r.stderr + r.stdout
    assert runlog.read(outdir)[-1]["status"] == "error"
