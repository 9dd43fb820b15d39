"""Cost accounting per item and method: wall seconds per phase, network calls, peak memory.

The paper compares methods at their cost (seconds per item); we also count network
function evaluations, so that comparisons can be matched on compute as well as on time.
"""

from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from pydantic import BaseModel, Field


class CostRecord(BaseModel):
    """What one (item, method) cost."""

    seconds: dict[str, float] = Field(default_factory=dict, description="Wall seconds per phase.")
    counts: dict[str, int] = Field(default_factory=dict,
                                   description="reasoner_forward/backward, teacher_forward/backward, decode_* calls.")
    peak_memory_mib: float = Field(0.0, description="CUDA: peak allocated in this record; CPU: the process's peak RSS so far.")

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    @property
    def reasoner_nfe(self) -> int:
        """Transformer evaluations, a backward counted as one more evaluation."""
        return self.counts.get("reasoner_forward", 0) + self.counts.get("reasoner_backward", 0)

    def share(self, n: int) -> CostRecord:
        """One of ``n`` items' share of a cost paid once for all of them (counts rounded)."""
        if n < 1:
            raise ValueError(f"a cost is shared by at least one item, got {n}")
        return CostRecord(seconds={k: v / n for k, v in self.seconds.items()},
                          counts={k: round(v / n) for k, v in self.counts.items()}, peak_memory_mib=self.peak_memory_mib)

    def merged(self, other: CostRecord) -> CostRecord:
        seconds = Counter(self.seconds)
        seconds.update(other.seconds)
        counts = Counter(self.counts)
        counts.update(other.counts)
        return CostRecord(seconds=dict(seconds), counts=dict(counts),
                          peak_memory_mib=max(self.peak_memory_mib, other.peak_memory_mib))


class CostMeter:
    """Accumulates phase times and call counts; ``take()`` returns a record and resets."""

    def __init__(self) -> None:
        self._seconds: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._reset_peak()

    def count(self, what: str, n: int = 1) -> None:
        self._counts[what] += n

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._seconds[name] += time.perf_counter() - start

    def take(self) -> CostRecord:
        record = CostRecord(seconds={k: round(v, 4) for k, v in self._seconds.items()}, counts=dict(self._counts),
                            peak_memory_mib=round(_peak_mib(), 1))
        self._seconds.clear()
        self._counts.clear()
        self._reset_peak()
        return record

    @staticmethod
    def _reset_peak() -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def _peak_mib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
