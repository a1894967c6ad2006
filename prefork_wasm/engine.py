"""The wasmtime settings shared by the compile side (master) and the run side (workers).

A serialized module only loads into an engine whose code-relevant settings match the ones it
was compiled with, so both sides build their `Config` here and the cache key includes
`CODE_SETTINGS`. The worker's instance pool is set through `wasmtime_capi`, which holds every
private wasmtime call; this module uses wasmtime's public API only.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from importlib.metadata import version

import wasmtime

from .wasmtime_capi import PoolingLimits, set_pooling_allocation

WASMTIME_VERSION = version("wasmtime")

# Settings that change generated code; part of every cache key. Epoch interruption is how a
# worker stops a guest (past WasmTimeout or an output limit): its watcher thread advances the epoch.
CODE_SETTINGS = "epoch_interruption=1"


def engine_config(parallel_compilation: bool, pool: InstancePool | None = None) -> wasmtime.Config:
    """Config for an Engine; `parallel_compilation` only in short-lived compiler processes,
    `pool` only in workers (the allocation strategy is not code-relevant: an artifact compiled
    without it loads into a pooling engine)."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.parallel_compilation = parallel_compilation
    if pool is not None:
        set_pooling_allocation(config, pool.limits())
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
# past it with madvise. The madvised page faulted in again at the next instantiation, a
# noticeable part of a hello run (scripts/bench-runtime); memset of its few entries costs nothing
# to speak of. Linear memory stays madvised: keeping 64-128 KiB of it resident made runs slower.
POOL_TABLE_KEEP_RESIDENT = 64 << 10
# A wasi:http component's share of the pool: a componentize-py build needs 14 core instances,
# 2 memories and 2 tables; a Rust or JavaScript one fewer.
POOL_COMPONENT_CORE_INSTANCES = 32
POOL_COMPONENT_MEMORIES = 4
POOL_COMPONENT_TABLES = 4


@dataclass(frozen=True)
class InstancePool:
    """wasmtime's pooling allocator, sized for a worker: it runs one guest at a time, so the
    pool holds one core instance with one memory and one table. An instantiation then takes a
    ready slot instead of mapping memory, which makes a bare run of a small guest markedly
    cheaper (scripts/bench-runtime)."""

    memory_size: int = WASM32_MEMORY_MAX
    # Room for one wasi:http component (issue 19): it instantiates several core instances,
    # memories and tables each time.
    components: bool = False

    def limits(self) -> PoolingLimits:
        core, memories, tables = (
            (POOL_COMPONENT_CORE_INSTANCES, POOL_COMPONENT_MEMORIES, POOL_COMPONENT_TABLES)
            if self.components else (1, 1, 1)
        )
        return PoolingLimits(
            total_core_instances=core,
            total_memories=memories,
            total_tables=tables,
            total_stacks=1,
            total_component_instances=int(self.components),
            max_core_instances_per_component=core,
            max_memories_per_component=memories,
            max_tables_per_component=tables,
            total_gc_heaps=0,
            max_memories_per_module=1,
            max_tables_per_module=1,
            max_memory_size=self.memory_size,
            table_elements=POOL_TABLE_ELEMENTS,
            max_core_instance_size=POOL_INSTANCE_SIZE,
            table_keep_resident=POOL_TABLE_KEEP_RESIDENT,
        )

    def describe(self) -> str:
        if self.components:
            return (f"one component of up to {POOL_COMPONENT_CORE_INSTANCES} core instances, "
                    f"{POOL_COMPONENT_MEMORIES} memories of up to {self.memory_size >> 20} MiB and "
                    f"{POOL_COMPONENT_TABLES} tables of up to {POOL_TABLE_ELEMENTS} elements")
        return (f"one instance with one memory of up to {self.memory_size >> 20} MiB and one table "
                f"of up to {POOL_TABLE_ELEMENTS} elements")


# glibc's mallopt parameters, and the values a worker serving wasi:http components sets.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
HEAP_MMAP_FROM = 32 << 20  # glibc's largest: smaller blocks come from the heap
# Free memory at the heap's top kept for reuse, up to this much: a 16 KiB read or write takes
# over a megabyte of values for a moment; the bound limits what a worker keeps after a guest
# that moves much larger pieces at once.
HEAP_KEEP = 32 << 20


def keep_freed_heap() -> None:
    """Let the C allocator keep and reuse large freed blocks. wasmtime's C API converts a
    list<u8> crossing a component boundary into a value per byte: megabytes of short-lived
    allocations per body, which glibc's defaults map and unmap (or give back from the heap's
    top) so that the next request faults their pages in again. A no-op where the C library
    has no mallopt."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_FROM)
        mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP)


def trap_reason(message: str) -> str | None:
    """Why a guest trapped, from a wasmtime error's text ('interrupt' when its epoch deadline
    passed), or None if the error is not a trap. A component's call reports a trap only as text."""
    for line in reversed(message.splitlines()):
        if line.strip().startswith("wasm trap: "):
            return line.strip().removeprefix("wasm trap: ")
    return None
