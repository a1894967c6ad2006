"""TLS as mod_ssl configures it: the master makes one context per host that has `SSLEngine on`
(its certificate and key read before privileges are dropped), and workers inherit them."""

from __future__ import annotations

import ssl


class HostContext(ssl.SSLContext):
    """The TLS context of one virtual host (or the main server). `server_vars` are its
    certificate's mod_ssl variables (SSL_SERVER_S_DN, ...), read once when it is made, for the
    guests of requests whose handshake it served."""

    server_vars: dict[str, str]
