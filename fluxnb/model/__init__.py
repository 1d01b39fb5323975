"""The model: resolving and downloading it (`hub`, `fetch`), loading it once with a memory
policy and precision (`pipeline`, `perf`, `runtime`), and the random-weight test models
(`testmodel`).
"""
