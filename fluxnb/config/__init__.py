"""Settings and where they come from: the one table of settings with their choices, presets,
flags and help (`schema`), how each value is read (`values`, with `defaults.yaml`), the
Settings dataclass and its resolution order (`settings`), the environment (`environment`:
config.env, FLUXNB_*, secrets, pod or not, cache and log folders) and params files read
strictly (`params`).

The lowest layer: it imports nothing else of fluxnb but `errors`.
"""
