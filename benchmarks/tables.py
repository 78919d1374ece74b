"""What the table scripts share: measure (or reload the saved measurement), render, write both."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def add_output_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cache-dir", default=".psaq-cache")
    ap.add_argument("--render-only", action="store_true", help="re-render the tables from the saved JSON")


def measure_and_write(stem: str, args: argparse.Namespace, run: Callable[[argparse.Namespace], dict],
                      render: Callable[[dict], str]) -> None:
    """``<out>/<stem>.json`` holds the raw measurement, ``<stem>.md`` the tables rendered from it."""
    out = Path(args.out)
    if args.render_only:
        result = json.loads((out / f"{stem}.json").read_text())
    else:
        result = run(args)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    text = render(result)
    print(text)
    (out / f"{stem}.md").write_text(text + "\n")
    print(f"\nwritten to {out}/{stem}.md and .json ({result['wall_s']:.0f} s of measurement)")
