"""mod_ssl's variables of a request over TLS: what a guest gets (HTTPS always, the SSL_* set
with SSLOptions +StdEnvVars) and what the access log's %{VAR}x gives. Names and values follow
mod_ssl's documentation (https://httpd.apache.org/docs/2.4/mod/mod_ssl.html#envvars, and
"Custom Log Formats": %{varname}x, "-" when unset)."""

from __future__ import annotations

import ssl

import pytest

from prefork_wasm import sslvars
from prefork_wasm.messages import TLSInfo
from prefork_wasm.tls import HostContext
from test_cgi import env_for, make_req
from test_logs import formatted


def host_context() -> HostContext:
    context = HostContext(ssl.PROTOCOL_TLS_SERVER)
    context.server_vars = {"SSL_SERVER_S_DN": "CN=a.test", "SSL_SERVER_M_SERIAL": "0A1B"}
    return context


TLS = TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, "a.test", False, host_context())


def test_std_env_vars_are_mod_ssl_s_with_the_certificate_s_own() -> None:
    env = sslvars.standard(TLS)
    assert env["SSL_PROTOCOL"] == "TLSv1.3" and env["SSL_CIPHER"] == "TLS_AES_256_GCM_SHA384"
    assert env["SSL_CIPHER_USEKEYSIZE"] == env["SSL_CIPHER_ALGKEYSIZE"] == "256"
    assert env["SSL_SESSION_RESUMED"] == "Initial" and env["SSL_TLS_SNI"] == "a.test"
    assert env["SSL_CLIENT_VERIFY"] == "NONE" and env["SSL_COMPRESS_METHOD"] == "NULL"
    assert env["SSL_VERSION_LIBRARY"].startswith("OpenSSL/")
    assert env["SSL_VERSION_INTERFACE"].startswith("prefork-wasm/")
    assert env["SSL_SERVER_S_DN"] == "CN=a.test" and env["SSL_SERVER_M_SERIAL"] == "0A1B"
    resumed_without_sni = TLSInfo("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", 128, "", True, host_context())
    env = sslvars.standard(resumed_without_sni)
    assert env["SSL_SESSION_RESUMED"] == "Resumed" and "SSL_TLS_SNI" not in env


def test_a_guest_over_tls_gets_https_always_and_ssl_vars_with_std_env_vars() -> None:
    plain = env_for(make_req())
    assert plain["REQUEST_SCHEME"] == "http" and "HTTPS" not in plain
    over_tls = env_for(make_req(tls=TLS))
    assert over_tls["HTTPS"] == "on" and over_tls["REQUEST_SCHEME"] == "https"
    assert over_tls["SERVER_PORT"] == "8080"
    assert not any(name.startswith("SSL_") for name in over_tls)  # SSLOptions without +StdEnvVars
    with_vars = env_for(make_req(tls=TLS), ssl_vars=True)
    assert with_vars["SSL_PROTOCOL"] == "TLSv1.3" and with_vars["SSL_SERVER_S_DN"] == "CN=a.test"
    assert env_for(make_req(), ssl_vars=True) == plain  # nothing to say on plain HTTP


@pytest.mark.parametrize(
    ("fmt", "over_tls", "plain"),
    [
        ("%{SSL_PROTOCOL}x %{SSL_CIPHER}x", "TLSv1.3 TLS_AES_256_GCM_SHA384", "- -"),
        ("%{SSL_TLS_SNI}x %{SSL_SERVER_S_DN}x", "a.test CN=a.test", "- -"),
        ("%{HTTPS}x", "on", "off"),
        ("%{SSL_NO_SUCH}x", "-", "-"),
    ],
)
def test_the_access_log_gives_ssl_variables_whatever_ssl_options_says(fmt: str, over_tls: str, plain: str) -> None:
    assert formatted(fmt, tls=TLS) == over_tls
    assert formatted(fmt) == plain
