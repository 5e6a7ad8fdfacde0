"""`computenode run` in this interpreter, for bench/node_cpu.py: writes its threads' names (by
native ID) to $NODE_CPU_THREADS every second and, with $NODE_CPU_PROFILE set, profiles the loop
thread with cProfile (CPU time of that thread when $NODE_CPU_THREAD_TIME is set) into that file
at exit.

    python bench/_profiled_node.py [anything] run --config FILE   (what precedes `run` is ignored)
"""

from __future__ import annotations

import cProfile
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the checkout the node runs from (bench/_node.py sets the cwd)

from computenode.cli import main  # noqa: E402


def _names(path: Path) -> None:
    seen: dict[str, str] = {}
    while True:
        seen.update({str(t.native_id): t.name for t in threading.enumerate()})
        path.write_text(json.dumps(seen))
        time.sleep(1)


def run() -> int:
    args = sys.argv[sys.argv.index("run") :]
    sys.argv = ["computenode", *args]
    names = os.environ.get("NODE_CPU_THREADS")
    if names:
        threading.Thread(target=_names, args=(Path(names),), daemon=True, name="bench-names").start()
    out = os.environ.get("NODE_CPU_PROFILE")
    if not out:
        return main()
    prof = (
        cProfile.Profile(time.thread_time) if os.environ.get("NODE_CPU_THREAD_TIME") else cProfile.Profile()
    )
    prof.enable()
    try:
        return main()
    finally:
        prof.disable()
        prof.dump_stats(out)


if __name__ == "__main__":
    sys.exit(run())
