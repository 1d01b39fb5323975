"""Hardening, class 5 (and params files of class 11): YAML alias bombs, deep nesting and
bytes that are not UTF-8 end in one `error:` line before anything runs; the secret-name walk
over a params value visits each shared part once."""

from __future__ import annotations

import time

import pytest
from support import run_hostile

from fluxnb.config.params import MAX_DEPTH, MAX_NODES, parse_yaml
from fluxnb.errors import FluxnbError


def laughs(key: str = "prompts", levels: int = 9, width: int = 9) -> str:
    """The billion laughs under a valid key: `width**levels` strings from a few lines."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    text = "\n".join(lines).replace("l0: ", "x0: ", 1)
    return text + f"\n{key}: *l{levels - 1}\n"


BOMBS = {
    "prompts": laughs(),
    "seeds": laughs("seeds", 7),
    "merge keys": "a: &a {s0: 1, s1: 2, s2: 3, s3: 4, s4: 5, s5: 6, s6: 7, s7: 8, s8: 9, s9: 10}\n" + "".join(
        f"b{i}: &b{i}\n  <<: [*{'a' if i == 0 else f'b{i - 1}'}]\n  k{i}: [" + ", ".join(
            [f"*{'a' if i == 0 else f'b{i - 1}'}"] * 10) + "]\n" for i in range(8)) + "prompts: [x]\n",
    "keys": "k: &k [a, b, c, d, e, f, g, h, i, j]\nk2: &k2 [*k, *k, *k, *k, *k, *k, *k, *k, *k, *k]\n"
            "k3: &k3 [*k2, *k2, *k2, *k2, *k2, *k2, *k2, *k2, *k2, *k2]\n"
            "k4: &k4 [*k3, *k3, *k3, *k3, *k3, *k3, *k3, *k3, *k3, *k3]\nprompts: [*k4, *k4]\n",
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_alias_bombs_are_refused_at_once(name, tmp_path):
    params = tmp_path / "bomb.yaml"
    params.write_text(BOMBS[name])
    r, err = run_hostile("batch", params, "--out", tmp_path / "out", world=tmp_path)
    assert "aliases" in err and f"more than {MAX_NODES}" in err
    assert not (tmp_path / "out").exists()


def test_an_alias_bomb_as_a_parameter_is_refused(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("prompts: [a fox]\n")
    r, err = run_hostile("batch", params, "-p", "seeds", "{" + laughs("x").replace("\n", ", ").rstrip(", ") + "}",
                         "--out", tmp_path / "out", world=tmp_path)
    assert "aliases" in err and err.startswith("error: -p seeds:")


@pytest.mark.parametrize("text", [
    "prompts: " + "[" * 5000 + "]" * 5000,
    "prompts: " + "[" * 200 + "]" * 200,
    "prompts:\n" + "".join("  " * i + "- \n" for i in range(1, 400)),
    "prompts: " + "{a: " * 3000 + "1" + "}" * 3000,
])
def test_deep_nesting_is_refused(text, tmp_path):
    params = tmp_path / "deep.yaml"
    params.write_text(text)
    r, err = run_hostile("batch", params, "--out", tmp_path / "out", world=tmp_path)
    assert "nested" in err or "not valid YAML" in err


@pytest.mark.parametrize("data", [b"prompts: ['caf\xe9']\n", b"\xff\xfep\x00r\x00", b"prompts: [a]\n\x80\x81\n",
                                  "prompts: [a fox]\n".encode("utf-16")])
def test_bytes_that_are_not_utf8_are_one_line(data, tmp_path):
    params = tmp_path / "latin.yaml"
    params.write_bytes(data)
    r, err = run_hostile("batch", params, "--out", tmp_path / "out", world=tmp_path)
    assert "not UTF-8 text" in err and "latin.yaml" in err


def test_a_few_aliases_are_still_plain_yaml():
    data = parse_yaml("base: &b [1, 2, 3]\nseeds: *b\nmore: {<<: {steps: 4}, size: 64x64}\n")
    assert data == {"base": [1, 2, 3], "seeds": [1, 2, 3], "more": {"steps": 4, "size": "64x64"}}
    nested = "x: " + "[" * (MAX_DEPTH - 2) + "1" + "]" * (MAX_DEPTH - 2)
    assert parse_yaml(nested)["x"] is not None
    with pytest.raises(FluxnbError, match="nested"):
        parse_yaml("x: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_the_secret_walk_visits_each_shared_part_once(monkeypatch):
    """A params dict built in Python (fluxnb.run_batch(dict)) with 10**30 leaves: checked at once."""
    from fluxnb.runs.batch.params import check_names

    monkeypatch.setenv("HF_TOKEN", "hf_" + "W" * 30)
    value: object = ["a fox"] * 10
    for _ in range(30):
        value = [value] * 10
    t0 = time.perf_counter()
    check_names({"prompts": value})
    assert time.perf_counter() - t0 < 2
    with pytest.raises(FluxnbError, match="holds a secret"):
        check_names({"prompts": [value, ["hf_" + "W" * 30]]})
