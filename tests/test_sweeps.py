"""Sweeps and grids: values and ranges, the plan, grid layout and metadata, pixel equality
with generate, batching and staging, resume, grids from the run log, bad input, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fluxnb
from fluxnb import runlog
from fluxnb.runs import sweep as sweeps
from fluxnb.errors import FluxnbError
from fluxnb.outputs.metadata import read_metadata
from fluxnb.config.settings import resolve

FAST = {"model": "tiny", "steps": 2, "image_format": "png"}


def arr(im):
    return np.asarray(im.convert("RGB")).astype(int)


def open_image(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def made(tiny_model, tmp_path_factory):
    """One 2x2 seed-by-guidance sweep shared by the read-only tests below."""
    out = tmp_path_factory.mktemp("sweep")
    result = fluxnb.sweep("a red fox", seeds=[11, 12], guidance="1.5,5", out=out, progress=False, **FAST)
    return out, result


# ---------------------------------------------------------------------------------------
# Values and ranges
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,kind,want", [
    ("1-5", "int", [1, 2, 3, 4, 5]),
    ("1-10 (+2)", "int", [1, 3, 5, 7, 9]),
    ("1-10 [5]", "int", [1, 3, 5, 7, 10]),           # A1111 truncates linspace on whole-number axes
    (" 2 - 4 ", "int", [2, 3, 4]),
    ("10-1 [4]", "int", [10, 7, 4, 1]),
    ("1-2 (+0.5)", "float", [1.0, 1.5, 2.0]),
    ("1.5-5 (+1.5)", "float", [1.5, 3.0, 4.5]),      # never past the end (A1111's arange can overshoot)
    ("1-2 [3]", "float", [1.0, 1.5, 2.0]),
    ("0.1-0.3 (+0.1)", "float", [0.1, 0.2, 0.3]),
    ("5", "int", None),
    ("fast", "int", None),
])
def test_ranges(text, kind, want):
    assert sweeps.expand_range(text, kind) == want


def test_axis_values_lists_presets_ranges_and_random_seeds():
    base = resolve(model="tiny")
    assert sweeps.parse_axis("seed", "1,2,5-7", base)[0] == [1, 2, 5, 6, 7]
    assert sweeps.parse_axis("guidance", "creative, 3.5, strict", base)[0] == [1.5, 3.5, 5.0]
    assert sweeps.parse_axis("guidance", [1.5, "2-3 (+0.5)"], base)[0] == [1.5, 2.0, 2.5, 3.0]
    assert sweeps.parse_axis("steps", "fast,8", base)[0] == [4, 8]
    values, labels, _ = sweeps.parse_axis("size", "square,512x768", base)
    assert values == ["square", "512x768"] and labels == ["size: square (1024x1024)", "size: 512x768"]
    assert sweeps.parse_axis("prompt", "a fox, red|a hare", base)[0] == ["a fox, red", "a hare"]
    values, _, drawn = sweeps.parse_axis("seed", "3,random:4", base)
    assert values[0] == 3 and len(values) == 5 and len(set(values)) == 5 and drawn == values[1:]


@pytest.mark.parametrize("kw,field,words", [
    ({"seeds": ""}, "seed", "empty"),
    ({"seeds": "1,,2"}, "seed", "empty value"),
    ({"seeds": []}, "seed", "empty"),
    ({"guidance": "1.5,3.5,1.5"}, "guidance", "twice"),
    ({"steps": "4,fast"}, "steps", "twice"),
    ({"size": "64x64,64X64"}, "size", "twice"),
    ({"seeds": "1-10 (-2)"}, "seed", "must be positive"),
    ({"seeds": "10-1"}, "seed", "ends below"),
    ({"seeds": "1.5-3"}, "seed", "decimals"),
    ({"guidance": "1-9"}, "guidance", "between"),
    ({"seeds": "1-101"}, "cells", "more than 100"),
    ({"seeds": "1,2", "rows": "sampler"}, "rows", "not an axis"),
    ({"seeds": "1,2", "offload": ["none", "model"]}, "offload", "not a sweep axis"),
    ({"seeds": "1,2", "seed": 3}, "seed", "given twice"),
])
def test_bad_input_is_refused_before_anything_is_made(kw, field, words, outdir):
    with pytest.raises(FluxnbError) as e:
        fluxnb.sweep("a fox", out=outdir, progress=False, **{**FAST, **kw})
    assert e.value.field == field and words in str(e.value)
    assert not outdir.exists()


def test_the_cap_is_lifted_by_yes():
    p = sweeps.plan("a fox", seeds="1-101", yes=True, model="tiny")
    assert len(p.cells) == 101


# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------

def test_plan_layout_rows_cols_and_one_grid_per_further_value():
    p = sweeps.plan("a fox", seeds="1,2,3", guidance="1.5,3.5", steps="2,4", model="tiny")
    assert (p.rows.name, p.cols.name, [a.name for a in p.pages], p.n_grids) == ("seed", "guidance", ["steps"], 2)
    assert [(c.grid, c.row, c.col) for c in p.cells[:7]] == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 2, 0),
                                                             (0, 2, 1), (1, 0, 0)]
    c = p.cells[3]
    assert (c.seed, c.settings.guidance, c.settings.steps) == (2, 3.5, 2) and p.cells[9].settings.steps == 4
    assert len({c.id for c in p.cells}) == 12
    again = sweeps.plan("a fox", seeds="1-3", guidance=[1.5, 3.5], steps=[2, 4], model="tiny")
    assert again.sweep_id == p.sweep_id
    assert sweeps.plan("a fox", seeds="1-3", guidance=[1.5, 3.5], model="tiny").sweep_id != p.sweep_id
    swapped = sweeps.plan("a fox", seeds="1,2,3", guidance="1.5,3.5", steps="2,4", model="tiny", rows="steps",
                          cols="seed")
    assert (swapped.rows.name, swapped.cols.name, swapped.pages[0].name) == ("steps", "seed", "guidance")
    d = p.definition()
    assert d["fixed"]["prompt"] == "a fox" and "seed" not in d["fixed"] and d["cells"] == 12


def test_plan_single_values_are_fixed_and_one_axis_is_one_row():
    p = sweeps.plan("a fox", seeds="7", guidance="1.5,3.5,5", steps="fast", model="tiny")
    assert p.rows is None and p.cols.name == "guidance" and {c.row for c in p.cells} == {0}
    assert p.base.seed == 7 and p.base.steps == 4 and p.fixed()["seed"] == 7


def test_plan_count_becomes_a_seed_axis_and_drawn_seeds_are_recorded():
    p = sweeps.plan("a fox", seed=40, count=3, guidance="1.5,3.5", model="tiny")
    assert p.rows.name == "seed" and p.rows.values == [40, 41, 42]
    q = sweeps.plan("a fox", seeds="random:3", model="tiny")
    assert len(q.drawn_seeds) == 3 and [c.seed for c in q.cells] == q.drawn_seeds
    assert q.definition()["drawn_seeds"] == q.drawn_seeds


def test_prompt_template_and_prompt_axis():
    p = sweeps.plan("a {} fox", prompts="red|blue", seeds="1,2", model="tiny")
    assert p.rows.name == "prompt" and [c.settings.prompt for c in p.cells] == ["a red fox"] * 2 + ["a blue fox"] * 2
    assert p.rows.labels == ["red", "blue"]
    q = sweeps.plan(prompts=["a fox, red", "a hare"], model="tiny")
    assert [c.settings.prompt for c in q.cells] == ["a fox, red", "a hare"]
    with pytest.raises(FluxnbError, match="must hold"):
        sweeps.plan("a fox", prompts="red|blue", model="tiny")


# ---------------------------------------------------------------------------------------
# What a sweep makes
# ---------------------------------------------------------------------------------------

def test_cells_saved_recorded_and_row_major(made):
    out, r = made
    assert [(c.seed, c.settings.guidance) for c in r.cells] == [(11, 1.5), (11, 5.0), (12, 1.5), (12, 5.0)]
    assert r.images == [c.path for c in r.cells] and all(p.is_file() for p in r.images)
    recs = [x for x in runlog.read(out) if x.get("sweep_id") == r.sweep_id]
    assert [x["status"] for x in recs] == ["ok"] * 4 and {x["path"] for x in recs} == {str(p) for p in r.images}
    for c in r.cells:
        meta = read_metadata(c.path)["fluxnb"]
        assert (meta["seed"], meta["guidance"], meta["steps"]) == (c.seed, c.settings.guidance, 2)
        assert (meta["sweep_id"], meta["sweep_row"], meta["sweep_col"], meta["sweep_index"]) == (
            r.sweep_id, c.row, c.col, c.index)
        assert meta["settings"]["seed"] == c.seed and f"Seed: {c.seed}" in read_metadata(c.path)["parameters"]
    assert fluxnb.read_settings(r.images[3]).guidance == 5.0


def test_grid_metadata_holds_the_definition_and_every_cell(made):
    out, r = made
    assert r.grid.parent == out and r.grid.suffix == ".png" and r.grids == [r.grid]
    found = read_metadata(r.grid)
    meta = found["fluxnb"]
    assert meta["kind"] == "sweep_grid" and meta["sweep"]["sweep_id"] == r.sweep_id
    assert [a["name"] for a in meta["sweep"]["axes"]] == ["seed", "guidance"]
    assert [a["values"] for a in meta["sweep"]["axes"]] == [[11, 12], [1.5, 5.0]]
    assert len(meta["cells"]) == 4
    for cell, c in zip(meta["cells"], r.cells):
        assert cell["path"] == str(c.path) and cell["record"]["seed"] == c.seed
        assert cell["settings"]["guidance"] == c.settings.guidance and cell["values"]["seed"] == c.seed
    assert found["parameters"].startswith("a red fox\n") and "Seed: 11" in found["parameters"]
    assert fluxnb.read_settings(r.grid).seed == 11     # A1111 readers take the first cell


def test_grid_layout_cells_and_labels(made):
    _out, r = made
    grid = open_image(r.grid)
    assert arr(grid).shape == arr(r.grid_image).shape and (arr(grid) == arr(r.grid_image)).all()
    boxes = [c["box"] for c in read_metadata(r.grid)["fluxnb"]["cells"]]
    for (x, y, w, h), c in zip(boxes, r.cells):             # each cell is its image, exactly
        assert (w, h) == (64, 64)
        assert (arr(grid.crop((x, y, x + w, y + h))) == arr(open_image(c.path))).all()
    (x0, y0, _, _), (x1, _, _, _), (_, y2, _, _), (x3, y3, w3, h3) = boxes
    assert x1 > x0 + 64 and y2 > y0 + 64 and y0 == boxes[1][1] and x0 == boxes[2][0]
    assert grid.size[1] == y3 + h3 and grid.size[0] >= x3 + w3  # labels left and above, nothing below
    g = arr(grid)
    head0, head1 = g[y0 - 30:y0 - 2, x0:x0 + 64], g[y0 - 30:y0 - 2, x1:x1 + 64]
    row0, row1 = g[y0:y0 + 64, :x0 - 2], g[y2:y2 + 64, :x0 - 2]
    assert (head0 < 128).any() and (row0 < 128).any()       # text was drawn
    assert (head0 != head1).any() and (row0 != row1).any()  # 1.5 vs 5, 11 vs 12
    assert (g[:y0 - 30, :] < 128).any()                      # the title


def test_cells_equal_generate_batched_and_single(made, tiny_model, tmp_path, capsys):
    _out, r = made
    from fluxnb.front.cli import main
    from fluxnb.image.make import generate

    for c in r.cells:  # made 2 per pipeline call (CPU default): within 2/255 of a single generate
        [g] = generate(settings=c.settings, save=False, record=False, progress=False)
        assert np.abs(arr(g.image) - arr(c.image)).max() <= 2
        assert np.abs(arr(g.image) - arr(open_image(c.path))).max() <= 2
    c = r.cells[3]  # and `fluxnb generate` with the cell's flags
    assert main(["generate", "a red fox", "--model", "tiny", "--seed", str(c.seed), "--guidance", "5", "--steps",
                 "2", "--format", "png", "--out", str(tmp_path), "--json"]) == 0
    [rec] = json.loads(capsys.readouterr().out)["images"]
    assert rec["id"] == c.id and np.abs(arr(open_image(rec["path"])) - arr(open_image(c.path))).max() <= 2


def test_staged_denoises_everything_before_decoding(tiny_model, outdir, made, monkeypatch):
    _out, r = made
    from fluxnb.model.pipeline import get_pipeline

    loaded = get_pipeline(r.cells[0].settings.load)
    order, offloads = [], []
    cls = type(loaded.pipe)
    real = cls.maybe_free_model_hooks
    monkeypatch.setattr(cls, "maybe_free_model_hooks", lambda self: offloads.append(1) or real(self))
    hooks = [loaded.pipe.transformer.register_forward_pre_hook(lambda *a: order.append("T")),
             loaded.pipe.vae.decoder.register_forward_pre_hook(lambda *a: order.append("V"))]
    try:
        s = fluxnb.sweep("a red fox", seeds=[11, 12], guidance="1.5,5", out=outdir, progress=False, staged=True,
                         batch_size=1, **FAST)
    finally:
        for h in hooks:
            h.remove()
    assert order == ["T"] * 8 + ["V"] * 4                     # 4 cells x 2 steps, then 4 decodes
    assert len(offloads) == 1                                 # components sent back once, not after each call
    assert "maybe_free_model_hooks" not in vars(loaded.pipe)
    for a, b in zip(s.cells, r.cells):
        assert np.abs(arr(a.image) - arr(b.image)).max() <= 2


def test_each_prompt_is_encoded_once(tiny_model, outdir, monkeypatch):
    from fluxnb.model.pipeline import get_pipeline

    loaded = get_pipeline(resolve(**FAST).load)
    loaded.embeds.clear()
    calls = []
    real = loaded.pipe.encode_prompt
    def spy(**kw):
        if kw.get("prompt_embeds") is None:  # the pipeline's own call with embeddings encodes nothing
            calls.append(kw["prompt_2"])
        return real(**kw)

    monkeypatch.setattr(loaded.pipe, "encode_prompt", spy)
    r = fluxnb.sweep(prompts="a fox|a hare", seeds="1,2", guidance="1.5,3.5", out=outdir, progress=False,
                     **FAST)
    assert sorted(calls) == ["a fox", "a hare"] and len(r.cells) == 8 and r.grid_image is not None


def test_sizes_differ_and_smaller_cells_are_centred(tiny_model, outdir):
    r = fluxnb.sweep("a fox", size="64x64,32x48", seeds="1", out=outdir, progress=False, **FAST)
    assert [c.image.size for c in r.cells] == [(64, 64), (32, 48)]
    x, _y, w, h = read_metadata(r.grid)["fluxnb"]["cells"][1]["box"]
    x0 = read_metadata(r.grid)["fluxnb"]["cells"][0]["box"][0]
    assert (w, h) == (32, 48) and x - x0 > 64 + 16 - 1


def test_enhanced_vs_raw_enhances_once_per_backend(tiny_model, outdir, monkeypatch):
    from fluxnb.prompt import enhancer
    from fluxnb.image.make import generate

    calls = []

    def fake(prompt, backend="none", **kw):
        calls.append(backend)
        return enhancer.Enhancement(prompt, prompt if backend == "none" else prompt + ", golden hour, 35mm", backend)

    monkeypatch.setattr(enhancer, "enhance", fake)
    r = fluxnb.sweep("a fox", enhance="none,local", seeds="1-3", out=outdir, progress=False, **FAST)
    assert (r.plan.rows.name, r.plan.rows.labels) == ("enhance", ["enhance: none", "enhance: local"])
    assert sorted(calls) == ["local", "none"]                 # once per backend, not per cell
    assert [c.record["enhanced_prompt"] for c in r.cells] == [""] * 3 + ["a fox, golden hour, 35mm"] * 3
    [g] = generate("a fox", enhance="local", seed=2, save=False, record=False, progress=False, **FAST)
    assert np.abs(arr(g.image) - arr(r.cells[4].image)).max() <= 2
    assert np.abs(arr(g.image) - arr(r.cells[1].image)).max() > 2   # the enhanced prompt changed the image


# ---------------------------------------------------------------------------------------
# Resume after an interruption
# ---------------------------------------------------------------------------------------

def test_an_interrupted_sweep_rerun_reuses_the_recorded_cells(tiny_model, outdir):
    calls = {"n": 0}

    def stop_third(pipe, i, t, kwargs):
        if i == 0:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return kwargs

    kw = dict(seeds="1,2", guidance="1.5,3.5", out=outdir, progress=False, batch_size=1, **FAST)
    with pytest.raises(KeyboardInterrupt):
        fluxnb.sweep("a fox", callbacks=[stop_third], **kw)
    recs = runlog.read(outdir)
    assert [x["status"] for x in recs] == ["ok", "ok", "interrupted"]
    first_paths = [x["path"] for x in recs[:2]]
    calls["n"] = -100
    r = fluxnb.sweep("a fox", callbacks=[stop_third], **kw)
    assert sum(c.reused for c in r.cells) == 2 and calls["n"] == -98   # two made now, none twice
    assert sorted(str(c.path) for c in r.cells if c.reused) == sorted(first_paths)
    assert len([x for x in runlog.read(outdir) if x["status"] == "ok"]) == 4
    again = fluxnb.sweep("a fox", **kw)                       # all made: nothing generated, the grid redrawn
    assert all(c.reused for c in again.cells) and again.sweep_id == r.sweep_id and again.grid != r.grid
    assert (arr(again.grid_image) == arr(r.grid_image)).all()


def test_a_cell_made_by_generate_is_reused_and_recorded_for_the_sweep(tiny_model, outdir):
    from fluxnb.image.make import generate

    [g] = generate("a fox", seed=2, guidance=3.5, output_dir=str(outdir), progress=False, **FAST)
    r = fluxnb.sweep("a fox", seeds=np.array([1, 2]), guidance=np.array([1.5, 3.5]), out=outdir, progress=False,
                     **FAST)
    assert [c.reused for c in r.cells] == [False, False, False, True] and r.images[3] == g.path
    recs = [x for x in runlog.read(outdir) if x.get("sweep_id") == r.sweep_id]
    assert len(recs) == 4 and next(x for x in recs if x.get("reused"))["path"] == str(g.path)
    assert fluxnb.grid(runlog.load(outdir), rows="seed", cols="guidance",
                       where=f"sweep_id == '{r.sweep_id}'").images == [str(p) for p in r.images]


# ---------------------------------------------------------------------------------------
# Grids from the run log
# ---------------------------------------------------------------------------------------

def test_grid_from_the_run_log_with_where(made, tmp_path):
    out, r = made
    from fluxnb.image.make import generate

    generate("a red fox", seed=11, guidance=1.5, steps=1, model="tiny", size="64x64", image_format="png",
             output_dir=str(out), progress=False)
    df = runlog.load(out)
    g = fluxnb.grid(df, rows="seed", cols="guidance", where="steps == 2")
    assert g.row_values == [11, 12] and g.col_values == [1.5, 5.0]
    assert g.images == [str(p) for p in r.images]
    for (x, y, w, h), path in zip(g.boxes, g.images):
        assert (arr(g.image.crop((x, y, x + w, y + h))) == arr(open_image(path))).all()
    latest = fluxnb.grid(df, rows="seed", cols="guidance")   # no filter: the later steps-1 image wins (11, 1.5)
    assert latest.images[0] != str(r.images[0]) and latest.images[1:] == [str(p) for p in r.images[1:]]
    one_col = fluxnb.grid(df, rows="steps", where="seed == 11 and guidance == 1.5", out=tmp_path / "g.png")
    assert one_col.row_values == [1, 2] and one_col.path == tmp_path / "g.png"
    meta = read_metadata(one_col.path)["fluxnb"]
    assert meta["kind"] == "grid" and meta["grid"]["where"] == "seed == 11 and guidance == 1.5"
    assert [c["record"]["steps"] for c in meta["cells"]] == [1, 2]
    with pytest.raises(FluxnbError, match="unknown column 'stepz'"):
        fluxnb.grid(df, rows="seed", where="stepz == 2")
    with pytest.raises(FluxnbError, match="no such run-log column"):
        fluxnb.grid(df, rows="sampler")
    with pytest.raises(FluxnbError, match="no images match"):
        fluxnb.grid(df, rows="seed", where="steps == 50")


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------

def test_cli_sweep_json_and_grid(tiny_model, outdir, capsys):
    from fluxnb.front.cli import main

    rc = main(["sweep", "a fox", "--model", "tiny", "--seeds", "1-2", "--guidance", "1.5,3.5", "--steps", "2",
               "--format", "png", "--batch-size", "1", "--out", str(outdir), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert {"grid", "grids", "images", "sweep_id"} <= set(data) and len(data["images"]) == 4
    recs = {x["path"]: x for x in runlog.read(outdir)}
    assert [(recs[p]["seed"], recs[p]["guidance"]) for p in data["images"]] == [(1, 1.5), (1, 3.5), (2, 1.5),
                                                                                 (2, 3.5)]
    assert read_metadata(data["grid"])["fluxnb"]["sweep"]["sweep_id"] == data["sweep_id"]
    rc = main(["grid", str(outdir), "--rows", "guidance", "--cols", "seed", "--where", "steps == 2", "--json"])
    g = json.loads(capsys.readouterr().out)
    assert rc == 0 and g["row_values"] == [1.5, 3.5] and g["images"][1] == data["images"][2]
    assert read_metadata(g["grid"])["fluxnb"]["grid"]["rows"] == "guidance"
    assert g["grid"] == str(outdir / "grid_guidance_by_seed.png")


def test_grid_finds_images_recorded_with_a_relative_folder(tiny_model, tmp_path, monkeypatch, capsys):
    from fluxnb.front.cli import main

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    fluxnb.sweep("a fox", seeds="1,2", out="out", progress=False, **FAST)   # records say out/flux_...png
    monkeypatch.chdir(tmp_path)
    assert main(["grid", "a/out", "--cols", "seed", "--out", "g.png", "--json"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["grid"] == "g.png" and all(p.startswith("a/out/") for p in g["images"])


@pytest.mark.parametrize("args,words", [
    (["--seeds", "1,1"], "appears twice"),
    (["--seeds", "1-200"], "more than 100"),
    (["--steps", "1-10 (-1)"], "must be positive"),
    (["--seeds", "1,2", "--rows", "sampler"], "not an axis"),
    (["--enhance", "none,psychic"], "unknown value"),
])
def test_cli_bad_input_exits_nonzero_and_makes_nothing(args, words, outdir, capsys):
    from fluxnb.front.cli import main

    assert main(["sweep", "a fox", "--model", "tiny", "--out", str(outdir), *args]) == 2
    assert words in capsys.readouterr().err and not outdir.exists()
    assert main(["grid", str(outdir), "--rows", "seed"]) == 2


def test_cli_dry_run_prints_the_plan(outdir, capsys):
    from fluxnb.front.cli import main

    assert main(["sweep", "a fox", "--model", "tiny", "--seeds", "random:2", "--guidance", "1-3 [3]",
                 "--out", str(outdir), "--dry-run", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["cells"] == 6 and d["axes"][1]["values"] == [1.0, 2.0, 3.0] and len(d["drawn_seeds"]) == 2
    assert not outdir.exists()
