"""vlmt core library: benchmarks, scoring, models, rewards, optimisation, storage.

Nothing in this package imports Prefect: the orchestration layer lives in ``tasks/``
and ``flows/`` and only wraps functions defined here.
"""

__version__ = "0.1.0"
