"""vlmt core library: benchmarks, scoring, models, rewards, optimisation, storage.

Nothing in this package imports Prefect: the orchestration layer lives in ``tasks/``
and ``flows/`` and only wraps functions defined here.
"""

import logging

__version__ = "0.1.0"


class _KnownNotices(logging.Filter):
    """Drops library notices that say nothing about a vlmt run, by their text, where they are logged:

    - transformers' notice that an image processor falls back to its PIL backend without
      torchvision. The models load without torchvision by design (``core/models/teacher/``,
      "Loading without torchvision"), yet importing diffusers' Wan pipeline printed the notice on
      every command that touches a model, so that a one-line input error read as two lines.
    - transformers' deprecation notice that a processor class (e.g. ``PaddleOCRVLProcessor``,
      met while the auto classes look up the Teacher's processor) names its image processor
      class: a note to that library's maintainers, printed in the middle of every demo.

    Any other warning of these loggers still shows.
    """

    NOTICES = (
        "requires torchvision (not installed)",
        "which is deprecated. Register the correct mapping in",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


for _name in ("transformers.utils.import_utils", "transformers.processing_utils"):
    logging.getLogger(_name).addFilter(_KnownNotices())
