"""Which of some modules a fresh Python process ends up importing: the import guards' one check."""

from __future__ import annotations

import json
import subprocess
import sys


def imported_by(statements: str, watched: tuple[str, ...], env: dict | None = None) -> list[str]:
    """The names in ``watched`` (top-level packages or full module names) that a new interpreter has in
    ``sys.modules`` after running ``statements``."""
    code = (
        "import json, sys\n"
        f"{statements}\n"
        "loaded = set(sys.modules) | {m.split('.')[0] for m in sys.modules}\n"
        f"print(json.dumps(sorted(loaded & set({watched!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])
