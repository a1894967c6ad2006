"""The soak test (scripts/soak.py) in a short run, so that its code stays working between the
long runs people start by hand. Marked slow (about 20 s): `scripts/test -m slow` runs it;
`scripts/soak` is the long version."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness import REPO


def load_soak() -> ModuleType:
    """scripts/ is not a package: load soak.py from its file (registered in sys.modules first,
    which dataclasses need)."""
    spec = importlib.util.spec_from_file_location("soak", REPO / "scripts" / "soak.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_short_soak_passes_and_every_hostile_kind_gets_its_expected_answer(tmp_path: Path) -> None:
    soak = load_soak()
    # One hostile thread per kind: each starts on a different kind, so all of them run.
    options = soak.Options(minutes=0.25, clients=4, hostile=len(soak.HOSTILE))
    result = soak.run(options, tmp_path)
    report = soak.report(result)
    assert result.passed, report  # what `scripts/soak` turns into exit status 0
    assert result.tally.ok > 100, report
    for kind, _ in soak.HOSTILE:
        assert result.tally.hostile.get(kind), f"{kind} never ran\n{report}"
    assert not any(result.tally.unexpected.values()), report
    assert result.stop.exit_status == 0 and not result.stop.leftover_workers, report
