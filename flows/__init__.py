"""Prefect flows: compositions of ``tasks`` that users run, schedule and resume."""
