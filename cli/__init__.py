"""The ``vlmt`` command line (typer + rich).

Importing any part of it sets the offline defaults (``cli.output.OFFLINE_DEFAULTS``) before
anything imports Prefect, which reads its settings when it is imported.
"""

from cli.output import set_offline_defaults

set_offline_defaults()
