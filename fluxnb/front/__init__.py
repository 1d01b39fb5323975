"""Front ends: the `fluxnb` command (`cli`, `flags`, `commands`), the notebook forms (`ui`),
JupyterLab (`lab`), `doctor`, `export` and the run-log analysis helpers (`analysis`).
"""
