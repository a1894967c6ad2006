"""A worker's event loop (prefork_wasm.eventloop) in a thread of the test process, on a
127.0.0.1 listener of its own (a TLS port when given a context), serving a site and a worker the
test gives: the connection layer and the event loop as a worker runs them, without a process, a
scoreboard or Wasm.

    with Serving(site, worker, limits) as server:
        socket.create_connection((HOST, server.port))...
    # leaving the block drains: idle connections closed, the rest served, the thread joined
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from harness import HOST
from prefork_wasm import handover
from prefork_wasm.connection import Held, serve
from prefork_wasm.eventloop import EventLoop, Listener
from prefork_wasm.held import Peer
from prefork_wasm.http1 import Limits
from prefork_wasm.logs import ErrorLog, LogFile
from prefork_wasm.scoreboard import DRAIN, SERVE, Slot


class Serving:
    """`leaving` is what the loop is told at each turn (scoreboard.SERVE until `leave`); the
    hand-over pair may be shared with another Serving, as two workers share the master's."""

    def __init__(
        self,
        site: Any,
        worker: Any,
        limits: Limits,
        state: Callable[..., None] = lambda *a: None,
        *,
        bound: int = 0,
        max_connections: int = 0,
        hand_over: tuple[socket.socket, socket.socket] | None = None,
        error_log: str = os.devnull,
        peers: Callable[[], list[Peer]] = list,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.listener = socket.create_server((HOST, 0), backlog=128)
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.hand_over = hand_over or handover.pair()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.slot = Slot()
        self.how = SERVE

        def serve_one(held: Held) -> bool:
            return serve(held, site, worker, limits, state)

        self.loop = EventLoop(
            [Listener(self.listener, self.port, "", False, tls)], self.hand_over, self._wake_r, limits, serve_one,
            self.slot, peers, lambda: self.how, bound, max_connections, ErrorLog(LogFile(error_log), "debug"),
            lambda title: None,
        )
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as e:  # the test reads it: a loop that died must not pass for one that left
            self.failure = e

    def leave(self, how: bytes = DRAIN, timeout: float = 10.0) -> None:
        """Tell the loop to leave (DRAIN, HAND_OVER) and wait until it has."""
        self.how = how
        os.write(self._wake_w, b"x")
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the event loop did not leave"
        if self.failure is not None:
            raise self.failure

    def __enter__(self) -> Serving:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.leave()
        self.listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
