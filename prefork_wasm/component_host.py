"""Python host functions and resources for a component linker, at a cost a server can pay.

wasmtime-py's `LinkerInstance.add_func` re-reads a function's types on every call and converts
a `list<u8>` one 32-byte value at a time (measured: ~100 us per call, +53 ms for a 64 KiB body).
Here each imported function's converters are built once, from the component's own import
types, when its linker is built (once per component per worker), and a call goes through one
C callback that only converts values. Bytes cross as strided copies over the C API's value
array, never a Python loop per byte.

The C API calls themselves (values, host resources, the callback, the call) are
wasmtime_capi's, which holds every private wasmtime-py call; this module builds on them.

Values as the host functions see them:

| WIT | Python |
| --- | --- |
| bool, integers, float, char, string | bool, int, float, str, str |
| list<u8> / other lists | bytes / list |
| record, tuple | tuple, in field order |
| variant, enum | (case, payload) or case (payload-less) / case |
| option<T> | None or the value |
| result<T, E> | Ok(value) or Err(value); a host function may also return the ok value plainly or raise Err |
| flags | frozenset of names |
| own<R> / borrow<R> | the Python object in the call's `ResourceTable` (own: taken out of it) |
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime.component import (
    F32,
    F64,
    S8,
    S16,
    S32,
    S64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    BorrowType,
    Char,
    Component,
    ComponentInstanceType,
    EnumType,
    FlagsType,
    FuncType,
    ListType,
    OptionType,
    OwnType,
    RecordType,
    ResourceType,
    ResultType,
    String,
    TupleType,
    VariantType,
)
from wasmtime.component import Linker as ComponentLinker

from .wasmtime_capi import (
    VAL_KINDS,
    ComponentVal,
    FuncCallback,
    ResourceDestructor,
    boxed,
    bytes_from,
    bytes_to,
    call_component_func,
    host_resource,
    linker_add_func,
    linker_add_resource,
    new_error,
    new_name,
    resource_rep,
    store_context,
    uninit,
)

__all__ = [
    "Err",
    "HostCall",
    "Implementation",
    "Linked",
    "Ok",
    "ResourceTable",
    "call_with_resources",
    "ignores_arguments",
    "link_component",
]


class Err(Exception):
    """The err case of a WIT result: returned, or raised out of a host function whose result
    is a result."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        super().__init__(value)
        self.value = value


class Ok:
    """The ok case of a WIT result, where it must be told from a plain value (results nested
    in results or options)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Ok({self.value!r})"


class ResourceTable:
    """The host objects a guest holds handles to, for one request: a resource crosses the
    boundary as its index here."""

    __slots__ = ("items", "next")

    def __init__(self) -> None:
        self.items: dict[int, Any] = {}
        self.next = 1

    def push(self, item: Any) -> int:
        rep = self.next
        self.next += 1
        self.items[rep] = item
        return rep

    def clear(self) -> None:
        self.items.clear()
        self.next = 1


class HostCall:
    """The state one linker's host functions share: the table of the request in flight, and
    the exception that made the last host call fail (the guest then sees a trap)."""

    def __init__(self) -> None:
        self.table = ResourceTable()
        self.failure: BaseException | None = None


# ----------------------------------------------------------------------------- value conversion

_Val = Any  # a wasmtime_component_val_t (a ctypes structure)
_Ctx = Any  # a wasmtime_context_t pointer
Lift = Callable[[_Val, _Ctx], Any]
Lower = Callable[[Any, _Val, _Ctx], None]

_K = VAL_KINDS
_NUMBERS = {
    S8: ("S8", "s8"), U8: ("U8", "u8"), S16: ("S16", "s16"), U16: ("U16", "u16"),
    S32: ("S32", "s32"), U32: ("U32", "u32"), S64: ("S64", "s64"), U64: ("U64", "u64"),
    F32: ("F32", "f32"), F64: ("F64", "f64"),
}
_string_at = ctypes.string_at
_new_list, _new_record, _new_tuple, _new_flags = (uninit(kind) for kind in ("list", "record", "tuple", "flags"))


def _name(vec: Any) -> str:
    return _string_at(vec.data, vec.size).decode()


@dataclass
class _Resources:
    """The resource types this linker defines in Python, by the component's ResourceType, and
    the table of the current request."""

    types: list[tuple[ResourceType, int]]
    call: HostCall

    def id_of(self, kind: ResourceType) -> int | None:
        for known, type_id in self.types:
            if known == kind:
                return type_id
        return None


def _codec(ty: Any, res: _Resources) -> tuple[Lift, Lower]:
    """How a value of type `ty` is read from and written to the C API's value structure."""
    cls = type(ty)
    if cls is Bool:
        kind = _K["BOOL"]

        def set_bool(x: Any, v: _Val, c: _Ctx) -> None:
            v.kind = kind
            v.of.boolean = x
        return (lambda v, c: bool(v.of.boolean)), set_bool
    if cls in _NUMBERS:
        kind, field = _K[_NUMBERS[cls][0]], _NUMBERS[cls][1]

        def set_number(x: Any, v: _Val, c: _Ctx) -> None:
            v.kind = kind
            setattr(v.of, field, x)
        return (lambda v, c: getattr(v.of, field)), set_number
    if cls is Char:
        kind = _K["CHAR"]

        def set_char(x: Any, v: _Val, c: _Ctx) -> None:
            v.kind = kind
            v.of.character = ord(x)
        return (lambda v, c: chr(v.of.character)), set_char
    if cls is String:
        kind = _K["STRING"]

        def set_string(x: Any, v: _Val, c: _Ctx) -> None:
            v.kind = kind
            v.of.string = new_name(x.encode())
        return (lambda v, c: _name(v.of.string)), set_string
    if isinstance(ty, ListType):
        element = ty.element
        if isinstance(element, U8):
            return bytes_from, bytes_to
        return _list_codec(_codec(element, res))
    if isinstance(ty, (RecordType, TupleType)):
        fields = ty.fields if isinstance(ty, RecordType) else [("", e) for e in ty.elements]
        return _record_codec([(name, _codec(t, res)) for name, t in fields], isinstance(ty, RecordType))
    if isinstance(ty, VariantType):
        return _variant_codec([(name, None if t is None else _codec(t, res)) for name, t in ty.cases])
    if isinstance(ty, EnumType):
        return _enum_codec(ty.names)
    if isinstance(ty, OptionType):
        return _option_codec(_codec(ty.payload, res))
    if isinstance(ty, ResultType):
        return _result_codec(*(None if t is None else _codec(t, res) for t in (ty.ok, ty.err)))
    if isinstance(ty, FlagsType):
        return _flags_codec()
    if isinstance(ty, (OwnType, BorrowType)):
        return _resource_codec(res.id_of(ty.ty), isinstance(ty, OwnType), res.call)
    raise TypeError(f"no conversion for component values of type {cls.__name__}")


def _list_codec(element: tuple[Lift, Lower]) -> tuple[Lift, Lower]:
    lift, lower = element
    kind = _K["LIST"]

    def get(v: _Val, c: _Ctx) -> list[Any]:
        data, n = v.of.list.data, v.of.list.size
        return [lift(data[i], c) for i in range(n)]

    def put(x: Any, v: _Val, c: _Ctx) -> None:
        raw = _new_list(len(x))
        for i, item in enumerate(x):
            lower(item, raw.data[i], c)
        v.kind = kind
        v.of.list = raw
    return get, put


def _record_codec(fields: list[tuple[str, tuple[Lift, Lower]]], named: bool) -> tuple[Lift, Lower]:
    lifts = [codec[0] for _, codec in fields]
    if named:
        kind = _K["RECORD"]
        entries = [(name.encode(), codec[1]) for name, codec in fields]

        def get_record(v: _Val, c: _Ctx) -> tuple[Any, ...]:
            data = v.of.record.data
            return tuple(lift(data[i].val, c) for i, lift in enumerate(lifts))

        def put_record(x: Any, v: _Val, c: _Ctx) -> None:
            raw = _new_record(len(entries))
            for i, ((name, lower), item) in enumerate(zip(entries, x, strict=True)):
                entry = raw.data[i]
                entry.name = new_name(name)
                lower(item, entry.val, c)
            v.kind = kind
            v.of.record = raw
        return get_record, put_record
    kind = _K["TUPLE"]
    lowers = [codec[1] for _, codec in fields]

    def get_tuple(v: _Val, c: _Ctx) -> tuple[Any, ...]:
        data = v.of.tuple.data
        return tuple(lift(data[i], c) for i, lift in enumerate(lifts))

    def put_tuple(x: Any, v: _Val, c: _Ctx) -> None:
        raw = _new_tuple(len(lowers))
        for i, (lower, item) in enumerate(zip(lowers, x, strict=True)):
            lower(item, raw.data[i], c)
        v.kind = kind
        v.of.tuple = raw
    return get_tuple, put_tuple


def _boxed(lower: Lower, x: Any, c: _Ctx) -> Any:
    """A value allocated by the C API (a variant's, option's or result's payload)."""
    raw = ComponentVal()
    lower(x, raw, c)
    return boxed(raw)


def _variant_codec(cases: list[tuple[str, tuple[Lift, Lower] | None]]) -> tuple[Lift, Lower]:
    kind = _K["VARIANT"]
    by_name = {name: codec for name, codec in cases}

    def get(v: _Val, c: _Ctx) -> Any:
        name = _name(v.of.variant.discriminant)
        codec = by_name[name]
        return name if codec is None else (name, codec[0](v.of.variant.val.contents, c))

    def put(x: Any, v: _Val, c: _Ctx) -> None:
        name, payload = (x, None) if isinstance(x, str) else x
        codec = by_name[name]
        v.kind = kind
        v.of.variant.discriminant = new_name(name.encode())
        v.of.variant.val = None if codec is None else _boxed(codec[1], payload, c)
    return get, put


def _enum_codec(names: Iterable[str]) -> tuple[Lift, Lower]:
    kind = _K["ENUM"]
    known = frozenset(names)

    def put(x: Any, v: _Val, c: _Ctx) -> None:
        if x not in known:
            raise ValueError(f"{x!r} is not a case of this enum ({', '.join(sorted(known))})")
        v.kind = kind
        v.of.enumeration = new_name(x.encode())
    return (lambda v, c: _name(v.of.enumeration)), put


def _option_codec(payload: tuple[Lift, Lower]) -> tuple[Lift, Lower]:
    lift, lower = payload
    kind = _K["OPTION"]

    def get(v: _Val, c: _Ctx) -> Any:
        return lift(v.of.option.contents, c) if v.of.option else None

    def put(x: Any, v: _Val, c: _Ctx) -> None:
        v.kind = kind
        v.of.option = None if x is None else _boxed(lower, x, c)
    return get, put


def _result_codec(ok: tuple[Lift, Lower] | None, err: tuple[Lift, Lower] | None) -> tuple[Lift, Lower]:
    kind = _K["RESULT"]

    def get(v: _Val, c: _Ctx) -> Any:
        result = v.of.result
        codec = ok if result.is_ok else err
        value = codec[0](result.val.contents, c) if codec is not None and result.val else None
        return Ok(value) if result.is_ok else Err(value)

    def put(x: Any, v: _Val, c: _Ctx) -> None:
        is_ok = not isinstance(x, Err)
        value = x.value if isinstance(x, (Ok, Err)) else x
        codec = ok if is_ok else err
        v.kind = kind
        v.of.result.is_ok = is_ok
        v.of.result.val = None if codec is None else _boxed(codec[1], value, c)
    return get, put


def _flags_codec() -> tuple[Lift, Lower]:
    kind = _K["FLAGS"]

    def get(v: _Val, c: _Ctx) -> frozenset[str]:
        flags = v.of.flags
        return frozenset(_name(flags.data[i]) for i in range(flags.size))

    def put(x: Any, v: _Val, c: _Ctx) -> None:
        raw = _new_flags(len(x))
        for i, name in enumerate(x):
            raw.data[i] = new_name(name.encode())
        v.kind = kind
        v.of.flags = raw
    return get, put


def _resource_codec(type_id: int | None, owned: bool, call: HostCall) -> tuple[Lift, Lower]:
    """own/borrow of a resource defined here: the handle's rep indexes the request's table.
    A resource of a native interface (wasmtime's) cannot be read by a Python function."""
    kind = _K["RESOURCE"]

    def get(v: _Val, c: _Ctx) -> Any:
        if type_id is None:
            raise TypeError("a resource of a native WASI interface reached a Python host function")
        rep = resource_rep(c, v.of.resource)
        items = call.table.items
        return items.pop(rep) if owned else items[rep]

    def put(x: Any, v: _Val, c: _Ctx) -> None:
        if type_id is None:
            raise TypeError("a Python host function cannot make a resource of a native WASI interface")
        v.of.resource = host_resource(c, owned, call.table.push(x), type_id)
        v.kind = kind
    return get, put


# ----------------------------------------------------------------------------- host functions

@dataclass(slots=True)
class _Bound:
    """A Python host function with its converters."""

    name: str
    function: Callable[..., Any]
    lifts: list[Lift]
    lower: Lower | None
    returns_result: bool
    call: HostCall


_BOUND: list[_Bound] = []  # indexed by the C callback's data pointer; lives as long as the process


def _dispatch(data: int | None, ctx: Any, ty: Any, args: Any, nargs: int, results: Any, nresults: int) -> int:
    bound = _BOUND[data or 0]
    try:
        params = [lift(args[i], ctx) for i, lift in enumerate(bound.lifts)]
        try:
            value = bound.function(*params)
        except Err as e:
            if not bound.returns_result:
                raise
            value = e
        if bound.lower is not None:
            bound.lower(value, results[0], ctx)
        return 0
    except BaseException as e:  # noqa: BLE001 (it must not unwind through C; the caller re-raises it)
        bound.call.failure = e
        return new_error(f"{bound.name}: {type(e).__name__}: {e}")


def _drop(data: int | None, ctx: Any, rep: int) -> int:
    """The guest dropped its handle: the object leaves the table, and one holding an OS
    resource (an open file) lets it go now."""
    item = _DROP_TABLES[data or 0].table.items.pop(rep, None)
    release = getattr(item, "release", None)
    if release is not None:
        try:
            release()
        except OSError:
            pass
    return 0


_DROP_TABLES: list[HostCall] = []


# The C callbacks (kept referenced for the life of the process).
_DISPATCH: Any = FuncCallback(_dispatch)
_DROP: Any = ResourceDestructor(_drop)


# What a Python implementation of an interface is: function name -> implementation.
Implementation = Mapping[str, Callable[..., Any]]


@dataclass
class Linked:
    """A component's linker with its Python host functions, built once per worker."""

    linker: ComponentLinker
    call: HostCall
    missing: list[str]  # 'interface#function' imports nothing implements: they trap when called
    type_ids: dict[str, int]  # 'interface#resource' (no @version) -> its host type id


def link_component(
    engine: wasmtime.Engine,
    component: Component,
    python: Callable[[str], Implementation | None],
    native: Callable[[ComponentLinker], None],
) -> Linked:
    """A linker for `component`: `native` adds wasmtime's own definitions first; then every
    imported interface for which `python(name)` (name without its @version) gives an
    implementation is defined here, shadowing wasmtime's. Resource types are defined once
    (an interface that `use`s another's type refers to the same one). An imported function
    without an implementation traps when called, naming itself."""
    linker = ComponentLinker(engine)
    linker.allow_shadowing = True
    native(linker)
    call = HostCall()
    _DROP_TABLES.append(call)
    drop_index = len(_DROP_TABLES) - 1
    resources = _Resources([], call)
    seen: list[ResourceType] = []
    missing: list[str] = []
    imports = component.type.imports(engine)
    chosen: list[tuple[str, Implementation, dict[str, Any]]] = []
    for name, item in imports.items():
        kind = item.ty
        if not isinstance(kind, ComponentInstanceType):
            continue
        exports = {export: ext.ty for export, ext in kind.exports(engine).items()}
        implementation = python(name.partition("@")[0])
        for export_type in exports.values():  # every resource, ours or wasmtime's, is known once
            if isinstance(export_type, ResourceType) and not any(export_type == s for s in seen):
                seen.append(export_type)
                if implementation is not None:
                    resources.types.append((export_type, len(resources.types) + 1))
        if implementation is not None:
            chosen.append((name, implementation, exports))
    defined = {id(kind): type_id for kind, type_id in resources.types}
    type_ids: dict[str, int] = {}
    with linker.root() as root:
        for name, implementation, exports in chosen:
            with root.add_instance(name) as instance:
                for export, export_type in exports.items():
                    if isinstance(export_type, ResourceType):
                        type_id = defined.get(id(export_type))
                        if type_id is not None:  # not a `use` of a type defined elsewhere
                            _add_resource(instance, export, type_id, drop_index)
                            type_ids[f"{name.partition('@')[0]}#{export}"] = type_id
                    elif isinstance(export_type, FuncType):
                        qualified = f"{name}#{export}"
                        function = implementation.get(export)
                        if function is None:
                            missing.append(qualified)
                            function = _not_provided(qualified)
                        _add_func(instance, qualified, export_type, function, resources)
    return Linked(linker, call, missing, type_ids)


def _not_provided(name: str) -> Callable[..., Any]:
    def trap(*args: Any) -> None:
        raise NotImplementedError(f"{name} is not provided by prefork-wasm")
    return trap


def _add_resource(instance: Any, name: str, type_id: int, drop_index: int) -> None:
    linker_add_resource(instance, name, type_id, _DROP, drop_index)


def _add_func(instance: Any, name: str, ty: FuncType, function: Callable[..., Any], res: _Resources) -> None:
    result = ty.result
    bound = _Bound(
        name=name,
        function=function,
        lifts=[_codec(t, res)[0] for _, t in ty.params] if not _takes_any(function) else [],
        lower=None if result is None else _codec(result, res)[1],
        returns_result=isinstance(result, ResultType),
        call=res.call,
    )
    _BOUND.append(bound)
    linker_add_func(instance, name.rpartition("#")[2], _DISPATCH, len(_BOUND) - 1)


def ignores_arguments(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a host function that takes no arguments whatever the import's parameters are (it
    answers without reading them, e.g. a refusal), so none are converted."""
    function.__dict__["_ignores_arguments"] = True
    return function


def _takes_any(function: Callable[..., Any]) -> bool:
    return bool(getattr(function, "_ignores_arguments", False))


# ----------------------------------------------------------------------------- calling the guest

def call_with_resources(store: wasmtime.Store, func: Any, resources: list[tuple[Any, int]], call: HostCall) -> None:
    """Call a guest export whose parameters are all own<R> of resources defined here (each
    given as its Python object and type id) and that returns nothing, then its post-return.
    Raises WasmtimeError (a trap, or a failed host call: `call.failure` says which)."""
    ctx = store_context(store)
    params = (ComponentVal * len(resources))()
    for i, (item, type_id) in enumerate(resources):
        _resource_codec(type_id, True, call)[1](item, params[i], ctx)
    call_component_func(store, func, params, len(resources))
