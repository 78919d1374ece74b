"""What a user sees when they open psaq's MLflow link: the runs table, in headless Chromium.

    .venv/bin/python benchmarks/mlflow_view.py            # the project's mlflow.db (after `make run`)
    .venv/bin/python benchmarks/mlflow_view.py --uri sqlite:////path/mlflow.db

Starts the MLflow server the way `make mlflow-ui` does (on a free port), opens the link psaq prints
(``tasks.tracking.runs_page``) in Debian's Chromium (``apt-get install chromium``; not part of
`make setup`), saves a screenshot and checks the rendered page: the runs table, not the GenAI
overview; the grid's key metrics as visible columns; the points grouped by the run that made them.
Prints one line per check and exits 1 if any fails. Writes benchmarks/results/mlflow_runs.png.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.tracking import MADE_BY_TAG, UI, VIEW_COLUMNS, runs_page, tracking_uri  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "mlflow_runs.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(uri: str, port: int, artifacts: Path) -> subprocess.Popen:
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1", "--backend-store-uri", uri,
                               "--default-artifact-root", str(artifacts)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"mlflow server exited ({server.returncode}) before answering")
            time.sleep(1)
    server.kill()
    raise SystemExit("mlflow server did not answer within 120 s")


def chromium(*args: str) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no Chromium: apt-get install chromium (the screenshot check needs a browser)")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--user-data-dir={profile}", "--window-size=1920,1000",
                               "--virtual-time-budget=30000", *args],
                              capture_output=True, text=True, timeout=180)
    return done.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uri", help="MLflow tracking URI (default: the project's, as the flows use)")
    ap.add_argument("--experiment", default="psaq")
    args = ap.parse_args()
    uri = args.uri or tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise SystemExit(f"{uri}: no MLflow store yet; run `make run` first")
    port = free_port()
    link = runs_page(uri, args.experiment).replace(UI, f"http://127.0.0.1:{port}")
    print(f"link: {link}")
    with tempfile.TemporaryDirectory() as artifacts:
        server = serve(uri, port, Path(artifacts))
        try:
            OUT.parent.mkdir(parents=True, exist_ok=True)
            chromium(f"--screenshot={OUT}", link)
            page = chromium("--dump-dom", link)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
    checks = {
        "the runs table, not the GenAI overview": "Run Name" in page and "Overview" not in page.split("Run Name")[0][-400:],
        **{f"column {key}": key in page for _, key in VIEW_COLUMNS},
        f"grouped by {MADE_BY_TAG}": MADE_BY_TAG in page,
    }
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    print(f"screenshot: {OUT.relative_to(REPO)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
