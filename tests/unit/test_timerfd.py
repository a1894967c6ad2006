"""The watcher's timer: it fires once after its delay, and setting it again replaces the delay
and forgets a firing not yet waited for (what lets a run's end cancel its look)."""

from __future__ import annotations

import select
import time

from prefork_wasm.timerfd import OneShotTimer


def fired(timer: OneShotTimer, within: float) -> bool:
    return bool(select.select([timer.fd], [], [], within)[0])


def test_it_fires_once_after_its_delay() -> None:
    timer = OneShotTimer()
    assert not fired(timer, 0)
    start = time.monotonic()
    timer.set(0.02)
    assert fired(timer, 5)
    assert time.monotonic() - start >= 0.02
    timer.wait()  # takes the firing: it does not fire again
    assert not fired(timer, 0.05)


def test_setting_it_again_replaces_the_delay_and_forgets_a_firing() -> None:
    timer = OneShotTimer()
    timer.set(0.001)
    assert fired(timer, 5)
    timer.set(60)  # a run's end, after its look fired unseen
    assert not fired(timer, 0.05)
    timer.set(0.001)
    timer.set(60)
    assert not fired(timer, 0.05)
