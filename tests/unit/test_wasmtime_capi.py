"""The wasmtime adapter: every private name it uses is there in the installed wasmtime-py (an
upgrade that drops one fails here, not at a request), a missing one is reported with the
version and the fix, and no other module uses wasmtime-py's private API."""

from __future__ import annotations

import ctypes
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from prefork_wasm import wasmtime_capi
from prefork_wasm.wasmtime_capi import UnsupportedWasmtime

ROOT = Path(__file__).resolve().parents[2]
NEEDS = "prefork-wasm needs wasmtime-py 50.x (pip install 'wasmtime>=50,<51')"


@pytest.mark.parametrize("name", sorted(wasmtime_capi.C_FUNCTIONS))
def test_the_library_has_each_c_function_the_adapter_calls(name: str) -> None:
    assert callable(wasmtime_capi.c_function_with(name, None))  # a fresh binding from the library


@pytest.mark.parametrize("name", sorted(wasmtime_capi.C_TYPES))
def test_wasmtime_py_defines_each_c_type_the_adapter_uses(name: str) -> None:
    assert ctypes.sizeof(wasmtime_capi.c_type(name)) >= 0  # a ctypes type (an opaque one has size 0)


@pytest.mark.parametrize("name", sorted(wasmtime_capi.C_CONSTANTS))
def test_wasmtime_py_defines_each_c_constant_the_adapter_uses(name: str) -> None:
    assert isinstance(wasmtime_capi.c_constant(name), int)


@pytest.mark.parametrize(
    "owner, name",
    sorted(wasmtime_capi.PRIVATE_METHODS, key=lambda method: (method[0].__name__, method[1])),
    ids=lambda part: part.__name__ if isinstance(part, type) else part,
)
def test_wasmtime_py_has_each_private_method_the_adapter_calls(owner: type, name: str) -> None:
    assert callable(wasmtime_capi.private_method(owner, name))


def test_the_adapter_binds_what_the_worker_needs() -> None:
    """The calls that are the reason for the adapter are among what is checked above."""
    assert {
        "wasmtime_pooling_allocation_strategy_set", "wasi_config_set_stdin_bytes", "wasi_config_set_argv",
        "wasi_config_set_env", "wasmtime_instance_pre_instantiate", "wasmtime_instance_export_get",
        "wasmtime_func_call",
    } <= wasmtime_capi.C_FUNCTIONS
    assert (wasmtime.Store, "_context") in wasmtime_capi.PRIVATE_METHODS


@pytest.mark.parametrize(
    "bind, missing",
    [
        (lambda: wasmtime_capi.c_function("wasmtime_no_such_function"), "wasmtime_no_such_function"),
        (lambda: wasmtime_capi.c_function_with("wasmtime_no_such_symbol", None), "wasmtime_no_such_symbol"),
        (lambda: wasmtime_capi.c_type("wasmtime_no_such_t"), "wasmtime_no_such_t"),
        (lambda: wasmtime_capi.c_constant("WASMTIME_NO_SUCH_KIND"), "WASMTIME_NO_SUCH_KIND"),
        (lambda: wasmtime_capi.private_method(wasmtime.Store, "_no_such_method"), "Store._no_such_method"),
    ],
    ids=["c function", "own binding", "c type", "c constant", "private method"],
)
def test_a_missing_name_is_reported_with_the_installed_version_and_the_fix(
    bind: Callable[[], Any], missing: str
) -> None:
    with pytest.raises(UnsupportedWasmtime) as raised:
        bind()
    assert str(raised.value) == f"wasmtime {version('wasmtime')} lacks {missing}: {NEEDS}"


_UPGRADED = """
import importlib.metadata
real = importlib.metadata.version
importlib.metadata.version = lambda name: "51.0.0" if name == "wasmtime" else real(name)
from wasmtime import _ffi
del _ffi.wasmtime_pooling_allocation_strategy_set
import prefork_wasm.engine
"""


def test_a_wasmtime_without_a_bound_function_fails_at_import_not_at_a_request() -> None:
    """The master imports the engine settings at start: that is where an unsupported wasmtime-py
    is refused, with the message as the traceback's last line."""
    done = subprocess.run([sys.executable, "-c", _UPGRADED], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "prefork_wasm.wasmtime_capi.UnsupportedWasmtime: "
        f"wasmtime 51.0.0 lacks wasmtime_pooling_allocation_strategy_set: {NEEDS}"
    )


def test_the_supported_series_is_the_one_pyproject_requires() -> None:
    major = wasmtime_capi.SUPPORTED_MAJOR
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"wasmtime>={major},<{major + 1}" in dependencies


# wasmtime-py's private surface as it appears in source: its private modules, a store's context,
# the pointer constructors, and `.ptr()` handed to C functions.
_PRIVATE = re.compile(r"wasmtime\._|\b_ffi\b|\b_bindings\b|\._context\(|\._from_ptr\b|\.ptr\(\)")


def test_no_module_but_the_adapter_uses_wasmtime_py_s_private_api() -> None:
    users = {
        path.name for path in (ROOT / "prefork_wasm").glob("*.py") if _PRIVATE.search(path.read_text())
    }
    assert users == {"wasmtime_capi.py"}
