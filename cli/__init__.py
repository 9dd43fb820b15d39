"""The ``vlmt`` command line (typer + rich)."""
