"""The Ray backend for batches and sweeps: workers that load the pipeline once (`items`),
and the driver that hands out items, retries those of dead workers and records each once
(`backend`).
"""
