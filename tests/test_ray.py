"""The Ray backend (fluxnb.runs.ray.backend) on a local Ray cluster on the CPU with 2 workers and
the tiny model: the local backend's images, each item once, workers killed part-way at
each stage, the CLI joining a running cluster, and pool sizing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

try:
    import ray
except ImportError:
    if os.environ.get("CI"):  # CI installs the ray extra (./runpod_setup.sh --dev): never skip there
        raise
    pytest.skip("Ray is not installed: pip install 'fluxnb[ray]' (./runpod_setup.sh --dev installs it)",
                allow_module_level=True)

import numpy as np
from PIL import Image

from fluxnb import runlog
from fluxnb import batch
from fluxnb.front import cli
from fluxnb.runs.ray import backend as raybackend, items as rayitems
from fluxnb.errors import FluxnbError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"model": "tiny", "size": "64x64", "steps": 2, "image_format": "png", "batch_name": "r",
          "prompts": ["a lighthouse at dusk", "a red fox in snow"], "seeds": [1, 2, 3, 4]}


@pytest.fixture(scope="module")
def cluster(session_env, tiny_model, tmp_path_factory):
    """One local Ray (2 CPUs) for the module. Its worker processes get switches a test
    turns on with a file: `in-render`, `after-image`, `after-record` make the first worker
    that gets there exit at once (os._exit, as a crash would); `slow` (seconds) slows
    every image down; `fail-seed` (a seed) makes that seed's images fail, and `crash-seed`
    kills every worker that tries to make that seed's."""
    switches = tmp_path_factory.mktemp("ray-switches")

    def install_switches():
        import os
        import time

        import fluxnb.image.make as making
        import fluxnb.outputs.metadata as output
        from fluxnb import runlog

        def claim(name):
            try:
                os.rename(switches / name, switches / f"{name}.{os.getpid()}.done")
                return True
            except FileNotFoundError:
                return False

        write_new, append, denoise = output.write_new, runlog.append, making.denoise

        def denoise_(loaded, jobs, *args, **kwargs):  # one pipeline call (an item: one image)
            seeds = {job.seed for job in jobs}
            if claim("in-render"):
                os._exit(1)
            if (switches / "slow").exists():
                time.sleep(float((switches / "slow").read_text()))
            if (switches / "fail-seed").exists() and int((switches / "fail-seed").read_text()) in seeds:
                raise RuntimeError("a failure for this seed")
            if (switches / "crash-seed").exists() and int((switches / "crash-seed").read_text()) in seeds:
                os._exit(1)
            return denoise(loaded, jobs, *args, **kwargs)

        def write_new_(directory, name, data):
            path = write_new(directory, name, data)
            if name.startswith("flux_") and claim("after-image"):
                os._exit(1)
            return path

        def append_(directory, record):
            append(directory, record)
            if record.get("status") == "ok" and claim("after-record"):
                os._exit(1)

        making.denoise, output.write_new, runlog.append = denoise_, write_new_, append_

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"worker_process_setup_hook": install_switches})
    try:
        yield SimpleNamespace(address=ray.get_runtime_context().gcs_address, switches=switches)
    finally:
        ray.shutdown()


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def ok_records(out) -> list[dict]:
    return [r for r in runlog.read(out) if r.get("status") == "ok"]


def assert_each_item_once(p, out: Path) -> dict:
    """One ok record per item, one image per item in the folder, no temp files."""
    ok = ok_records(out)
    ids = [r["id"] for r in ok]
    assert sorted(ids) == sorted(i.id for i in p.items), "an item is missing or recorded twice"
    files = sorted(out.glob("flux_*.png"))
    assert sorted(str(f) for f in files) == sorted(r["path"] for r in ok), "an image without its record, or twice"
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".ray_probe*"))
    return {r["id"]: r for r in ok}


# ---------------------------------------------------------------------------------------
# Set-up, pool sizing and options (no cluster)
# ---------------------------------------------------------------------------------------

def test_the_ray_extra_is_pinned_and_the_test_set_up_installs_it():
    import tomllib

    from packaging.requirements import Requirement

    with open(ROOT / "pyproject.toml", "rb") as f:
        [req] = [Requirement(r) for r in tomllib.load(f)["project"]["optional-dependencies"]["ray"]]
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert req.name == "ray" and "client" in req.extras  # [client]: ray://HOST:10001 addresses
    assert req.specifier.contains(pins["ray"]), f"ray=={pins['ray']} is outside {req}"
    assert {"grpcio", "msgpack", "protobuf"} <= set(pins)  # what ray[client] brings, pinned too
    assert 'EXTRA="[dev,ray]"' in (ROOT / "runpod_setup.sh").read_text()  # the README's test command runs these



def test_one_worker_per_gpu_and_clear_errors_for_what_cannot_fit():
    opts = raybackend.options
    n, res, _ = raybackend.size_pool(opts(), {"GPU": 4.0, "CPU": 16.0})
    assert (n, res) == (4, {"num_gpus": 1.0, "num_cpus": 1})
    n, res, _ = raybackend.size_pool(opts(gpus_per_worker=0.5), {"GPU": 2.0, "CPU": 16.0})
    assert (n, res["num_gpus"]) == (4, 0.5)
    n, res, _ = raybackend.size_pool(opts(workers=3), {"CPU": 12.0})
    assert (n, res) == (3, {"num_cpus": 4})
    assert raybackend.size_pool(opts(), {"CPU": 8.0})[0] == 1  # no GPU: one CPU worker unless told
    with pytest.raises(FluxnbError, match=r"workers 5 x gpus_per_worker 1: the cluster has 4 GPU.*at most 4"):
        raybackend.size_pool(opts(workers=5), {"GPU": 4.0, "CPU": 16.0})
    with pytest.raises(FluxnbError, match="gpus_per_worker 1: the Ray cluster has no GPUs"):
        raybackend.size_pool(opts(gpus_per_worker=1), {"CPU": 2.0})
    with pytest.raises(FluxnbError, match="workers 3: the Ray cluster has 2 CPU"):
        raybackend.size_pool(opts(workers=3), {"CPU": 2.0})


@pytest.mark.parametrize("flags, expected", [
    (["--address", "auto"], "address 'auto': only for backend ray"),
    (["--backend", "ray", "--workers", "0"], "workers 0: expected a whole number 1-4096"),
    (["--backend", "ray", "--address", "http://x"], "address 'http://x': expected auto, HOST:PORT or ray://HOST:PORT"),
    (["--backend", "ray", "-p", "ray_results", "s3"], "ray_results 's3': expected volume or driver"),
    (["--backend", "ray", "--gpus-per-worker", "-1"], "gpus_per_worker -1.0: expected a number above 0"),
])
def test_bad_ray_flags_are_refused_before_anything_starts(tmp_path, capsys, flags, expected):
    params = tmp_path / "b.yaml"
    params.write_text("model: tiny\nprompts: [a fox]\nseeds: [1]\n")
    assert cli.main(["batch", str(params), "--out", str(tmp_path / "out"), *flags]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_the_message_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FluxnbError, match=r"Ray is not installed; pip install 'fluxnb\[ray\]'"):
        batch.plan({**PARAMS, "backend": "ray"})
    with pytest.raises(FluxnbError, match="Ray is not installed"):
        raybackend.require_ray()


def test_an_address_nobody_answers_fails_at_once_with_the_fix(monkeypatch):
    """Before the module's cluster starts: joining a stopped cluster (a stale `auto`, a
    dead head, a closed Ray Client port) is a clear error in seconds, not a long wait."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(FluxnbError, match=rf"address 'auto': could not join.*nothing answers at 127.0.0.1:{port}.*"
                                          r"ray start --head --port 6379.*RAY_AUTH_TOKEN_PATH"):
        raybackend.connect(raybackend.options(address="auto"))
    with pytest.raises(FluxnbError, match="RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH"):
        raybackend.connect(raybackend.options(address=f"ray://127.0.0.1:{port}"))
    assert not ray.is_initialized()


# ---------------------------------------------------------------------------------------
# On the cluster
# ---------------------------------------------------------------------------------------

def test_ray_makes_the_local_images_once_each_written_by_workers_or_driver(cluster, tmp_path):
    import torch

    # 1. The local backend at the workers' thread count (1 CPU each): on the CPU, float32
    #    sums split over another number of threads can move a pixel by 1/255.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = batch.plan({**PARAMS, "output_dir": str(tmp_path / "local")})
        batch.execute(local)
    finally:
        torch.set_num_threads(threads)
    want = assert_each_item_once(local, tmp_path / "local")

    (cluster.switches / "slow").write_text("1")  # so both workers get items, even if one loads seconds later
    try:
        for results in ("volume", "driver"):
            out = tmp_path / results
            p = batch.plan({**PARAMS, "output_dir": str(out), "backend": "ray", "workers": 2, "ray_results": results})
            summary = batch.summarize(p, batch.execute(p))
            assert (summary.made, summary.failed, summary.missing) == (8, 0, 0), summary
            got = assert_each_item_once(p, out)
            for item_id, rec in got.items():  # 2. The same pixels, and the same story
                assert np.array_equal(pixels(rec["path"]), pixels(want[item_id]["path"])), item_id
                assert rec["batch_id"] == "r" and rec["seed"] == want[item_id]["seed"]
            assert len({r["worker"] for r in got.values()}) == 2, "the items were not spread over both workers"
    finally:
        (cluster.switches / "slow").unlink()

    # 3. A rerun makes nothing (no worker starts), and an image whose record was lost to a
    #    kill is recorded again from its own metadata rather than made twice.
    out = tmp_path / "volume"
    lines = (out / "runlog.jsonl").read_text().splitlines(keepends=True)
    (out / "runlog.jsonl").write_text("".join(lines[1:]))
    lost = json.loads(lines[0])
    p = batch.plan({**PARAMS, "output_dir": str(out), "backend": "ray", "workers": 2})
    assert len(p.todo) == 1
    summary = batch.summarize(p, batch.execute(p))
    assert (summary.made, summary.skipped, summary.failed) == (0, 8, 0)
    again = assert_each_item_once(p, out)
    assert again[lost["id"]]["path"] == lost["path"] and again[lost["id"]]["recovered"] is True


def test_workers_killed_at_every_stage_and_each_item_is_done_exactly_once(cluster, tmp_path, capsys):
    # A batch made once already (local backend), then forced again on Ray with three
    # crashes, each once: while denoising (nothing written), after writing the image but
    # before recording it, and after recording it but before the driver heard. The first
    # run's records must not pass for this run's.
    out = tmp_path / "killed"
    params = {**PARAMS, "seeds": [1, 2, 3], "output_dir": str(out)}
    batch.execute(batch.plan(params))
    before = runlog.read(out)
    capsys.readouterr()  # what the local run said
    stages = ("in-render", "after-image", "after-record")
    for name in stages:
        (cluster.switches / name).write_text("")
    p = batch.plan({**params, "backend": "ray", "workers": 2, "force": True})
    summary = batch.summarize(p, batch.execute(p))
    printed = capsys.readouterr()
    said = printed.err  # warnings and failures; the items made are on stdout
    assert not any((cluster.switches / name).exists() for name in stages), "a crash switch was never reached"
    assert said.count("died (") == 3
    assert (summary.made, summary.failed, summary.missing) == (6, 0, 0), summary
    # One ok record per item in this run, none of them a failure, each with its own new image.
    new = runlog.read(out)[len(before):]
    assert all(r["status"] == "ok" for r in new), "a crash left a failure record"
    assert sorted(r["id"] for r in new) == sorted(i.id for i in p.items), "an item is missing or recorded twice"
    old = {r["path"] for r in before}
    assert not old & {r["path"] for r in new}
    assert {str(f) for f in out.glob("flux_*.png")} == old | {r["path"] for r in new}  # no image without its record
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".ray_probe*"))
    # The image written before its crash was recorded from its metadata, not made again.
    assert sum(1 for r in new if r.get("recovered")) == 1
    assert printed.out.count("finished by a worker that died") == 2  # one from its record, one from its image
    assert printed.out.count(" ok") == 6 and " ok -> " not in said


def test_failing_and_worker_killing_items_are_recorded_once_and_the_batch_goes_on(cluster, tmp_path, capsys):
    """ray_results driver: seed 2 fails (the worker sends the failure back, the driver
    records it); seed 3 kills every worker that tries it (after 3 tries it is recorded as
    failed, and the replacement workers make the rest)."""
    out = tmp_path / "failing"
    (cluster.switches / "fail-seed").write_text("2")
    (cluster.switches / "crash-seed").write_text("3")
    try:
        p = batch.plan({**PARAMS, "prompts": ["a fox"], "seeds": [3, 1, 2, 4], "output_dir": str(out),
                        "backend": "ray", "workers": 1, "ray_results": "driver"})
        summary = batch.summarize(p, batch.execute(p))
    finally:
        (cluster.switches / "fail-seed").unlink()
        (cluster.switches / "crash-seed").unlink()
    assert capsys.readouterr().err.count("died (") == 3
    assert (summary.made, summary.failed, summary.missing) == (2, 2, 0), summary
    errors = {f["seed"]: f["error"] for f in summary.failures}
    assert "RuntimeError: a failure for this seed" in errors[2] and "died 3 times" in errors[3]
    records = runlog.read(out)
    assert sorted((r["seed"], r["status"]) for r in records) == [(1, "ok"), (2, "error"), (3, "error"), (4, "ok")]
    with pytest.raises(batch.BatchFailed, match="seed 2"):
        batch.check(summary)


def test_cli_batch_joins_a_running_cluster_and_the_driver_writes(cluster, tmp_path):
    """`fluxnb batch --backend ray --address HOST:PORT`: the notebook's kernel joins the
    cluster, the workers send their images back, the report records the backend."""
    params = tmp_path / "b.yaml"
    params.write_text("model: tiny\nprompts: [a fox, a lighthouse]\nseeds: [5, 6]\nsteps: 2\nsize: 64x64\n"
                      "image_format: png\nbatch_name: cli\n")
    out = tmp_path / "out"
    fluxnb = Path(sys.executable).parent / "fluxnb"  # the real command: its notebook kernel joins the cluster
    r = subprocess.run([str(fluxnb), "batch", str(params), "--out", str(out), "--backend", "ray", "--address",
                        cluster.address, "--workers", "2", "--ray-results", "driver", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    assert (summary["made"], summary["failed"], summary["items"]) == (4, 0, 4)
    ok = ok_records(out)
    assert len(ok) == 4 and all(Path(rec["path"]).parent == out and rec["worker"] for rec in ok)
    report = json.loads(Path(summary["report"]).read_text())
    params_cell = next(c for c in report["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert 'backend = "ray"' in "".join(params_cell["source"]) and 'ray_results = "driver"' in "".join(
        params_cell["source"])
    assert ray.is_initialized()  # the CLI's run left this cluster up


def test_sweep_on_ray_gives_the_local_grid_cells(cluster, tmp_path, capsys):
    import torch

    import fluxnb

    axes = {"seeds": "1,2,3", "guidance": "1.5,3.5"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count, as above
    try:  # the local sweep as it runs by default (4 cells per pipeline call on the CPU), and one cell a call
        local = fluxnb.sweep("a fox in snow", model="tiny", size="64x64", steps=2, image_format="png",
                             out=tmp_path / "local", progress=False, **axes)
        single = fluxnb.sweep("a fox in snow", model="tiny", size="64x64", steps=2, image_format="png",
                              out=tmp_path / "single", progress=False, batch_size=1, **axes)
    finally:
        torch.set_num_threads(threads)
    assert cli.main(["sweep", "a fox in snow", "--seeds", axes["seeds"], "--guidance", axes["guidance"], "--model",
                     "tiny", "--size", "64x64", "--steps", "2", "--format", "png", "--out", str(tmp_path / "ray"),
                     "--backend", "ray", "--workers", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["sweep_id"] == local.sweep_id and got["made"] == 6
    for cell, one, mine in zip(local.to_dict()["cells"], single.cells, got["cells"]):
        assert (cell["row"], cell["col"], cell["id"]) == (mine["row"], mine["col"], mine["id"])
        assert np.abs(pixels(cell["path"]) - pixels(mine["path"])).max() <= 2  # the sweep's own promise, 2/255
        assert np.array_equal(pixels(one.path), pixels(mine["path"]))  # each cell is a single generate's image
    records = {r["id"]: r for r in ok_records(tmp_path / "ray")}
    assert len(records) == 6 and all(r["sweep_id"] == local.sweep_id and r["worker"] for r in records.values())
    assert [records[c["id"]]["sweep_row"] for c in got["cells"]] == [c["row"] for c in got["cells"]]
    assert pixels(got["grid"]).shape == pixels(local.grid).shape
    # A rerun reuses every cell: no worker starts, nothing is made.
    assert cli.main(["sweep", "a fox in snow", "--seeds", axes["seeds"], "--guidance", axes["guidance"], "--model",
                     "tiny", "--size", "64x64", "--steps", "2", "--format", "png", "--out", str(tmp_path / "ray"),
                     "--backend", "ray", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reused"] == 6


def test_a_worker_that_cannot_see_the_output_folder_says_so(cluster, tmp_path):
    """ray_results volume on nodes without the shared folder: the worker refuses, naming the fix."""
    from fluxnb.config.settings import resolve

    w = rayitems.Worker(resolve(model="tiny").load, str(tmp_path), ".ray_probe_from_another_machine")
    info = w.ready()
    assert "does not see the driver's output folder" in info["error"] and "ray_results: driver" in info["error"]
    assert "device" not in info  # no model was loaded
