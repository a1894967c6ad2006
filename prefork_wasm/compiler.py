"""The compile side: turn .wasm/.wat files into serialized artifacts in the cache directory.

The master never compiles in its own process: wasmtime's parallel compiler leaves a thread
pool behind, and a forked child of a multi-threaded parent hangs on its first compile or
guest call. So the master runs `python -m prefork_wasm.compiler` once for all cache misses;
that process may use every core and takes its compile heap with it when it exits.

Artifacts are keyed by the module's bytes, the code-relevant engine settings and the
wasmtime version, so an unchanged module is never compiled twice and an upgrade never loads
a stale artifact. They are written under a temporary name and renamed into place, because
workers keep the old file mapped.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .engine import CODE_SETTINGS, WASMTIME_VERSION, engine_config

ARTIFACT_SUFFIX = ".cwasm"


class CompileError(Exception):
    """A module could not be compiled or its artifact could not be written."""


@dataclass(frozen=True)
class Artifact:
    """Where the serialized form of one module lives, and whether it had to be built."""

    source: Path
    path: Path
    compiled: bool  # False: taken from the cache
    seconds: float  # compile time (0 for a cache hit)
    why: str = ""  # why a cached artifact was not used ('' when there was none)


@dataclass(frozen=True)
class CompileReport:
    artifacts: list[Artifact]
    warnings: list[str]


def artifact_path(source: Path, cache_dir: Path) -> Path:
    """The cache file for `source` as it is now on disk."""
    digest = hashlib.sha256()
    digest.update(f"wasmtime {WASMTIME_VERSION}; {CODE_SETTINGS}\n".encode())
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return cache_dir / f"{source.stem}-{digest.hexdigest()[:24]}{ARTIFACT_SUFFIX}"


def checksum_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".sha256")


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cache_problem(artifact: Path) -> str | None:
    """Why a cached artifact must not be used, or None if it is whole.

    A truncated or corrupt artifact could crash a worker or, worse, load as something else;
    its sha256, written beside it after a successful compile, tells.
    """
    if not artifact.is_file():
        return ""  # simply not compiled yet
    try:
        expected = checksum_path(artifact).read_text().strip()
    except OSError:
        return "its checksum file is missing"
    if _file_digest(artifact) != expected:
        return "it is corrupt or truncated (checksum mismatch)"
    return None


def _writable_cache(cache_dir: Path) -> tuple[Path, list[str]]:
    """The configured cache, or a private temporary one (with a warning) if it cannot be written."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if os.access(cache_dir, os.W_OK):
            return cache_dir, []
        problem = "not writable"
    except OSError as e:
        problem = e.strerror or str(e)
    fallback = Path(tempfile.gettempdir()) / f"prefork-wasm-cache-{os.getuid()}"
    fallback.mkdir(mode=0o755, exist_ok=True)
    return fallback, [
        f"WasmCacheDir {cache_dir}: {problem}; compiling into {fallback} instead "
        f"(fix its permissions to keep compiled modules across restarts)"
    ]


def ensure_compiled(sources: list[Path], cache_dir: Path) -> CompileReport:
    """Make sure every source has a whole artifact in the cache, compiling the misses out of process."""
    wanted = [(src, artifact_path(src, cache_dir)) for src in sources]
    problems = {dst: _cache_problem(dst) for _, dst in wanted}
    warnings: list[str] = []
    if any(problem is not None for problem in problems.values()):
        usable, warnings = _writable_cache(cache_dir)
        if usable != cache_dir:
            wanted = [(src, artifact_path(src, usable)) for src in sources]
            problems = {dst: _cache_problem(dst) for _, dst in wanted}
    misses = [(src, dst) for src, dst in wanted if problems[dst] is not None]
    timings = _compile_out_of_process(misses) if misses else {}
    artifacts = [
        Artifact(src, dst, compiled=dst in timings, seconds=timings.get(dst, 0.0), why=problems[dst] or "")
        for src, dst in wanted
    ]
    return CompileReport(artifacts, warnings)


def _compile_out_of_process(jobs: list[tuple[Path, Path]]) -> dict[Path, float]:
    argv = [sys.executable, "-m", "prefork_wasm.compiler"]
    for src, dst in jobs:
        argv += [str(src), str(dst)]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise CompileError(proc.stderr.strip() or f"compiler exited with status {proc.returncode}")
    timings: dict[Path, float] = {}
    for line in proc.stdout.splitlines():
        seconds, _, name = line.partition(" ")
        timings[Path(name)] = float(seconds)
    return timings


def _compile_all(pairs: list[tuple[Path, Path]]) -> int:
    """Body of the compiler process: prints 'SECONDS DST' per artifact, errors to stderr."""
    import wasmtime

    engine = wasmtime.Engine(engine_config(parallel_compilation=True))
    failed = False
    for src, dst in pairs:
        start = time.perf_counter()
        try:
            module = wasmtime.Module.from_file(engine, str(src))
            data = module.serialize()
            _write_atomically(dst, data)
            _write_atomically(checksum_path(dst), hashlib.sha256(data).hexdigest().encode())
        except (wasmtime.WasmtimeError, OSError) as e:
            print(f"{src}: cannot compile: {_one_line(e)}", file=sys.stderr)
            failed = True
            continue
        print(f"{time.perf_counter() - start:.3f} {dst}", flush=True)
    return 1 if failed else 0


def _write_atomically(dst: Path, data: bytes | bytearray) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines[:4]) or type(error).__name__


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    sys.exit(_compile_all(list(zip(args[0::2], args[1::2]))))
