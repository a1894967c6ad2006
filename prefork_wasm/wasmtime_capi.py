"""Every use of wasmtime-py's private API: the C API functions it binds but does not expose.

wasmtime-py 50 binds the whole C API in `wasmtime._ffi` but its classes leave out what a
worker needs for speed: the pooling allocator, stdin from bytes, argv and environment in one
pass, and a request's WASI context, store, instance and call for a core module without
building Python objects per request. This module binds each of those once, at import, and
offers them as small typed functions and classes (`Wasi`, `CoreStore`) over wasmtime-py's
public objects; nothing else in prefork-wasm touches `_ffi`, a `.ptr()` or a private method.

A wasmtime-py that lacks one of them fails at import (the master's start), naming the version
and the fix, not at a request. The wasi:http host's component calls (C-level values, host
resources, one C callback for every host function) are the last section; component_host.py
builds its converters and linker on them.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib.metadata import version
from typing import Any

import wasmtime
from wasmtime import component

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
C_CONSTANTS: set[str] = set()
PRIVATE_METHODS: set[tuple[type, str]] = set()


def _bound(owner: object, name: str, registry: set[Any], key: object, shown: str) -> Any:
    """`owner.name`, noted in `registry` under `key` (what the tests bind and check), or
    UnsupportedWasmtime naming `shown` when this wasmtime-py has no such thing."""
    try:
        found = getattr(owner, name)
    except AttributeError:
        raise UnsupportedWasmtime(shown) from None
    registry.add(key)
    return found


def c_function(name: str) -> Callable[..., Any]:
    """wasmtime-py's binding of the C API function `name`."""
    function: Callable[..., Any] = _bound(_ffi, name, C_FUNCTIONS, name, name)
    return function


def c_type(name: str) -> Any:
    """wasmtime-py's ctypes definition of the C API type `name` (its layout follows the version)."""
    return _bound(_ffi, name, C_TYPES, name, name)


def c_constant(name: str) -> int:
    """The value of the C API's enumerator `name`, as wasmtime-py defines it."""
    return int(_bound(_ffi, name, C_CONSTANTS, name, name).value)


def private_method(owner: type, name: str) -> Callable[..., Any]:
    """A method of a wasmtime-py class that its public API does not document, as a function
    (`owner.name`, unbound; a classmethod comes bound to `owner`)."""
    method: Callable[..., Any] = _bound(owner, name, PRIVATE_METHODS, (owner, name), f"{owner.__name__}.{name}")
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
_engine_ptr = private_method(wasmtime.Engine, "ptr")
_store_ptr = private_method(wasmtime.Store, "ptr")
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
    max_core_instances_per_component: int
    max_memories_per_component: int
    max_tables_per_component: int
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


# A request's WASI context and a core module's store, instance and call: C calls only. wasmtime-py's
# WasiConfig, Store and InstancePre.instantiate make Python objects for each (a finalizer, a
# context wrapper, the Instance), which cost a hello request about as much as its guest's run.

_VOID = ctypes.c_void_p
_STRINGS = ctypes.POINTER(ctypes.c_char_p)
_ERROR_P = ctypes.POINTER(c_type("wasmtime_error_t"))  # what _error_from_ptr takes
_wasi_new = c_function_with("wasi_config_new", _VOID)
_wasi_delete = c_function_with("wasi_config_delete", None, _VOID)
# Taking `char **`, so that a c_char_p array passes without a cast per array.
_wasi_set_argv = c_function_with("wasi_config_set_argv", ctypes.c_bool, _VOID, ctypes.c_size_t, _STRINGS)
_wasi_set_env = c_function_with("wasi_config_set_env", ctypes.c_bool, _VOID, ctypes.c_size_t, _STRINGS, _STRINGS)
_ByteVec = c_type("wasm_byte_vec_t")
_BYTE_P = ctypes.POINTER(c_type("wasm_byte_t"))
_byte_vec_new = c_function("wasm_byte_vec_new")
_wasi_set_stdin_bytes = c_function_with("wasi_config_set_stdin_bytes", None, _VOID, _VOID)
_wasi_set_stdin_file = c_function_with("wasi_config_set_stdin_file", ctypes.c_bool, _VOID, ctypes.c_char_p)
_wasi_set_stdout_file = c_function_with("wasi_config_set_stdout_file", ctypes.c_bool, _VOID, ctypes.c_char_p)
_wasi_set_stderr_file = c_function_with("wasi_config_set_stderr_file", ctypes.c_bool, _VOID, ctypes.c_char_p)
_wasi_inherit_stdout = c_function_with("wasi_config_inherit_stdout", None, _VOID)
_wasi_inherit_stderr = c_function_with("wasi_config_inherit_stderr", None, _VOID)
_wasi_preopen_dir = c_function_with(
    "wasi_config_preopen_dir", ctypes.c_bool, _VOID, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool
)
_store_new = c_function_with("wasmtime_store_new", _VOID, _VOID, _VOID, _VOID)
_store_delete = c_function_with("wasmtime_store_delete", None, _VOID)
_store_context_of = c_function_with("wasmtime_store_context", _VOID, _VOID)
_store_limiter = c_function_with(
    "wasmtime_store_limiter", None, _VOID, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
    ctypes.c_int64,
)
_context_set_wasi = c_function_with("wasmtime_context_set_wasi", _ERROR_P, _VOID, _VOID)
_context_set_epoch_deadline = c_function_with("wasmtime_context_set_epoch_deadline", None, _VOID, ctypes.c_uint64)
_instance_pre_instantiate = c_function_with("wasmtime_instance_pre_instantiate", _ERROR_P, _VOID, _VOID, _VOID, _VOID)
_instance_export_get = c_function_with(
    "wasmtime_instance_export_get", ctypes.c_bool, _VOID, _VOID, ctypes.c_char_p, ctypes.c_size_t, _VOID
)
_func_call = c_function_with(
    "wasmtime_func_call", _ERROR_P, _VOID, _VOID, _VOID, ctypes.c_size_t, _VOID, ctypes.c_size_t, _VOID
)
_Instance = c_type("wasmtime_instance_t")
_Extern = c_type("wasmtime_extern_t")
_Val = c_type("wasmtime_val_t")
_TRAP_P = ctypes.POINTER(c_type("wasm_trap_t"))


class Wasi:
    """One request's WASI context while it is set up (the C API's wasi_config_t). A store takes
    it over (`CoreStore`, `component_store`); one that never reaches a store is `discard`ed."""

    __slots__ = ("_ptr",)

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        """argv and environment in one pass of encoding. The argv and the environment's names
        repeat from request to request: their arrays are made once (wasmtime copies the strings)."""
        self._ptr: int | None = _wasi_new()
        args = _strings(tuple(argv))
        names = _strings(tuple(env))
        values = [v.encode() for v in env.values()]
        if not _wasi_set_argv(self._ptr, len(args), args) or not _wasi_set_env(
            self._ptr, len(names), names, (ctypes.c_char_p * len(values))(*values)
        ):
            self.discard()
            raise wasmtime.WasmtimeError("failed to configure argv or environment")

    def stdin_bytes(self, data: bytes) -> None:
        """`data` as stdin: cheaper than `stdin_file`, which sets up a file-backed stream."""
        vec = _ByteVec()
        _byte_vec_new(ctypes.byref(vec), len(data), ctypes.cast(ctypes.c_char_p(data), _BYTE_P))
        _wasi_set_stdin_bytes(self._ptr, ctypes.byref(vec))  # takes ownership of vec

    def stdin_file(self, path: str) -> None:
        if not _wasi_set_stdin_file(self._ptr, path.encode()):
            raise wasmtime.WasmtimeError(f"failed to open {path} as stdin")

    def inherit_output(self) -> None:
        """stdout and stderr are the process's fds 1 and 2."""
        _wasi_inherit_stdout(self._ptr)
        _wasi_inherit_stderr(self._ptr)

    def output_files(self, stdout: str, stderr: str) -> None:
        """stdout and stderr written to these paths (wasmtime opens them, truncating)."""
        if not _wasi_set_stdout_file(self._ptr, stdout.encode()) or not _wasi_set_stderr_file(
            self._ptr, stderr.encode()
        ):
            raise wasmtime.WasmtimeError(f"failed to open {stdout} or {stderr} for output")

    def preopen_dir(self, host: str, guest: str, writable: bool) -> None:
        if not _wasi_preopen_dir(self._ptr, host.encode(), guest.encode(), writable):
            raise wasmtime.WasmtimeError("failed to add preopen dir")

    def discard(self) -> None:
        if self._ptr is not None:
            _wasi_delete(self._ptr)
            self._ptr = None

    def give_to(self, context: Any) -> None:
        """Make this the WASI context of the store whose context is `context` (which owns it now)."""
        ptr, self._ptr = self._ptr, None
        error = _context_set_wasi(context, ptr)
        if error:
            raise _error_from_ptr(error)


@functools.lru_cache(maxsize=256)  # a few per Location and set of request headers
def _strings(strings: tuple[str, ...]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * len(strings))(*[s.encode() for s in strings])


def _prepare(context: Any, store: Any, wasi: Wasi, memory_limit: int | None) -> None:
    """A new store's WASI context, memory limit and epoch deadline (1: the watcher advances the
    epoch only to stop the guest)."""
    wasi.give_to(context)
    if memory_limit is not None:
        _store_limiter(store, memory_limit, -1, -1, -1, -1)
    _context_set_epoch_deadline(context, 1)


class CoreStore:
    """A core module's store for one request: instantiated from an InstancePre, one export
    called, closed. Raises what wasmtime-py's would (WasmtimeError, ExitTrap, Trap)."""

    __slots__ = ("_context", "_store")

    def __init__(self, engine: wasmtime.Engine, wasi: Wasi, memory_limit: int | None) -> None:
        self._store: int | None = _store_new(_engine_ptr(engine), None, None)
        self._context = _store_context_of(self._store)
        try:
            _prepare(self._context, self._store, wasi, memory_limit)
        except BaseException:
            self.close()
            raise

    def instantiate(self, pre: wasmtime.InstancePre) -> Any:
        """The C API's instance handle, for `call`."""
        instance = _Instance()
        trap = _TRAP_P()
        error = _instance_pre_instantiate(
            _instance_pre_ptr(pre), self._context, ctypes.byref(instance), ctypes.byref(trap)
        )
        if error:
            raise _error_from_ptr(error)
        if trap:
            raise _trap_from_ptr(trap)
        return instance

    def call(self, instance: Any, name: bytes, results: int) -> None:
        """Call the parameterless export `name`, whose type the caller checked, without
        `Instance.exports` (a dict of every export) and `Func.__call__`'s type checks; its
        `results` values are dropped."""
        item = _Extern()
        if not _instance_export_get(self._context, ctypes.byref(instance), name, len(name), ctypes.byref(item)):
            raise wasmtime.WasmtimeError(f"no export named '{name.decode()}'")
        values = (_Val * results)() if results else None
        trap = _TRAP_P()
        error = _func_call(self._context, ctypes.byref(item.of.func), None, 0, values, results, ctypes.byref(trap))
        if error:
            raise _error_from_ptr(error)
        if trap:
            raise _trap_from_ptr(trap)

    def close(self) -> None:
        if self._store is not None:
            _store_delete(self._store)
            self._store = None


def component_store(engine: wasmtime.Engine, wasi: Wasi, memory_limit: int | None) -> wasmtime.Store:
    """A wasmtime-py Store (what the component API takes) with `wasi` and the limits set."""
    store = wasmtime.Store(engine)
    try:
        _prepare(_store_context(store), _store_ptr(store), wasi, memory_limit)
    except BaseException:
        store.close()
        raise
    return store


# Components: values, host resources and host functions (the wasi:http host, component_host.py).
# wasmtime-py's LinkerInstance.add_func re-reads a function's types and builds Python objects for
# every value on each call; the host instead reads and writes the C API's value structures and
# defines each host function as one C callback.


ComponentVal: Any = c_type("wasmtime_component_val_t")
VAL_SIZE = ctypes.sizeof(ComponentVal)
VAL_KINDS = {name: c_constant(f"WASMTIME_COMPONENT_{name}") for name in (
    "BOOL", "S8", "U8", "S16", "U16", "S32", "U32", "S64", "U64", "F32", "F64", "CHAR", "STRING",
    "LIST", "RECORD", "TUPLE", "VARIANT", "ENUM", "OPTION", "RESULT", "FLAGS", "RESOURCE",
)}
# The C callback types a host function and a host resource's destructor are made as.
FuncCallback: Any = c_type("wasmtime_component_func_callback_t")
ResourceDestructor: Any = c_type("wasmtime_component_resource_destructor_t")

_PAYLOAD = ComponentVal.of.offset
_U8 = VAL_KINDS["U8"]
_LIST = VAL_KINDS["LIST"]
_ResourceHostP = ctypes.POINTER(c_type("wasmtime_component_resource_host_t"))
_ResourceAnyP = ctypes.POINTER(c_type("wasmtime_component_resource_any_t"))
_ValList = c_type("wasmtime_component_vallist_t")
_vallist_new = c_function("wasmtime_component_vallist_new")
_val_new = c_function("wasmtime_component_val_new")
_any_to_host = c_function("wasmtime_component_resource_any_to_host")
_host_rep = c_function("wasmtime_component_resource_host_rep")
_host_new = c_function("wasmtime_component_resource_host_new")
_host_to_any = c_function("wasmtime_component_resource_host_to_any")
_host_delete = c_function("wasmtime_component_resource_host_delete")
_error_new = c_function("wasmtime_error_new")
_add_resource = c_function("wasmtime_component_linker_instance_add_resource")
_add_func = c_function("wasmtime_component_linker_instance_add_func")
_component_func_call = c_function("wasmtime_component_func_call")
_component_post_return = c_function("wasmtime_component_func_post_return")
_linker_instance_ptr = private_method(component.LinkerInstance, "ptr")
_resource_type_ptr = private_method(component.ResourceType, "ptr")
# A run of u8 values as the C API lays them out, kinds already set: `bytes_to` writes the payload
# bytes into it with one strided copy, and the C API copies the run into a list of its own.
_U8_RUN_LENGTH = 1 << 16
_U8_RUN = bytearray(VAL_SIZE * _U8_RUN_LENGTH)
_U8_RUN[0::VAL_SIZE] = bytes([_U8]) * _U8_RUN_LENGTH
_U8_RUN_VALUES = ctypes.cast((ctypes.c_char * len(_U8_RUN)).from_buffer(_U8_RUN), ctypes.POINTER(ComponentVal))


def uninit(kind: str) -> Callable[[int], Any]:
    """The C API's constructor of a `kind` ('list', 'record', 'tuple', 'flags') of n elements
    left for the caller to fill: returns the new wasmtime_component_val<kind>_t."""
    struct = c_type(f"wasmtime_component_val{kind}_t")
    new = c_function(f"wasmtime_component_val{kind}_new_uninit")

    def make(n: int) -> Any:
        raw = struct()
        new(ctypes.byref(raw), n)
        return raw

    return make


def new_name(text: bytes) -> Any:
    """A wasm_name_t holding a copy of `text` (the C API frees it with the value it is in)."""
    vec = _ByteVec()
    _byte_vec_new(ctypes.byref(vec), len(text), ctypes.cast(ctypes.c_char_p(text), _BYTE_P))
    return vec


def boxed(raw: Any) -> Any:
    """`raw` moved to a value the C API allocates (a variant's, option's or result's payload)."""
    return _val_new(ctypes.byref(raw))


def bytes_from(val: Any, ctx: Any) -> bytes:
    """list<u8> -> bytes: the value array copied out, every VAL_SIZE-th byte kept (a C loop)."""
    n = val.of.list.size
    return ctypes.string_at(val.of.list.data, n * VAL_SIZE)[_PAYLOAD::VAL_SIZE] if n else b""


def bytes_to(data: Any, val: Any, ctx: Any) -> None:
    """bytes -> list<u8>: the payload bytes strided into a run whose kinds are set, which the
    C API copies into a list of its own (`vallist_new`: one pass, where `vallist_new_uninit`
    initialises every element before a memmove copies over them)."""
    n = len(data)
    raw = _ValList()
    if n <= _U8_RUN_LENGTH:
        run, values = _U8_RUN, _U8_RUN_VALUES
    else:
        run = bytearray(n * VAL_SIZE)
        run[0::VAL_SIZE] = bytes([_U8]) * n
        values = ctypes.cast((ctypes.c_char * len(run)).from_buffer(run), ctypes.POINTER(ComponentVal))
    if n:  # (an empty extended slice assigned counts as a deletion, which the exported run refuses)
        run[_PAYLOAD:_PAYLOAD + n * VAL_SIZE:VAL_SIZE] = data
    _vallist_new(ctypes.byref(raw), n, values)
    val.kind = _LIST
    val.of.list = raw


def resource_rep(ctx: Any, resource: Any) -> int:
    """The rep (the host's own index) of a host-defined resource handle the guest passed."""
    host = _ResourceHostP()
    error = _any_to_host(ctx, resource, ctypes.byref(host))
    if error:
        raise _error_from_ptr(error)
    try:
        return int(_host_rep(host))
    finally:
        _host_delete(host)


def host_resource(ctx: Any, owned: bool, rep: int, type_id: int) -> Any:
    """A handle of the host resource type `type_id` for the guest, its rep `rep`."""
    host = _host_new(owned, rep, type_id)
    resource = _ResourceAnyP()
    try:
        error = _host_to_any(ctx, host, ctypes.byref(resource))
    finally:
        _host_delete(host)
    if error:
        raise _error_from_ptr(error)
    return resource


def new_error(message: str) -> int:
    """A new wasmtime_error_t for a C callback to return: the guest's call then traps."""
    error = _error_new(message.encode("utf-8", "replace"))
    return ctypes.cast(error, ctypes.c_void_p).value or 0


def _keep(data: int | None) -> None:
    """The finalizer of a function's or resource's data: nothing to free (the data is an index
    into lists that live as long as the process)."""


_KEEP: Any = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_keep)


def linker_add_resource(
    instance: component.LinkerInstance, name: str, type_id: int, destructor: Any, data: int
) -> None:
    """Define the host resource type `type_id` as `name`; `destructor(data, ctx, rep)` runs when
    the guest drops a handle."""
    encoded = name.encode()
    kind = component.ResourceType.host(type_id)
    error = _add_resource(
        _linker_instance_ptr(instance), ctypes.create_string_buffer(encoded), len(encoded),
        _resource_type_ptr(kind), destructor, data, _KEEP,
    )
    if error:
        raise _error_from_ptr(error)


def linker_add_func(instance: component.LinkerInstance, name: str, callback: Any, data: int) -> None:
    """Define `name` as the C callback `callback`, called with `data` first."""
    encoded = name.encode()
    error = _add_func(
        _linker_instance_ptr(instance), ctypes.create_string_buffer(encoded), len(encoded), callback, data, _KEEP
    )
    if error:
        raise _error_from_ptr(error)


def store_context(store: wasmtime.Store) -> Any:
    """The store's context, which component values holding resources are made in."""
    return _store_context(store)


def call_component_func(store: wasmtime.Store, func: component.Func, params: Any, nparams: int) -> None:
    """Call `func` with `params` (an array of ComponentVal made in the store's context), expecting
    no results, then its post-return. Raises WasmtimeError (a trap, or a failed host call)."""
    context = _store_context(store)
    handle = ctypes.byref(func._func)  # noqa: SLF001 (wasmtime-py keeps the C handle there)
    error = _component_func_call(handle, context, params, nparams, None, 0)
    if error:
        raise _error_from_ptr(error)
    error = _component_post_return(handle, context)
    if error:
        raise _error_from_ptr(error)
