"""Values crossing the component boundary as component_host (and wasmtime_capi) converts them: list<u8> both ways
at any size, and results as a host function returns or raises them."""

from __future__ import annotations

import ctypes
import os

import pytest
from wasmtime import _ffi

from prefork_wasm.component_host import Err, Ok, _result_codec
from prefork_wasm.wasmtime_capi import bytes_from, bytes_to


@pytest.mark.parametrize("size", [0, 1, 255, 16384, 1 << 16, (1 << 16) + 1, 200_000])
def test_bytes_cross_as_a_list_of_u8_and_back(size: int) -> None:
    data = os.urandom(size)
    val = _ffi.wasmtime_component_val_t()
    bytes_to(data, val, None)
    try:
        assert val.kind == _ffi.WASMTIME_COMPONENT_LIST.value and val.of.list.size == size
        if size:
            first = val.of.list.data[0]
            assert (first.kind, first.of.u8) == (_ffi.WASMTIME_COMPONENT_U8.value, data[0])
        assert bytes_from(val, None) == data
    finally:
        _ffi.wasmtime_component_val_delete(ctypes.byref(val))


def test_a_result_is_ok_unless_it_is_an_err() -> None:
    _, lower = _result_codec((_get_u32, _set_u32), (_get_u32, _set_u32))
    for value, is_ok, payload in [(7, True, 7), (Ok(8), True, 8), (Err(9), False, 9)]:
        val = _ffi.wasmtime_component_val_t()
        lower(value, val, None)
        try:
            assert val.of.result.is_ok == is_ok and val.of.result.val.contents.of.u32 == payload
        finally:
            _ffi.wasmtime_component_val_delete(ctypes.byref(val))


def _get_u32(v: object, c: object) -> int:
    return v.of.u32  # type: ignore[attr-defined,no-any-return]


def _set_u32(x: int, v: object, c: object) -> None:
    v.kind = _ffi.WASMTIME_COMPONENT_U32.value  # type: ignore[attr-defined]
    v.of.u32 = x  # type: ignore[attr-defined]
