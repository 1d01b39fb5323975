"""Sweeps: any setting as an axis, made efficiently, drawn as labelled comparison grids.

`fluxnb.sweeps` is this package: `plan` (nothing made), `sweep` / `run` (make and draw).
"""

from ...outputs.gridlog import grid  # noqa: F401 - fluxnb.grid
from .axes import AXES, AXIS_ALIASES, expand_range, parse_axis  # noqa: F401
from .layout import Axis, Cell, Plan, plan  # noqa: F401
from .runner import SweepResult, run, sweep  # noqa: F401
