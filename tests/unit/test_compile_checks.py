"""The compile side: remembered digests, a module's kind and description, and entry points and
imports checked against them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import wasmtime

from harness import MODULES
from prefork_wasm.compiler import CompileError, Digests, ModuleInfo, _compile, pool_needs
from prefork_wasm.conffile import parse_config
from prefork_wasm.config import ServerConfig
from prefork_wasm.engine import engine_config
from prefork_wasm.generation import compile_failures, entry_point_problems, pool_problems


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_is_hashed_once_until_it_changes(tmp_path: Path) -> None:
    module = tmp_path / "app.wasm"
    module.write_bytes(b"abc")
    digests = Digests()
    assert digests.sha256(module) == sha256(b"abc") and digests.hashed_bytes == 3
    assert digests.sha256(module) == sha256(b"abc") and digests.hashed_bytes == 3  # a stat
    assert digests.sha256(module, b"salt:") == sha256(b"salt:abc")  # another key
    assert digests.hashed_bytes == 6

    module.write_bytes(b"abd")  # same size, same inode: the times tell
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert digests.sha256(module) == sha256(b"abd")

    replacement = tmp_path / "new.wasm"
    replacement.write_bytes(b"xyz")
    os.utime(replacement, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns))
    os.replace(replacement, module)  # same size and mtime, another inode
    assert digests.sha256(module) == sha256(b"xyz")
    assert digests.hashed_bytes == 12


def test_a_learned_digest_is_trusted_until_the_file_changes(tmp_path: Path) -> None:
    artifact = tmp_path / "app.cwasm"
    artifact.write_bytes(b"compiled")
    digests = Digests()
    digests.learn(artifact, "from the compiler")
    assert digests.sha256(artifact) == "from the compiler" and digests.hashed_bytes == 0
    artifact.write_bytes(b"damaged!!")
    assert digests.sha256(artifact) == sha256(b"damaged!!")


def test_entry_points_are_checked_against_exports_once_per_line(tmp_path: Path) -> None:
    (tmp_path / "app.wasm").write_bytes(b"\0asm")
    (tmp_path / "other.wasm").write_bytes(b"\0asm")
    conf = tmp_path / "server.conf"
    conf.write_text(
        "Listen 8080\n"
        "WasmEntryPoint run\n"
        "<Location /a>\nSetHandler wasm-handler\nWasmModule app.wasm\n</Location>\n"
        "<Location /b>\nSetHandler wasm-handler\nWasmModule app.wasm\n</Location>\n"
        "<Location /c>\nSetHandler wasm-handler\nWasmModule other.wasm\nWasmEntryPoint _start\n</Location>\n"
        "<Location /d>\nSetHandler wasm-handler\nWasmModule other.wasm\n</Location>\n"
    )
    config = parse_config(conf)
    app, other = tmp_path / "app.wasm", tmp_path / "other.wasm"
    assert entry_point_problems(config, {app: core("run"), other: core("_start", "run")}) == []
    assert entry_point_problems(config, {app: core("_start"), other: core("_start", "run")}) == [
        f"{conf}:2: WasmEntryPoint: {app} exports no function 'run' (its functions: _start)"
    ]
    many = core(*(f"f{n:02}" for n in range(12)))
    listing = "(its functions: f00, f01, f02, f03, f04, f05, f06, f07, f08, f09, ...)"
    assert entry_point_problems(config, {app: core("run"), other: many}) == [
        f"{conf}:14: WasmEntryPoint: {other} exports no function '_start' {listing}",
        f"{conf}:2: WasmEntryPoint: {other} exports no function 'run' {listing}",
    ]


def core(*functions: str) -> ModuleInfo:
    return ModuleInfo(False, frozenset(functions), "_start")


RUN = "wasi:cli/run@0.2.0#run"


def app_config(tmp_path: Path, body: str) -> tuple[Path, ServerConfig]:
    """A config serving app.wasm (its bytes do not matter here) as `body` says."""
    (tmp_path / "app.wasm").write_bytes(b"\0asm")
    conf = tmp_path / "server.conf"
    conf.write_text("Listen 8080\n" + body)
    return conf, parse_config(conf)


def test_a_component_runs_its_wasi_cli_run_unless_told_otherwise(tmp_path: Path) -> None:
    conf, config = app_config(
        tmp_path,
        "<Location /a>\nSetHandler wasm-handler\nWasmModule app.wasm\n</Location>\n"
        "<Location /b>\nSetHandler wasm-handler\nWasmModule app.wasm\nWasmEntryPoint _start\n</Location>\n"
        "<Location /c>\nSetHandler wasm-handler\nWasmModule app.wasm\n"
        "WasmEntryPoint my:app/jobs#nightly\n</Location>\n",
    )
    app = tmp_path / "app.wasm"
    info = ModuleInfo(True, frozenset({RUN, "my:app/jobs#nightly"}), RUN)
    assert [info.entry_point(loc) for loc in config.locations] == [RUN, "_start", "my:app/jobs#nightly"]
    listing = f"(its functions: my:app/jobs#nightly, {RUN})"
    assert entry_point_problems(config, {app: info}) == [
        f"{conf}:9: WasmEntryPoint: {app} exports no function '_start' {listing}"
    ]
    no_run = ModuleInfo(True, frozenset({"my:app/jobs#nightly"}), "")
    assert entry_point_problems(config, {app: no_run})[0] == (
        f"{conf}:4: WasmModule: {app} exports no wasi:cli/run@0.2 'run' (its functions: my:app/jobs#nightly); "
        "name the one to call with WasmEntryPoint"
    )


def test_an_import_the_server_does_not_provide_is_named_once_at_its_module_line(tmp_path: Path) -> None:
    conf, config = app_config(
        tmp_path,
        "WasmModule app.wasm\n"
        "<Location /a>\nSetHandler wasm-handler\n</Location>\n"
        "<Location /b>\nSetHandler wasm-handler\n</Location>\n",
    )
    info = ModuleInfo(True, frozenset({RUN}), RUN, unlinkable="wasi:http/outgoing-handler@0.2.0")
    [problem] = entry_point_problems(config, {tmp_path / "app.wasm": info})
    assert problem.startswith(
        f"{conf}:2: WasmModule: {tmp_path / 'app.wasm'} imports wasi:http/outgoing-handler@0.2.0, "
        "which prefork-wasm does not provide (it serves WASI preview 1 modules and wasi:cli/command components"
    )
    assert problem.endswith("build the module without it")


def test_the_kind_is_read_from_the_binary_whatever_the_text_looks_like() -> None:
    engine = wasmtime.Engine(engine_config(parallel_compilation=False))
    _, core_info = _compile(engine, b';; (component\n(module (func (export "_start")))')
    assert core_info == ModuleInfo(False, frozenset({"_start"}), "_start")
    _, info = _compile(engine, (MODULES / "outcomes_component.wat").read_bytes())
    assert info.component and info.default_entry == RUN and not info.unlinkable
    assert info.functions == {RUN, "test:outcomes/all#err", "test:outcomes/all#trap", "test:outcomes/all#spin"}
    with pytest.raises(ValueError, match=r"not a WebAssembly module or component \(preamble 02 00 00 00\)"):
        _compile(engine, b"\0asm\x02\0\0\0")


def test_a_wasm_file_is_parsed_as_a_binary_only() -> None:
    """Random bytes in a .wasm file are 'not a WebAssembly binary', not WebAssembly text with an
    'unexpected character'; a .wat file is text."""
    engine = wasmtime.Engine(engine_config(parallel_compilation=False))
    with pytest.raises(ValueError, match=r"not a WebAssembly binary \(a \.wasm file starts with \\0asm"):
        _compile(engine, b"\x8b\x1f random bytes", binary_only=True)
    with pytest.raises(ValueError, match="WebAssembly text goes in a .wat file"):
        _compile(engine, b"(module)", binary_only=True)
    assert _compile(engine, b"(module)")[1] == ModuleInfo(False, frozenset(), "_start")


@pytest.mark.parametrize(
    "wat, needs",
    [
        ("(module)", (0, 0, 0, 0)),
        ("(module (memory 3) (table 7 funcref))", (1, 1, 3 * 65536, 7)),
        ("(module (memory 1 5) (table 2 9 externref))", (1, 1, 65536, 2)),
        ('(module (import "env" "m" (memory 9)) (memory 2))', (1, 0, 2 * 65536, 0)),  # imported: not the pool's
        ("(module (memory 1) (memory 4))", (2, 0, 4 * 65536, 0)),
        ("(module (memory i64 2))", (1, 0, 2 * 65536, 0)),
    ],
)
def test_what_a_module_asks_of_the_instance_pool_is_read_from_its_binary(
    wat: str, needs: tuple[int, int, int, int]
) -> None:
    assert pool_needs(bytes(wasmtime.wat2wasm(wat))) == needs


def test_a_module_that_does_not_fit_the_instance_pool_is_refused_at_its_module_line(tmp_path: Path) -> None:
    """A worker would refuse to load it (and the master then stop): -t, the start and a restart
    refuse it first, with the fix."""
    conf, config = app_config(
        tmp_path, "<Location /a>\nSetHandler wasm-handler\nWasmModule app.wasm\nWasmMemoryLimit 1M\n</Location>\n"
    )
    app = tmp_path / "app.wasm"
    fits = ModuleInfo(False, frozenset({"_start"}), "_start", "", 1, 1, 1 << 20, 5)
    assert pool_problems(config, {app: fits}) == []
    too_large = ModuleInfo(False, frozenset({"_start"}), "_start", "", 1, 1, 16842752, 5)
    [problem] = pool_problems(config, {app: too_large})
    assert problem.startswith(f"{conf}:4: WasmModule: {app} does not fit the workers' instance pool (one instance")
    assert problem.endswith(
        "its memory starts at 16.0625 MiB, above the pool's memory slot of 1 MiB (the largest WasmMemoryLimit); "
        "give WasmMemoryLimit 17M or more where it runs"
    )
    two = ModuleInfo(False, frozenset({"_start"}), "_start", "", 2, 1, 65536, 5)
    assert "it defines 2 memories and 1 tables, the pool holds one of each" in pool_problems(config, {app: two})[0]
    unknown = ModuleInfo(False, frozenset({"_start"}), "_start", "", -1, -1, -1, -1)
    assert pool_problems(config, {app: unknown}) == []  # the worker's load is the check


def test_a_module_that_does_not_compile_is_said_at_its_module_lines(tmp_path: Path) -> None:
    conf, config = app_config(
        tmp_path,
        "<Location /a>\nSetHandler wasm-handler\nWasmModule app.wasm\n</Location>\n"
        "<Location /b>\nSetHandler wasm-handler\nWasmModule app.wasm\n</Location>\n",
    )
    app = tmp_path / "app.wasm"
    error = CompileError(f"{app}: cannot compile: bad", {app: "bad"})
    assert compile_failures(config, error).splitlines() == [
        f"{conf}:4: WasmModule: {app}: cannot compile: bad",
        f"{conf}:8: WasmModule: {app}: cannot compile: bad",
    ]
