"""Resumable training: a loop's checkpoints, and a stage's finished phases.

A zoo stage can train for hours on a small CPU and be killed at any moment. Each training loop
saves, every ``every_seconds`` of wall time (default 300, at most 600), everything needed to
continue exactly as an uninterrupted run would: the weights of every module it trains
(safetensors), the optimizer's and scheduler's states, the step reached, the loop's own values
(its loss curve so far) and every random state it draws from (its ``torch.Generator``, and
torch's, NumPy's and Python's global ones). A rerun of the loop with the same checkpoint resumes
at that step; the resumed run's weights are bitwise those of an uninterrupted one.

In a loop it is three lines (``resume``, ``restore``, ``tick``)::

    ckpt = resume(checkpoint, cfg, {"vae": vae}, opt, sched, gen)   # None: no checkpoints, step 0
    [curve] = ckpt.restore(curve=[])
    for step in range(ckpt.step, cfg.steps):
        ...
        ckpt.tick(step + 1, curve=curve)

A checkpoint only resumes the run it was made for: its key is a hash of the stage's key, the
loop's name and the loop's config. A checkpoint with another key is ignored (one log line) and
replaced. Files are written to a temporary name and renamed into place, and ``checkpoint.json``,
which names the step's files, is written last, so a kill at any instant leaves the previous
checkpoint or the new one, never a mixture. Everything is read back with ``torch.load(...,
weights_only=True)`` and safetensors: a checkpoint in a shared work dir cannot run code.

A stage (``StageCheckpoint``, a folder beside the stage's output) holds one such checkpoint per
loop, the outputs of its finished phases (a multi-phase stage does not redo a phase after a kill)
and ``runs.json``: each run's wall seconds up to its last save and what it resumed from, so the
stage's record gives its seconds summed over runs. The stage deletes the folder once its output
is in place (``tasks.caching.build_into``)::

    <work>/stages/<stage>.ckpt/
        runs.json                                  key; per run: seconds, resumed_from, phases_kept
        <loop>/checkpoint.json                     key, step, seconds, the files below
        <loop>/<module>-<step>.safetensors         weights of each trained module
        <loop>/state-<step>.pt                     optimizer, scheduler, RNG states, the loop's values
        phases/<phase>/                            a finished phase's output
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default seconds between two saves of a loop's checkpoint, and the most allowed.
EVERY_SECONDS, MAX_EVERY_SECONDS = 300.0, 600.0
META = "checkpoint.json"
RUNS = "runs.json"


class TrainingStopped(Exception):
    """A loop stopped on purpose after saving the step it was asked to stop at (``stop_after``)."""


def checkpoint_key(*parts: Any) -> str:
    """A stable hash of JSON-able parts (pydantic models are dumped first)."""
    norm = [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(norm, sort_keys=True, default=str).encode()).hexdigest()


def _check_every(seconds: float) -> float:
    if not 0 <= seconds <= MAX_EVERY_SECONDS:
        raise ValueError(f"checkpoint every_seconds is {seconds}: expected 0 to {MAX_EVERY_SECONDS:.0f} (0: every step)")
    return float(seconds)


# --------------------------------------------------------------------------- random states

def _rng_states(generator: torch.Generator | None) -> dict:
    """Every random state a loop may draw from, as tensors and numbers (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached_gaussian": gauss},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "generator": None if generator is None else generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict, generator: torch.Generator | None) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if generator is not None:
        generator.set_state(states["generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state as safetensors can store it: on the CPU, contiguous, tied tensors copied apart."""
    seen, out = set(), {}
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


# --------------------------------------------------------------------------- one loop

@dataclass
class TrainingCheckpoint:
    """Where and how often one training loop checkpoints (``folder``), and the key it resumes only for.

    ``stop_after``: stop (raising ``TrainingStopped``) right after saving that step, to train a
    run in slices or to interrupt one on purpose. ``on_save`` is called before each save and
    ``on_resume(step)`` when a run resumes (the stage's run log uses both).
    """

    folder: Path
    key: str
    every_seconds: float = EVERY_SECONDS
    stop_after: int | None = None
    on_save: Callable[[], None] | None = None
    on_resume: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.every_seconds = _check_every(self.every_seconds)

    def exists(self) -> bool:
        return (self.folder / META).is_file()

    def saved_step(self) -> int | None:
        """The step of the checkpoint on disk, None without one."""
        return json.loads((self.folder / META).read_text())["step"] if self.exists() else None

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def resume(
    checkpoint: TrainingCheckpoint | None,
    config: Any,
    models: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
) -> LoopState:
    """The training state of a loop about to start: restored from ``checkpoint`` when it holds one
    made for this ``config`` (and the checkpoint's key), else fresh at step 0.

    Call it after building the models, optimizer, scheduler and generator and before the first
    step; ``checkpoint=None`` trains without checkpoints.
    """
    state = LoopState(checkpoint, checkpoint_key(checkpoint.key, config) if checkpoint else "", dict(models),
                      optimizer, scheduler, generator)
    if checkpoint is not None:
        state._load()
    return state


class LoopState:
    """A running loop's checkpointing: ``step`` to start at, ``restore`` its values, ``tick`` after each step."""

    def __init__(self, checkpoint: TrainingCheckpoint | None, key: str, models: dict[str, torch.nn.Module],
                 optimizer: torch.optim.Optimizer, scheduler: Any, generator: torch.Generator | None) -> None:
        self.checkpoint, self.key, self.models = checkpoint, key, models
        self.optimizer, self.scheduler, self.generator = optimizer, scheduler, generator
        self.step = 0
        self.values: dict[str, Any] = {}
        self.resumed_from: int | None = None
        self._seconds_before = 0.0
        self._t0 = self._last_save = time.perf_counter()

    @property
    def seconds(self) -> float:
        """The loop's wall seconds so far, over every run (a killed run counts up to its last save)."""
        return self._seconds_before + time.perf_counter() - self._t0

    def restore(self, **defaults: Any) -> list[Any]:
        """The loop's saved values (its curve, running means...) in the order asked, else ``defaults``."""
        return [self.values.get(name, default) for name, default in defaults.items()]

    def tick(self, step: int, **values: Any) -> None:
        """After ``step`` steps: save if ``every_seconds`` have passed since the last save (or at
        ``stop_after``, then stop). ``values`` are the loop's own state: plain numbers, strings,
        lists, tuples and dicts of them."""
        ckpt = self.checkpoint
        if ckpt is None:
            return
        stop = ckpt.stop_after is not None and step >= ckpt.stop_after
        if stop or time.perf_counter() - self._last_save >= ckpt.every_seconds:
            self._save(step, values)
        if stop:
            raise TrainingStopped(f"{ckpt.folder.name}: stopped after step {step} as asked (checkpoint saved)")

    # ------------------------------------------------------------------ files

    def _save(self, step: int, values: dict[str, Any]) -> None:
        ckpt = self.checkpoint
        if ckpt.on_save is not None:
            ckpt.on_save()
        ckpt.folder.mkdir(parents=True, exist_ok=True)
        tag = f"{step:08d}"
        files = {"modules": {name: f"{name}-{tag}.safetensors" for name in self.models}, "state": f"state-{tag}.pt"}
        for name, module in self.models.items():
            with atomic_path(ckpt.folder / files["modules"][name]) as tmp:
                save_file(_weights(module), str(tmp))
        state = {"optimizer": self.optimizer.state_dict(),
                 "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                 "rng": _rng_states(self.generator), "values": values}
        with atomic_path(ckpt.folder / files["state"]) as tmp:
            torch.save(state, tmp)
        seconds = round(self.seconds, 2)
        write_json_atomic(ckpt.folder / META, {"key": self.key, "step": step, "seconds": seconds, "files": files})
        keep = {META, files["state"], *files["modules"].values()}
        for old in ckpt.folder.iterdir():  # the previous step's files (and a killed run's temporary ones)
            if old.name not in keep:
                old.unlink(missing_ok=True)
        self._last_save = time.perf_counter()
        log.debug("checkpoint %s: step %d", ckpt.folder, step)

    def _load(self) -> None:
        ckpt = self.checkpoint
        meta_path = ckpt.folder / META
        if not meta_path.is_file():
            return
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != self.key:
                log.warning("ignoring the checkpoint in %s: it was made for another config or stage (key %s, "
                            "expected %s); training starts at step 0", ckpt.folder, str(meta.get("key"))[:12], self.key[:12])
                ckpt.clear()
                return
            files = meta["files"]
            weights = {name: load_file(ckpt.folder / files["modules"][name]) for name in self.models}
            state = torch.load(ckpt.folder / files["state"], weights_only=True)
            for name, module in self.models.items():
                own = module.state_dict()
                if set(own) != set(weights[name]) or any(own[k].shape != weights[name][k].shape for k in own):
                    raise ValueError(f"the tensors of {name!r} do not match the module's")
        except Exception as exc:  # unreadable, or not a plain state (weights_only refuses objects): nothing applied yet
            log.warning("ignoring the unreadable checkpoint in %s (%s); training starts at step 0", ckpt.folder, exc)
            ckpt.clear()
            return
        for name, module in self.models.items():
            module.load_state_dict(weights[name], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_states(state["rng"], self.generator)
        self.values = state["values"]
        self.step = self.resumed_from = int(meta["step"])
        self._seconds_before = float(meta.get("seconds", 0.0))
        if ckpt.on_resume is not None:
            ckpt.on_resume(self.step)
        log.info("resuming %s from its checkpoint at step %d", ckpt.folder, self.step)


# --------------------------------------------------------------------------- one stage

@dataclass
class StageCheckpoint:
    """A stage's checkpoint folder: one ``TrainingCheckpoint`` per loop, finished phases, the run log.

    ``folder=None`` (``StageCheckpoint.off()``) trains without checkpoints. A folder whose
    ``runs.json`` holds another ``key`` is emptied (one log line). ``stop_after`` maps a loop's
    name to the step after which it stops (``TrainingCheckpoint.stop_after``).
    """

    folder: Path | None
    key: str = ""
    every_seconds: float = EVERY_SECONDS
    stop_after: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.every_seconds = _check_every(self.every_seconds)
        self._t0 = time.perf_counter()
        self._earlier: list[dict] = []
        self._run: dict[str, Any] = {"seconds": 0.0, "resumed_from": {}, "phases_kept": []}
        if self.folder is None:
            return
        self.folder = Path(self.folder)
        runs = self.folder / RUNS
        if runs.is_file():
            try:
                record = json.loads(runs.read_text())
            except ValueError:
                record = {}
            if record.get("key") == self.key:
                self._earlier = record["runs"]
            else:
                log.warning("ignoring the checkpoints in %s: made for another stage key (%s, expected %s)",
                            self.folder, str(record.get("key"))[:12], self.key[:12])
                shutil.rmtree(self.folder, ignore_errors=True)
        elif self.folder.exists():  # no run log: nothing in it can be trusted to belong to this key
            shutil.rmtree(self.folder, ignore_errors=True)

    @classmethod
    def off(cls) -> StageCheckpoint:
        return cls(None)

    @classmethod
    def beside(cls, target: str | Path, key: str, every_seconds: float = EVERY_SECONDS) -> StageCheckpoint:
        """The checkpoint folder of the stage whose output is ``target``: ``<target>.ckpt``."""
        target = Path(target)
        return cls(target.with_name(target.name + ".ckpt"), key, every_seconds)

    def loop(self, name: str) -> TrainingCheckpoint | None:
        """The checkpoint of the stage's loop ``name`` (None when the stage runs without checkpoints)."""
        if self.folder is None:
            return None
        return TrainingCheckpoint(self.folder / name, checkpoint_key(self.key, name), self.every_seconds,
                                  self.stop_after.get(name), on_save=self._note,
                                  on_resume=lambda step: self._run["resumed_from"].update({name: step}))

    def phase(self, name: str, run: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
        """A phase of the stage, run once: ``run()``'s result is saved (``save(result, folder)``)
        before the stage goes on, and a resumed stage loads it (``load(folder)``) instead of
        running the phase again. The checkpoint of a loop of the same name goes once it is kept."""
        if self.folder is None:
            return run()
        kept = self.folder / "phases" / name
        if kept.is_dir():
            log.info("%s: phase %s was finished by an earlier run; loading its output", self.folder.name, name)
            self._run["phases_kept"].append(name)
            return load(kept)
        result = run()
        self._note()
        tmp = kept.with_name(name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save(result, tmp)
        tmp.rename(kept)
        shutil.rmtree(self.folder / name, ignore_errors=True)
        return result

    def module_phase(self, name: str, module: torch.nn.Module, train: Callable[[], list]) -> list:
        """A phase that trains ``module`` in place and returns its curve (``train()``): kept as the
        module's weights and the curve."""
        def save(curve: list, folder: Path) -> None:
            save_file(_weights(module), str(folder / "weights.safetensors"))
            write_json_atomic(folder / "curve.json", curve)

        def load(folder: Path) -> list:
            module.load_state_dict(load_file(folder / "weights.safetensors"), strict=True)
            module.eval()
            return json.loads((folder / "curve.json").read_text())

        return self.phase(name, train, save, load)

    # ------------------------------------------------------------------ the run log

    @property
    def seconds_before(self) -> float:
        """Wall seconds of the earlier runs of this stage, each up to its last save."""
        return round(sum(r["seconds"] for r in self._earlier), 2)

    def runs(self) -> list[dict]:
        """Every run of the stage with this one last: its seconds, the loop steps it resumed from, the phases it kept."""
        return [*self._earlier, {**self._run, "seconds": round(time.perf_counter() - self._t0, 2)}]

    def _note(self) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / RUNS, {"key": self.key, "runs": self.runs()})

    def clear(self) -> None:
        """Delete the checkpoints: the stage's output is now the result."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


