"""`fluxnb doctor`: the readiness table, its fixes, --json, offline, and no secret shown."""

from __future__ import annotations

import json
import os

import pytest
from support import run_cli

HF = "hf_" + "D" * 34
ANT = "sk-ant-api03-" + "E" * 40
NAMES = ["python", "gpu", "torch", "diffusers", "transformers", "offload", "hf_token", "model", "disk",
         "anthropic_key", "jupyterlab", "config.env"]


def _doctor(capsys, *args) -> tuple[int, str]:
    from fluxnb.front import cli

    code = cli.main(["doctor", *args])
    return code, capsys.readouterr().out


def _rows(out: str) -> dict:
    return {c["name"]: c for c in json.loads(out)["checks"]}


def test_doctor_on_a_cpu_machine_with_the_tiny_model(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FLUXNB_MODEL", "tiny")
    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))  # no JupyterLab started here
    monkeypatch.setenv("HF_TOKEN", HF)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANT)
    code, out = _doctor(capsys, "--json")
    assert HF not in out and ANT not in out
    data = json.loads(out)
    rows = _rows(out)
    assert list(rows) == NAMES
    assert code == 0 and data["ready"] is True
    assert rows["gpu"]["status"] == "warn" and "CPU only" in rows["gpu"]["value"]  # fine for tiny, said
    assert rows["torch"]["value"].startswith("2.") and rows["diffusers"]["status"] == "ok"
    assert rows["offload"]["value"].startswith("auto -> none (bf16) on cpu")
    assert rows["hf_token"] == {"name": "hf_token", "status": "ok", "fix": "",
                                "value": "present, from the environment (HF_TOKEN) (not shown)"}
    assert rows["anthropic_key"]["value"] == "present (not shown)"
    assert rows["model"]["status"] == "warn" and "tiny" in rows["model"]["value"]
    assert rows["jupyterlab"]["status"] == "warn" and "fluxnb lab" in rows["jupyterlab"]["fix"]
    assert rows["disk"]["status"] == "ok" and "free on" in rows["disk"]["value"]
    # The table says the same, with the fixes under failing rows.
    code, table = _doctor(capsys)
    assert HF not in table and ANT not in table
    assert "WARN  gpu" in table and "-> start it: fluxnb lab" in table and table.rstrip().endswith("ready")


def test_doctor_names_every_fix_for_flux_dev_without_token_gpu_or_model(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("FLUXNB_MODEL", "black-forest-labs/FLUX.1-dev")
    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLUXNB_ENHANCE", "claude")
    code, out = _doctor(capsys, "--json")
    rows = _rows(out)
    assert code == 1 and json.loads(out)["ready"] is False
    assert rows["gpu"]["status"] == "fail" and "rent a GPU pod" in rows["gpu"]["fix"]
    assert rows["hf_token"]["status"] == "fail" and "HF_TOKEN" in rows["hf_token"]["fix"]
    assert rows["model"]["status"] == "fail"
    assert rows["model"]["fix"].startswith("fluxnb model fetch black-forest-labs/FLUX.1-dev")
    assert rows["anthropic_key"]["status"] == "fail" and "ANTHROPIC_API_KEY" in rows["anthropic_key"]["fix"]
    _, table = _doctor(capsys)
    assert "FAIL  model" in table and "not ready: 4 row(s) marked FAIL" in table


def test_doctor_sees_a_fetched_model_and_low_disk(monkeypatch, capsys, tmp_path):
    from fluxnb.front import doctor

    snap = tmp_path / "snap"
    (snap / "vae").mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (snap / "vae" / "w.bin").write_bytes(b"x" * 1000)
    marker = tmp_path / "cache" / "fetched" / "black-forest-labs--FLUX.1-dev.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"path": str(snap), "revision": "abc", "verified": "sha256",
                                  "files": {"model_index.json": 2, "vae/w.bin": 1000}}))
    monkeypatch.setenv("FLUXNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLUXNB_MODEL", "black-forest-labs/FLUX.1-dev")
    _, out = _doctor(capsys, "--json")
    row = _rows(out)["model"]
    assert row["status"] == "ok" and "downloaded and verified" in row["value"] and str(snap) in row["value"]
    # A file that changed size makes it "not downloaded" again.
    (snap / "vae" / "w.bin").write_bytes(b"x" * 10)
    _, out = _doctor(capsys, "--json")
    assert _rows(out)["model"]["status"] == "fail"
    # Low disk: the row fails and says what to free.
    monkeypatch.setattr(doctor, "MIN_FREE_BYTES", 10**18)
    _, out = _doctor(capsys, "--json")
    assert _rows(out)["disk"]["status"] == "fail" and "free space" in _rows(out)["disk"]["fix"]


def test_doctor_flags_a_readable_config_env_with_keys(monkeypatch, capsys, tmp_path):
    cfg = tmp_path / "config.env"
    cfg.write_text(f"ANTHROPIC_API_KEY={ANT}\nFLUXNB_MODEL=tiny\n")
    cfg.chmod(0o644)
    monkeypatch.setenv("FLUXNB_CONFIG_ENV", str(cfg))
    code, out = _doctor(capsys, "--json")
    rows = _rows(out)
    assert ANT not in out
    assert rows["anthropic_key"]["status"] == "ok"  # read from config.env
    assert rows["config.env"]["status"] == "warn" and rows["config.env"]["fix"] == f"chmod 600 {cfg}"
    cfg.chmod(0o600)
    _, out = _doctor(capsys, "--json")
    assert _rows(out)["config.env"]["status"] == "ok"


def test_a_broken_check_is_a_row_not_a_crash(monkeypatch, capsys):
    from fluxnb.front import doctor

    def boom(s):
        raise RuntimeError("no nvml")

    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_python, boom))
    code, out = _doctor(capsys, "--json")
    rows = _rows(out)
    assert code == 1 and rows["boom"]["status"] == "fail" and "no nvml" in rows["boom"]["value"]


# Loaded first in every Python process that gets its folder on PYTHONPATH: any network
# use (a name lookup, a TCP connection) is written to $NET_LOG and refused.
NO_NETWORK = """
import os, socket
_log = os.environ["NET_LOG"]
with open(_log, "a") as f:
    f.write("armed\\n")
def _refuse(what):
    with open(_log, "a") as f:
        f.write(what + "\\n")
    raise OSError("network use refused by the test: " + what)
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
def _guard(method):
    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"connect {address!r}")
        return method(self, address)
    return guarded
socket.socket.connect, socket.socket.connect_ex = _guard(_connect), _guard(_connect_ex)
socket.getaddrinfo = lambda host, *a, **k: _refuse(f"getaddrinfo {host!r}")
"""


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "black-forest-labs/FLUX.1-dev"])
def test_doctor_works_offline_in_its_own_process(tmp_path, model):
    # Offline mode off, a hub address nothing listens on, and sockets refused: doctor must
    # not try the hub, even for a hub id with a token (it looks at the disk only).
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    net_log = tmp_path / "net.log"
    r = run_cli("doctor", env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0",
                               "FLUXNB_MODEL": model, "HF_TOKEN": HF, "FLUXNB_CACHE_DIR": str(tmp_path),
                               "PYTHONPATH": str(guard), "NET_LOG": str(net_log)}, timeout=120)
    attempts = net_log.read_text().splitlines()
    assert "armed" in attempts, "the socket guard did not load"
    assert [a for a in attempts if a != "armed"] == [], "doctor used the network"
    assert "ok    torch" in r.stdout and HF not in r.stdout + r.stderr
    if model == "tiny":
        assert r.returncode == 0, r.stderr
    else:  # not downloaded: said from the disk, with the fix
        assert r.returncode == 1 and "FAIL  model" in r.stdout, r.stdout + r.stderr
        assert f"fluxnb model fetch {model}" in r.stdout
    assert os.environ.get("HF_TOKEN") is None


# ---------------------------------------------------------------------------------------
# --hub: the token and the licence, asked of a fake hub on 127.0.0.1; nothing downloaded
# ---------------------------------------------------------------------------------------

def _hub_env(hub, tmp_path, token=None) -> dict:
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1",
           "FLUXNB_CACHE_DIR": str(tmp_path / "cache"), "FLUXNB_MODEL": "black-forest-labs/FLUX.1-dev"}
    if token:
        env["HF_TOKEN"] = token
    return env


@pytest.fixture
def hub():
    from fakehub import FakeHub

    with FakeHub() as h:
        yield h


@pytest.mark.slow
def test_doctor_hub_with_an_accepted_licence(hub, tmp_path):
    from fakehub import GOOD

    r = run_cli("doctor", "--hub", "--json", env=_hub_env(hub, tmp_path, GOOD), timeout=120)
    rows = _rows(r.stdout)
    assert list(rows)[-2:] == ["hub_token", "hub_access"]
    assert rows["hub_token"]["status"] == "ok" and "valid: account alice" in rows["hub_token"]["value"]
    assert "from the environment (HF_TOKEN)" in rows["hub_token"]["value"]
    assert rows["hub_access"]["status"] == "ok" and "licence accepted" in rows["hub_access"]["value"]
    assert rows["model"]["status"] == "fail"  # still not downloaded: --hub fetches nothing
    assert hub.served == 0 and not any(m == "GET" and "/resolve/" in p for m, p in hub.requests)
    assert ("HEAD", "/black-forest-labs/FLUX.1-dev/resolve/main/model_index.json") in hub.requests
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").rglob("*.json"))
    assert GOOD not in r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", ["no licence", "invalid token", "no token"])
def test_doctor_hub_says_what_model_fetch_says(hub, tmp_path, case):
    from fakehub import NO_LICENCE

    token = {"no licence": NO_LICENCE, "invalid token": "hf_" + "c" * 34, "no token": None}[case]
    env = _hub_env(hub, tmp_path, token)
    r = run_cli("doctor", "--hub", "--json", env=env, timeout=120)
    assert r.returncode == 1
    rows = _rows(r.stdout)
    fetch = run_cli("model", "fetch", "black-forest-labs/FLUX.1-dev", env=env, timeout=120)
    assert fetch.returncode == 2 and hub.served == 0
    [error] = [line for line in fetch.stderr.splitlines() if line.startswith("error: ")]
    row = rows["hub_token"] if case == "invalid token" else rows["hub_access"]
    assert row["status"] == "fail"
    assert error == f"error: {row['value']}; {row['fix']}"  # the same message and fix, word for word
    if case == "no licence":
        assert rows["hub_token"]["status"] == "ok" and "has not accepted its licence (403)" in row["value"]
        table = run_cli("doctor", "--hub", env=env, timeout=120).stdout
        assert "FAIL  hub_access" in table and "-> log in at https://huggingface.co/black-forest-labs/FLUX.1-dev" in table
    if case == "invalid token":
        assert "invalid (401)" in row["value"] and "not asked" in rows["hub_access"]["value"]
    if case == "no token":
        assert "no Hugging Face token found" in rows["hub_token"]["value"]
    if token:
        assert token not in r.stdout + r.stderr
