"""Hardening, classes 8 and 12 (`--out ""`): an output folder that cannot be used is refused
in one line before the model loads (a file, a file above it, a folder not writable, an
empty name), by generate, sweep and batch alike, writing nothing."""

from __future__ import annotations

import os

import pytest
from support import run_hostile

from fluxnb.config.settings import check_output_dir, resolve
from fluxnb.errors import FluxnbError

COMMANDS = {
    "generate": ["generate", "a fox", "--model", "tiny", "--steps", "1"],
    "sweep": ["sweep", "a fox", "--model", "tiny", "--steps", "1", "--seeds", "1,2"],
}


def _targets(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    return {"a file": (tmp_path / "a-file", "is a file"),
            "below a file": (tmp_path / "a-file" / "sub", "cannot be made"),
            "empty": ("", "an empty folder name"), "blank": ("   ", "an empty folder name")}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unusable_out_is_refused_before_the_model_loads(command, tmp_path):
    for what, (out, message) in _targets(tmp_path).items():
        r, err = run_hostile(*COMMANDS[command], "--out", out, world=tmp_path, limit=10)
        assert message in err, (what, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing in the current folder either


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_model_is_loaded_for_an_unusable_out(command, tmp_path, monkeypatch, capsys):
    from fluxnb.front import cli
    from fluxnb.model import pipeline

    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline, "get_pipeline", never)
    (tmp_path / "a-file").write_text("x")
    assert cli.main([*COMMANDS[command], "--out", str(tmp_path / "a-file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_batch_checks_the_folder_first(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("prompts: [a fox]\nmodel: tiny\nsteps: 1\n")
    for what, (out, message) in _targets(tmp_path).items():
        r, err = run_hostile("batch", params, "--out", out, world=tmp_path, limit=10)
        assert message in err or "output_dir" in err, (what, err)


def test_env_and_python_get_the_same_refusal(tmp_path, monkeypatch):
    import fluxnb

    with pytest.raises(FluxnbError, match="an empty folder name"):
        resolve(output_dir="")
    monkeypatch.setenv("FLUXNB_OUTPUT_DIR", " ")
    with pytest.raises(FluxnbError, match="output_dir"):
        resolve()
    monkeypatch.delenv("FLUXNB_OUTPUT_DIR")
    (tmp_path / "f").write_text("x")
    with pytest.raises(FluxnbError, match="is a file"):
        fluxnb.sweep("a fox", model="tiny", seeds="1,2", out=tmp_path / "f")


def test_a_folder_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    """Root writes anywhere, so the permission answer is given here as a read-only mount would."""
    ro = tmp_path / "read-only"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(ro) else real(p, mode, **k))
    with pytest.raises(FluxnbError, match="not writable"):
        check_output_dir(ro)
    with pytest.raises(FluxnbError, match=r"not writable \(it would be made in"):
        check_output_dir(ro / "new" / "deeper")
    assert check_output_dir(tmp_path / "fresh" / "deeper") == tmp_path / "fresh" / "deeper"
    assert not (tmp_path / "fresh").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_a_read_only_folder_on_the_command_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    r, err = run_hostile(*COMMANDS["generate"], "--out", ro, world=tmp_path)
    assert "not writable" in err
