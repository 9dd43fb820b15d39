"""Benchmarks: the task-instance record and the sources that produce it.

- ``synth``: the built-in procedurally generated benchmark (writes the VBVR layout).
- ``vbvr``: reads a directory in the official VBVR-Bench layout.
- ``ruler``: reads RULER-Bench records (``ruler_paths``: their image paths;
  ``ruler_scores``: the official aggregation; ``ruler_replies``: judge replies;
  ``ruler_judge``: the judge protocol).
- ``layout``: the loaded ``Benchmark`` and the output layouts; ``source``: ``open_benchmark``.
"""

from core.bench.record import ChecklistItem, Faculty, Purpose, Split, TaskInstance

__all__ = ["ChecklistItem", "Faculty", "Purpose", "Split", "TaskInstance"]
