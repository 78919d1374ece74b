"""Prefect tasks: thin typed wrappers around ``psaq`` stage functions.

Importing this package sets Prefect/DVC/MLflow environment defaults for the project
(result storage inside the project, no analytics) before Prefect is imported.
"""

from tasks.settings import configure_environment

configure_environment()
