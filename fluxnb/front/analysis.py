"""Run-log analysis for the run-log notebook: tables and plots over `runlog.load(dir)`.

Every function takes the run log's DataFrame (as `fluxnb.runlog.load` returns it) and
gives back a table (DataFrame) or a matplotlib Axes; none of them changes the log.

    df = fluxnb.runlog.load("outputs")
    fluxnb.analysis.overview(df)
    fluxnb.analysis.plot_speed(df)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import FluxnbError

log = logging.getLogger(__name__)

# The columns worth a glance, in the order a table shows them.
COLUMNS = ["created_at", "status", "prompt", "enhancer", "seed", "steps", "guidance", "size", "width", "height",
           "elapsed_s", "model_name", "path"]


# ---------------------------------------------------------------------------------------
# Which log
# ---------------------------------------------------------------------------------------

def sample_log(directory: str | os.PathLike, *, model: str = "tiny") -> Path:
    """Make a small sample run log in `directory` with the tiny test model (a few seconds
    on a CPU): 2 seeds x 3 step counts at 64x64, two larger images, and two images with
    the `local` enhancer (recorded as failed where that enhancer is not available)."""
    from ..image.make import generate

    directory = Path(directory)
    prompt = "a lighthouse on a cliff at dusk, oil painting"
    generate(prompt, model=model, steps=1, size="64x64", seed=0, save=False, record=False, progress=False)  # warm-up
    for steps in (1, 2, 4):
        generate(prompt, model=model, steps=steps, size="64x64", seed=1, count=2, output_dir=str(directory),
                 progress=False)
    generate("a red fox in the snow, watercolor", model=model, steps=2, size="128x96", seed=7, count=2,
             output_dir=str(directory), image_format="png", progress=False)
    try:
        generate("a red fox in the snow, watercolor", model=model, steps=2, size="64x64", seed=7, count=2,
                 enhance="local", output_dir=str(directory), progress=False)
    except FluxnbError as e:
        log.info("sample log: the local enhancer failed (recorded): %s", e)
    return directory


def run_dir(directory: str | os.PathLike | None = None, *, sample_if_empty: bool = False) -> Path:
    """The folder whose run log to read: `directory`, else the `output_dir` setting. When its
    log is empty and `sample_if_empty`, a sample log made with the tiny model in its
    `sample-log/` subfolder instead (made once; said so on stdout)."""
    from ..outputs import runlog
    from ..config.settings import resolve

    path = Path(directory if directory is not None else resolve().output_dir)
    if runlog.read(path, warn=False) or not sample_if_empty:
        return path
    sample = path / "sample-log"
    print(f"{runlog.path_for(path)} has no records yet: exploring a sample log made with the tiny test model "
          f"in {sample} (its images are noise)")
    return sample if runlog.read(sample, warn=False) else sample_log(sample)


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------

def ok(df):
    """The rows of images that were made."""
    return df[df["status"] == "ok"]


def overview(df):
    """One row of headline numbers: records, images, failures, time, date range, models."""
    import pandas as pd

    made = ok(df)
    per_image = made["elapsed_s"]
    return pd.DataFrame([{
        "records": len(df), "images": len(made), "failed": int((df["status"] != "ok").sum()),
        "median_s_per_image": round(float(per_image.median()), 3) if len(made) else None,
        "total_s": round(float(per_image.sum()), 1),
        "first": made["created_at"].min() if len(made) else None, "last": made["created_at"].max() if len(made) else None,
        "models": ", ".join(sorted(made["model_name"].dropna().unique())),
        "distinct_prompts": int(made["prompt"].nunique()), "distinct_seeds": int(made["seed"].nunique()),
    }])


def select(df, where: str | None = None, sort: str | list | None = None, columns=None):
    """Filter with a pandas query (`"steps >= 20 and guidance == 3.5"`) and sort by
    columns (a leading `-` sorts descending); `columns` picks what to show."""
    out = df
    if where:
        try:
            out = out.query(where, engine="python")
        except Exception as e:  # noqa: BLE001 - a user's query: name it and the columns
            raise FluxnbError(f"where {where!r}: {type(e).__name__}: {e}", field="where", value=where,
                              fix="write a pandas query over the run-log columns, e.g. \"steps >= 20\"") from None
    if sort:
        keys = [sort] if isinstance(sort, str) else list(sort)
        names = [k.lstrip("-") for k in keys]
        missing = [n for n in names if n not in out.columns]
        if missing:
            raise FluxnbError(f"sort {missing[0]!r}: no such column", field="sort", value=missing[0],
                              fix=f"use one of {', '.join(out.columns[:12])}, ...")
        out = out.sort_values(names, ascending=[not k.startswith("-") for k in keys], kind="stable")
    return out[list(columns)] if columns is not None else out


PROMPT_WIDTH = 60   # characters of a prompt a table shows


def shorten(text, width: int = PROMPT_WIDTH):
    """`text` on one line, cut to `width` characters (between words when one ends near the
    cut), ending in … when cut; not text (None, NaN): as it is."""
    if not isinstance(text, str):
        return text
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[:width - 1]
    space = cut.rfind(" ")
    if space >= width * 3 // 4:
        cut = cut[:space]
    return cut.rstrip(" ,;:.") + "…"


def readable(table, width: int = PROMPT_WIDTH):
    """A copy of a table for reading: prompts (and errors) cut to `width` characters with …,
    paths as file names. The full text stays in the table given (and the run log), by `id`."""
    out = table.copy()
    for col in ("prompt", "enhanced_prompt", "error"):
        if col in out.columns:
            out[col] = out[col].map(lambda t: shorten(t, width))
    if "path" in out.columns:
        out["path"] = out["path"].map(lambda p: Path(p).name if isinstance(p, str) and p else p)
    return out


def show(table, width: int = PROMPT_WIDTH):
    """`table` as a notebook shows it readably: `readable`'s cut text, text columns on one
    line and left-aligned, each cut text's whole as its tooltip, numbers as they are written
    (3.5, not 3.500000). A pandas Styler (the table from `readable` where jinja2, which
    Styler needs, is missing)."""
    short = readable(table, width)
    try:
        styler = short.style
    except ImportError:
        return short
    text = [c for c in ("prompt", "enhanced_prompt", "error", "path") if c in short.columns]
    floats = [c for c in short.columns if str(short[c].dtype).startswith(("float", "Float"))]
    styler = styler.format(lambda v: f"{v:g}", subset=floats, na_rep="")
    if text:
        styler = styler.set_properties(subset=text, **{"text-align": "left", "white-space": "nowrap"})
        tips = table[text].astype("object").where(short[text] != table[text], "").fillna("")
        styler = styler.set_tooltips(tips.astype(str))
    return styler


def slowest(df, n: int = 10, width: int = PROMPT_WIDTH):
    """The `n` slowest images, slowest first, as a readable table (`readable`): seconds,
    the prompt cut to `width` characters, seed, steps, size, ...; the full prompts are in
    `df` (by `id`)."""
    cols = ["elapsed_s", "prompt", "seed", "steps", "guidance", "size", "model_name", "created_at", "id", "path"]
    table = select(ok(df), sort="-elapsed_s").head(n)
    return readable(table[[c for c in cols if c in table.columns]], width).reset_index(drop=True)


def speed_table(df):
    """Seconds per image by steps and size: images, median and mean seconds, seconds per step."""
    made = ok(df).assign(size_px=lambda d: d["width"].astype("string") + "x" + d["height"].astype("string"))
    table = made.groupby(["steps", "size_px"], observed=True)["elapsed_s"].agg(["count", "median", "mean"])
    table = table.rename(columns={"count": "images", "median": "median_s", "mean": "mean_s"}).reset_index()
    table["s_per_step"] = (table["median_s"] / table["steps"].astype("float64")).round(4)
    return table


def images_per_day(df):
    """Images made per calendar day (UTC)."""
    made = ok(df)
    days = made["created_at"].dt.tz_convert("UTC").dt.date
    return made.groupby(days).size().rename("images").rename_axis("day")


def seeds_used(df):
    """Each seed: how many images and how many distinct prompts used it, most used first."""
    made = ok(df)
    table = made.groupby("seed").agg(images=("id", "size"), prompts=("prompt", "nunique"))
    return table.sort_values(["images", "prompts"], ascending=False)


def enhanced_vs_raw(df):
    """Raw prompts against enhanced ones, by enhancer: images, failures, CLIP/T5 tokens,
    prompt words and seconds per image (medians)."""
    import pandas as pd

    d = df.assign(enhancer=df["enhancer"].fillna("none"),
                  words=(df["enhanced_prompt"].where(df["enhanced_prompt"].fillna("") != "", df["prompt"])
                         .fillna("").str.split().str.len()))
    rows = []
    for name, g in d.groupby("enhancer"):
        made = ok(g)
        rows.append({"enhancer": name, "images": len(made), "failed": int((g["status"] != "ok").sum()),
                     "median_clip_tokens": made["clip_tokens"].median(), "median_t5_tokens": made["t5_tokens"].median(),
                     "median_words": made["words"].median(), "median_s_per_image": made["elapsed_s"].median()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Plots (each returns its matplotlib Axes)
# ---------------------------------------------------------------------------------------

def _axes(ax, title: str):
    if ax is None:
        import matplotlib.pyplot as plt

        _fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.set_title(title)
    return ax


def _empty(ax, what: str):
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes)
    return ax


def plot_speed(df, ax=None):
    """Seconds per image against steps, one series per image size (in megapixels)."""
    ax = _axes(ax, "seconds per image against steps")
    made = ok(df).dropna(subset=["elapsed_s", "steps"])
    if made.empty:
        return _empty(ax, "images")
    for (w, h), g in made.groupby(["width", "height"], observed=True):
        ax.scatter(g["steps"].astype(float), g["elapsed_s"], label=f"{w}x{h} ({w * h / 1e6:.2f} MP)", alpha=0.7)
    ax.set_xlabel("steps")
    ax.set_ylabel("seconds per image")
    ax.legend(title="size", fontsize="small")
    return ax


def plot_per_day(df, ax=None):
    """Images made per day (bars)."""
    ax = _axes(ax, "images per day")
    series = images_per_day(df)
    if series.empty:
        return _empty(ax, "images")
    ax.bar([str(d) for d in series.index], series.values)
    ax.set_ylabel("images")
    ax.tick_params(axis="x", labelrotation=45)
    return ax


def plot_seeds(df, ax=None, top: int = 10):
    """Images per seed, the `top` most used (horizontal bars, most used at the top: seeds
    are long numbers, written once each down the side, never overlapping); the title says
    how many of how many seeds it shows."""
    from matplotlib.ticker import MaxNLocator

    table = seeds_used(df)
    shown = table.head(top)
    if ax is None:
        import matplotlib.pyplot as plt

        _fig, ax = plt.subplots(figsize=(6, max(2.0, 1.0 + 0.3 * len(shown))))
    ax.set_title(seeds_title(len(shown), len(table)))
    if shown.empty:
        return _empty(ax, "images")
    ax.barh([seed_label(s) for s in shown.index], shown["images"])
    ax.invert_yaxis()
    ax.set_ylabel("seed")
    ax.set_xlabel("images")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return ax


def seeds_title(shown: int, total: int) -> str:
    """What the seeds plot shows: all the seeds, or the N most used of them."""
    if shown >= total:
        return f"images per seed (all {total} seed{'s' * (total != 1)})"
    return f"images per seed: the {shown} most used of {total} seeds"


def seed_label(seed) -> str:
    """A seed as text: 42, not 42.0 (a column with gaps holds floats)."""
    return str(int(seed)) if isinstance(seed, float) and seed.is_integer() else str(seed)


def plot_enhanced(df, ax=None):
    """Median CLIP and T5 tokens per image, raw against each enhancer."""
    ax = _axes(ax, "enhanced against raw: median tokens per prompt")
    table = enhanced_vs_raw(df)
    table = table[table["images"] > 0]
    if table.empty:
        return _empty(ax, "images")
    x = range(len(table))
    ax.bar([i - 0.2 for i in x], table["median_clip_tokens"].astype(float), width=0.4, label="CLIP")
    ax.bar([i + 0.2 for i in x], table["median_t5_tokens"].astype(float), width=0.4, label="T5")
    ax.set_xticks(list(x), table["enhancer"])
    ax.set_ylabel("tokens")
    ax.legend()
    return ax


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------

def export(df, target: str | os.PathLike, *, base: str | os.PathLike | None = None) -> Path:
    """Write a (filtered) run-log table as CSV or Parquet by the target's extension,
    atomically; a relative `target` is taken within `base` when given."""
    from ..outputs.runlog import write_table

    target = Path(target)
    if base is not None and not target.is_absolute():
        target = Path(base) / target
    return write_table(df, target)
