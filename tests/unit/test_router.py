"""The router as pure logic: Apache's <Location> semantics (which sections match a request's
normalised path, and how every matching section merges over the server's defaults, issue 11),
and the one decision it makes per request."""

from __future__ import annotations

import ssl
import textwrap
from pathlib import Path

import pytest

from prefork_wasm.conffile import parse_config
from prefork_wasm.config import LocationConfig, ServerConfig
from prefork_wasm.logs import AccessLog, ErrorLog, LogFile
from prefork_wasm.messages import Request, TLSInfo
from prefork_wasm.paths import request_path
from prefork_wasm.router import (
    FORBIDDEN,
    NOT_FOUND,
    ROUTE_MEMORY,
    RUN_GUEST,
    Fault,
    ListDirectory,
    LocationIndex,
    Redirect,
    Refusal,
    Router,
    RunScript,
    SendFile,
    ServerPage,
)
from prefork_wasm.tls import HostContext


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.wasm").write_bytes(b"\0asm")
    (tmp_path / "admin.wat").write_text("(module)")
    return Path.cwd()


def load(text: str) -> ServerConfig:
    Path("server.conf").write_text("Listen 8080\n" + textwrap.dedent(text))
    return parse_config("server.conf")


_INDEXES: dict[int, tuple[ServerConfig, LocationIndex]] = {}


def locations(config: ServerConfig) -> LocationIndex:
    """The main server's LocationIndex: one per config, as a worker has one."""
    return _INDEXES.setdefault(id(config), (config, LocationIndex(config.routes)))[1]


def served(config: ServerConfig, target: str) -> LocationConfig:
    """What a request for the raw `target` gets, decided on its normalised path as a worker does."""
    loc = locations(config).match(request_path(target, "off"))
    assert loc is not None
    return loc


# An app at / and an admin area whose section only restricts: /admin gets both.
NESTED = """\
    <Location />
        SetHandler wasm-handler
        WasmModule app.wasm
        WasmTimeout 5
    </Location>
    <Location /admin>
        Require ip 10.0.0.0/8
    </Location>
"""


@pytest.mark.parametrize("target", ["/admin", "/admin/x", "/%61dmin/x", "/x/../admin", "//admin", "/./admin/."])
def test_a_restricting_section_merges_with_the_handler_of_an_enclosing_one(root: Path, target: str) -> None:
    loc = served(load(NESTED), target)
    assert (loc.handler, loc.module, loc.timeout) == ("wasm-handler", root / "app.wasm", 5.0)
    assert loc.require == ["ip 10.0.0.0/8"]
    assert not loc.allows("127.0.0.1")
    assert loc.allows("10.1.2.3")


@pytest.mark.parametrize("target", ["/", "/administrator", "/x/admin", "/%2561dmin"])
def test_paths_outside_the_restricted_prefix_are_open(target: str) -> None:
    loc = served(load(NESTED), target)
    assert loc.handler == "wasm-handler" and loc.allows("127.0.0.1")


def test_the_app_stays_mounted_where_its_handler_was_set() -> None:
    """SCRIPT_NAME is the last matching prefix that sets the handler or the module, so the app at
    / still sees /admin/x whole as its PATH_INFO."""
    config = load(NESTED)
    assert served(config, "/admin/x").prefix == "/"
    config = load(NESTED + "<Location /admin/tool>\n    WasmModule admin.wat\n</Location>\n")
    assert served(config, "/admin/tool/run").prefix == "/admin/tool"


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/env", "/env", True),
        ("/env", "/env/", True),
        ("/env", "/env/x", True),
        ("/env", "/envfoo", False),  # Apache 2.4: a prefix without '/' must end at a segment
        ("/env/", "/env", False),
        ("/env/", "/env/x", True),
        ("/", "/anything", True),
    ],
)
def test_a_prefix_matches_as_apache_2_4_does(pattern: str, path: str, matches: bool) -> None:
    config = load(f"<Location {pattern}>\n    Require all denied\n</Location>\n")
    assert (config.routes.key(path) == (0,)) is matches


def test_later_sections_win_in_config_order_not_by_length() -> None:
    config = load("""\
        SetHandler wasm-handler
        WasmModule app.wasm
        <Location /a/b>
            WasmTimeout 5
            WasmEnv WHO inner
        </Location>
        <Location /a>
            WasmTimeout 9
            WasmEnv ALSO outer
        </Location>
    """)
    loc = served(config, "/a/b/c")
    assert loc.timeout == 9.0  # /a comes later in the file, so it wins even though it is shorter
    assert loc.env == {"WHO": "inner", "ALSO": "outer"}  # WasmEnv merges by name
    assert served(config, "/a/x").timeout == 9.0
    assert served(config, "/z").timeout == 30.0


def test_a_repeated_prefix_is_two_sections_merged_in_order() -> None:
    config = load("""\
        <Location /x>
            SetHandler wasm-handler
            WasmModule app.wasm
            WasmTimeout 3
        </Location>
        <Location /x>
            WasmTimeout 4
        </Location>
    """)
    assert served(config, "/x").timeout == 4.0
    assert len(config.locations) == 1  # -S and -t see one result for the prefix


def test_a_later_section_can_open_what_an_earlier_one_closed() -> None:
    """Apache's merge is by order: a <Location /> after <Location /admin> overrides its Require
    (AuthMerging Off). Worth knowing when reordering a config."""
    config = load(NESTED + "<Location />\n    Require all granted\n</Location>\n")
    assert served(config, "/admin").allows("127.0.0.1")


def test_one_merged_result_per_distinct_set_of_sections() -> None:
    config = load(NESTED)
    assert served(config, "/admin/a") is served(config, "/admin/b/c")
    assert served(config, "/x") is served(config, "/y")
    assert served(config, "/admin") is not served(config, "/x")


def test_a_worker_remembers_the_routing_of_a_bounded_number_of_paths() -> None:
    """A path's routing is remembered (no scan of the sections per request), for at most
    ROUTE_MEMORY paths: a client sending ever new paths cannot grow a worker's memory."""
    config = load(NESTED)
    admin, other = served(config, "/admin"), served(config, "/x")
    index = locations(config)
    for i in range(ROUTE_MEMORY * 2 + 1):
        assert index.match(f"/admin/{i}") is admin
        assert len(index._by_path) <= ROUTE_MEMORY
    assert (index.match("/admin"), index.match("/x"), index.match("/administrator")) == (admin, other, other)


def test_no_section_and_no_server_handler_is_no_match() -> None:
    config = load("<Location /admin>\n    Require all denied\n</Location>\n")
    assert locations(config).match("/other") is None
    assert served(config, "/admin").handler is None  # matched, but nothing serves it: 404


def test_every_module_a_section_can_serve_is_compiled(root: Path) -> None:
    config = load(NESTED + "<Location /admin/tool>\n    WasmModule admin.wat\n</Location>\n")
    assert config.modules() == [root / "app.wasm", root / "admin.wat"]


def test_a_module_is_checked_against_what_a_request_for_its_prefix_merges_to() -> None:
    # The handler comes from <Location />: no error, although /tool sets no handler itself.
    load("<Location />\n    SetHandler wasm-handler\n    WasmModule app.wasm\n</Location>\n"
         "<Location /tool>\n    WasmModule admin.wat\n</Location>\n")
    with pytest.raises(
        Exception, match=r"server.conf:2: <Location /tool>: WasmModule without 'SetHandler wasm-handler'"
    ):
        load("<Location /tool>\n    WasmModule admin.wat\n</Location>\n")
    with pytest.raises(Exception, match=r"server.conf:2: <Location /x>: SetHandler wasm-handler needs a WasmModule"):
        load(
            "<Location /x>\n    SetHandler wasm-handler\n</Location>\n"
            "<Location /x/y>\n    WasmModule app.wasm\n</Location>\n"
        )


# --- <LocationMatch> and <Location ~> -----------------------------------------------------------

SECRET = NESTED + """\
    <LocationMatch "^/(secret|private)(/|$)">
        Require ip 10.0.0.0/8
    </LocationMatch>
"""


@pytest.mark.parametrize(
    "target", ["/secret", "/secret/x", "/%73ecret/x", "/x/../secret", "//secret/", "/private", "/./private/."]
)
def test_a_regex_section_restricts_every_spelling_of_its_paths(target: str) -> None:
    loc = served(load(SECRET), target)
    assert loc.handler == "wasm-handler"
    assert not loc.allows("127.0.0.1")


@pytest.mark.parametrize("target", ["/secretary", "/x/secret", "/%2573ecret"])
def test_a_regex_section_leaves_other_paths_alone(target: str) -> None:
    assert served(load(SECRET), target).allows("127.0.0.1")


@pytest.mark.parametrize("opening", ['<LocationMatch "\\.txt$">', '<Location ~ "\\.txt$">'])
def test_plain_and_regex_sections_merge_together_in_config_order(opening: str) -> None:
    """Apache 2.4 ("How the sections are merged"): <Location> and <LocationMatch> are one group,
    processed in config order; checked against Apache 2.4.71 with both orders."""
    closing = "</LocationMatch>" if "Match" in opening else "</Location>"
    regex = f"{opening}\n    WasmTimeout 7\n{closing}\n"
    plain = "<Location /docs>\n    WasmTimeout 8\n</Location>\n"
    app = "SetHandler wasm-handler\nWasmModule app.wasm\n"
    assert served(load(app + regex + plain), "/docs/a.txt").timeout == 8.0
    assert served(load(app + plain + regex), "/docs/a.txt").timeout == 7.0
    assert served(load(app + plain + regex), "/docs/a.html").timeout == 8.0
    assert served(load(app + plain + regex), "/b.txt").timeout == 7.0


def test_a_regex_may_supply_the_handler_for_a_prefix_s_module(root: Path) -> None:
    config = load("""\
        <Location /app>
            WasmModule app.wasm
        </Location>
        <LocationMatch \\.php$>
            SetHandler wasm-handler
        </LocationMatch>
    """)
    assert config.modules() == [root / "app.wasm"]
    php = served(config, "/app/index.php")
    assert (php.handler, php.module, php.prefix) == ("wasm-handler", root / "app.wasm", "/app")
    assert served(config, "/app/style.css").handler is None  # 404
    assert any("<LocationMatch \\.php$>: SetHandler wasm-handler needs a WasmModule" in w for w in config.warnings)


def test_pcre_named_groups_are_accepted() -> None:
    config = load('<LocationMatch "^/site/(?<name>[^/]+)">\n    Require all denied\n</LocationMatch>\n')
    assert not served(config, "/site/a/b").allows("127.0.0.1")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('<LocationMatch "(">', "server.conf:2: <LocationMatch>: bad regular expression '('"),
        ('<Location ~ "a[">', "server.conf:2: <Location>: bad regular expression 'a['"),
        ("<Location ~>", "server.conf:2: <Location>: expected '~ REGEX' (or write <LocationMatch REGEX>)"),
        ("<Location /a /b>", "server.conf:2: <Location>: expected one /PREFIX, got 2 arguments"),
        ("<LocationMatch>", "server.conf:2: <LocationMatch>: expected 1 argument, got 0"),
    ],
)
def test_a_bad_regex_section_is_an_error_at_its_line(lines: str, message: str) -> None:
    closing = "</LocationMatch>" if "Match" in lines else "</Location>"
    with pytest.raises(Exception) as info:
        load(f"{lines}\n    Require all denied\n{closing}\n")
    assert str(info.value).startswith(message)


# --- the decision: one record per request --------------------------------------------------------

SITE = """\
    DocumentRoot docs
    WasmModule app.wasm
    AddHandler wasm-handler .py
    AddType text/x-notes .notes
    AddHandler cgi-script .cgi
    <Location /app>
        SetHandler wasm-handler
        LimitRequestBody 100
    </Location>
    <Location /admin>
        SetHandler wasm-handler
        Require ip 10.0.0.0/8
    </Location>
    <Location /server-status>
        SetHandler server-status
    </Location>
    <Directory {root}/docs/open>
        Options Indexes
    </Directory>
    <Directory {root}/docs/private>
        Require all denied
    </Directory>
"""


def router(config: ServerConfig, access_logs: list[AccessLog] | None = None) -> Router:
    return Router(config, access_logs or [], ErrorLog(LogFile("stderr"), "warn"), ("server-status", "metrics"))


def site(root: Path) -> Router:
    for name in ("docs/open", "docs/closed", "docs/private"):
        (root / name).mkdir(parents=True)
    for name in ("docs/a.notes", "docs/run.py", "docs/x.cgi", "docs/private/secret"):
        (root / name).write_text("text\n")
    return router(load(SITE.format(root=root)))


def request(target: str, addr: str = "192.0.2.1", host: bytes = b"x", port: int = 8080) -> Request:
    return Request("GET", target, "1.1", [(b"host", host)], addr, 1, port, "id-1", 0.0, path=request_path(target))


def test_a_handler_location_is_decided_with_its_body_limit(root: Path) -> None:
    decision = site(root).route(request("/app/x"))
    assert decision.target is RUN_GUEST and decision.settings is None
    assert decision.location is not None and decision.location.prefix == "/app"
    assert decision.body_limit == 100
    assert decision.server.host is None and decision.server.access_logs == ()


def test_the_access_check_comes_before_the_handler(root: Path) -> None:
    routing = site(root)
    assert routing.route(request("/admin")).target is FORBIDDEN
    assert routing.route(request("/admin", addr="10.1.2.3")).target is RUN_GUEST


def test_a_server_page_is_chosen_by_its_handler_name(root: Path) -> None:
    assert site(root).route(request("/server-status")).target == ServerPage("server-status")


def test_no_path_and_no_location_are_not_found_without_a_body_limit(root: Path) -> None:
    routing = router(load("<Location /admin>\n    Require all denied\n</Location>\n"))
    no_path = Request("GET", "/", "1.1", [], "", 0, 8080, "i", 0.0)  # refused before its path was read
    for decision in (routing.route(request("/other")), routing.route(no_path)):
        assert (decision.location, decision.target, decision.body_limit) == (None, NOT_FOUND, 0)


def test_a_file_is_sent_with_its_content_type_and_directory_settings(root: Path) -> None:
    decision = site(root).route(request("/a.notes"))
    assert decision.target == SendFile(root / "docs" / "a.notes", "text/x-notes")
    assert decision.settings is not None and decision.settings.add_types[".notes"] == "text/x-notes"
    assert decision.body_limit == 1073741824


def test_a_file_with_path_info_and_no_handler_is_not_found(root: Path) -> None:
    assert site(root).route(request("/a.notes/more")).target is NOT_FOUND


def test_a_script_runs_with_its_path_info(root: Path) -> None:
    target = site(root).route(request("/run.py/a/b")).target
    assert isinstance(target, RunScript)
    script = target.script
    assert (script.file, script.url, script.path_info) == (root / "docs" / "run.py", "/run.py", "/a/b")


def test_a_handler_prefork_wasm_lacks_never_serves_the_source(root: Path) -> None:
    assert site(root).route(request("/x.cgi")).target is FORBIDDEN


def test_a_directory_without_its_slash_is_redirected_with_the_query(root: Path) -> None:
    assert site(root).route(request("/open?a=1")).target == Redirect(b"/open/?a=1")


def test_a_directory_is_listed_only_with_options_indexes(root: Path) -> None:
    routing = site(root)
    assert routing.route(request("/open/")).target == ListDirectory(root / "docs" / "open", "/open/")
    assert routing.route(request("/closed/")).target is FORBIDDEN


def test_a_denied_tree_does_not_say_which_names_exist(root: Path) -> None:
    routing = site(root)
    assert routing.route(request("/private/secret")).target is FORBIDDEN
    assert routing.route(request("/private/nothing")).target is FORBIDDEN
    assert routing.route(request("/nothing")).target is NOT_FOUND


def test_a_merge_without_a_module_is_a_fault_naming_its_section() -> None:
    config = load("<Location /app>\n    WasmModule app.wasm\n</Location>\n<LocationMatch \\.php$>\n"
                  "    SetHandler wasm-handler\n</LocationMatch>\n")
    target = router(config).route(request("/other.php")).target
    assert target == Fault("SetHandler wasm-handler without a WasmModule at server.conf:5")


def test_a_failure_while_routing_is_the_request_s_fault(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    routing = site(root)
    monkeypatch.setattr("prefork_wasm.router.resolve", broken)
    decision = routing.route(request("/a.notes"))
    assert isinstance(decision.target, Fault)
    assert decision.target.cause.startswith("internal error: RuntimeError: boom at test_router.py:")
    assert decision.body_limit == 1073741824


def test_a_virtual_host_brings_its_own_locations_and_logs(root: Path) -> None:
    config = load("""\
        Listen 8081
        ServerName main.example
        <VirtualHost *:8080>
            ServerName a.example
            SetHandler wasm-handler
            WasmModule app.wasm
        </VirtualHost>
        <VirtualHost *:8080>
            ServerName b.example
        </VirtualHost>
    """)
    main_log, a_log = (AccessLog(LogFile("stderr"), "%v", host) for host in (None, 0))
    routing = router(config, [main_log, a_log])
    a = routing.route(request("/x", host=b"A.Example."))
    assert (a.server.name, a.server.access_logs, a.target) == ("a.example", (a_log,), RUN_GUEST)
    b = routing.route(request("/x", host=b"b.example"))
    assert (b.server.name, b.server.access_logs, b.target) == ("b.example", (main_log,), NOT_FOUND)
    main = routing.route(request("/x", port=8081))
    assert (main.server.host, main.server.name, main.server.access_logs) == (None, "main.example", (main_log,))


# --- a request on a TLS connection: mod_ssl's Host-versus-SNI rule -------------------------------

TLS_SITE = """\
    <VirtualHost *:8080>
        ServerName a.example
        SSLEngine on
        SSLCertificateFile a.pem
        SSLCertificateKeyFile a.key
        {a}
        Redirect /old /new
        SetHandler wasm-handler
        WasmModule app.wasm
    </VirtualHost>
    <VirtualHost *:8080>
        ServerName b.example
        SSLEngine on
        SSLCertificateFile {b_cert}.pem
        SSLCertificateKeyFile {b_cert}.key
        {b}
        SetHandler wasm-handler
        WasmModule app.wasm
    </VirtualHost>
"""


def tls_router(a: str = "", b: str = "", b_cert: str = "b") -> Router:
    for name in ("a", "b"):
        Path(f"{name}.pem").write_text("a certificate (the router does not read it)\n")
        Path(f"{name}.key").write_text("a key\n")
    return router(load(TLS_SITE.format(a=a, b=b, b_cert=b_cert)))


def tls_request(routing: Router, target: str, sni: str, host: bytes | None) -> Request:
    """A request whose handshake was made by the host `sni` chose (the default host without SNI),
    as the listener's SNI callback leaves it in Request.tls."""
    hosts = routing.config.virtual_hosts
    chosen = next((h for h in hosts if h.answers(sni)), hosts[0])
    context = HostContext(ssl.PROTOCOL_TLS_SERVER)
    context.settings, context.host = chosen.tls, chosen
    headers = [(b"host", host)] if host is not None else []
    req = Request("GET", target, "1.1" if host else "1.0", headers, "192.0.2.1", 1, 8080, "id", 0.0,
                  path=request_path(target))
    req.tls = TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128, sni, False, context)
    return req


@pytest.mark.parametrize(
    "sni, host, status, apache_says",
    [
        ("a.example", b"a.example", None, "SNI and Host name the same host"),
        ("a.example", b"b.example", 421, "AH02032: another host, TLS settings not compatible: 421"),
        ("b.example", b"a.example:8080", 421, "the same the other way round"),
        ("a.example", b"unknown.example", None, "an unknown Host is the default host, which SNI chose too"),
        ("a.example", None, 400, "AH02031: SNI, but no host name in the request"),
        ("", b"b.example", None, "no SNI and no SSLStrictSNIVHostCheck: any host"),
    ],
)
def test_a_host_that_differs_from_sni_is_misdirected(sni: str, host: bytes | None, status: int | None,
                                                      apache_says: str) -> None:
    routing = tls_router()
    decision = routing.route(tls_request(routing, "/x", sni, host))
    if status is None:
        assert decision.target is RUN_GUEST, apache_says
    else:
        assert isinstance(decision.target, Refusal) and decision.target.status == status, apache_says
    if status == 421:
        assert "does not match the Server Name Indication (SNI) in use" in decision.target.text


def test_hosts_with_compatible_tls_settings_share_a_connection() -> None:
    """ssl_server_compatible: the same protocols, cipher suites, certificate and key files; then
    a request for the other host is served on the connection SNI made for the first."""
    routing = tls_router(b_cert="a")
    decision = routing.route(tls_request(routing, "/x", "a.example", b"b.example"))
    assert decision.target is RUN_GUEST and decision.server.name == "b.example"
    routing = tls_router(b_cert="a", b="SSLProtocol TLSv1.3")
    assert routing.route(tls_request(routing, "/x", "a.example", b"b.example")).target.status == 421


@pytest.mark.parametrize(
    "a, b, sni, host, status",
    [
        ("", "SSLStrictSNIVHostCheck on", "", b"b.example", 403),  # on in the host asked for
        ("", "SSLStrictSNIVHostCheck on", "", b"a.example", None),  # another host of the address: served
        ("SSLStrictSNIVHostCheck on", "", "", b"b.example", 403),  # on in the default (handshake) host: every host
        ("SSLStrictSNIVHostCheck on", "", "", b"a.example", 403),
        ("SSLStrictSNIVHostCheck on", "", "b.example", b"b.example", None),  # with SNI: served
    ],
)
def test_strict_sni_refuses_a_client_without_sni(a: str, b: str, sni: str, host: bytes, status: int | None) -> None:
    """SSLStrictSNIVHostCheck: 'If set to on in the default name-based virtual host, clients that
    are SNI unaware will not be allowed to access any virtual host, belonging to this particular
    IP / port combination. If set to on in any other virtual host, SNI unaware clients are not
    allowed to access this particular virtual host.'"""
    routing = tls_router(a, b)
    target = routing.route(tls_request(routing, "/x", sni, host)).target
    if status is None:
        assert target is RUN_GUEST
    else:
        assert isinstance(target, Refusal) and target.status == 403 and "Server Name Indication" in target.text


def test_a_redirect_the_server_makes_absolute_keeps_the_https_scheme() -> None:
    routing = tls_router()
    decision = routing.route(tls_request(routing, "/old", "a.example", b"a.example"))
    assert decision.target == Redirect(b"https://a.example/new", 302)
    plain = routing.route(request("/old", host=b"a.example"))
    assert plain.target == Redirect(b"http://a.example/new", 302)
