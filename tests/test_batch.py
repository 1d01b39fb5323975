"""Batch runs: params checking, planning, and papermill runs of notebooks/batch.ipynb on the
tiny model (complete, rerun, forced, killed and resumed, failing items, no secrets out)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import BIN, ROOT
from fluxnb import runlog
from fluxnb import batch
from fluxnb.front import cli
from fluxnb.errors import FluxnbError

NOTEBOOK = ROOT / "notebooks" / "batch.ipynb"
HOOKS = Path(__file__).parent / "batch_hooks"
SENTINELS = {"ANTHROPIC_API_KEY": "sk-ant-SENTINEL-a1b2c3d4e5f6", "HF_TOKEN": "hf_SENTINELzyxwvu987654"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tiny_params(tmp_path: Path, seeds="[1, 2]", prompts=('"a lighthouse at dusk"', '"a red fox in snow"'),
                extra="") -> Path:
    lines = ["model: tiny", "prompts:", *[f"  - {p}" for p in prompts], f"seeds: {seeds}", "steps: 1",
             "size: 64x64", "image_format: png", "batch_name: t", extra]
    return write(tmp_path / "batch.yaml", "\n".join(lines) + "\n")


def ok_records(out: Path) -> list[dict]:
    return [r for r in runlog.read(out) if r.get("status") == "ok"]


def images(out: Path) -> list[Path]:
    return sorted(out.glob("flux_*.png"))


def assert_no_secrets(*folders: Path) -> None:
    for folder in folders:
        for f in Path(folder).rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                for name, value in SENTINELS.items():
                    assert value.encode() not in data, f"{name} leaked into {f}"


# ---------------------------------------------------------------------------------------
# The notebook and the params files
# ---------------------------------------------------------------------------------------

def test_notebook_parameters_are_the_params_keys_and_it_has_no_outputs():
    import nbformat
    import papermill

    found = papermill.inspect_notebook(str(NOTEBOOK))
    assert list(found) == list(batch.PARAMS)
    for name, p in found.items():
        assert ast.literal_eval(p["default"]) == batch.DEFAULTS[name], name
        assert p["inferred_type_name"] not in ("None", ""), f"{name} has no type annotation"
        assert len(p["help"]) > 10, f"{name} has no comment"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            if cell is not tagged[0]:  # narrative and UI only: a few calls into fluxnb.batch (and the check)
                lines = [ln for ln in cell.source.splitlines() if ln.strip()]
                assert len(lines) <= 3 and all("batch" in ln or ln.isidentifier() or ln.startswith("assert ")
                                               for ln in lines), cell.source


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_every_params_example_validates(path):
    raw = batch.load(path)
    assert set(raw) <= set(batch.PARAMS)
    p = batch.plan(raw, source=str(path))
    assert p.items and len({i.id for i in p.items}) == len(p.items)
    assert p.batch_id == raw["batch_name"]


def test_examples_cover_the_issue():
    names = {p.stem: batch.load(p) for p in (ROOT / "params").glob("*.yaml")}
    assert names["quickstart"]["model"] == "tiny"
    assert names["overnight-dev"]["model"] == "black-forest-labs/FLUX.1-dev"
    assert len(batch.plan(names["seed-study"]).prompts) == 1 and len(batch.plan(names["seed-study"]).seeds) > 8
    assert batch.plan(names["enhanced-vs-raw"]).enhances == ["none", "claude"]


def test_plan_shapes_seeds_and_a_thousand_distinct_items():
    prompts = [f"prompt {i}" for i in range(100)]
    p = batch.plan({"model": "tiny", "prompts": prompts, "seeds": {"start": 7, "count": 10}})
    assert len(p.items) == 1000 and len({i.id for i in p.items}) == 1000
    assert p.seeds == list(range(7, 17)) and [i.seed for i in p.items[:3]] == [7, 8, 9]
    r8 = batch.plan({"model": "tiny", "batch_name": "night", "seeds": {"random": 8}})
    r12 = batch.plan({"model": "tiny", "batch_name": "night", "seeds": {"random": 12}})
    assert len(set(r12.seeds)) == 12 and r12.seeds[:8] == r8.seeds  # a rerun (or a larger N) plans the same seeds
    assert batch.plan({"model": "tiny", "batch_name": "day", "seeds": {"random": 8}}).seeds != r8.seeds
    both = batch.plan({"model": "tiny", "prompts": ["a"], "enhance": ["none", "local"], "seeds": 3})
    assert [(i.enhance, i.seed) for i in both.items] == [("none", 3), ("local", 3)]
    assert both.items[0].id != both.items[1].id


# ---------------------------------------------------------------------------------------
# Bad params: refused before any kernel starts, nothing written
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("prompts: [a]\nseeds: !!python/object/apply:os.system ['touch pwned']\n", "tags such as !!python"),
    ("prompts: [a]\nstpes: 4\n", "unknown key 'stpes' (did you mean 'steps'?); valid keys: prompts, seeds, steps"),
    ("prompts: [a]\nsteps: [4, 8]\n", "steps [4, 8]: expected a number of steps (1-150) or fast, balanced, quality, "
                                      "got a list"),
    ("prompts: a fox\n", "prompts 'a fox': expected a list of prompts (text), got text"),
    ("prompts: [a, 42]\n", "prompts[1] 42: expected text, got a whole number"),
    ("prompts: [a]\nsize: 1000x1000\n", "multiples of 16"),
    ("prompts: [a]\nenhance: no\n", "'no' would be read as a boolean by YAML 1.1"),
    ("prompts: [a]\nseeds: [1, 012]\n", "'012' would be read as the number 10 by YAML 1.1"),
    ("prompts: [a]\nseeds: [1, 1]\n", "seeds: 1 is given twice"),
    ("prompts: [a]\nseeds: {random: 0}\n", "random: N must be a whole number"),
    ("prompts: [a]\nprompts: [b]\n", "the key 'prompts' is given twice"),
    ("prompts: [a]\nforce: 1\n", "force 1: expected true or false, got a whole number"),
    ("prompts: [a]\nbatch_name: my batch\n", "batch_name 'my batch'"),
    ("prompts: [a]\nhf_token: hf_abcdefgh\n", "'hf_token' looks like a secret"),
    ("prompts: [a]\nANTHROPIC_API_KEY: sk-ant-abcdefgh\n", "'ANTHROPIC_API_KEY' looks like a secret"),
])
def test_bad_params_are_refused_with_the_key_value_and_fix(tmp_path, capsys, monkeypatch, text, expected):
    import papermill

    started = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **kw: started.append(a))
    f = write(tmp_path / "bad.yaml", text + "output_dir: out\nmodel: tiny\n")
    rc = cli.main(["batch", str(f)])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert started == []  # no kernel was started
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()
    for secret in ("hf_abcdefgh", "sk-ant-abcdefgh"):
        assert secret not in err


def test_strict_yaml_keeps_meaning_or_refuses():
    from fluxnb.config.params import parse_yaml

    assert parse_yaml("a: 2024-05-01\nb: 3.5\nc: '012'") == {"a": "2024-05-01", "b": 3.5, "c": "012"}
    for text, shown in (("g: 1:20.5", "80.5"), ("g: 1_0.5", "10.5"), ("s: 1_000", "1000"), ("e: off", "boolean")):
        with pytest.raises(FluxnbError, match=shown):
            parse_yaml(text, "f.yaml")


def test_secrets_never_become_parameters(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SENTINELS["ANTHROPIC_API_KEY"])
    f = tiny_params(tmp_path, extra="output_dir: out")
    assert cli.main(["batch", str(f), "-p", "hf_token", "abcdefgh"]) == 2
    assert "looks like a secret" in capsys.readouterr().err
    assert cli.main(["batch", str(f), "-p", "stpes", "4"]) == 2
    assert "-p stpes: unknown key 'stpes' (did you mean 'steps'?)" in capsys.readouterr().err
    assert cli.main(["batch", str(f), "-p", "enhance_model", SENTINELS["ANTHROPIC_API_KEY"]]) == 2
    err = capsys.readouterr().err
    assert "holds a secret" in err and SENTINELS["ANTHROPIC_API_KEY"] not in err
    with pytest.raises(FluxnbError, match="looks like a secret"):  # papermill -p api_key ... into the notebook
        batch.collect({"prompts": ["a"], "api_key": "abcdefgh"})
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(FluxnbError, match="ANTHROPIC_API_KEY is not set"):
        batch.preflight(batch.plan({"model": "tiny", "enhance": "claude", "output_dir": str(tmp_path / "o")}))


def test_failures_are_recorded_and_the_batch_goes_on(tmp_path, monkeypatch, capsys):
    """execute() with a fake generate: an unexpected error is recorded (scrubbed) and the
    batch goes on; a full disk stops it; check() lists what failed or was not made."""
    import fluxnb.image.make
    import fluxnb.image.record
    import fluxnb.model.pipeline

    monkeypatch.setenv("HF_TOKEN", SENTINELS["HF_TOKEN"])
    out = tmp_path / "o"
    out.mkdir()
    p = batch.plan({"model": "tiny", "prompts": ["a"], "seeds": [1, 2, 3, 4, 5], "output_dir": str(out)})
    calls = []

    def fake_generate(*, settings, seeds, extra, **kw):
        seed = seeds[0]
        calls.append(seed)
        rec = {**fluxnb.image.record.base_record(settings, seed), **extra}
        if seed == 2:
            raise ValueError(f"exploded with token {SENTINELS['HF_TOKEN']}")
        if seed == 4:
            runlog.append(out, {**rec, "status": "disk_full", "error": "no room"})
            raise FluxnbError("no room on disk", status="disk_full")
        (out / f"{seed}.png").write_bytes(b"x")
        runlog.append(out, {**rec, "status": "ok", "path": str(out / f"{seed}.png"), "elapsed_s": 0.5})
        return [type("R", (), {"record": rec, "path": out / f"{seed}.png"})()]

    monkeypatch.setattr(fluxnb.image.make, "generate", fake_generate)
    monkeypatch.setattr(fluxnb.model.pipeline, "get_pipeline", lambda key: None)
    started = batch.execute(p)
    assert calls == [1, 2, 3, 4]  # 5 never started: the disk is full
    said = capsys.readouterr()
    made_lines = [f"[1/5] P1 seed 1 ok -> {out / '1.png'}", f"[3/5] P1 seed 3 ok -> {out / '3.png'}"]
    assert [ln for ln in said.out.splitlines() if " ok" in ln] == made_lines   # good news: stdout
    assert "seed 1 ok" not in said.err and "seed 2 error" in said.err and "disk is full" in said.err
    assert "seed 2 error" not in said.out                                       # failures: stderr
    s = batch.summarize(p, started)
    assert (s.made, s.failed, s.missing, s.skipped, s.seconds_per_image) == (2, 2, 1, 0, 0.5)
    assert [(f["seed"], f["status"]) for f in s.failures] == [(2, "error"), (4, "disk_full")]
    assert SENTINELS["HF_TOKEN"] not in (out / "runlog.jsonl").read_text()
    with pytest.raises(batch.BatchFailed, match="(?s)2 failed, 1 not made.*seed 2: error: ValueError"):
        batch.check(s)


def test_one_run_of_a_batch_at_a_time(tmp_path):
    import fcntl

    out = tmp_path / "o"
    p = batch.plan({"model": "tiny", "batch_name": "solo", "output_dir": str(out)})
    out.mkdir()
    with open(out / ".batch_solo.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run holds it
        with pytest.raises(FluxnbError, match="batch solo: already running"):
            batch.execute(p)
    assert not (out / "runlog.jsonl").exists()


def test_contact_sheet_labels_made_and_failed_items(tmp_path):
    from PIL import Image

    from fluxnb.outputs.files import write_new

    out = tmp_path / "o"
    p = batch.plan({"model": "tiny", "prompts": ["a"], "seeds": [1, 2], "output_dir": str(out)})
    img = write_new(out, "a.png", _png(Image.new("RGB", (64, 64), (255, 0, 0))))
    runlog.append(out, {"id": p.items[0].id, "status": "ok", "path": str(img)})
    summary = batch.summarize(p, batch.now())
    summary.failures = [{"id": p.items[1].id, "status": "black"}]
    sheet = batch.contact_sheet(p, summary)
    with Image.open(sheet.path) as im:
        im = im.convert("RGB")
        first, second = im.getpixel((6 + 128, 38 + 128)), im.getpixel((6 + 256 + 6 + 200, 38 + 200))
    assert first == (255, 0, 0) and second == (216, 216, 216)  # the image; a grey box for the failure
    assert summary.contact_sheet == sheet.path and sheet._repr_jpeg_()[:2] == b"\xff\xd8"


def _png(im) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# papermill runs of the notebook (tiny model, 64x64, 1 step)
# ---------------------------------------------------------------------------------------

def test_batch_runs_reruns_and_forces_without_leaking_secrets(tiny_model, tmp_path, monkeypatch, capsys):
    import nbformat
    import papermill

    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    f = write(tmp_path / "tiny.yaml", "model: tiny  # the notebook's defaults otherwise\n")

    # 1. A complete run: every item made and recorded once, a report and a contact sheet.
    assert cli.main(["batch", str(f), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    p = batch.plan({"model": "tiny", "output_dir": str(out)})
    recs = ok_records(out)
    assert sorted(r["id"] for r in recs) == sorted(i.id for i in p.items) and len(recs) == 4
    assert len(list(out.glob("flux_*.jpg"))) == 4
    assert {(r["batch_id"], r["model"], r["width"], r["steps"]) for r in recs} == {(p.batch_id, "tiny", 64, 4)}
    assert f"batch {p.batch_id}: 4 items: 4 made, 0 skipped, 0 failed" in printed.out
    assert printed.out.count(" ok ") == 4 and "[4/4] P2 seed 2 ok " in printed.out  # each image: stdout,
    assert " ok " not in printed.err                                                   # not the red box
    [report] = out.glob(f"batch_{p.batch_id}_*.ipynb")
    nb = nbformat.read(report, as_version=4)
    assert nb.metadata.papermill.parameters == {"model": "tiny", "output_dir": str(out)}
    assert all(c.metadata.get("jupyter", {}).get("source_hidden") for c in nb.cells if c.cell_type == "code")
    text = json.dumps(nb.cells)
    assert "4 made, 0 skipped" in text and "image/jpeg" in text and "fluxnb-report://" not in report.read_text()
    [run_cell] = [c for c in nb.cells if "batch.execute(plan)" in c.source]
    streams = {name: "".join(o.text for o in run_cell.outputs if o.output_type == "stream" and o.name == name)
               for name in ("stdout", "stderr")}
    assert streams["stdout"].count(" ok ") == 4 and " ok " not in streams["stderr"]  # not the red box
    [sheet] = out.glob(f"contact_{p.batch_id}_*.png")
    assert f"contact sheet: {sheet}" in printed.out

    # 2. Plain papermill with the notebook's defaults (FLUXNB_MODEL=tiny): the same items, all skipped.
    monkeypatch.setenv("FLUXNB_MODEL", "tiny")
    plain = out / "plain.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(plain), parameters={"output_dir": str(out)},
                               kernel_name="python3", progress_bar=False)
    assert len(ok_records(out)) == 4
    assert "0 made, 4 skipped" in json.dumps(nbformat.read(plain, as_version=4).cells)

    # 3. --force redoes made items (here those of seed 1); -p overrides a key; --json: stdout holds
    #    the JSON summary alone (the items' lines go to stderr then).
    assert cli.main(["batch", str(f), "--out", str(out), "--force", "-p", "seeds", "[1]", "--json"]) == 0
    printed = capsys.readouterr()
    assert (json.loads(printed.out)["items"], json.loads(printed.out)["made"]) == (2, 2)
    assert printed.err.count(" ok ") == 2
    recs = ok_records(out)
    assert len(recs) == 6 and sorted(r["seed"] for r in recs[4:]) == [1, 1]
    assert len(list(out.glob("flux_*.jpg"))) == 6

    # 4. No secret anywhere: images, metadata, run log, reports, contact sheets, logs.
    assert_no_secrets(out, Path(os.environ["FLUXNB_LOG_DIR"]), tmp_path)


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killed_run_resumes_exactly_the_missing_items_and_failures_exit_1(tiny_model, tmp_path, monkeypatch, capsys):
    import nbformat
    from PIL import Image

    out = tmp_path / "out"
    f = tiny_params(tmp_path, seeds="[1, 2, 3, 4, 5, 6]", prompts=('"a lighthouse at dusk"',))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FLUXNB_TEST_NAN_SEEDS", "5")
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)
    runtime = tmp_path / "runtime"  # the killed run's kernel sockets land here
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))

    # 1. kill -9 the `fluxnb batch` process once two items are on record; its kernel follows it.
    env = dict(os.environ, FLUXNB_TEST_DELAY_S="0.5")
    proc = subprocess.Popen([str(BIN / "fluxnb"), "-q", "batch", str(f), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while len(ok_records(out)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the batch ended before it could be killed"
        time.sleep(0.05)
    children = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = [c for c in children if _alive(c)]
    for c in leftover:
        os.kill(c, signal.SIGKILL)
    assert not leftover, "the kernel outlived its killed parent"
    before = {r["id"] for r in ok_records(out)}
    assert 2 <= len(before) < 6

    # 2. Resume: exactly the missing items, one record each; seed 5 fails (NaN), the rest
    #    goes on, and the batch exits 1 listing it.
    p = batch.plan({**batch.load(f), "output_dir": str(out)})
    n_before = len(runlog.read(out))
    assert cli.main(["batch", str(f), "--out", str(out)]) == 1
    printed = capsys.readouterr()
    assert f"{len(before)} skipped, 1 failed" in printed.out + printed.err
    assert "#5 P1 seed 5: black: seed 5: the image came out black" in printed.err
    new = runlog.read(out)[n_before:]
    missing = [i for i in p.items if i.id not in before]
    assert sorted((r["id"], r["status"]) for r in new) == sorted(
        (i.id, "black" if i.seed == 5 else "ok") for i in missing)
    assert not list(out.glob(".*.tmp")) and not list(runtime.glob("fluxnb-*"))  # tidied by the resumed run
    for img in images(out):
        with Image.open(img) as im:
            im.load()  # whole, never partial
    reports = list(out.glob("batch_t_*.ipynb"))
    assert len(reports) == 2 and all(nbformat.read(r, as_version=4).cells for r in reports)  # the killed one too
    assert_no_secrets(out, Path(os.environ["FLUXNB_LOG_DIR"]))

    # 3. What a rerun would do: retry the failed item, and only it.
    assert [i.seed for i in batch.plan({**batch.load(f), "output_dir": str(out)}).todo] == [5]
