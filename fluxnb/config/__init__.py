"""Settings and where they come from: the Settings dataclass and its one table of choices and
presets (`settings`, `defaults.yaml`), the environment (`environment`: config.env, FLUXNB_*,
secrets, pod or not, cache and log folders) and params files read strictly (`params`).

The lowest layer: it imports nothing else of fluxnb but `errors`.
"""
