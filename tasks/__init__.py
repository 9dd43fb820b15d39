"""Prefect tasks: thin wrappers around ``core`` functions (cache keys, retries, persistence).

Tasks take and return small, hashable things (paths, ids, pydantic records as dicts),
never tensors or modules, so that results can be cached and resumed across runs.
"""
