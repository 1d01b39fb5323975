"""Hardening, class 1: a sweep's cells are counted from what was written (ranges
arithmetically) and refused past the cap before any value is built: on the command line,
in the Python API and in the sweep form."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import run_hostile

from fluxnb.config.settings import CELL_CAP, CELL_MAX
from fluxnb.errors import FluxnbError
from fluxnb.runs.sweep.axes import count_values, expand_range
from fluxnb.runs.sweep.layout import plan


@pytest.mark.parametrize("axis", [
    ("--seeds", "1-100000000"),
    ("--guidance", "1-7 (+0.0000001)"),
    ("--guidance", "1-7 [100000000]"),
    ("--steps", "1-100000000 [99999999]"),
    ("--seeds", "random:99999999999999999999999"),
    ("--seeds", "1-5,1-100000000"),
    ("--seeds", "1-" + "9" * 400),
    ("--seeds", "1-" + "9" * 5000),
])
def test_huge_axes_are_refused_at_once_even_with_yes(axis, tmp_path):
    r, err = run_hostile("sweep", "a fox", "--model", "tiny", *axis, "--dry-run", "--yes", world=tmp_path)
    assert "cells" in err or "too large" in err
    assert len(err) < 400  # a count, never the values


@pytest.mark.parametrize("axes", [("--seeds", "1-101"), ("--seeds", "1-11", "--guidance", "1-10"),
                                  ("--seeds", "1-20", "--steps", "1-20 [6]")])
def test_past_the_cap_needs_yes(axes, tmp_path):
    r, err = run_hostile("sweep", "a fox", "--model", "tiny", *axes, "--dry-run", world=tmp_path)
    assert f"more than {CELL_CAP}" in err and "--yes" in err


def test_past_the_ceiling_with_yes_names_the_ceiling(tmp_path):
    r, err = run_hostile("sweep", "a fox", "--model", "tiny", "--seeds", "1-200", "--steps", "1-100", "--dry-run",
                         "--yes", world=tmp_path)
    assert f"20000 cells (200 seed x 100 steps): more than {CELL_MAX}" in err


def test_python_api_refuses_before_building_anything(tmp_path):
    import fluxnb

    cases = [dict(seeds=range(10**12)), dict(seeds="1-100000000", yes=True), dict(guidance="1-7 (+0.0000001)"),
             dict(seeds=list(range(CELL_MAX + 1)), yes=True), dict(seeds="1-1000", steps="1-1000", yes=True)]
    for kw in cases:
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(FluxnbError, match="cells"):
            fluxnb.sweep("a fox", model="tiny", out=tmp_path / "out", **kw)
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert took < 5 and peak < 64 * 2**20, (kw, took, peak)
    assert not (tmp_path / "out").exists()


def test_yes_still_makes_a_large_sweep_within_the_ceiling():
    p = plan("a fox", model="tiny", seeds="1-150", guidance="1-3", yes=True)
    assert len(p.cells) == 450 and p.axes[0].values[-1] == 150


def test_the_sweep_form_shows_the_refusal(tmp_path, monkeypatch):
    from fluxnb import ui

    monkeypatch.delenv("FLUXNB_STRICT", raising=False)
    form = ui.sweep_form(model="tiny", output_dir=str(tmp_path / "out"), prompt="a fox",
                         rows=("seed", "1-100000000"), cols=("guidance", "1-7 (+0.0000001)"))
    form.yes.value = True
    t0 = time.perf_counter()
    assert form.run() is None
    assert time.perf_counter() - t0 < 5
    assert "cells" in form.message.value and f"more than {CELL_MAX}" in form.message.value
    assert not (tmp_path / "out").exists()


_int_range = st.tuples(st.integers(0, 300), st.integers(0, 300), st.one_of(st.none(), st.integers(1, 50)),
                       st.one_of(st.none(), st.integers(1, 300)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_int_range)
def test_the_count_is_the_number_of_values_made(r):
    a, b, step, count = r
    text = f"{a}-{b}" + (f" [{count}]" if count else f" (+{step})" if step else "")
    try:
        values = expand_range(text, "int", "steps")
    except FluxnbError:
        with pytest.raises(FluxnbError):
            count_values("steps", text)
        return
    assert count_values("steps", text) == len(values)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 20, allow_nan=False), st.floats(0, 20, allow_nan=False), st.sampled_from(
    ["0.5", "0.25", "0.1", "1", "0.3", "0.07"]))
def test_float_counts_match_too(a, b, step):
    lo, hi = sorted((round(a, 2), round(b, 2)))
    text = f"{lo}-{hi} (+{step})"
    assert count_values("guidance", text) == len(expand_range(text, "float", "guidance"))
