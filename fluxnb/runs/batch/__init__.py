"""Batches: a params file's prompts x seeds (x enhancers), run through the batch notebook
(`batch.ipynb`, package data) by papermill, resumable and exactly once.

`fluxnb.batch` is this package: the notebook calls `plan`, `execute`, `summarize`,
`contact_sheet` and `check`; `run` (`fluxnb.run_batch`) drives the whole thing.
"""

from ...outputs.files import tidy  # noqa: F401
from .kernel import BatchFailed, Summary, check, contact_sheet, execute, now, summarize  # noqa: F401
from .params import (DEFAULTS, NOTEBOOK, PARAMS, SETTING_KEYS, Item, Plan, check_names, collect, load,  # noqa: F401
                     looks_secret, plan, preflight, size_text)
from .runner import run  # noqa: F401
