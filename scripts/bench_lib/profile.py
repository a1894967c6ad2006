"""Where a prefork-wasm worker spends its time under load: py-spy on one worker during a wrk run."""

from __future__ import annotations

import collections
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

from . import wrk

_LINE = re.compile(r"\s*\((.*):(\d+)\)$")


def _function(frame: str) -> str:
    """'name (file:line)' -> 'name (file)': inclusive time is per function, not per line."""
    return _LINE.sub(lambda m: f" ({m.group(1)})", frame)


def parse_raw(text: str) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """py-spy's raw (collapsed) stacks -> total samples, top self frames, top inclusive functions."""
    total = 0
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for fn in {_function(f) for f in frames}:
            inclusive[fn] += n
    return total, own.most_common(15), inclusive.most_common(25)


def profile_worker(py_spy: Path, url: str, worker_pid: int, out: Path, seconds: int = 8,
                   connections: int = 16) -> dict[str, Any]:
    """Sample one worker while wrk keeps the pool busy (keep-alive), then summarize the stacks."""
    result: dict[str, Any] = {}

    def load() -> None:
        result["wrk"] = wrk.run(url, connections, seconds + 3, close=False)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        # --nonblocking: don't pause the worker to read it (would slow it and skew the profile).
        spy = subprocess.run(
            [str(py_spy), "record", "-p", str(worker_pid), "-d", str(seconds), "-r", "100",
             "--nonblocking", "-f", "raw", "-o", str(out)],
            capture_output=True, text=True, timeout=seconds + 60,
        )
    finally:
        loader.join()
    if spy.returncode != 0 or not out.exists():
        return {"error": (spy.stdout + spy.stderr)[-1000:]}
    total, own, inclusive = parse_raw(out.read_text())
    return {"samples": total, "self": own, "inclusive": inclusive, "wrk": result.get("wrk"),
            "raw_file": out.name}


def profile_text(prof: dict[str, Any]) -> str:
    if "error" in prof:
        return f"py-spy failed: {prof['error']}"
    total = prof["samples"] or 1
    lines = [f"{prof['samples']} samples (py-spy, 100 Hz, one worker, active time only)", "",
             "Top frames by own time:", ""]
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in prof["self"]]
    lines += ["", "Top functions by inclusive time:", ""]
    lines += [f"    {n / total:6.1%}  {fn}" for fn, n in prof["inclusive"]]
    return "\n".join(lines)
