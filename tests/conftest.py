"""The suite's fixtures. The mechanics (starting, probing and stopping a server, free ports,
polling) live in harness.py, shared with scripts/soak and the benchmark.

Every server a test starts is stopped at the end of that test, and every process it forked is
killed by pid if it outlived the master (never by name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import Server


@pytest.fixture(scope="session")
def component_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One WasmCacheDir for every server that serves the big test component (an 18 MB
    componentize-py build): the suite compiles it once, not per test."""
    return tmp_path_factory.mktemp("component-cache")


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(body: str, start: bool = True, **kw: object) -> Server:
        root = tmp_path / f"server{len(servers)}"
        root.mkdir()
        server = Server(root, body, **kw)  # type: ignore[arg-type]
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()
