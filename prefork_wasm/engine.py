"""The wasmtime settings shared by the compile side (master) and the run side (workers).

A serialized module only loads into an engine whose code-relevant settings match the ones it
was compiled with, so both sides build their `Config` here and the cache key includes
`CODE_SETTINGS`.
"""

from __future__ import annotations

from importlib.metadata import version

import wasmtime

WASMTIME_VERSION = version("wasmtime")

# Settings that change generated code; part of every cache key. Epoch interruption is how a
# worker stops a guest (past WasmTimeout or an output limit): its watcher thread advances the epoch.
CODE_SETTINGS = "epoch_interruption=1"


def engine_config(parallel_compilation: bool) -> wasmtime.Config:
    """Config for an Engine; `parallel_compilation` only in short-lived compiler processes."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.parallel_compilation = parallel_compilation
    return config


def trap_reason(message: str) -> str | None:
    """Why a guest trapped, from a wasmtime error's text ('interrupt' when its epoch deadline
    passed), or None if the error is not a trap. A component's call reports a trap only as text."""
    for line in reversed(message.splitlines()):
        if line.strip().startswith("wasm trap: "):
            return line.strip().removeprefix("wasm trap: ")
    return None
