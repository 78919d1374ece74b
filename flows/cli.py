"""How the flow entry points fail: one line naming the problem, exit 2, traceback only with --debug."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_entry(main: Callable[[], int], debug: bool) -> int:
    from psaq.errors import PsaqError

    try:
        return main()
    except PsaqError as exc:
        if debug:
            raise
        print(f"psaq: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only folder, disk full, …: nothing was published half-written
        if debug:
            raise
        where = f": '{exc.filename}'" if getattr(exc, "filename", None) else ""
        print(f"psaq: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("psaq: interrupted; rerun to continue from the finished stages", file=sys.stderr)
        return 130
