"""Benchmarks: the task-instance record and the sources that produce it.

- ``synth``: the built-in procedurally generated benchmark (writes the VBVR layout).
- ``vbvr``: reads a directory in the official VBVR-Bench layout.
- ``ruler``: reads RULER-Bench records and aggregates checklist judgements.
"""

from core.bench.record import ChecklistItem, Faculty, Purpose, Split, TaskInstance

__all__ = ["ChecklistItem", "Faculty", "Purpose", "Split", "TaskInstance"]
