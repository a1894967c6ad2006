"""prefork_wasm.schedstat: a thread's time on a CPU and waiting for one, read from any thread."""

from __future__ import annotations

import threading
import time

from prefork_wasm.schedstat import SchedStat


def test_a_threads_times_are_read_from_another_and_grow_as_it_runs() -> None:
    stat = SchedStat(threading.get_native_id())
    seen: list[tuple[float, float] | None] = []
    reader = threading.Thread(target=lambda: seen.append(stat.read()))
    reader.start()
    reader.join()
    spin_until = time.thread_time() + 0.05
    while time.thread_time() < spin_until:
        pass
    after = stat.read()
    stat.close()
    assert seen[0] is not None and after is not None
    assert after[0] - seen[0][0] >= 0.04  # the 50 ms of CPU spent since
    assert after[1] >= seen[0][1] >= 0.0


def test_a_thread_the_kernel_does_not_know_reads_as_unknown() -> None:
    absent = SchedStat(2**31 - 1)  # no such thread in this process
    assert absent.read() is None and absent.run_delay() == 0.0
    absent.close()
