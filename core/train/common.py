"""Small pieces every zoo training stage shares: seeding, step progress, timing, data rendering.

Training is budgeted in *steps*, never in wall time, so that a seeded run is reproducible:
the same config gives the same weights on the same machine.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from core.bench.record import TaskInstance
from core.bench.synth.generate import scene_of
from core.bench.synth.scene import render

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def step_progress(description: str, total: int, start: int = 0) -> Iterator[Callable[..., None]]:
    """A rich progress bar over training steps (``start`` of them done: a resumed run); yields ``advance(**fields)``."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total, completed=start, status="")

        def advance(**status: float) -> None:
            text = " ".join(f"{k}={v:.4g}" for k, v in status.items())
            progress.update(task, advance=1, status=text)

        yield advance


@dataclass
class Stopwatch:
    """Wall seconds per named phase, for the model cards."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 2)
            log.info("%s took %.1f s", name, time.perf_counter() - t0)


def ground_truth_video(instance: TaskInstance) -> np.ndarray:
    """Re-render a synth instance's ground truth exactly from its metadata (no H.264 loss)."""
    meta = instance.metadata
    _, _, scene = scene_of(meta)
    return render(scene, meta["width"], meta["height"])


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int, warmup_fraction: float = 0.05) -> torch.optim.lr_scheduler.OneCycleLR:
    """The zoo's learning-rate schedule: a one-cycle ramp to ``lr`` over ``warmup_fraction`` of the
    steps, then annealing.

    torch's ``OneCycleLR`` divides by zero when the warm-up is exactly one step (20 steps at 5%: a
    ``ZeroDivisionError`` on the first step); such a run warms up over two steps instead. Every
    other step count keeps the fraction as given, so the shipped recipes' schedules are unchanged.
    """
    if warmup_fraction * steps == 1:
        warmup_fraction = 2 / steps
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=warmup_fraction)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two videos in [-1, 1]."""
    mse = float(((a.float() - b.float()) ** 2).mean()) / 4.0
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))
