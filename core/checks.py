"""Pre-flight checks of user input, run before anything heavy starts.

Each check raises ``InputError`` naming the file or option at fault and what was expected,
and takes milliseconds: it reads configs and the headers of weight files (a safetensors
file's 8-byte length and JSON), never the weights. The CLI runs them before it starts Prefect
or loads a model: a missing model folder used to surface inside the flow, after the Prefect
server had started (~40 s), under a long traceback. The model loaders wrap loading in
``naming_bad_weights``, so a corrupt file is named even where no pre-flight check ran (a
deployment's flow run).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.errors import InputError

#: The repository root (``core`` is a top-level package), where the shipped tiny zoo lives.
REPO_ROOT = Path(__file__).resolve().parents[1]


def shipped(relative: str) -> str:
    """A path inside the repository (the shipped zoo: ``models``, ``models/teacher``) usable from any directory.

    Kept as given where the working directory is the repository root, so that configs (and the
    experiment ids made from them) read as they always have; from elsewhere, the absolute path.
    """
    path = Path(relative)
    return relative if path.resolve() == (REPO_ROOT / path).resolve() else str(REPO_ROOT / path)


# --- paths ------------------------------------------------------------------------------------

def check_creatable(path: str | Path, option: str, *, file: bool = False) -> None:
    """``path`` is a directory that exists or can be made (with ``file``: a file that can be written):
    it is not the other kind, and its nearest existing ancestor is a writable directory."""
    path = Path(path)
    where = f"{option} {path}"
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if existing == path and path.is_dir() == file:
        raise InputError(where, "is a directory" if file else "is a file",
                         "a file name" if file else "a directory, existing or to be created")
    if existing != path and not existing.is_dir():
        raise InputError(where, f"lies under {existing}, which is a file", "a path whose parents are directories")
    if not os.access(existing, os.W_OK | (0 if existing.is_file() else os.X_OK)):
        raise InputError(where, f"cannot be written: {existing} is not writable", "a path this user can write")


def check_folder(path: str | Path, option: str, expected: str) -> None:
    """An input folder that must exist."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{option} {path}", "is a file, not a folder" if path.exists() else "does not exist", expected)


#: MLflow tracking stores by URI scheme: a database (SQLAlchemy, ``sqlite+pysqlite`` etc. too), a folder, a server.
MLFLOW_SCHEMES = {"sqlite", "postgresql", "mysql", "mssql", "file", "http", "https", "databricks"}
MLFLOW_EXPECTED = ("'' to turn tracking off, sqlite:///PATH, file:PATH or a folder, http(s)://HOST[:PORT], "
                   "or a database URI such as postgresql://HOST/DB")


def check_mlflow_uri(uri: str | None, option: str = "--mlflow-uri") -> None:
    """A tracking URI MLflow can open; a local store's folder must be creatable. None (SQLite in the work dir) and '' (off) pass."""
    if not uri:
        return
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0].lower()
    where = f"{option} {uri}"
    if scheme == "":  # a plain folder: MLflow's file store
        check_creatable(uri, option)
    elif scheme not in MLFLOW_SCHEMES:
        raise InputError(where, f"has an unknown scheme {parsed.scheme!r}", MLFLOW_EXPECTED)
    elif scheme == "sqlite":
        if not uri.startswith(f"{parsed.scheme}:///") or len(uri) == len(f"{parsed.scheme}:///"):
            raise InputError(where, "is not a SQLite file URI", "sqlite:///RELATIVE/PATH.db or sqlite:////ABSOLUTE/PATH.db")
        check_creatable(uri[len(f"{parsed.scheme}:///"):], option, file=True)
    elif scheme == "file":
        check_creatable(parsed.path or ".", option)
    elif scheme != "databricks" and not parsed.netloc:
        raise InputError(where, "has no host", MLFLOW_EXPECTED)


# --- benchmarks -------------------------------------------------------------------------------

def require_instances(benchmark: Any) -> None:
    """An opened ``Benchmark`` has at least one valid instance (else nothing would run: one line, not a report per entry)."""
    if benchmark.instances:
        return
    first = f"; the first: {benchmark.invalid[0].error}" if benchmark.invalid else ""
    raise InputError(benchmark.root, f"has no valid instance ({len(benchmark.invalid)} invalid{first})",
                     "at least one readable instance")


def check_bench(bench: str | Path, option: str = "--bench") -> None:
    """'synth', or a benchmark path with at least one valid instance."""
    if str(bench) == "synth":
        return
    from core.bench.source import open_benchmark

    if not Path(bench).exists():
        raise InputError(f"{option} {bench}", "does not exist",
                         "'synth', a VBVR-layout directory or a RULER .json/.jsonl/.parquet file")
    bench_log = logging.getLogger("core.bench")
    level = bench_log.level
    bench_log.setLevel(logging.ERROR)  # no warning per invalid entry here: the run records each as a failed item
    try:
        require_instances(open_benchmark(bench, skip_invalid=True))
    finally:
        bench_log.setLevel(level)


# --- model folders ----------------------------------------------------------------------------

def read_json(path: Path, expected: str) -> Any:
    """A JSON file's content; an error naming the file if it is missing or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "does not exist", expected) from None
    except (OSError, ValueError) as exc:  # ValueError: malformed JSON or not UTF-8
        raise InputError(path, f"is not readable JSON ({exc})", expected) from None


def check_safetensors(path: Path) -> None:
    """A safetensors file whose header opens and covers the file (what every loader reads first)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception as exc:  # SafetensorError (bad header, truncated) or OSError
        raise InputError(path, f"is not a readable safetensors file ({exc})",
                         "the weights file as written; copy or download it again") from None


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def check_weights(folder: Path, role: str) -> None:
    """A model folder (or a pipeline's component): ``config.json`` parses, and its weights are there and open.

    Sharded checkpoints are read through their ``*.safetensors.index.json``; pickled weights
    (``.bin``) are accepted unread.
    """
    read_json(folder / "config.json", f"the config of {role}")
    shards: set[Path] = set()
    for index in folder.glob("*.safetensors.index.json"):
        weight_map = read_json(index, "a safetensors index with a weight_map").get("weight_map", {})
        shards |= {folder / name for name in weight_map.values()}
    for shard in sorted(shards):
        if not shard.is_file():
            raise InputError(shard, "is missing", f"every shard that {folder.name}'s index lists")
    files = shards or set(folder.glob("*.safetensors"))
    if not files and not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
        raise InputError(folder, f"has no weights for {role}", "*.safetensors files or a sharded index beside config.json")
    for path in sorted(files):
        check_safetensors(path)


def check_model_folder(path: str | Path, role: str, expected: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(folder, f"{role} folder " + ("is a file" if folder.exists() else "does not exist"), expected)
    return folder


def check_reasoner(path: str | Path) -> None:
    """A diffusers Wan pipeline folder: ``model_index.json``, and each component it lists (models' weights open)."""
    expected = "a diffusers Wan image-to-video folder with model_index.json"
    folder = check_model_folder(path, "the Reasoner", expected)
    index = folder / "model_index.json"
    for name, spec in read_json(index, expected).items():
        if name.startswith("_") or not isinstance(spec, list) or not spec or spec[0] is None:
            continue
        component = folder / name
        if not component.is_dir():
            raise InputError(component, f"is missing ({index.name} lists {name}: {spec[-1]})", f"the pipeline's {name}/ folder")
        if (component / "config.json").exists():  # a model, not a tokenizer or scheduler
            check_weights(component, f"the Reasoner's {name}")


def check_surrogate(path: str | Path) -> None:
    folder = check_model_folder(path, "the surrogate decoder", "a folder written by `vlmt zoo train` or `vlmt zoo surrogate`")
    check_weights(folder, "the surrogate decoder")


def check_teacher(path: str | Path, role: str = "the Teacher") -> None:
    """A Qwen2.5-VL / Qwen3-VL folder: config with a known model_type, weights that open."""
    folder = check_model_folder(path, role, "a Qwen2.5-VL or Qwen3-VL folder, ours or a real checkpoint")
    check_weights(folder, role)
    from core.models.teacher import teacher_model_type

    teacher_model_type(folder)


def check_models(reasoner: str | Path, surrogate: str | Path | None, teacher: str | Path) -> None:
    check_reasoner(reasoner)
    if surrogate is not None:
        check_surrogate(surrogate)
    check_teacher(teacher)


def check_run_inputs(*, bench: str, reasoner: str, surrogate: str | None, teacher: str, work: str | Path,
                     mlflow_uri: str | None = "", judge: str | None = None, heldout_judge: str | None = None) -> None:
    """Everything a run reads or writes before it starts: the work dir, the MLflow store, the benchmark, the models."""
    check_creatable(work, "--work")
    check_mlflow_uri(mlflow_uri)
    check_bench(bench)
    check_models(reasoner, surrogate, teacher)
    if judge:
        check_teacher(judge, "the judge")
    if heldout_judge:
        check_teacher(heldout_judge, "the held-out judge")


@contextmanager
def naming_bad_weights(*folders: str | Path | None) -> Iterator[None]:
    """Load models inside this: a failure caused by an unreadable weights file under ``folders`` is
    re-raised as an ``InputError`` naming that file (the libraries' own errors often name none)."""
    try:
        yield
    except InputError:
        raise
    except Exception:
        for folder in (Path(f) for f in folders if f is not None):
            for path in sorted(folder.rglob("*.safetensors")) if folder.is_dir() else ():
                check_safetensors(path)
        raise
