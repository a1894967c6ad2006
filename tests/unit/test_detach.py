"""Which logs a `-k start` keeps writing to the inherited stdout and stderr (pure)."""

from __future__ import annotations

from prefork_wasm.control import detach_plan
from prefork_wasm.logtargets import stream_of


def test_log_targets_that_are_the_standard_streams() -> None:
    assert [stream_of(t) for t in ("stderr", "/dev/stderr", "/proc/self/fd/2", "/dev/fd/2")] == [2] * 4
    assert [stream_of(t) for t in ("stdout", "/dev/stdout", "/proc/self/fd/1", "/dev/fd/1")] == [1] * 4
    assert stream_of("/var/log/error_log") is None


def test_detaching_keeps_a_stream_a_log_writes_to_unless_it_leads_nowhere() -> None:
    logs = [(2, "s.conf:3: ErrorLog stderr"), (1, "s.conf:4: CustomLog /dev/stdout")]
    assert detach_plan(logs, {1: None, 2: None}) == ({1, 2}, [])
    assert detach_plan([], {1: None, 2: None}) == (set(), [])  # no log there: both left
    keep, warnings = detach_plan(logs, {1: None, 2: "a terminal"})
    assert keep == {1}
    assert warnings == [
        "s.conf:3: ErrorLog stderr: the detached server leaves its stderr, which is a terminal, so this log "
        "goes nowhere; log to a file, start with stderr redirected to a file or pipe (2>>FILE), or run in the "
        "foreground"
    ]
    keep, warnings = detach_plan(logs, {1: "/dev/null", 2: None})
    assert keep == {2} and "its stdout, which is /dev/null" in warnings[0] and "(>>FILE)" in warnings[0]
