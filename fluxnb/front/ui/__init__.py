"""The notebook forms (ipywidgets): thin over fluxnb's functions, no logic of their own.

    gen = fluxnb.ui.generator(model="tiny")   # the interactive generator
    form = fluxnb.ui.sweep_form(model="tiny") # two axes, the labelled grid
"""

from .generator import Generator, generator, settings_html  # noqa: F401
from .sweep_form import SweepForm, sweep_form  # noqa: F401
from .widgets import ERROR_BORDER, error_html, grid_image, token_html  # noqa: F401
