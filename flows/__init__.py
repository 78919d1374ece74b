"""Prefect flows, one per user entry point: quantize, grid, benchmark (and serve for deployments)."""

import tasks  # noqa: F401  - sets the project's Prefect/DVC/MLflow environment defaults first
