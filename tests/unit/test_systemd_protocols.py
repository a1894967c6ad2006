"""The pure parts of systemd's protocols: notify messages, LISTEN_* parsing, matching passed
sockets to Listen lines (the sockets here are real ones)."""

from __future__ import annotations

import os
import socket

import pytest

from prefork_wasm.activation import ActivationError, Passed, inspect, match, passed_fds
from prefork_wasm.notify import Notifier, address, message


def test_message_lines_in_order_and_status_on_one_line() -> None:
    assert message(ready=True, status="generation 0 serving, 5 workers") == (
        b"READY=1\nSTATUS=generation 0 serving, 5 workers\n"
    )
    assert message(reloading=True, monotonic_usec=12, status="x") == b"RELOADING=1\nMONOTONIC_USEC=12\nSTATUS=x\n"
    assert message(mainpid=42, status="a\nb  c") == b"MAINPID=42\nSTATUS=a b c\n"
    assert message(stopping=True) == b"STOPPING=1\n"


def test_notify_socket_addresses() -> None:
    assert address("/run/systemd/notify") == "/run/systemd/notify"
    assert address("@abstract") == b"\0abstract"
    for bad in ("vsock:2:1234", "relative", "@"):
        with pytest.raises(ValueError, match="neither a path nor an abstract"):
            address(bad)


def test_notifier_takes_the_variable_out_of_the_environment() -> None:
    env = {"NOTIFY_SOCKET": "@x", "OTHER": "1"}
    notifier = Notifier.from_environment(env)
    assert env == {"OTHER": "1"} and notifier.target == b"\0x" and notifier.problem is None
    bad = Notifier.from_environment({"NOTIFY_SOCKET": "vsock:1:2"})
    assert not bad.enabled and bad.problem and "vsock" in bad.problem
    assert not Notifier.from_environment({}).enabled


def test_notifier_send_failure_is_a_problem_not_an_exception(tmp_path: os.PathLike[str]) -> None:
    notifier = Notifier(os.path.join(tmp_path, "nobody-listens"), os.getpid())
    notifier.ready("serving")
    assert notifier.problem and "cannot notify NOTIFY_SOCKET" in notifier.problem


def test_listen_variables_for_this_process_only_and_always_removed() -> None:
    env = {"LISTEN_PID": "100", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin", "PATH": "/bin"}
    assert passed_fds(env, 100) == [(3, "web"), (4, "admin")]
    assert env == {"PATH": "/bin"}
    env = {"LISTEN_PID": "99", "LISTEN_FDS": "1"}
    assert passed_fds(env, 100) == [] and env == {}  # left over from a parent: not ours
    assert passed_fds({"LISTEN_PID": "7", "LISTEN_FDS": "1"}, 7) == [(3, "")]
    with pytest.raises(ActivationError, match="LISTEN_FDS='x'"):
        passed_fds({"LISTEN_PID": "7", "LISTEN_FDS": "x"}, 7)


V4, V6 = socket.AF_INET, socket.AF_INET6


def test_match_by_family_host_and_port() -> None:
    web = Passed(3, "web", V4, ("127.0.0.1", 8080))
    lines = {"127.0.0.1:8080": (V4, ("127.0.0.1", 8080)), "127.0.0.1:9090": (V4, ("127.0.0.1", 9090))}
    assert match([web], lines) == {"127.0.0.1:8080": web}


def test_a_bare_listen_port_is_served_by_a_dual_stack_wildcard() -> None:
    dual = Passed(3, "", V6, ("::", 80, 0, 0), dual_stack=True)
    assert match([dual], {"80": (V4, ("0.0.0.0", 80))}) == {"80": dual}
    v6only = Passed(3, "", V6, ("::", 80, 0, 0))
    with pytest.raises(ActivationError, match=r"bound to \[::\]:80 matches no Listen line: add `Listen \[::\]:80`"):
        match([v6only], {"80": (V4, ("0.0.0.0", 80))})


def test_every_unmatched_passed_socket_is_named() -> None:
    a = Passed(3, "web", V4, ("127.0.0.1", 1))
    b = Passed(4, "", V4, ("0.0.0.0", 2))
    with pytest.raises(ActivationError) as caught:
        match([a, b], {"x": (V4, ("127.0.0.1", 3))})
    assert str(caught.value).splitlines() == [
        "passed socket fd 3 (web), bound to 127.0.0.1:1 matches no Listen line: add `Listen 127.0.0.1:1`, "
        "or remove that ListenStream= from the socket unit",
        "passed socket fd 4, bound to 0.0.0.0:2 matches no Listen line: add `Listen 2`, "
        "or remove that ListenStream= from the socket unit",
    ]


def test_inspect_accepts_only_listening_tcp_sockets() -> None:
    with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp, socket.socket() as idle:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        os.set_inheritable(tcp.fileno(), True)
        passed = inspect(tcp.fileno(), "web")
        assert passed == Passed(tcp.fileno(), "web", V4, tcp.getsockname())
        assert not os.get_inheritable(tcp.fileno())  # the compile subprocess must not hold it
        for sock in (udp, idle):
            with pytest.raises(ActivationError, match="is not a listening TCP socket"):
                inspect(sock.fileno(), "")
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(ActivationError, match=f"passed fd {r}"):
        inspect(r, "")
