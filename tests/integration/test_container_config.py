"""conf/container.conf, the config the Dockerfile bakes in, passes `prefork-wasm -t` (which is
also the image's cache-warming step: a failure here is a failed `docker build`)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from harness import EXAMPLES, REPO, Server

CONTAINER_CONF = REPO / "conf" / "container.conf"


def check(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefork_wasm.cli", "-f", str(conf), "-t"],
        capture_output=True, text=True, timeout=300, cwd=conf.parent,
    )


def test_container_config_passes_the_check(tmp_path: Path, component_cache: Path) -> None:
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


NOBODY = 65534


class NonRootServer(Server):
    """The harness's server, run as uid/gid 65534 (what the image's USER is to the kernel: an
    account that owns nothing the server reads)."""

    def command(self, *args: str) -> list[str]:
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *super().command(*args)]


def reachable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents] if p.is_dir())


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_cache_warmed_by_root_serves_a_non_root_server_without_compiling() -> None:
    """The image's arrangement: root runs `-t` at build time and makes the artifacts readable,
    the server runs as another user and must map them as they are (no compile, no fallback
    cache): this is what makes a pod start in well under a second."""
    if not (reachable_by_others(REPO) and reachable_by_others(Path(sys.executable).resolve().parent)):
        pytest.skip("the repository or Python is not reachable by other users here")
    base = Path(tempfile.mkdtemp(prefix="prefork-wasm-image-"))
    try:
        base.chmod(0o755)
        root = base / "server"
        root.mkdir()
        os.chown(root, NOBODY, NOBODY)  # its logs and pid file, as /tmp in the pod
        cache = base / "cache"
        server = NonRootServer(root, f"""WasmCacheDir {cache}
<Location /hello>
    SetHandler wasm-handler
    WasmModule {EXAMPLES}/hello.wasm
    WasmEnableCGI On
</Location>
""", log_level="notice")
        warm = subprocess.run([sys.executable, "-m", "prefork_wasm.cli", "-f", str(server.conf), "-t"],
                              capture_output=True, text=True, timeout=120)
        assert warm.returncode == 0, warm.stderr
        for folder, _, files in os.walk(cache):  # the Dockerfile's `chmod -R a+rX cache`
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        built = sorted(p.name for p in cache.iterdir())
        try:
            server.start()
            assert psutil.Process(server.pid).uids().effective == NOBODY
            status, _, body, _ = server.get("/hello")
            assert (status, body) == (200, b"Hello from WebAssembly!\n")
        finally:
            server.stop()
        assert "compiled" not in server.log() and "WasmCacheDir" not in server.log(), server.log()
        assert sorted(p.name for p in cache.iterdir()) == built
    finally:
        shutil.rmtree(base, ignore_errors=True)
