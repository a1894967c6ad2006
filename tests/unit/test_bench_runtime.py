"""scripts/bench-runtime still runs: its in-process variants serve the hello module (each
checks its answer, so a broken variant fails here rather than in the next benchmark session)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_runtime.py"


@pytest.mark.parametrize(
    ("options", "variants"),
    [
        ([], ["prefork-wasm Runtime.run (pooling)", "bare floor, pooling engine", "bare floor, default engine"]),
        (["--request"], ["prefork-wasm keep-alive request", "the least such a request needs"]),
    ],
)
def test_each_variant_runs_and_is_timed(options: list[str], variants: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--batches", "1", "--runs", "20", *options],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for name in variants:
        assert re.search(rf"^  {re.escape(name)} +\d+\.\d", done.stdout, re.MULTILINE), done.stdout
