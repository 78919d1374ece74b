"""The service checks that run before any work: one line for what the services would refuse later."""

import pytest

from psaq.errors import ConfigError
from tasks.services import check_mlflow


def test_a_file_store_is_refused_unless_mlflow_is_told_to_allow_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match=r"is a file store, which this MLflow refuses to write; use sqlite:///PATH"):
        check_mlflow(f"file:{tmp_path}/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_mlflow(f"file:{tmp_path}/mlruns")


def test_unknown_schemes_and_unwritable_sqlite_folders_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="has a scheme psaq does not know"):
        check_mlflow("ftp://example")
    with pytest.raises(ConfigError, match="is missing or not writable"):
        check_mlflow(f"sqlite:///{tmp_path}/nope/mlflow.db")
