#!/bin/sh
# A DVC stage command: `python -m flows.dvc_stages STAGE …` with the project's interpreter.
# DVC runs stage commands with the shell's PATH, where `python` may be another interpreter or
# none at all (a user who runs `.venv/bin/dvc repro` without activating the environment). The
# project's own .venv comes first, then an activated environment, then python3 on PATH.
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$root/.venv/bin/python" ]; then
    py="$root/.venv/bin/python"
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    py="$VIRTUAL_ENV/bin/python"
elif command -v python3 >/dev/null 2>&1; then
    py=python3
    # one line rather than a traceback from a python3 that is not psaq's
    if ! "$py" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('torch', 'timm', 'pyarrow')))"; then
        echo "psaq: error: $(command -v python3) lacks psaq's packages (torch, timm, pyarrow); run 'make setup' (it creates .venv) or activate psaq's environment" >&2
        exit 2
    fi
else
    echo "psaq: error: no Python for the stage command; run 'make setup' (it creates .venv)" >&2
    exit 2
fi
cd "$root" && exec "$py" -m flows.dvc_stages "$@"
