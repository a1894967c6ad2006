"""TLS on a worker's connections: the socket that connection.py reads and writes when the port
is TLS, and the steps from a connection's first byte to a finished handshake.

`TLSSocket` is an `ssl.SSLSocket` that keeps the contract connection.py has with a plain
non-blocking socket: would-block is `BlockingIOError` (OpenSSL's want-read and want-write, the
direction remembered in `wants` for the next wait), `send` ignores MSG_MORE (OpenSSL writes
whole records; it refuses flags) and `shutdown` sends close_notify first without waiting for
the client's. So the plain path keeps its code and costs nothing more; what differs is in the
few places a wait or a file body is sent (connection._wait, connection._copy_file). The
handshake is driven from the event loop (eventloop.py), one step per epoll event, under
RequestReadTimeout's handshake phase: no worker waits for a client's ClientHello.
"""

from __future__ import annotations

import select
import socket
import ssl
from typing import Any

from .http1 import framed_head
from .messages import Response, TLSInfo

# A TLS record's first byte when it carries a handshake message (the ClientHello).
HANDSHAKE_RECORD = 0x16

# Apache's answer to plain HTTP on a TLS port (mod_ssl, ssl_engine_io.c: HTTP_BAD_REQUEST with
# this reason), sent in plain text: the page Apache 2.4 sends, byte for byte.
PLAIN_HTTP_REASON = (
    "You're speaking plain HTTP to an SSL-enabled server port.<br />\n"
    " Instead use the HTTPS scheme to access this URL, please.<br />"
)
_PLAIN_HTTP_PAGE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">\n'
    "<html><head>\n<title>400 Bad Request</title>\n"
    "</head><body>\n<h1>Bad Request</h1>\n<p>Your browser sent a request that this server could not "
    f"understand.<br />\nReason: {PLAIN_HTTP_REASON}\n</p>\n</body></html>\n"
).encode()


class PlainHTTP(Exception):
    """The first byte on a TLS port is not a handshake record: a client speaking plain HTTP."""


class HandshakeFailed(Exception):
    """The handshake ended without a session: OpenSSL's reason, or the client closed."""


class TLSSocket(ssl.SSLSocket):
    """An SSLSocket that reads and writes as a non-blocking plain socket does (see above)."""

    wants: int = 0  # what the last would-block waits for (POLLIN, POLLOUT), 0 once waited for
    server_name_sent: str = ""  # the SNI name, noted by record_server_names' callback

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLWantReadError:
            self.wants = select.POLLIN
        except ssl.SSLWantWriteError:
            self.wants = select.POLLOUT
        raise BlockingIOError()

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes, flags)
        except ssl.SSLWantReadError:
            self.wants = select.POLLIN
        except ssl.SSLWantWriteError:
            self.wants = select.POLLOUT
        raise BlockingIOError()

    def send(self, data: Any, flags: int = 0) -> int:
        """All of `data` or would-block: OpenSSL goes on from where it stopped when the same
        bytes are offered again (Python sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)."""
        try:
            return super().send(data)
        except ssl.SSLWantWriteError:
            self.wants = select.POLLOUT
        except ssl.SSLWantReadError:
            self.wants = select.POLLIN
        raise BlockingIOError()

    def shutdown(self, how: int) -> None:
        """close_notify if it can leave now, then TCP's shutdown; what is read afterwards is the
        raw stream (a lingering close drops it)."""
        notify(self)
        super().shutdown(how)

    def close(self) -> None:
        notify(self)
        super().close()

    def wait_event(self, event: int) -> int:
        """What to poll for before the next read (`event` POLLIN) or write (POLLOUT): 0 when
        OpenSSL already holds decrypted bytes (epoll cannot see them), else what OpenSSL last
        wanted, which may be the other direction."""
        if event == select.POLLIN and self.pending():
            return 0
        wants, self.wants = self.wants, 0
        return wants or event


def notify(sock: ssl.SSLSocket) -> None:
    """Send close_notify without waiting for the client's (nor for room in a full socket
    buffer: then there is none). Nothing after a handshake that did not finish or a shutdown."""
    try:
        sock.unwrap()
    except (OSError, ValueError):  # want-read (the client's close_notify), no session, closed
        pass


def first_byte(sock: socket.socket) -> int | None:
    """The connection's first byte, left in place; None while nothing has arrived. Raises
    HandshakeFailed when the client closed (or reset) before sending anything."""
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:
        raise HandshakeFailed(f"connection reset before the ClientHello ({e.strerror})") from None
    if not data:
        raise HandshakeFailed("connection closed before the ClientHello")
    return data[0]


def wrap(sock: socket.socket, context: ssl.SSLContext) -> TLSSocket:
    """The TLS side of an accepted connection, non-blocking (as `sock` is), no handshake yet."""
    context.sslsocket_class = TLSSocket
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    assert isinstance(tls, TLSSocket)
    return tls


def handshake(sock: TLSSocket) -> int:
    """One step: 0 once the handshake is done, else what to wait for (POLLIN, POLLOUT).
    Raises HandshakeFailed with OpenSSL's reason."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return select.POLLIN
    except ssl.SSLWantWriteError:
        return select.POLLOUT
    except ssl.SSLError as e:
        raise HandshakeFailed(e.reason or e.strerror or str(e)) from None
    except OSError as e:
        raise HandshakeFailed(e.strerror or str(e)) from None
    return 0


def info(sock: TLSSocket) -> TLSInfo:
    """What the handshake settled, for the requests of the connection."""
    cipher = sock.cipher()
    name, _, bits = cipher if cipher is not None else ("", "", 0)
    return TLSInfo(sock.version() or "", name, bits, sock.server_name_sent, bool(sock.session_reused), sock.context)


def record_server_names(context: ssl.SSLContext) -> None:
    """Make `context` note the SNI name a client sends on its socket (`server_name_sent`), for
    SSL_TLS_SNI and the Host check: the server side of Python's ssl has no getter for it. The
    context's own callback (tls.py's, which picks the named host's context) is still called."""
    chosen = context.sni_callback
    if getattr(chosen, "records_server_name", False):
        return

    def callback(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> int | None:
        if isinstance(sock, TLSSocket):
            sock.server_name_sent = name or ""
        return chosen(sock, name, context) if chosen is not None else None  # type: ignore[arg-type]

    callback.records_server_name = True  # type: ignore[attr-defined]
    context.sni_callback = callback


def plain_http_answer() -> bytes:
    """Apache's 400 for plain HTTP on a TLS port, the whole response (the connection closes)."""
    response = Response(400, [(b"Content-Type", b"text/html; charset=iso-8859-1")], _PLAIN_HTTP_PAGE)
    head, _ = framed_head(response, False, True)
    return head + _PLAIN_HTTP_PAGE
