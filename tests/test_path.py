"""The one image path: every front end makes its images through the same seams, step callbacks
are named objects with one protocol (plain callables adapted), one run-log schema, one
failure record."""

from __future__ import annotations

import numpy as np
import pytest

import fluxnb
from fluxnb import runlog
from fluxnb.errors import FluxnbError
from fluxnb.image import render
from fluxnb.image.callbacks import Callback, Hooks
from fluxnb.image.make import attempt, generate
from fluxnb.image.record import Job, base_record

FAST = {"model": "tiny", "steps": 2, "size": "64x64", "image_format": "png"}


@pytest.fixture
def seams(monkeypatch):
    """What the two seams of the path saw: the settings `prepare` was given, and the seeds of
    each pipeline call `call_kwargs` built arguments for."""
    seen = {"prepare": [], "calls": []}
    prepare, call_kwargs = render.prepare, render.call_kwargs

    def prepare_spy(loaded, s):
        seen["prepare"].append(s.prompt)
        return prepare(loaded, s)

    def call_kwargs_spy(jobs, embeds, hooks, output_type, *pipe):
        seen["calls"].append([j.seed for j in jobs])
        return call_kwargs(jobs, embeds, hooks, output_type, *pipe)

    monkeypatch.setattr(render, "prepare", prepare_spy)
    monkeypatch.setattr(render, "call_kwargs", call_kwargs_spy)
    return seen


def test_every_front_end_makes_its_images_through_the_one_path(tiny_model, outdir, seams):
    from fluxnb import batch, ui

    generate("from generate", seed=1, output_dir=str(outdir), progress=False, **FAST)
    form = ui.generator(model="tiny", output_dir=str(outdir), prompt="from the form", image_format="png")
    form.steps.value, form.steps_custom.value = "custom", 2
    form.size.value, form.size_custom.value = "custom", "64x64"
    form.seed_mode.value, form.seed.value = "lock", "2"
    form.generate_button.click()
    assert form.message.value == "" and form.images[0].seed == 2
    fluxnb.sweep("from a sweep", seeds="3,4", out=outdir, progress=False, **FAST)
    p = batch.plan({**FAST, "prompts": ["from a batch"], "seeds": [5, 6], "output_dir": str(outdir)})
    batch.summarize(p, batch.execute(p))

    # a sweep's two cells share one call (CPU default); generate, the form and a batch item: one each
    assert seams["calls"] == [[1], [2], [3, 4], [5], [6]]
    assert seams["prepare"] == ["from generate", "from the form", "from a sweep", "from a batch", "from a batch"]
    recs = runlog.read(outdir)
    assert [r["seed"] for r in recs] == [1, 2, 3, 4, 5, 6] and {r["status"] for r in recs} == {"ok"}


class Events(Callback):
    """Writes down what it hears."""

    def __init__(self):
        self.events = []

    def before(self, jobs):
        self.events.append(("before", [j.seed for j in jobs]))

    def step(self, pipe, i, t, tensors):
        self.events.append(("step", i, sorted(tensors)))

    def after(self, jobs):
        self.events.append(("after", [j.seed for j in jobs]))

    def made(self, job, image):
        self.events.append(("made", job.seed, image.seed, image.path is not None))


def test_a_callback_hears_each_call_its_steps_and_each_image(tiny_model, outdir):
    spy = Events()
    made = generate("a fox", seed=7, count=2, output_dir=str(outdir), progress=False, callbacks=[spy], **FAST)
    step = [("step", 0, ["latents"]), ("step", 1, ["latents"])]
    assert spy.events == [("before", [7]), *step, ("after", [7]), ("made", 7, 7, True),
                          ("before", [8]), *step, ("after", [8]), ("made", 8, 8, True)]
    assert [m.seed for m in made] == [7, 8]

    batched = Events()  # a sweep on the CPU: both cells in one call, then each image
    fluxnb.sweep("a hare", seeds="7,8", out=outdir, progress=False, callbacks=[batched], **FAST)
    assert batched.events == [("before", [7, 8]), *step, ("after", [7, 8]), ("made", 7, 7, True),
                              ("made", 8, 8, True)]


def test_plain_callables_and_diffusers_pipeline_callbacks_are_adapted(tiny_model):
    from diffusers.callbacks import PipelineCallback

    seen = []

    class Embeds(PipelineCallback):  # asks for the prompt embeddings too
        tensor_inputs = ["latents", "prompt_embeds"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            seen.append(("pipeline callback", step_index, sorted(callback_kwargs)))
            return callback_kwargs

    def plain(pipe, i, t, kwargs):
        seen.append(("plain", i, sorted(kwargs)))
        return {}

    [a] = generate("a fox", seed=3, save=False, record=False, progress=False, callbacks=(plain, Embeds()), **FAST)
    assert seen == [("plain", 0, ["latents", "prompt_embeds"]), ("pipeline callback", 0, ["latents", "prompt_embeds"]),
                    ("plain", 1, ["latents", "prompt_embeds"]), ("pipeline callback", 1, ["latents", "prompt_embeds"])]
    [b] = generate("a fox", seed=3, save=False, record=False, progress=False, **FAST)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))  # watching changes nothing
    assert Hooks([plain]).tensor_inputs == ["latents"]
    with pytest.raises(FluxnbError, match="callbacks: 42 is neither a callable nor a Callback"):
        generate("a fox", seed=3, save=False, record=False, callbacks=[42], **FAST)


def test_the_run_log_schema_has_one_home(tiny_model, outdir, monkeypatch):
    [g] = generate("a fox", seed=1, output_dir=str(outdir), progress=False, **FAST)
    sweep = fluxnb.sweep("a fox", seeds="2", out=outdir, progress=False, **FAST)
    ok, cell = runlog.read(outdir)
    # every column is in an image's record: those the runs add (sweep_id, batch_id) in theirs
    assert set(runlog.COLUMNS) - set(ok) == {"sweep_id", "batch_id"}
    assert set(ok) <= set(runlog.COLUMNS) and ok == g.record
    assert set(runlog.COLUMNS) - set(cell) == {"batch_id"} and cell["sweep_id"] == sweep.sweep_id
    assert list(base_record(g.settings, 1)) == [c for c in runlog.COLUMNS if c in base_record(g.settings, 1)]
    # a setting becomes a column (with its value in every record) by being named in COLUMNS
    monkeypatch.setitem(runlog.COLUMNS, "vae_tiling", "string")
    assert base_record(g.settings.replace(vae_tiling="on"), 1)["vae_tiling"] == "on"
    df = runlog.load(outdir)
    assert str(df["compile"].dtype) == "boolean" and not df["compile"].any()
    assert str(df["max_sequence_length"].dtype) == "Int64" and list(df["max_sequence_length"]) == [512, 512]


def test_a_failure_is_recorded_once_with_the_same_record_everywhere(tiny_model, outdir, monkeypatch):
    import fluxnb.image.make as path

    def nan(pipe, i, t, kwargs):
        return {"latents": kwargs["latents"] * float("nan")}

    with pytest.raises(FluxnbError, match="black"):
        generate("a fox", seed=1, output_dir=str(outdir), progress=False, callbacks=[nan], **FAST)
    with pytest.raises(FluxnbError, match="black"):
        fluxnb.sweep("a fox", seeds="2", out=outdir, progress=False, callbacks=[nan], **FAST)
    s = fluxnb.resolve(prompt="a fox", output_dir=str(outdir), **FAST)
    made, failed = attempt(Job(s, 3, {"batch_id": "b"}))
    assert failed is None and made.record["batch_id"] == "b" and made.path.is_file()
    denoise = path.denoise

    def broken(loaded, jobs, *a, **k):
        if jobs[0].seed == 4:
            raise RuntimeError("a broken step")
        return denoise(loaded, jobs, *a, **k)

    monkeypatch.setattr(path, "denoise", broken)
    made, failed = attempt(Job(s, 4, {"batch_id": "b"}))
    assert made is None and (failed["status"], failed["batch_id"]) == ("error", "b")
    assert failed["error"] == "generation failed: RuntimeError: a broken step"

    recs = runlog.read(outdir)
    fails = [r for r in recs if r["status"] != "ok"]
    assert [(r["seed"], r["status"]) for r in fails] == [(1, "black"), (2, "black"), (4, "error")]  # once each
    assert fails[1]["sweep_id"] and fails[2]["error"] == failed["error"]
    for r in fails:  # the stages reached: the prompt was planned and the pipeline loaded
        assert set(base_record(s, r["seed"])) <= set(r) and r["clip_prompt"] == "a fox" and r["device"] == "cpu"
        assert r["elapsed_s"] >= 0
