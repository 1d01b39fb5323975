"""fluxnb.analysis: the run-log notebook's tables, plots and exports, on a known log."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from fluxnb import runlog
from fluxnb.front import analysis  # noqa: E402
from fluxnb.errors import FluxnbError  # noqa: E402


def rec(n, *, status="ok", seed=1, steps=4, w=64, h=64, s=1.0, day="2026-11-20", prompt="a fox", enhancer="none",
        enhanced="", clip=5, t5=4):
    return {"id": f"id{n}", "path": f"/x/{n}.jpg", "status": status, "error": "" if status == "ok" else "boom",
            "prompt": prompt, "enhanced_prompt": enhanced, "enhancer": enhancer, "clip_tokens": clip, "t5_tokens": t5,
            "seed": seed, "steps": steps, "guidance": 3.5, "width": w, "height": h, "size": f"{w}x{h}",
            "model": "tiny", "model_name": "tiny", "elapsed_s": s, "created_at": f"{day}T10:00:0{n % 10}.000+00:00"}


@pytest.fixture
def df(outdir):
    for r in [
        rec(0, seed=1, steps=4, s=1.0), rec(1, seed=2, steps=4, s=3.0), rec(2, seed=1, steps=20, s=5.0),
        rec(3, seed=1, steps=20, w=128, s=9.0, day="2026-11-21"),
        rec(4, seed=7, steps=20, s=6.0, day="2026-11-21", prompt="a cat", enhancer="local",
            enhanced="a cat on a windowsill, soft morning light, film grain", clip=14, t5=16),
        rec(5, seed=8, steps=20, s=8.0, day="2026-11-21", prompt="a cat", enhancer="local",
            enhanced="a cat on a sofa, dramatic rim light", clip=10, t5=12),
        rec(6, status="oom", seed=9, steps=50, s=0.5, day="2026-11-21"),
    ]:
        runlog.append(outdir, r)
    return runlog.load(outdir)


def test_overview(df):
    row = analysis.overview(df).iloc[0]
    assert (row["records"], row["images"], row["failed"]) == (7, 6, 1)
    assert row["median_s_per_image"] == 5.5 and row["total_s"] == 32.0
    assert (row["distinct_prompts"], row["distinct_seeds"], row["models"]) == (2, 4, "tiny")


def test_select_filters_and_sorts(df):
    out = analysis.select(df, where="status == 'ok' and steps >= 20", sort="-elapsed_s", columns=["id", "elapsed_s"])
    assert list(out["id"]) == ["id3", "id5", "id4", "id2"] and list(out.columns) == ["id", "elapsed_s"]
    out = analysis.select(df, sort=["seed", "-elapsed_s"])
    assert list(out["id"])[:3] == ["id3", "id2", "id0"]
    with pytest.raises(FluxnbError, match="where 'stepz > 3'"):
        analysis.select(df, where="stepz > 3")
    with pytest.raises(FluxnbError, match="sort 'speed': no such column"):
        analysis.select(df, sort="-speed")


def test_speed_table(df):
    t = analysis.speed_table(df).set_index(["steps", "size_px"])
    assert t.loc[(4, "64x64"), "images"] == 2 and t.loc[(4, "64x64"), "median_s"] == 2.0
    assert t.loc[(20, "64x64"), "images"] == 3 and t.loc[(20, "64x64"), "median_s"] == 6.0
    assert t.loc[(20, "64x64"), "s_per_step"] == 0.3
    assert t.loc[(20, "128x64"), "median_s"] == 9.0
    assert 50 not in t.index.get_level_values("steps")  # failures are not images


def test_images_per_day_and_seeds(df):
    per_day = analysis.images_per_day(df)
    assert {str(k): v for k, v in per_day.items()} == {"2026-11-20": 3, "2026-11-21": 3}
    seeds = analysis.seeds_used(df)
    assert seeds.index[0] == 1 and seeds.loc[1, "images"] == 3 and seeds.loc[1, "prompts"] == 1
    assert 9 not in seeds.index


def test_enhanced_vs_raw(df):
    t = analysis.enhanced_vs_raw(df).set_index("enhancer")
    assert t.loc["local", "images"] == 2 and t.loc["none", "images"] == 4 and t.loc["none", "failed"] == 1
    assert t.loc["local", "median_clip_tokens"] == 12 and t.loc["none", "median_clip_tokens"] == 5
    assert t.loc["local", "median_words"] == 9 and t.loc["none", "median_words"] == 2  # enhanced text counted
    assert t.loc["local", "median_s_per_image"] == 7.0


def test_plots_draw_the_data(df):
    ax = analysis.plot_speed(df)
    assert len(ax.collections) == 2  # one series per size
    assert sorted(len(c.get_offsets()) for c in ax.collections) == [1, 5]
    assert ax.get_xlabel() == "steps" and "128x64" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert [p.get_height() for p in analysis.plot_per_day(df).patches] == [3, 3]
    assert [p.get_width() for p in analysis.plot_seeds(df).patches] == [3, 1, 1, 1]  # most used first
    heights = [p.get_height() for p in analysis.plot_enhanced(df).patches]
    assert heights == [12, 5, 14, 4]  # CLIP (local, none), then T5 (local, none)
    empty = df.iloc[0:0]
    assert "no images yet" in analysis.plot_speed(empty).texts[0].get_text()


def test_seeds_plot_names_each_seed_once_without_overlap_and_says_how_many(outdir):
    import matplotlib.pyplot as plt

    seeds = [4_000_000_000 + 7919 * k for k in range(25)]
    n = 0
    for k, seed in enumerate(seeds):
        for _ in range(1 + (k < 3)):       # the first three seeds used twice
            runlog.append(outdir, rec(n, seed=seed))
            n += 1
    df = runlog.load(outdir)
    ax = analysis.plot_seeds(df, top=20)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:3] == [str(s) for s in seeds[:3]] and len(labels) == 20 and len(set(labels)) == 20
    assert [p.get_width() for p in ax.patches][:4] == [2, 2, 2, 1]
    assert ax.get_title() == "images per seed: the 20 most used of 25 seeds"
    ax.figure.canvas.draw()
    boxes = sorted((t.get_window_extent() for t in ax.get_yticklabels()), key=lambda b: b.y0)
    assert all(a.y1 <= b.y0 + 0.5 for a, b in zip(boxes, boxes[1:]))   # no label over another
    plt.close(ax.figure)
    assert analysis.plot_seeds(df, top=30).get_title() == "images per seed (all 25 seeds)"
    assert analysis.seed_label(42.0) == "42" and analysis.seeds_title(1, 1) == "images per seed (all 1 seed)"
    plt.close("all")


def test_tables_cut_long_prompts_and_keep_the_full_text(df):
    long = "a lighthouse on a cliff at dusk, " * 8
    df = df.assign(prompt=[long] + list(df["prompt"][1:]))
    assert analysis.shorten(long) == "a lighthouse on a cliff at dusk, a lighthouse on a cliff…"   # between words
    assert analysis.shorten("x" * 80) == "x" * 59 + "…" and analysis.shorten("a  b\n c") == "a b c"
    assert analysis.shorten("a fox") == "a fox" and analysis.shorten(None) is None
    table = analysis.readable(df)
    assert table.loc[0, "prompt"].endswith("…") and len(table.loc[0, "prompt"]) <= analysis.PROMPT_WIDTH
    assert table.loc[0, "path"] == "0.jpg" and df.loc[0, "prompt"] == long   # the DataFrame given keeps it all
    styled = analysis.show(df).to_html()                                        # as the notebook shows it
    assert "white-space: nowrap" in styled and long.strip() in styled and "/x/0.jpg" in styled  # whole, as tooltips
    assert ">a lighthouse on a cliff at dusk, a lighthouse on a cliff…<" in styled and ">3.5<" in styled
    slow = analysis.slowest(df, 3)
    assert list(slow["id"]) == ["id3", "id5", "id4"] and list(slow.columns[:2]) == ["elapsed_s", "prompt"]
    assert list(slow["elapsed_s"]) == [9.0, 8.0, 6.0] and slow["prompt"].str.len().max() <= 60
    assert analysis.slowest(df, 10)["prompt"].iloc[-1].endswith("…")        # id0, the fastest, has the long one


def test_export_roundtrip_and_bad_extension(df, tmp_path):
    made = analysis.ok(df)
    p = analysis.export(made, "runs.parquet", base=tmp_path)
    assert p == tmp_path / "runs.parquet" and len(pd.read_parquet(p)) == 6
    c = analysis.export(made[made["steps"] == 20], tmp_path / "sub" / "runs.csv")
    back = pd.read_csv(c)
    assert len(back) == 4 and set(back["steps"]) == {20}
    with pytest.raises(FluxnbError, match="unknown format .xlsx"):
        analysis.export(made, tmp_path / "runs.xlsx")
    assert not (tmp_path / "runs.xlsx").exists() and not list(tmp_path.glob(".*.tmp"))


def test_run_dir_samples_an_empty_log_once(tiny_model, outdir, capsys, monkeypatch):
    monkeypatch.setenv("FLUXNB_OUTPUT_DIR", str(outdir))
    assert analysis.run_dir(None) == outdir  # the output_dir setting; empty is fine without sampling
    sample = analysis.run_dir(None, sample_if_empty=True)
    assert sample == outdir / "sample-log" and "no records yet" in capsys.readouterr().out
    df = runlog.load(sample)
    made = analysis.ok(df)
    assert len(made) >= 8 and set(made["steps"]) == {1, 2, 4} and {"64x64", "128x96"} <= set(made["size"])
    assert not runlog.path_for(outdir).exists()  # the real log is left alone
    n = len(df)
    assert analysis.run_dir(None, sample_if_empty=True) == sample and len(runlog.read(sample)) == n  # made once
