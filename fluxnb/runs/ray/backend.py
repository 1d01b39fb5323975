"""Scale-out on Ray: a batch's items (or a sweep's cells) made by a pool of Ray actors.

    fluxnb batch params/overnight-dev.yaml --backend ray                 # one worker per GPU here
    fluxnb batch params/overnight-dev.yaml --backend ray --address auto  # the cluster `ray start` made

Each worker is an actor that loads the pipeline once (`pipeline.get_pipeline`) and keeps
it; the driver (this process) spreads the items over the workers, two in flight each, and
shows a progress bar. Every item is made on the one image path (`image.make`), so its pixels
are the ones the local backend makes. Images and run-log records land in the one output folder:
written by the workers on a shared volume (`ray_results: volume`, the default; the folder
must be the same path on every node, which is checked first), or sent back to the driver
and written there (`ray_results: driver`).

Exactly once. Each item has an identity (`image.record.item_id`). A worker that dies has its
items retried on the others; before retrying, the driver looks for what the dead worker
may have finished: an `ok` record for the item in the run log (it died after recording),
or an image file whose embedded metadata names the item (it died between writing the
image and recording it: the image is adopted and recorded once). Only then is the item
made again, so each item ends with one image and one `ok` record.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ...outputs import metadata as output, runlog
from ...errors import FluxnbError
from ...logs import say
from .items import Task, Worker, adopt_orphans, land, record_failure, recover  # noqa: F401 - Task: the items made here
from ...outputs.files import remove_temp_files

log = logging.getLogger("fluxnb.ray")

OPTIONS = ("address", "workers", "gpus_per_worker", "ray_results")  # the params keys (and CLI flags)
RESULTS = ("volume", "driver")
IN_FLIGHT = 2        # items queued on each worker, so it never waits for the driver
MAX_ATTEMPTS = 3     # an item whose worker died this many times is recorded as failed
_ADDRESS = re.compile(r"(auto|local|(ray://)?[A-Za-z0-9._\-\[\]:]+:\d{1,5})")
INSTALL_FIX = "pip install 'fluxnb[ray]' (or ./runpod_setup.sh --dev, which installs it)"


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None           # None: a new local Ray for this run; auto; HOST:6379; ray://HOST:10001
    workers: int | None = None           # None: one per gpus_per_worker GPUs, or 1 CPU worker without GPUs
    gpus_per_worker: float | None = None  # None: 1 (when the cluster has GPUs)
    ray_results: str = "volume"          # volume: workers write; driver: images come back to this process


def options(address=None, workers=None, gpus_per_worker=None, ray_results=None) -> RayOptions:
    """Check the Ray options (and that Ray is installed) before anything starts."""
    import importlib.util

    if address is not None and (not isinstance(address, str) or not _ADDRESS.fullmatch(address.strip())):
        raise FluxnbError(f"address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT", field="address",
                          value=address, fix="e.g. --address auto (a cluster started here with `ray start`), "
                          "--address 10.0.0.5:6379, or --address ray://10.0.0.5:10001; leave it out for a local Ray")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 4096):
        raise FluxnbError(f"workers {workers!r}: expected a whole number 1-4096", field="workers", value=workers)
    gpw = gpus_per_worker
    if gpw is not None and (isinstance(gpw, bool) or not isinstance(gpw, (int, float)) or not 0 < gpw <= 16):
        raise FluxnbError(f"gpus_per_worker {gpw!r}: expected a number above 0 and at most 16", field="gpus_per_worker",
                          value=gpw, fix="1 (a GPU each), 0.5 (two workers share a GPU) or 2")
    if ray_results is not None and ray_results not in RESULTS:
        raise FluxnbError(f"ray_results {ray_results!r}: expected volume or driver", field="ray_results",
                          value=ray_results, fix="volume: workers write to the shared output folder; driver: "
                          "images come back to this process, which writes them")
    try:
        missing = importlib.util.find_spec("ray") is None
    except ValueError:  # sys.modules["ray"] is None: imports of ray are blocked
        missing = True
    if missing:
        raise FluxnbError("backend ray: Ray is not installed", field="backend", value="ray", fix=INSTALL_FIX)
    return RayOptions(address.strip() if address else None, workers,
                      float(gpus_per_worker) if gpus_per_worker is not None else None, ray_results or "volume")


def for_backend(backend: str, **given) -> RayOptions | None:
    """The checked Ray options for `backend` (local or ray); Ray options without backend
    ray are refused rather than ignored."""
    given = {k: v for k, v in given.items() if v is not None}
    if backend not in ("local", "ray"):
        raise FluxnbError(f"backend {backend!r}: unknown", field="backend", value=backend, fix="use local or ray")
    if backend == "ray":
        return options(**given)
    if given:
        key = next(iter(given))
        raise FluxnbError(f"{key} {given[key]!r}: only for backend ray", field=key, value=given[key],
                          fix="add backend: ray (--backend ray), or remove it")
    return None


def require_ray():
    try:
        import ray
    except ImportError:
        raise FluxnbError("backend ray: Ray is not installed", field="backend", value="ray", fix=INSTALL_FIX) from None
    return ray


# ---------------------------------------------------------------------------------------
# The driver: connect, start the pool, spread the items, retry the dead workers' items
# ---------------------------------------------------------------------------------------

def connect(opts: RayOptions) -> bool:
    """Join the cluster the options name, or start a local Ray. True when this call
    connected (so the caller disconnects); False when Ray was already initialized here."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    fix = ("is the head running (`ray start --head --port 6379`), and do RAY_AUTH_MODE=token and "
           "RAY_AUTH_TOKEN_PATH here name the head's token? (README: Scale-out with Ray); or leave --address out "
           "for a local Ray on this machine")
    if opts.address and opts.address.startswith("ray://"):
        fix = ("check that the head's Ray Client port is reachable from here; with Ray's token authentication set "
               "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH on this machine too (README: Scale-out with Ray)")
    try:
        if opts.address in (None, "local"):
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        else:
            _check_reachable(opts.address)  # ray.init waits a long time on an address nobody answers
            ray.init(address=opts.address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError, OSError) as e:
        raise FluxnbError(f"address {opts.address!r}: could not join a Ray cluster ({str(e).splitlines()[0]})",
                          field="address", value=opts.address, fix=fix) from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Raise ConnectionError when nothing listens where `address` points (for auto: the
    cluster `ray start` recorded on this machine, or $RAY_ADDRESS)."""
    import socket
    import tempfile

    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address or address == "auto":
            try:
                address = (Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster").read_text().strip()
            except OSError:
                return  # no record: ray.init says there is no cluster, at once
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        raise ConnectionError(f"nothing answers at {address} (a cluster that was stopped?)") from None


def size_pool(opts: RayOptions, resources: dict) -> tuple[int, dict, str]:
    """(workers, the actor's resource options, a description) for the cluster's resources."""
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    if gpus > 0:
        per = opts.gpus_per_worker or 1.0
        fit = int(gpus / per + 1e-9)
        n = opts.workers or fit
        if n < 1 or n > fit:
            raise FluxnbError(f"workers {n} x gpus_per_worker {per:g}: the cluster has {gpus:g} GPU(s)",
                              field="workers", value=n, fix=f"use at most {fit} worker(s), or fewer GPUs per worker")
        return n, {"num_gpus": per, "num_cpus": 1 if cpus >= n else 0}, f"{n} GPU worker(s), {per:g} GPU each"
    if opts.gpus_per_worker:
        raise FluxnbError(f"gpus_per_worker {opts.gpus_per_worker:g}: the Ray cluster has no GPUs",
                          field="gpus_per_worker", value=opts.gpus_per_worker,
                          fix="leave it out to run CPU workers (--workers N)")
    n = opts.workers or 1
    if n > cpus:
        raise FluxnbError(f"workers {n}: the Ray cluster has {cpus:g} CPU(s)", field="workers", value=n,
                          fix=f"use at most {int(cpus)} CPU worker(s)")
    per = max(1, int(cpus // n))
    return n, {"num_cpus": per}, f"{n} CPU worker(s), {per} CPU(s) each"


def run(tasks: list[Task], load, output_dir: str, opts: RayOptions, *, progress: bool = True,
        on_result=None, desc: str = "images") -> dict:
    """Make `tasks` on a pool of Ray workers. Returns {"outcomes": {id: outcome}, "lag_s",
    "workers"}; each outcome is {status, path, error, worker, recovered}. `on_result(task,
    outcome)` is called on the driver as each item ends."""
    ray = require_ray()
    from ray.exceptions import RayActorError, RayError
    from tqdm.auto import tqdm

    outcomes, queue = {}, deque((t, 1) for t in tasks)
    if not tasks:
        return {"outcomes": outcomes, "lag_s": 0.0, "workers": 0}
    # 1. Connect, size the pool, and leave a probe the workers must see (volume).
    owned = connect(opts)
    first = len(runlog.read(output_dir, warn=False))  # this run's records come after these
    actors, starting, running = {}, {}, {}   # actor -> info; ready ref -> actor; item ref -> (actor, task, attempt)
    probe = None
    lag, deaths, stop = 0.0, 0, False
    bar = None
    try:
        n, resources, what = size_pool(opts, ray.cluster_resources())
        if opts.ray_results == "volume":
            probe = f".ray_probe_{os.getpid()}_{time.time_ns()}"
            output.write_new(output_dir, probe, b"fluxnb")
        remote = ray.remote(Worker).options(max_restarts=0, max_task_retries=0, **resources)

        def start() -> None:
            actor = remote.remote(load, output_dir, probe)
            starting[actor.ready.remote()] = actor

        for _ in range(n):
            start()
        log.info("Ray: %s for %d item(s), results written by the %s", what, len(tasks),
                 "workers (shared volume)" if opts.ray_results == "volume" else "driver")
        bar = tqdm(total=len(tasks), desc=desc, unit="image", disable=not progress)

        def finish(task: Task, outcome: dict) -> None:
            outcomes[task.id] = outcome
            bar.update(1)
            if on_result:
                on_result(task, outcome)

        def died(actor, why: str) -> None:
            # 2. A dead worker: what it finished is kept, the rest goes back to the queue.
            nonlocal deaths
            info = actors.pop(actor, {})
            ray.kill(actor, no_restart=True)
            lost = [(ref, t, a) for ref, (act, t, a) in running.items() if act is actor]
            for ref, _, _ in lost:
                running.pop(ref)
            if info.get("pid"):
                remove_temp_files(output_dir, info["pid"])
            deaths += 1
            log.warning("Ray worker %s died (%s); %d item(s) go to the other workers", info.get("worker", "?"),
                        why.splitlines()[0][:200], len(lost))
            # The oldest item was being made (a worker makes one at a time); the others only waited.
            for k, (_, t, attempt) in reversed(list(enumerate(lost))):
                rec = recover(output_dir, t, first) if opts.ray_results == "volume" else None
                if rec is not None:
                    finish(t, {"status": "ok", "path": rec["path"], "error": "", "worker": rec.get("worker", ""),
                               "recovered": True, "record": rec})
                elif k == 0 and attempt >= MAX_ATTEMPTS:
                    msg = f"its Ray worker died {attempt} times while making it (last: {why.splitlines()[0][:200]})"
                    record_failure(output_dir, t, "error", msg)
                    finish(t, {"status": "error", "path": None, "error": msg, "worker": "", "recovered": False})
                else:
                    queue.appendleft((t, attempt + 1 if k == 0 else attempt))
            if deaths <= max(2 * n, MAX_ATTEMPTS) and not stop:  # a replacement, within bounds
                start()

        while (queue and not stop) or running:
            # 3. Keep every ready worker busy, then wait for the next answer.
            for actor, info in list(actors.items()):
                while queue and not stop and sum(1 for a, _, _ in running.values() if a is actor) < IN_FLIGHT:
                    t, attempt = queue.popleft()
                    running[actor.make.remote(t, opts.ray_results)] = (actor, t, attempt)
            waiting = list(starting) + list(running)
            if not waiting:
                log.error("Ray: every worker died; %d item(s) not made (run again to make them)", len(queue))
                break
            [ref], _ = ray.wait(waiting, num_returns=1)
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    info = ray.get(ref)
                except RayActorError as e:
                    died(actor, str(e))
                    continue
                if info["error"]:
                    raise FluxnbError(f"Ray worker {info['worker']}: {info['error']}", field="backend", value="ray")
                lag = max(lag, time.time() - info["clock"])
                actors[actor] = info
                log.info("Ray worker %s ready (%s, model loaded in %.1f s)", info["worker"], info["device"],
                         info["load_s"])
                continue
            actor, t, attempt = running[ref]
            try:
                out = ray.get(ref)
            except RayActorError as e:
                died(actor, str(e))  # takes this item and the others in flight on it
                continue
            except RayError as e:  # the item's call failed without killing its worker
                running.pop(ref)
                msg = f"Ray: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
                record_failure(output_dir, t, "error", msg)
                finish(t, {"status": "error", "path": None, "error": msg, "worker": actors[actor]["worker"],
                           "recovered": False})
                continue
            running.pop(ref)
            outcome = land(output_dir, t, out, opts.ray_results)
            outcome["worker"] = actors[actor]["worker"]
            finish(t, outcome)
            if outcome["status"] == "disk_full":
                log.error("the disk is full: stopping; free space and run it again")
                stop = True
    finally:
        if bar is not None:
            bar.close()
        for actor in list(actors) + list(starting.values()):
            ray.kill(actor, no_restart=True)
        if probe:
            (Path(output_dir) / probe).unlink(missing_ok=True)
        if owned:
            ray.shutdown()
    return {"outcomes": outcomes, "lag_s": max(0.0, lag), "workers": n, "deaths": deaths}


# ---------------------------------------------------------------------------------------
# Batches (fluxnb.batch.execute with backend ray)
# ---------------------------------------------------------------------------------------

def make_batch(p, todo: list):
    """Make a batch plan's `todo` items on Ray workers (under the batch's lock, as the
    local backend does). Returns how far the workers' clocks lag this one's (a timedelta)."""
    import dataclasses

    batch_log = logging.getLogger("fluxnb.batch")
    extra = {"batch_id": p.batch_id}
    tasks = []
    for item in todo:
        s = dataclasses.replace(p.settings, prompt=item.prompt, enhance=item.enhance, seed=None, count=1)
        label = f"P{item.prompt_no} seed {item.seed}" + (f" {item.enhance}" if len(p.enhances) > 1 else "")
        tasks.append(Task(item.id, s, item.seed, extra, label))
    # 1. Images a killed run wrote but never recorded are recorded now, not made again.
    adopted = {} if p.force else adopt_orphans(p.output_dir, tasks)
    if adopted:
        say(f"recorded {len(adopted)} image(s) a killed run had written but not recorded", batch_log)
        p.done.update(adopted)
        tasks = [t for t in tasks if t.id not in adopted]

    # 2. The rest on the workers: one line per item, as the local backend prints.
    count = [0]

    def on_result(task: Task, out: dict) -> None:
        count[0] += 1
        head = f"[{count[0]}/{len(tasks)}] {task.label}"
        if out["status"] == "ok":
            took = f" {out['elapsed_s']:.2f} s" if out.get("elapsed_s") is not None and not out["recovered"] else ""
            say(f"{head} ok{took} -> {out['path']} ("
                f"{'finished by a worker that died' if out['recovered'] else out['worker']})", batch_log)  # stdout
        else:
            batch_log.warning("%s %s: %s", head, out["status"], out["error"])

    result = run(tasks, p.settings.load, p.output_dir, p.ray or options(), on_result=on_result,
                 desc=f"batch {p.batch_id}")
    lag = result["lag_s"]
    if lag > 1:
        batch_log.warning("a Ray worker's clock is %.1f s behind this machine's: keep the nodes' clocks in sync (NTP)",
                          lag)
    return timedelta(seconds=lag if lag > 1 else 0)


# ---------------------------------------------------------------------------------------
# Sweeps (fluxnb.sweeps.run with backend ray)
# ---------------------------------------------------------------------------------------

def make_sweep(p, cells: list, opts: RayOptions, bar=None) -> None:
    """Make a sweep's cells (sharing one pipeline) on Ray workers, each as a single
    `generate` makes it, recorded with the sweep id and its coordinates. Raises when a
    cell failed, after the others are made (a rerun reuses them)."""
    from PIL import Image

    from ...errors import RuntimeFailure

    by_id = {c.id: c for c in cells}
    tasks = [Task(c.id, c.settings, c.seed, c.extra(p.sweep_id), f"cell {c.index}") for c in cells]

    def on_result(task: Task, out: dict) -> None:
        c = by_id[task.id]
        if out["status"] == "ok":
            c.path, c.record = Path(out["path"]), out["record"] or {}
            with Image.open(c.path) as im:
                c.image = im.convert("RGB")
        if bar is not None:
            bar.update(1)

    outcomes = run(tasks, cells[0].settings.load, p.base.output_dir, opts, progress=False, on_result=on_result,
                   desc=f"sweep {p.sweep_id}")["outcomes"]
    failed = [(by_id[t.id], outcomes.get(t.id)) for t in tasks if (outcomes.get(t.id) or {}).get("status") != "ok"]
    if failed:
        c, out = failed[0]
        why = f"{out['status']}: {out['error']}" if out else "not made (every Ray worker died)"
        raise RuntimeFailure(f"sweep {p.sweep_id}: {len(failed)} cell(s) failed; cell {c.index} {c.values}: {why}",
                             field="sweep", value=p.sweep_id, fix="run it again to make the missing cells")
