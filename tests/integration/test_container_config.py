"""conf/container.conf, the config the Dockerfile bakes in, passes `prefork-wasm -t` (which is
also the image's cache-warming step: a failure here is a failed `docker build`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

CONTAINER_CONF = REPO / "conf" / "container.conf"


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefork_wasm.cli", "-f", str(conf), "-t"],
        capture_output=True, text=True, timeout=300, cwd=conf.parent,
    )


def test_container_config_passes_the_check(tmp_path: Path, component_cache: Path) -> None:
    probe = tmp_path / "probe.conf"
    probe.write_text("Listen 127.0.0.1:8080\n<Location /healthz>\n    SetHandler health\n</Location>\n")
    if check(probe).returncode != 0:
        pytest.skip("this build has no `SetHandler health` yet (issue 12's health handler)")
    # The repository's folders instead of the image's, and the suite's shared compile cache
    # (the example components compile once per run).
    text = CONTAINER_CONF.read_text()
    text = re.sub(r"^ServerRoot .*$", f'ServerRoot "{REPO}"', text, count=1, flags=re.MULTILINE)
    text = re.sub(r"^WasmCacheDir .*$", f'WasmCacheDir "{component_cache}"', text, count=1, flags=re.MULTILINE)
    conf = tmp_path / "container.conf"
    conf.write_text(text)
    result = check(conf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Syntax OK"
