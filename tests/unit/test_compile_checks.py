"""The compile side's pure parts: remembered digests, and entry points checked against exports."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from prefork_wasm.arbiter import entry_point_problems
from prefork_wasm.compiler import Digests
from prefork_wasm.config import parse_config


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
    assert entry_point_problems(config, {app: frozenset({"run"}), other: frozenset({"_start", "run"})}) == []
    assert entry_point_problems(config, {app: frozenset({"_start"}), other: frozenset({"_start", "run"})}) == [
        f"{conf}:2: WasmEntryPoint: {app} exports no function 'run' (its functions: _start)"
    ]
    many = frozenset(f"f{n:02}" for n in range(12))
    listing = "(its functions: f00, f01, f02, f03, f04, f05, f06, f07, f08, f09, ...)"
    assert entry_point_problems(config, {app: frozenset({"run"}), other: many}) == [
        f"{conf}:14: WasmEntryPoint: {other} exports no function '_start' {listing}",
        f"{conf}:2: WasmEntryPoint: {other} exports no function 'run' {listing}",
    ]
