"""scripts/bench's scaling goal: keep-alive at the rounds' connections over -c4, paired per round."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_lib import report  # noqa: E402


def _run(system: str, mode: str, rnd: int, rps: float) -> dict[str, Any]:
    return {"system": system, "mode": mode, "round": rnd, "rps": rps}


def _scaling_check(runs: list[dict[str, Any]], fewer: list[dict[str, Any]]) -> dict[str, Any]:
    checks = report.targets([], runs, [], (), fewer)
    return next(c for c in checks if c["target"].startswith("keep-alive req/s at the rounds' connections"))


def test_scaling_is_the_median_of_each_rounds_own_ratio() -> None:
    pw = report.REFERENCE
    runs = [
        _run(pw, "keep-alive", 1, 4000), _run(pw, "keep-alive", 2, 3000), _run(pw, "keep-alive", 3, 4400),
        _run(pw, "close", 1, 9000), _run("gunicorn-wasm", "keep-alive", 1, 9000),
    ]
    # Round 2's machine was slow for both of its runs: paired, it does not drag the ratio down.
    fewer = [_run(pw, "keep-alive", 1, 4100), _run(pw, "keep-alive", 2, 2900), _run(pw, "keep-alive", 3, 4000)]
    check = _scaling_check(runs, fewer)
    assert check["value"] == sorted([4000 / 4100, 3000 / 2900, 4400 / 4000])[1]
    assert check["verdict"] == "PASS"


def test_scaling_counts_only_rounds_that_have_both_runs_and_misses_below_one() -> None:
    pw = report.REFERENCE
    runs = [_run(pw, "keep-alive", 1, 3800), _run(pw, "keep-alive", 2, 100)]
    check = _scaling_check(runs, [_run(pw, "keep-alive", 1, 4000)])
    assert check["value"] == 3800 / 4000
    assert check["verdict"] == "MISS"


def test_scaling_is_not_judged_without_runs_at_fewer_connections() -> None:
    check = _scaling_check([_run(report.REFERENCE, "keep-alive", 1, 4000)], [])
    assert check["value"] is None
    assert check["verdict"] == "n/a"
