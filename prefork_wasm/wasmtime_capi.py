"""Every use of wasmtime-py's private API: the C API functions it binds but does not expose.

wasmtime-py 50 binds the whole C API in `wasmtime._ffi` but its classes leave out what a
worker needs for speed: the pooling allocator, stdin from bytes, argv and environment in one
pass, and instantiating and calling a core module without building Python objects per request.
This module binds each of those once, at import, and offers them as small typed functions
over wasmtime-py's public objects; nothing else in prefork-wasm touches `_ffi`, a `.ptr()` or
a private method.

A wasmtime-py that lacks one of them fails at import (the master's start), naming the version
and the fix, not at a request. The run side of components needs no private call yet; when one
does (a wasi:http host's component-linker resources), it goes here, in a section of its own.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib.metadata import version
from typing import Any

import wasmtime

# The wasmtime-py release series whose private API this module is written against; pyproject's
# dependency says the same.
SUPPORTED_MAJOR = 50


class UnsupportedWasmtime(ImportError):
    """The installed wasmtime-py lacks a private name this module binds."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"wasmtime {version('wasmtime')} lacks {name}: prefork-wasm needs wasmtime-py "
            f"{SUPPORTED_MAJOR}.x (pip install 'wasmtime>={SUPPORTED_MAJOR},<{SUPPORTED_MAJOR + 1}')"
        )


try:
    from wasmtime import _ffi
except ImportError:
    raise UnsupportedWasmtime("wasmtime._ffi") from None

# Looking names up: each once, at import, through the four functions below. They record what
# they found, by the name a wasmtime-py upgrade could drop, so that the tests bind each again.
C_FUNCTIONS: set[str] = set()
C_TYPES: set[str] = set()
PRIVATE_METHODS: set[tuple[type, str]] = set()


def c_function(name: str) -> Callable[..., Any]:
    """wasmtime-py's binding of the C API function `name`."""
    try:
        function: Callable[..., Any] = getattr(_ffi, name)
    except AttributeError:
        raise UnsupportedWasmtime(name) from None
    C_FUNCTIONS.add(name)
    return function


def c_type(name: str) -> Any:
    """wasmtime-py's ctypes definition of the C API type `name` (its layout follows the version)."""
    try:
        kind = getattr(_ffi, name)
    except AttributeError:
        raise UnsupportedWasmtime(name) from None
    C_TYPES.add(name)
    return kind


def private_method(owner: type, name: str) -> Callable[..., Any]:
    """A method of a wasmtime-py class that its public API does not document, as a function
    (`owner.name`, unbound; a classmethod comes bound to `owner`)."""
    try:
        method: Callable[..., Any] = getattr(owner, name)
    except AttributeError:
        raise UnsupportedWasmtime(f"{owner.__name__}.{name}") from None
    PRIVATE_METHODS.add((owner, name))
    return method


def c_function_with(name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
    """A second binding of the C API function `name`, with argument types of this module's
    choosing (wasmtime-py's own binding stays as it is)."""
    try:
        function = _ffi.dll[name]  # indexing makes a new function object; attribute access would share
    except AttributeError:
        raise UnsupportedWasmtime(name) from None
    function.argtypes = argtypes
    function.restype = restype
    C_FUNCTIONS.add(name)
    return function


_config_ptr = private_method(wasmtime.Config, "ptr")
_wasi_ptr = private_method(wasmtime.WasiConfig, "ptr")
_instance_pre_ptr = private_method(wasmtime.InstancePre, "ptr")
_store_context = private_method(wasmtime.Store, "_context")
_error_from_ptr = private_method(wasmtime.WasmtimeError, "_from_ptr")
_trap_from_ptr = private_method(wasmtime.Trap, "_from_ptr")


# Engine configuration.


@dataclass(frozen=True)
class PoolingLimits:
    """The pooling allocator's limits prefork-wasm sets: each field is the C API's
    `wasmtime_pooling_allocation_config_<field>_set`; the others keep wasmtime's defaults."""

    total_core_instances: int
    total_memories: int
    total_tables: int
    total_stacks: int
    total_component_instances: int
    total_gc_heaps: int
    max_memories_per_module: int
    max_tables_per_module: int
    max_memory_size: int
    table_elements: int
    max_core_instance_size: int
    table_keep_resident: int


_POOLING_SETTERS = tuple(
    (f.name, c_function(f"wasmtime_pooling_allocation_config_{f.name}_set")) for f in fields(PoolingLimits)
)
_pooling_config_new = c_function("wasmtime_pooling_allocation_config_new")
_pooling_config_delete = c_function("wasmtime_pooling_allocation_config_delete")
_pooling_strategy_set = c_function("wasmtime_pooling_allocation_strategy_set")


def set_pooling_allocation(config: wasmtime.Config, limits: PoolingLimits) -> None:
    """Give the engine made from `config` the pooling allocator (wasmtime-py's Config has no
    setter for it): an instantiation takes a ready slot instead of mapping memory."""
    pool = _pooling_config_new()
    try:
        for name, setter in _POOLING_SETTERS:
            setter(pool, getattr(limits, name))
        _pooling_strategy_set(_config_ptr(config), pool)  # copies the limits
    finally:
        _pooling_config_delete(pool)


# WASI configuration, per request.


_STRINGS = ctypes.POINTER(ctypes.c_char_p)
# Own bindings taking `char **`, so that a c_char_p array passes without a cast per array.
_wasi_set_argv = c_function_with("wasi_config_set_argv", ctypes.c_bool, ctypes.c_void_p, ctypes.c_size_t, _STRINGS)
_wasi_set_env = c_function_with(
    "wasi_config_set_env", ctypes.c_bool, ctypes.c_void_p, ctypes.c_size_t, _STRINGS, _STRINGS
)
_ByteVec = c_type("wasm_byte_vec_t")
_BYTE_P = ctypes.POINTER(c_type("wasm_byte_t"))
_byte_vec_new = c_function("wasm_byte_vec_new")
_wasi_set_stdin_bytes = c_function("wasi_config_set_stdin_bytes")


def set_argv_env(wasi: wasmtime.WasiConfig, argv: list[str], env: dict[str, str]) -> None:
    """argv and environment in one pass of encoding (WasiConfig's setters build each string
    array element by element, several times slower for a CGI environment). The argv and the
    environment's names repeat from request to request: their arrays are made once (wasmtime
    copies the strings)."""
    args = _strings(tuple(argv))
    names = _strings(tuple(env))
    values = [v.encode() for v in env.values()]
    ptr = _wasi_ptr(wasi)
    if not _wasi_set_argv(ptr, len(args), args) or not _wasi_set_env(
        ptr, len(names), names, (ctypes.c_char_p * len(values))(*values)
    ):
        raise wasmtime.WasmtimeError("failed to configure argv or environment")


@functools.lru_cache(maxsize=256)  # a few per Location and set of request headers
def _strings(strings: tuple[str, ...]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * len(strings))(*[s.encode() for s in strings])


def set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """Give the guest `data` as stdin: cheaper than `stdin_file`, which sets up a file-backed
    stream per request."""
    vec = _ByteVec()
    _byte_vec_new(ctypes.byref(vec), len(data), ctypes.cast(ctypes.c_char_p(data), _BYTE_P))
    _wasi_set_stdin_bytes(_wasi_ptr(wasi), ctypes.byref(vec))  # takes ownership of vec


# Core modules: instantiate and call, per request.


_Instance = c_type("wasmtime_instance_t")
_Extern = c_type("wasmtime_extern_t")
_Val = c_type("wasmtime_val_t")
_TRAP_P = ctypes.POINTER(c_type("wasm_trap_t"))
_instance_pre_instantiate = c_function("wasmtime_instance_pre_instantiate")
_instance_export_get = c_function("wasmtime_instance_export_get")
_func_call = c_function("wasmtime_func_call")


def instantiate(store: wasmtime.Store, pre: wasmtime.InstancePre) -> Any:
    """`InstancePre.instantiate` without its context manager (there to pass on exceptions of
    Python host functions, which a WASI module has none of) and the Instance object. Returns
    the C API's instance handle for `call_export`; raises WasmtimeError or Trap as it does."""
    instance = _Instance()
    trap = _TRAP_P()
    error = _instance_pre_instantiate(
        _instance_pre_ptr(pre), _store_context(store), ctypes.byref(instance), ctypes.byref(trap)
    )
    if error:
        raise _error_from_ptr(error)
    if trap:
        raise _trap_from_ptr(trap)
    return instance


def call_export(store: wasmtime.Store, instance: Any, name: bytes, results: int) -> None:
    """Call the parameterless export `name` of `instance` (from `instantiate`), whose type the
    caller checked, without `Instance.exports` (a dict of every export) and `Func.__call__`'s
    type checks; its `results` values are dropped. Raises what `Func.__call__` raises
    (WasmtimeError, ExitTrap, Trap)."""
    context = _store_context(store)
    item = _Extern()
    if not _instance_export_get(context, ctypes.byref(instance), name, len(name), ctypes.byref(item)):
        raise wasmtime.WasmtimeError(f"no export named '{name.decode()}'")
    values = (_Val * results)()
    trap = _TRAP_P()
    error = _func_call(context, ctypes.byref(item.of.func), None, 0, values, results, ctypes.byref(trap))
    if error:
        raise _error_from_ptr(error)
    if trap:
        raise _trap_from_ptr(trap)
