"""Name-based <VirtualHost>s: parsing, inheritance from the main server, and Apache's choice of
the host that answers a request (issue 11)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prefork_wasm.cli import dump
from prefork_wasm.conffile import parse_config
from prefork_wasm.config import ConfigError, Listen, ServerConfig, VirtualHost
from prefork_wasm.counters import LabelIndex, Recorder
from prefork_wasm.logs import AccessLog, ErrorLog, LogFile
from prefork_wasm.messages import Request
from prefork_wasm.router import LocationIndex, Router, request_host, select_host
from prefork_wasm.scoreboard import Slot, words
from prefork_wasm.site import Site, prepare_guests


@pytest.fixture(autouse=True)
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("main.wasm", "a.wasm", "b.wasm"):
        (tmp_path / name).write_bytes(b"\0asm")
    return Path.cwd()


def load(text: str) -> ServerConfig:
    Path("server.conf").write_text(textwrap.dedent(text))
    return parse_config("server.conf")


def fails(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    return str(info.value)


TWO = """\
    Listen 127.0.0.1:8080
    Listen 8081
    ServerName main.example
    CustomLog logs/main_log common
    <Location /shared>
        SetHandler wasm-handler
        WasmModule main.wasm
    </Location>
    <VirtualHost *:8080>
        ServerName A.Example:8080
        ServerAlias *.a.example al?as.test
        CustomLog logs/a_log "%v %U"
        SetHandler wasm-handler
        WasmModule a.wasm
        <Location /only-a>
            Require all denied
        </Location>
    </VirtualHost>
    <VirtualHost _default_:8080>
        ServerName b.example
        <Location /b>
            SetHandler wasm-handler
            WasmModule b.wasm
        </Location>
    </VirtualHost>
    WasmTimeout 4
"""


def test_virtual_hosts_are_parsed_with_canonical_names(root: Path) -> None:
    config = load(TWO)
    a, b = config.virtual_hosts
    assert (a.addresses, a.server_name, a.aliases, a.source) == (
        [Listen("", 8080)], "a.example", ["*.a.example", "al?as.test"], "server.conf:9"
    )
    assert (b.addresses, b.server_name) == ([Listen("", 8080)], "b.example")  # _default_ is *
    assert [(log.target, log.host) for log in config.custom_logs] == [
        (str(root / "logs/main_log"), None), (str(root / "logs/a_log"), 0)
    ]
    assert config.modules() == [root / "main.wasm", root / "a.wasm", root / "b.wasm"]


def test_a_host_inherits_the_main_server_s_sections_and_defaults(root: Path) -> None:
    config = load(TWO)
    a, b = (LocationIndex(host.routes) for host in config.virtual_hosts)
    main = LocationIndex(config.routes)
    # Its own defaults over the main server's, including a line after the <VirtualHost> (Apache
    # merges the main server into each host once the whole file is read).
    assert (a.match("/x").module, a.match("/x").timeout) == (root / "a.wasm", 4.0)  # type: ignore[union-attr]
    assert a.match("/shared/x").module == root / "main.wasm"  # type: ignore[union-attr]
    assert not a.match("/only-a").allows("127.0.0.1")  # type: ignore[union-attr]
    assert b.match("/x") is None  # no handler at b's level or the main server's
    assert b.match("/b").module == root / "b.wasm"  # type: ignore[union-attr]
    assert main.match("/only-a") is None  # the main server has no such section
    assert main.match("/b") is None


def test_a_virtual_host_without_server_name_is_known_by_the_main_server_s() -> None:
    config = load("Listen 8080\nServerName Main.Example:80\n<VirtualHost *:8080>\n</VirtualHost>\n")
    assert config.virtual_hosts[0].server_name == "main.example"


@pytest.mark.parametrize(
    ("arg", "address"),
    [
        ("*:8080", Listen("", 8080)),
        ("_default_:8080", Listen("", 8080)),
        ("127.0.0.1:8080", Listen("127.0.0.1", 8080)),
        ("[::1]:8080", Listen("::1", 8080)),
        ("[0:0::1]:8080", Listen("::1", 8080)),
        ("*", Listen("", 0)),
        ("10.0.0.1:*", Listen("10.0.0.1", 0)),
    ],
)
def test_virtual_host_addresses(arg: str, address: Listen) -> None:
    config = load(f"Listen 8080\n<VirtualHost {arg}>\n    ServerName x\n</VirtualHost>\n")
    assert config.virtual_hosts[0].addresses == [address]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<VirtualHost www.example:80>\n</VirtualHost>",
         "server.conf:2: <VirtualHost>: 'www.example' is not an IP address; use * (any address)"),
        ("<VirtualHost *:99999>\n</VirtualHost>", "server.conf:2: <VirtualHost>: port must be 1-65535, got '99999'"),
        ("<VirtualHost>\n</VirtualHost>", "server.conf:2: <VirtualHost>: expected at least 1 argument, got 0"),
        ("<VirtualHost *:8080>\nListen 9090\n</VirtualHost>",
         "server.conf:3: Listen: not allowed inside <VirtualHost> (opened at server.conf:2); "
         "move it to the main server"),
        ("<VirtualHost *:8080>\n<VirtualHost *:8081>\n</VirtualHost>\n</VirtualHost>",
         "server.conf:3: <VirtualHost>: not allowed inside <VirtualHost> (opened at server.conf:2)"),
        ("<Location /x>\n<VirtualHost *:8080>\n</VirtualHost>\n</Location>",
         "server.conf:3: <VirtualHost>: not allowed inside <Location /x>"),
        ("ServerAlias www.example", "server.conf:2: ServerAlias: ServerAlias names a <VirtualHost>; put it inside one"),
        ("<VirtualHost *:8080>\nServerName x\n", "server.conf:2: <VirtualHost *:8080>: section is never closed"),
        ("<VirtualHost *:8080>\n<Location /x>\nSetHandler wasm-handler\n</Location>\n</VirtualHost>",
         "server.conf:3: <Location /x>: SetHandler wasm-handler needs a WasmModule"),
    ],
)
def test_virtual_host_mistakes_are_errors_at_their_line(text: str, message: str) -> None:
    assert fails(f"Listen 8080\n{text}\n").startswith(message)


def test_every_error_in_virtual_hosts_is_listed() -> None:
    message = fails(
        "Listen 8080\n<VirtualHost nowhere:1>\n</VirtualHost>\n<VirtualHost *:8080>\nTimeout 3\n"
        "<LocationMatch (>\n</LocationMatch>\n</VirtualHost>\n"
    )
    assert [line.split(": ")[0] for line in message.splitlines()] == ["server.conf:2", "server.conf:5", "server.conf:6"]


def test_an_address_no_listen_covers_is_warned_about() -> None:
    config = load(
        "Listen 127.0.0.1:8080\n<VirtualHost *:9999>\n</VirtualHost>\n<VirtualHost 10.0.0.1:8080>\n</VirtualHost>\n"
        "<VirtualHost *:8080 *>\n</VirtualHost>\n"
    )
    assert config.warnings == [
        "server.conf:2: <VirtualHost> address *:9999 matches no Listen, so this host never answers there; "
        "add a Listen for it or change the address",
        "server.conf:4: <VirtualHost> address 10.0.0.1:8080 matches no Listen, so this host never answers there; "
        "add a Listen for it or change the address",
    ]


def test_a_virtual_host_may_have_its_own_error_log(root: Path) -> None:
    config = load(
        "Listen 8080\n<VirtualHost *:8080>\nErrorLog logs/a_error\n</VirtualHost>\n"
        "<VirtualHost *:8080>\n</VirtualHost>\n"
    )
    a, b = config.virtual_hosts
    assert (a.error_log, a.error_log_source) == (str(root / "logs/a_error"), "server.conf:3")
    assert b.error_log is None
    assert config.error_log == "stderr"


# --- choosing the host --------------------------------------------------------------------------

HOSTS = """\
    Listen 8080
    Listen 8081
    Listen 8082
    <VirtualHost *:8080>
        ServerName a.example
        ServerAlias *.a.example al?as.test
    </VirtualHost>
    <VirtualHost 127.0.0.1:8080>
        ServerName b.example
    </VirtualHost>
    <VirtualHost *:8080>
        ServerName c.example
    </VirtualHost>
    <VirtualHost [::1]:8080>
        ServerName six.example
    </VirtualHost>
    <VirtualHost *:8081 *:8082>
        ServerName d.example
    </VirtualHost>
    <VirtualHost *>
        ServerName any-port.example
    </VirtualHost>
"""


@pytest.mark.parametrize(
    ("ip", "port", "name", "chosen"),
    [
        ("10.0.0.5", 8080, "a.example", "a.example"),
        ("10.0.0.5", 8080, "c.example", "c.example"),
        ("10.0.0.5", 8080, "x.a.example", "a.example"),  # wildcard alias
        ("10.0.0.5", 8080, "deep.x.a.example", "a.example"),  # '*' spans dots, as Apache's
        ("10.0.0.5", 8080, "alias.test", "a.example"),
        ("10.0.0.5", 8080, "aliaas.test", "a.example"),  # no match either: the default is a anyway
        ("10.0.0.5", 8080, "d.example", "a.example"),  # d is not on 8080: the default answers
        ("10.0.0.5", 8080, "", "a.example"),  # no Host (HTTP/1.0): the default
        ("10.0.0.5", 8080, "any-port.example", "any-port.example"),  # * (any port) answers by name
        ("127.0.0.1", 8080, "a.example", "b.example"),  # an exact IP beats *: Host is not looked at across
        ("127.0.0.1", 8080, "zzz", "b.example"),
        ("::1", 8080, "c.example", "six.example"),
        ("10.0.0.5", 8081, "x", "d.example"),
        ("10.0.0.5", 8082, "d.example", "d.example"),
        ("10.0.0.5", 8083, "x", "any-port.example"),
    ],
)
def test_select_host_as_apache(ip: str, port: int, name: str, chosen: str) -> None:
    host = select_host(load(HOSTS).virtual_hosts, ip, port, name)
    assert host is not None and host.server_name == chosen


def test_no_host_for_the_address_is_the_main_server() -> None:
    hosts = load("Listen 8080\nListen 8081\n<VirtualHost *:8080>\nServerName a\n</VirtualHost>\n").virtual_hosts
    assert select_host(hosts, "127.0.0.1", 8081, "a") is None
    assert select_host([], "127.0.0.1", 8080, "a") is None


@pytest.mark.parametrize(
    ("target", "host", "name"),
    [
        ("/x", b"A.Example", "a.example"),
        ("/x", b"a.example.", "a.example"),  # the trailing dot of a fully qualified name
        ("/x", b"a.example:8080", "a.example"),
        ("/x", b"[::1]:8080", "[::1]"),
        ("/x", None, ""),
        ("http://B.example:81/x", b"a.example", "b.example"),  # absolute form wins over Host
        ("http://user@b.example/x", b"a.example", "b.example"),
    ],
)
def test_request_host(target: str, host: bytes | None, name: str) -> None:
    assert request_host(target, host) == name


def test_dump_shows_virtual_hosts_as_apache(root: Path) -> None:
    lines = dump(load(TWO)).splitlines()
    assert lines[:8] == [
        "VirtualHost configuration:",
        "*:8080                 is a NameVirtualHost",
        "         default server a.example (server.conf:9)",
        "         port 8080 namevhost a.example (server.conf:9)",
        "                 wild alias *.a.example",
        "                 wild alias al?as.test",
        "         port 8080 namevhost b.example (server.conf:19)",
        "*:8081                 main server main.example (server.conf:2)",
    ]
    at = lines.index("Locations of a.example (server.conf:9):")
    assert lines[at + 1 : at + 4] == [
        f"/                      wasm-handler {root / 'a.wasm'} (server.conf:13)",
        f"/shared                wasm-handler {root / 'main.wasm'} (server.conf:5)",
        f"/only-a                wasm-handler {root / 'a.wasm'} (server.conf:15)",
    ]


def test_a_virtual_host_names_itself_case_insensitively() -> None:
    host = VirtualHost([Listen("", 80)], "a.example", ["*.B.example"], "x", load("Listen 8080\n").routes)
    assert host.answers("a.example") and host.answers("x.b.example")
    assert not host.answers("b.example") and not host.answers("a.example.org")


@pytest.mark.parametrize(("host", "logged"), [("a.example", "a.example"), ("other", "a.example")])
def test_percent_v_is_the_canonical_name_of_the_host_that_answered(tmp_path: Path, host: str, logged: str) -> None:
    config = load(
        "Listen 8080\nListen 8081\nServerName Main.Example:80\n"
        "<VirtualHost *:8080>\nServerName A.Example:8080\n</VirtualHost>\n"
    )
    log = tmp_path / "access_log"
    slot = Slot()
    access_logs = [AccessLog(LogFile(str(log)), "%v %p")]
    site = Site(
        config, Router(config, access_logs, ErrorLog(LogFile(str(tmp_path / "error_log")), "warn"), ()),
        prepare_guests(config, None, {}), None, access_logs, slot,  # type: ignore[arg-type]
        recorder=Recorder(words(slot.counts), LabelIndex({}, {})), pages={},
    )
    for port in (8080, 8081):
        request = Request(
            "GET", "/", "1.1", [(b"host", host.encode())], "127.0.0.1", 1, port, f"id-{port}", 0.0, path="/"
        )
        decision = site.route(request)
        site.finished(request, decision, site.respond(request, decision, lambda response: None), 0)
    assert log.read_text().splitlines() == [f"{logged} 8080", "main.example 8081"]
