"""The compile side: turn .wasm/.wat files into serialized artifacts in the cache directory.

The master never compiles in its own process: wasmtime's parallel compiler leaves a thread
pool behind, and a forked child of a multi-threaded parent hangs on its first compile or
guest call. So the master runs `python -m prefork_wasm.compiler` once for all cache misses;
that process may use every core and takes its compile heap with it when it exits.

Artifacts are keyed by the module's bytes, the code-relevant engine settings and the
wasmtime version, so an unchanged module is never compiled twice and an upgrade never loads
a stale artifact. They are written under a temporary name and renamed into place, because
workers keep the old file mapped.

A reload must not stall the master: `start_compile` spawns the compiler and returns, the
master's loop reaps it like any child, and only then takes the report. Digests of sources and
artifacts are remembered by file identity, so an unchanged module costs a stat, not a read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import wasmtime
from wasmtime import component

from .engine import CODE_SETTINGS, WASMTIME_VERSION, engine_config, trap_reason

if TYPE_CHECKING:
    from .config import LocationConfig

ARTIFACT_SUFFIX = ".cwasm"
# What an artifact's cache key covers besides the module's bytes.
_KEY_SALT = f"wasmtime {WASMTIME_VERSION}; {CODE_SETTINGS}; info 2\n".encode()  # info N: ModuleInfo's layout


class CompileError(Exception):
    """A module could not be compiled or its artifact could not be written; `failures` are the
    modules that could not be compiled, with why."""

    def __init__(self, message: str, failures: dict[Path, str] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or {}


@dataclass(frozen=True)
class ModuleInfo:
    """What the compiler learnt about a module, kept beside its artifact: the master checks
    the configuration against it without wasmtime, and a worker knows how to load it."""

    component: bool  # a WASI 0.2 component, not a core module
    functions: frozenset[str]  # what WasmEntryPoint may name: 'func', or 'interface#func' in a component
    default_entry: str  # '_start'; for a component its wasi:cli/run export's run ('' if none)
    unlinkable: str = ""  # an import the server does not provide ('' if it links)
    # What a core module asks of the instance pool (engine.InstancePool): the memories and tables
    # it defines, the largest initial memory (bytes) and table (elements). -1: not known.
    memories: int = 0
    tables: int = 0
    memory_min: int = 0
    table_min: int = 0

    def entry_point(self, loc: LocationConfig) -> str:
        """The function a Location calls: its WasmEntryPoint, else the module's default."""
        return loc.entry_point if "entry_point" in loc.sources else self.default_entry

    def to_json(self) -> bytes:
        return json.dumps({
            "component": self.component, "functions": sorted(self.functions),
            "default_entry": self.default_entry, "unlinkable": self.unlinkable,
            "needs": [self.memories, self.tables, self.memory_min, self.table_min],
        }).encode()

    @classmethod
    def from_json(cls, text: str) -> ModuleInfo:
        data: Any = json.loads(text)
        needs = [int(n) for n in data["needs"]]
        info = cls(
            bool(data["component"]), frozenset(data["functions"]), data["default_entry"], data["unlinkable"], *needs
        )
        if len(needs) != 4 or not all(
            isinstance(x, str) for x in (*info.functions, info.default_entry, info.unlinkable)
        ):
            raise ValueError("not a module description")
        return info


@dataclass(frozen=True)
class Artifact:
    """Where the serialized form of one module lives, and whether it had to be built."""

    source: Path
    path: Path
    compiled: bool  # False: taken from the cache
    seconds: float  # compile time (0 for a cache hit)
    info: ModuleInfo
    why: str = ""  # why a cached artifact was not used ('' when there was none)


@dataclass(frozen=True)
class CompileReport:
    artifacts: list[Artifact]
    warnings: list[str]
    hashed_bytes: int  # read to check the cache (0 when no file changed since the last check)


class Digests:
    """sha256 of files, remembered with each file's identity (device, inode, size, mtime,
    ctime): asking again about a file that has not changed costs one stat."""

    def __init__(self) -> None:
        self._known: dict[tuple[Path, bytes], tuple[tuple[int, ...], str]] = {}
        self.hashed_bytes = 0

    def sha256(self, path: Path, salt: bytes = b"") -> str:
        """The digest of salt + the file's bytes."""
        identity = _identity(os.stat(path))
        known = self._known.get((path, salt))
        if known and known[0] == identity:
            return known[1]
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, lambda: hashlib.sha256(salt)).hexdigest()
            after = _identity(os.fstat(f.fileno()))
        self.hashed_bytes += after[2]
        if after == identity:  # not remembered if it changed while being read
            self._known[(path, salt)] = (identity, digest)
        return digest

    def learn(self, path: Path, digest: str) -> None:
        """Remember a digest computed elsewhere: the compiler's, of an artifact it just wrote."""
        self._known[(path, b"")] = (_identity(os.stat(path)), digest)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def artifact_path(source: Path, cache_dir: Path, digests: Digests) -> Path:
    """The cache file for `source` as it is now on disk."""
    digest = digests.sha256(source, _KEY_SALT)
    return cache_dir / f"{source.stem}-{digest[:24]}{ARTIFACT_SUFFIX}"


def checksum_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".sha256")


def info_path(artifact: Path) -> Path:
    """The artifact's `ModuleInfo` (JSON)."""
    return artifact.with_name(artifact.name + ".info")


def _read_info(artifact: Path) -> ModuleInfo:
    try:
        return ModuleInfo.from_json(info_path(artifact).read_text(encoding="utf-8"))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{info_path(artifact)}: not a module description") from e


def _cache_problem(artifact: Path, digests: Digests) -> str | None:
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
    try:
        _read_info(artifact)
    except (OSError, ValueError):
        return "its description (.info) is missing or unreadable"
    if digests.sha256(artifact) != expected:
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


def start_compile(sources: list[Path], cache_dir: Path, digests: Digests) -> Compile:
    """Check the cache for every source and start compiling the misses out of process; returns at once."""
    hashed_before = digests.hashed_bytes
    try:
        wanted = [(src, artifact_path(src, cache_dir, digests)) for src in sources]
        problems = {dst: _cache_problem(dst, digests) for _, dst in wanted}
        warnings: list[str] = []
        if any(problem is not None for problem in problems.values()):
            usable, warnings = _writable_cache(cache_dir)
            if usable != cache_dir:
                wanted = [(src, artifact_path(src, usable, digests)) for src in sources]
                problems = {dst: _cache_problem(dst, digests) for _, dst in wanted}
    except OSError as e:
        raise CompileError(f"{e.filename}: cannot read: {e.strerror}") from e
    compile = Compile(wanted, problems, warnings, digests, digests.hashed_bytes - hashed_before)
    misses = [(src, dst) for src, dst in wanted if problems[dst] is not None]
    if misses:
        compile.spawn(misses)
    return compile


class Compile:
    """One check of the cache, and the compiler process for its misses (pid None: no misses).

    Whoever waits for the process (the master's reaping, or `wait`) passes its status to
    `exited`; then `report` reads what it did.
    """

    def __init__(
        self,
        wanted: list[tuple[Path, Path]],
        problems: dict[Path, str | None],
        warnings: list[str],
        digests: Digests,
        hashed_bytes: int,
    ) -> None:
        self.wanted = wanted
        self.problems = problems
        self.warnings = warnings
        self.digests = digests
        self.hashed_bytes = hashed_bytes
        self.pid: int | None = None
        self.exit_code: int | None = None
        self._out: list[IO[bytes]] = []  # the compiler's stdout and stderr
        self._cache_dirs: set[Path] = set()  # where it writes

    def spawn(self, jobs: list[tuple[Path, Path]]) -> None:
        """posix_spawn, not fork: the master's memory is not copied and no Python state is
        shared; the master's own descriptors are all close-on-exec."""
        argv = [sys.executable, "-m", "prefork_wasm.compiler"]
        for src, dst in jobs:
            argv += [str(src), str(dst)]
        self._out = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]  # noqa: SIM115 (close() closes)
        try:
            self.pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, self._out[0].fileno(), 1),
                (os.POSIX_SPAWN_DUP2, self._out[1].fileno(), 2),
            ])
        except OSError as e:
            self.close()
            raise CompileError(f"cannot start the compiler {sys.executable}: {e.strerror}") from e
        self._cache_dirs = {dst.parent for _, dst in jobs}

    @property
    def running(self) -> bool:
        return self.pid is not None and self.exit_code is None

    def exited(self, status: int) -> None:
        """The compiler process has been reaped with this wait status."""
        self.exit_code = os.waitstatus_to_exitcode(status)

    def wait(self) -> None:
        """Block until the compiler is done (start-up and -t, which have nothing to serve yet)."""
        if self.running:
            assert self.pid is not None
            self.exited(os.waitpid(self.pid, 0)[1])

    def report(self) -> CompileReport:
        """What was compiled and what came from the cache; CompileError if anything failed."""
        timings: dict[Path, float] = {}
        out = ""  # the compiler's 'SECONDS DST' and 'failed SRC\tWHY' lines
        if self.pid is not None:
            out, err = [_read_all(f) for f in self._out]
            self.close()
            if self.exit_code is not None and self.exit_code < 0:
                name = signal.Signals(-self.exit_code).name
                detail = f": {err.strip()}" if err.strip() else ""
                raise CompileError(f"the compiler was killed by {name} (out of memory?){detail}")
            failures = {
                Path(src): why
                for line in out.splitlines() if line.startswith(f"{_FAILED} ")
                for src, _, why in [line[len(_FAILED) + 1 :].partition("\t")]
            }
            if failures:
                raise CompileError(
                    "\n".join(f"{src}: cannot compile: {why}" for src, why in failures.items()), failures
                )
            if self.exit_code != 0:
                raise CompileError(err.strip() or f"the compiler exited with status {self.exit_code}")
        try:
            for line in out.splitlines():
                seconds, _, name = line.partition(" ")
                timings[Path(name)] = float(seconds)
                self.digests.learn(Path(name), checksum_path(Path(name)).read_text().strip())
            artifacts = [
                Artifact(
                    src, dst, compiled=dst in timings, seconds=timings.get(dst, 0.0),
                    info=_read_info(dst), why=self.problems[dst] or "",
                )
                for src, dst in self.wanted
            ]
        except (OSError, ValueError) as e:
            raise CompileError(f"cannot read what the compiler wrote: {e}") from e
        return CompileReport(artifacts, self.warnings, self.hashed_bytes)

    def kill(self) -> None:
        """Stop the compiler now (a newer reload replaces this one, or the server stops) and
        remove what it left half-written."""
        if self.running:
            assert self.pid is not None
            os.kill(self.pid, signal.SIGKILL)
            self.exited(os.waitpid(self.pid, 0)[1])
        if self.pid is not None:
            for folder in self._cache_dirs:
                for tmp in folder.glob(f".tmp-{self.pid}-*"):
                    tmp.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        """Close this process's copies of the compiler's output (also in a forked worker)."""
        for f in self._out:
            f.close()


_FAILED = "failed"  # the compiler's stdout line for a module it could not compile: 'failed SRC\tWHY'


def _compile_all(pairs: list[tuple[Path, Path]]) -> int:
    """Body of the compiler process: prints 'SECONDS DST' per artifact and 'failed SRC\tWHY'
    per module that could not be compiled."""
    engine = wasmtime.Engine(engine_config(parallel_compilation=True))
    failed = False
    for src, dst in pairs:
        start = time.perf_counter()
        try:
            data, info = _compile(engine, src.read_bytes(), binary_only=src.suffix.lower() == ".wasm")
            _write_atomically(dst, data)
            _write_atomically(info_path(dst), info.to_json())
            # Last: a checksum file says the artifact and its description are complete.
            _write_atomically(checksum_path(dst), hashlib.sha256(data).hexdigest().encode())
        except (wasmtime.WasmtimeError, OSError, ValueError) as e:
            print(f"{_FAILED} {src}\t{_one_line(e)}", flush=True)
            failed = True
            continue
        print(f"{time.perf_counter() - start:.3f} {dst}", flush=True)
    return 1 if failed else 0


# The preamble after b"\0asm": a core module's version, a component's version and layer.
_CORE_MODULE = b"\x01\x00\x00\x00"
_COMPONENT = b"\x0d\x00\x01\x00"


def _compile(engine: wasmtime.Engine, source: bytes, binary_only: bool = False) -> tuple[bytearray, ModuleInfo]:
    """Compile a core module or a component (binary, or text unless `binary_only`: a .wasm file;
    the kind is read from the binary's preamble) and describe it."""
    if binary_only and not source.startswith(b"\0asm"):
        raise ValueError(
            f"not a WebAssembly binary (a .wasm file starts with \\0asm, this one with {source[:4]!r}); "
            "WebAssembly text goes in a .wat file"
        )
    wasm = source if source.startswith(b"\0asm") else bytes(wasmtime.wat2wasm(source.decode("utf-8", "replace")))
    preamble = bytes(wasm[4:8])
    if preamble == _COMPONENT:
        return _compile_component(engine, wasm)
    if preamble != _CORE_MODULE:
        raise ValueError(f"not a WebAssembly module or component (preamble {preamble.hex(' ')})")
    module = wasmtime.Module(engine, wasm)
    functions = frozenset(e.name for e in module.exports if isinstance(e.type, wasmtime.FuncType))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    try:
        linker.instantiate_pre(module)  # resolves the imports; runs nothing
        unlinkable = ""
    except wasmtime.WasmtimeError as e:
        unlinkable = _missing_import(e)
    return module.serialize(), ModuleInfo(False, functions, "_start", unlinkable, *pool_needs(wasm))


_WASM_PAGE = 65536


def pool_needs(wasm: bytes) -> tuple[int, int, int, int]:
    """What a core module's binary defines that the instance pool must hold: (memories, tables,
    largest initial memory in bytes, largest initial table in elements), read from its table
    and memory sections. All -1 when the binary has a shape this reader does not know (a
    table with an initialiser, say): then the worker's load is the check."""
    counts = [0, 0]
    largest = [0, 0]
    try:
        pos = 8
        while pos < len(wasm):
            section = wasm[pos]
            size, pos = _leb(wasm, pos + 1)
            end = pos + size
            if section in (4, 5):
                count, at = _leb(wasm, pos)
                for _ in range(count):
                    if section == 4:
                        at = _skip_reftype(wasm, at)
                    minimum, at = _limits(wasm, at, section == 5)
                    kind = section - 4
                    counts[kind] += 1
                    largest[kind] = max(largest[kind], minimum)
                if at != end:
                    raise ValueError("section size")
            pos = end
    except (IndexError, ValueError):
        return -1, -1, -1, -1
    return counts[1], counts[0], largest[1], largest[0]


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 number and the position after it."""
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("LEB128 too long")


def _skip_reftype(data: bytes, pos: int) -> int:
    """Past a table's reference type: one byte, or (typed references) 0x63/0x64 and a heap type."""
    if data[pos] == 0x40:
        raise ValueError("a table with an initialiser")
    if data[pos] in (0x63, 0x64):
        return _leb(data, pos + 1)[1]  # a heap type: an s33, as long as an unsigned LEB128
    return pos + 1


def _limits(data: bytes, pos: int, memory: bool) -> tuple[int, int]:
    """A table's or memory's initial size (a memory's in bytes) and the position after its limits."""
    flags = data[pos]
    minimum, pos = _leb(data, pos + 1)
    if flags & 0x01:
        _, pos = _leb(data, pos)  # the maximum
    page = _WASM_PAGE
    if memory and flags & 0x08:  # custom page sizes: log2 of the page size follows
        log2, pos = _leb(data, pos)
        page = 1 << log2
    return (minimum * page if memory else minimum), pos


def _compile_component(engine: wasmtime.Engine, wasm: bytes) -> tuple[bytearray, ModuleInfo]:
    """A component's callable exports (no parameters), its wasi:cli/run, and whether the
    worker's linker (WASI 0.2) satisfies its imports: found by a trial instantiation in a store
    without an epoch deadline, so that no guest code can run (the first function entered traps)."""
    comp = component.Component(engine, wasm)
    functions: set[str] = set()
    for name, item in comp.type.exports(engine).items():
        kind = item.ty
        if isinstance(kind, component.FuncType) and not kind.params:
            functions.add(name)
        elif isinstance(kind, component.ComponentInstanceType):
            functions.update(
                f"{name}#{func}" for func, sub in kind.exports(engine).items()
                if isinstance(sub.ty, component.FuncType) and not sub.ty.params
            )
    run = sorted(f for f in functions if f.startswith("wasi:cli/run@0.2.") and f.endswith("#run"))
    linker = component.Linker(engine)
    linker.add_wasip2()
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    unlinkable = ""
    try:
        linker.instantiate(store, comp)
    except wasmtime.WasmtimeError as e:
        if trap_reason(str(e)) is None:  # a trap means linking succeeded and guest code was reached
            unlinkable = _missing_import(e)
    finally:
        store.close()
    return comp.serialize(), ModuleInfo(True, frozenset(functions), run[-1] if run else "", unlinkable)


def _missing_import(error: Exception) -> str:
    """The import named by a link error (wasmtime quotes it in backticks), or the error."""
    found = re.search(r"`([^`]+)`", str(error))
    return found[1] if found else _one_line(error)


def _read_all(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def _write_atomically(dst: Path, data: bytes | bytearray) -> None:
    # The pid in the name lets the master remove what a compiler it killed left behind.
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".tmp-{os.getpid()}-")
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
    sys.exit(_compile_all(list(zip(args[0::2], args[1::2], strict=True))))
