"""vlmt core library: benchmarks, scoring, models, rewards, optimisation, storage.

Nothing in this package imports Prefect: the orchestration layer lives in ``tasks/``
and ``flows/`` and only wraps functions defined here.
"""

import logging

__version__ = "0.1.0"


class _TorchvisionFallbackNotice(logging.Filter):
    """Drops transformers' notice that an image processor falls back to its PIL backend without
    torchvision. The models load without torchvision by design (``core/models/teacher.py``,
    "Loading without torchvision"), yet importing diffusers' Wan pipeline printed the notice on
    every command that touches a model, so that a one-line input error read as two lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_TorchvisionFallbackNotice())
