"""mod_ssl's variables of a request that came over TLS (pure: from Request.tls alone).

Guests get `HTTPS=on` on every TLS request and the SSL_* set below only where
`SSLOptions +StdEnvVars` is in force (cgi.py), as mod_ssl's fixup hook gives them; the access
log's %{VAR}x reads any of them whatever SSLOptions says (logs.py). The certificate's own
(SSL_SERVER_S_DN, ...) were read once by the master into the host's context (`server_vars`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from . import __version__
from .messages import TLSInfo

# mod_ssl's SSL_VERSION_INTERFACE names the module; here the server that does its work.
INTERFACE = f"prefork-wasm/{__version__}"
# SSL_VERSION_LIBRARY as mod_ssl writes it: 'OpenSSL/3.0.15'.
LIBRARY = "/".join(ssl.OPENSSL_VERSION.split()[:2])

_CONNECTION: dict[str, Callable[[TLSInfo], str]] = {
    "SSL_VERSION_INTERFACE": lambda t: INTERFACE,
    "SSL_VERSION_LIBRARY": lambda t: LIBRARY,
    "SSL_PROTOCOL": lambda t: t.protocol,
    "SSL_CIPHER": lambda t: t.cipher,
    "SSL_CIPHER_EXPORT": lambda t: "false",
    "SSL_CIPHER_USEKEYSIZE": lambda t: str(t.bits),
    "SSL_CIPHER_ALGKEYSIZE": lambda t: str(t.bits),  # the same for every suite the server allows
    "SSL_COMPRESS_METHOD": lambda t: "NULL",  # compression is always off
    "SSL_SESSION_RESUMED": lambda t: "Resumed" if t.resumed else "Initial",
    "SSL_CLIENT_VERIFY": lambda t: "NONE",  # no client certificates (SSLVerifyClient none)
}


def _server_vars(tls: TLSInfo) -> dict[str, str]:
    found: dict[str, str] = getattr(tls.context, "server_vars", {})  # a tls.HostContext's
    return found


def standard(tls: TLSInfo) -> dict[str, str]:
    """SSLOptions +StdEnvVars: the SSL_* variables of a request (HTTPS is cgi.py's)."""
    env = {name: value(tls) for name, value in _CONNECTION.items()}
    if tls.server_name:
        env["SSL_TLS_SNI"] = tls.server_name
    env.update(_server_vars(tls))
    return env


def lookup(tls: TLSInfo | None, name: str) -> str | None:
    """One variable as mod_ssl's %{VAR}x finds it: HTTPS is 'on' or 'off'; an SSL_* one is
    None on plain HTTP and for a name it does not know."""
    if name == "HTTPS":
        return "on" if tls is not None else "off"
    if tls is None:
        return None
    value = _CONNECTION.get(name)
    if value is not None:
        return value(tls)
    if name == "SSL_TLS_SNI":
        return tls.server_name or None
    return _server_vars(tls).get(name)
