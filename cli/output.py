"""What ``vlmt`` keeps quiet, and the offline defaults it sets before Prefect is imported.

A command prints its own lines (checks, tables, hints) and one progress bar; everything else a
library would print is off unless asked for with ``-v``:

- Prefect's per-stage lines ("Finished in state Completed()", "Beginning flow run ...",
  "Starting temporary server ...") are INFO logs: ``PREFECT_LOGGING_LEVEL=WARNING``.
- MLflow's "Creating initial MLflow database tables..." and alembic's migration lines are INFO logs.
- transformers' and diffusers' weight-loading bars ("Loading weights", "Loading pipeline
  components...") are tqdm bars beside the CLI's own.
- Two library notices that say nothing about the run are filtered where they are logged
  (``core/__init__.py``): the torchvision fallback notice and transformers' processor-class
  deprecation notice.

Every setting here is a default: a variable the user has set wins, and ``-v`` leaves the
libraries' own levels and bars alone.
"""

from __future__ import annotations

import logging
import os

#: Set once, when ``cli`` is imported, before anything imports Prefect (it reads its settings then).
OFFLINE_DEFAULTS = {
    # Each command without a PREFECT_API_URL starts Prefect's ephemeral server, which must answer within
    # Prefect's default 20 s. Its first start in a fresh PREFECT_HOME takes ~12 s on an idle 2-core CPU,
    # and beside another job it was measured to miss the 20 s and crash `vlmt evaluate` before any work.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # The API server's analytics heartbeat: offline it fails, and it once printed a 120-line
    # "database is locked" traceback in the middle of the demo.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The SDK's own usage events (prefect/_internal/analytics/enabled.py reads DO_NOT_TRACK; Prefect's
    # notice says "DO_NOT_TRACK=1 in the client").
    "DO_NOT_TRACK": "1",
}

#: Defaults that quiet the libraries unless -v is given (read when each library is imported).
QUIET_DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers reads it at import for its own bars too
}

#: Loggers whose INFO lines are per-stage detail, set directly too (a library may already be imported),
#: unless the user has set the library's own variable.
QUIET_LOGGERS = {"prefect": "PREFECT_LOGGING_LEVEL", "mlflow": "MLFLOW_LOGGING_LEVEL", "alembic": None}

#: Values this module put into the environment, so that -v in the same process can take them back.
_ours: dict[str, str] = {}
#: The verbosity of this command (0: quiet, 1: -v, 2: -vv).
_verbosity = 0


def set_offline_defaults() -> None:
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def set_verbosity(verbosity: int) -> None:
    """0: warnings and errors only; 1 (``-v``): the libraries' INFO logs and bars too; 2 (``-vv``): debug."""
    global _verbosity
    _verbosity = verbosity
    for key, value in QUIET_DEFAULTS.items():
        if verbosity == 0 and key not in os.environ:
            os.environ[key] = _ours[key] = value
        elif verbosity and key in _ours and os.environ.get(key) == _ours.pop(key):
            del os.environ[key]
    level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    for name, variable in QUIET_LOGGERS.items():  # a library imported already has read its level
        if variable is None or variable in _ours or variable not in os.environ:
            logging.getLogger(name).setLevel(level)


def quiet_model_loading() -> None:
    """transformers' and diffusers' weight-loading bars off unless -v (call before a command loads models).

    transformers also honours HF_HUB_DISABLE_PROGRESS_BARS; diffusers has no variable for its bars.
    """
    if _verbosity:
        return
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
