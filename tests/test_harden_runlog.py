"""Hardening, class 9: well-formed run-log lines of odd types (a float seed, 1e400 steps, a
record without created_at, a path that is a number, deep nesting) never break `fluxnb log`,
its exports, `runlog.load` or batch skip detection: each column is read as its type or
dropped, with one warning, and the rest of the log stands."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import run_hostile

from fluxnb.outputs import runlog
from fluxnb.outputs.runlog import COLUMNS

ODD = [
    '{"id": "a", "status": "ok", "seed": 1.5, "path": "flux_a.jpg", "created_at": "2026-01-01T00:00:00+00:00"}',
    '{"id": "b", "status": "ok", "seed": 1e30, "steps": 1e400, "path": 12345, "elapsed_s": "slow"}',
    '{"id": "c", "status": "error", "error": "boom"}',
    '{"id": 7, "status": "ok", "path": ["x"], "width": true, "guidance": "abc", "created_at": "yesterday"}',
    '{"id": "d", "status": "ok", "path": "' + "x" * 5000 + '", "seed": ' + "9" * 30 + '}',
    '{"id": "e", "status": "ok", "path": "a\\u0000b", "created_at": 5}',
    '{"id": "f", "status": null, "steps": -1e400, "prompt": {"nested": [1, 2]}}',
    "[1, 2, 3]",
    '"just a string"',
    "{" * 3000 + "}" * 3000,
    '{"a": ' * 5000 + "1" + "}" * 5000,
    '{"id": "g", "status": "ok", "extra": ' + "[" * 500 + "]" * 500 + ', "seed": 4}',
]


@pytest.fixture
def odd_log(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "flux_a.jpg").write_bytes(b"an image")
    (out / runlog.FILE_NAME).write_text("\n".join(ODD).replace('"flux_a.jpg"', json.dumps(str(out / "flux_a.jpg")))
                                        + "\n")
    return out


@pytest.mark.parametrize("args", [(), ("--json",), ("--export", "{out}/runs.csv"), ("--export", "{out}/runs.parquet")])
def test_fluxnb_log_reads_what_it_can_with_one_warning(args, odd_log, tmp_path):
    args = [a.format(out=odd_log) for a in args]
    r, _ = run_hostile("log", odd_log, *args, world=tmp_path, allowed=[odd_log], fails=False, limit=30)
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 4 unreadable line(s)" in warnings[0] and "dropped" in warnings[0]
    if args == ["--json"]:
        records = json.loads(r.stdout)
        assert [rec["id"] for rec in records] == ["a", "b", "c", "7", "d", "e", "f", "g"]
        assert records[0]["seed"] is None and records[1]["path"] == "12345" and records[1]["steps"] is None
    elif not args:
        assert "8 records" in r.stdout and "ok 6" in r.stdout


def test_load_types_every_column(odd_log):
    df = runlog.load(odd_log)
    assert len(df) == 8 and str(df["seed"].dtype) == "Int64" and str(df["created_at"].dtype).startswith("datetime")
    assert df["seed"].iloc[-1] == 4 and df["seed"].isna().sum() == 7 and df["steps"].isna().all()
    assert runlog.ok_paths(odd_log) == {"a": runlog.read(odd_log, warn=False)[0]}


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=True)
                     | st.text(max_size=20), lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)
_record = st.dictionaries(st.sampled_from([*COLUMNS, "other"]), _json, max_size=12)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_record, max_size=6))
def test_any_well_formed_lines_never_break_the_log(tmp_path, records):
    out = tmp_path / "fuzz"
    out.mkdir(exist_ok=True)
    (out / runlog.FILE_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))
    read = runlog.read(out, warn=False)
    assert len(read) == len(records)
    for rec in read:
        for col, kind in COLUMNS.items():
            v = rec.get(col)
            if v is None:
                continue
            if kind == "Int64":
                assert isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**63
            elif kind == "float64":
                assert isinstance(v, float) and math.isfinite(v)
            elif kind == "boolean":
                assert isinstance(v, bool)
            else:
                assert isinstance(v, str)
    df = runlog.load(out)
    assert len(df) == len(records)
    assert runlog.summary(out).startswith(str(out / runlog.FILE_NAME))
    runlog.ok_paths(out)
    runlog.export(out, tmp_path / "fuzz.csv")
