"""The wasmtime settings shared by the compile side (master) and the run side (workers).

A serialized module only loads into an engine whose code-relevant settings match the ones it
was compiled with, so both sides build their `Config` here and the cache key includes
`CODE_SETTINGS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version

import wasmtime

WASMTIME_VERSION = version("wasmtime")

# Settings that change generated code; part of every cache key. Epoch interruption is how a
# worker stops a guest (past WasmTimeout or an output limit): its watcher thread advances the epoch.
CODE_SETTINGS = "epoch_interruption=1"


def engine_config(parallel_compilation: bool, pool: Pool | None = None) -> wasmtime.Config:
    """Config for an Engine; `parallel_compilation` only in short-lived compiler processes,
    `pool` only in workers (the allocation strategy is not code-relevant: an artifact compiled
    without it loads into a pooling engine)."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.parallel_compilation = parallel_compilation
    if pool is not None:
        pool.apply(config)
    return config


# A linear memory of a wasm32 module cannot pass 4 GiB: the pool's slot for it when no
# WasmMemoryLimit is set, so pooling changes no guest's limits. A slot is address space
# (reserved, not committed): only the pages a guest touches cost memory.
WASM32_MEMORY_MAX = 4 << 30
# A module's one table: clang and Rust make one of a few hundred to a few thousand entries.
POOL_TABLE_ELEMENTS = 1 << 20
# Room for a module's instance metadata (its VMContext: functions, globals, imports).
POOL_INSTANCE_SIZE = 16 << 20
# After each run the table's slot is zeroed with memset up to this many bytes (8192 entries),
# past it with madvise. The madvised page faulted in again at the next instantiation: 3.5 us
# of a 39.5 us hello run (scripts/bench-runtime); memset of its few entries costs nothing to
# speak of. Linear memory stays madvised: keeping 64-128 KiB of it resident made runs slower.
POOL_TABLE_KEEP_RESIDENT = 64 << 10


# A wasi:http component's share of the pool: a componentize-py build needs 14 core instances,
# 2 memories and 2 tables; a Rust or JavaScript one fewer.
POOL_COMPONENT_CORE_INSTANCES = 32
POOL_COMPONENT_MEMORIES = 4
POOL_COMPONENT_TABLES = 4


@dataclass(frozen=True)
class Pool:
    """wasmtime's pooling allocator, sized for a worker: it runs one guest at a time, so the
    pool holds one core instance with one memory and one table. An instantiation then takes a
    ready slot instead of mapping memory (measured: a bare run of hello 71 -> 54 us).

    wasmtime-py 50 binds the C API's `wasmtime_pooling_allocation_*` calls but does not expose
    them on Config: this is the one place that uses that private API.
    """

    memory_size: int = WASM32_MEMORY_MAX
    # Room for one wasi:http component (issue 19): it instantiates several core instances,
    # memories and tables each time (a componentize-py one: 14 core instances, 2 of each).
    components: bool = False

    def apply(self, config: wasmtime.Config) -> None:
        from wasmtime import _ffi

        core, memories, tables = (
            (POOL_COMPONENT_CORE_INSTANCES, POOL_COMPONENT_MEMORIES, POOL_COMPONENT_TABLES) if self.components else (1, 1, 1)
        )
        pool = _ffi.wasmtime_pooling_allocation_config_new()
        try:
            for setter, value in (
                (_ffi.wasmtime_pooling_allocation_config_total_core_instances_set, core),
                (_ffi.wasmtime_pooling_allocation_config_total_memories_set, memories),
                (_ffi.wasmtime_pooling_allocation_config_total_tables_set, tables),
                (_ffi.wasmtime_pooling_allocation_config_total_stacks_set, 1),
                (_ffi.wasmtime_pooling_allocation_config_total_component_instances_set, int(self.components)),
                (_ffi.wasmtime_pooling_allocation_config_max_core_instances_per_component_set, core),
                (_ffi.wasmtime_pooling_allocation_config_max_memories_per_component_set, memories),
                (_ffi.wasmtime_pooling_allocation_config_max_tables_per_component_set, tables),
                (_ffi.wasmtime_pooling_allocation_config_total_gc_heaps_set, 0),
                (_ffi.wasmtime_pooling_allocation_config_max_memories_per_module_set, 1),
                (_ffi.wasmtime_pooling_allocation_config_max_tables_per_module_set, 1),
                (_ffi.wasmtime_pooling_allocation_config_max_memory_size_set, self.memory_size),
                (_ffi.wasmtime_pooling_allocation_config_table_elements_set, POOL_TABLE_ELEMENTS),
                (_ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set, POOL_INSTANCE_SIZE),
                (_ffi.wasmtime_pooling_allocation_config_table_keep_resident_set, POOL_TABLE_KEEP_RESIDENT),
            ):
                setter(pool, value)
            _ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
        finally:
            _ffi.wasmtime_pooling_allocation_config_delete(pool)

    def describe(self) -> str:
        if self.components:
            return (f"one component of up to {POOL_COMPONENT_CORE_INSTANCES} core instances, "
                    f"{POOL_COMPONENT_MEMORIES} memories of up to {self.memory_size >> 20} MiB and "
                    f"{POOL_COMPONENT_TABLES} tables of up to {POOL_TABLE_ELEMENTS} elements")
        return (f"one instance with one memory of up to {self.memory_size >> 20} MiB and one table "
                f"of up to {POOL_TABLE_ELEMENTS} elements")


def trap_reason(message: str) -> str | None:
    """Why a guest trapped, from a wasmtime error's text ('interrupt' when its epoch deadline
    passed), or None if the error is not a trap. A component's call reports a trap only as text."""
    for line in reversed(message.splitlines()):
        if line.strip().startswith("wasm trap: "):
            return line.strip().removeprefix("wasm trap: ")
    return None
