"""Name-based virtual hosts through the real server: one port, answers by Host, each host its
own Locations and access log (issue 11, acceptance item 2)."""

from __future__ import annotations

import http.client
import signal
import subprocess
from collections.abc import Callable, Iterator

import pytest

from harness import Server, env_of, free_port, wait_for


def hosts(port: int, other: int, extra_alias: str = "") -> str:
    """a.example (the default on the port: first) serves env at /a only; b.example serves hello
    everywhere; c.example has no log of its own. On `other`, a port on all interfaces, the host
    for 127.0.0.1 exactly beats the one for *."""
    return f"""
Listen {other}
LogFormat "%v %U %>s" vhost
CustomLog logs/main_vhost_log vhost
<VirtualHost *:{port}>
    ServerName a.example
    ServerAlias *.a.test
    CustomLog logs/a_log vhost
    <Location /a>
        SetHandler wasm-handler
        WasmModule ${{EXAMPLES}}/env.wasm
        WasmEnableCGI On
    </Location>
</VirtualHost>
<VirtualHost *:{port}>
    ServerName b.example:{port}
    ServerAlias {extra_alias or "b.test"}
    CustomLog logs/b_log vhost
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/hello.wasm
    WasmEnableCGI On
    <Location /private>
        Require ip 10.0.0.0/8
    </Location>
</VirtualHost>
<VirtualHost *:{port}>
    ServerName c.example
    ErrorLog logs/c_error_log
    <Location /trap>
        SetHandler wasm-handler
        WasmModule ${{MODULES}}/trap.wasm
    </Location>
</VirtualHost>
<VirtualHost *:{other}>
    ServerName star.example
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/hello.wasm
</VirtualHost>
<VirtualHost 127.0.0.1:{other}>
    ServerName exact.example
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/env.wasm
    WasmEnableCGI On
</VirtualHost>
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("vhosts"), "", start_servers=1)
    srv.other = free_port()  # type: ignore[attr-defined]
    srv.write_config(hosts(srv.port, srv.other), start_servers=1)  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


def get(server: Server, host: str, path: str, port: int | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port or server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def log_lines(server: Server, name: str) -> list[str]:
    path = server.root / "logs" / name
    return path.read_text().splitlines() if path.exists() else []


def test_two_hosts_on_one_port_answer_by_host_with_their_own_locations(server: Server) -> None:
    status, body = get(server, "a.example", "/a/x")
    assert status == 200 and env_of(body)["PATH_INFO"] == "/x"
    assert get(server, "a.example", "/hello")[0] == 404  # a has no handler outside /a
    status, body = get(server, "B.Example.:1234", "/a/x")  # case, trailing dot and port ignored
    assert status == 200 and body == b"Hello from WebAssembly!\n"
    assert get(server, "b.example", "/private/x")[0] == 403
    assert get(server, "a.example", "/private/x")[0] == 404  # b's section only
    assert get(server, "deep.sub.a.test", "/a")[0] == 200  # a wildcard ServerAlias


def test_an_unknown_host_gets_the_first_host_for_the_address(server: Server) -> None:
    status, body = get(server, "unknown.example", "/a/y")
    assert status == 200 and env_of(body)["PATH_INFO"] == "/y"  # a.example's /a
    assert get(server, "unknown.example", "/other")[0] == 404


def test_each_host_logs_to_its_own_access_log_with_its_name(server: Server) -> None:
    get(server, "a.example", "/a/logged")
    get(server, "b.test", "/b-logged")
    get(server, "c.example", "/c-logged")
    wait_for(lambda: "a.example /a/logged 200" in log_lines(server, "a_log"), what="a's log line")
    wait_for(lambda: "b.example /b-logged 200" in log_lines(server, "b_log"), what="b's log line")
    # c has no CustomLog: the main server's logs have it, with its own %v; a's and b's are not there.
    wait_for(lambda: "c.example /c-logged 404" in log_lines(server, "main_vhost_log"), what="c's log line")
    main = log_lines(server, "main_vhost_log")
    assert not any("logged 200" in line for line in main)
    assert not any("/c-logged" in line for line in log_lines(server, "a_log") + log_lines(server, "b_log"))


def test_a_host_s_request_errors_go_to_its_own_error_log(server: Server) -> None:
    assert get(server, "c.example", "/trap")[0] == 500
    wait_for(lambda: any("trap.wasm: " in line for line in log_lines(server, "c_error_log")), what="c's error line")
    assert "trap.wasm: " not in server.log()  # not in the main ErrorLog (which names it when compiling)
    assert "listening on" in server.log()  # which still has the server's own lines


def test_a_host_for_the_exact_local_ip_beats_the_one_for_any(server: Server) -> None:
    other: int = server.other  # type: ignore[attr-defined]
    status, body = get(server, "star.example", "/x", port=other)
    assert status == 200 and env_of(body)["SCRIPT_NAME"] == ""  # exact.example's env, whatever the Host


def test_a_graceful_restart_picks_up_changed_hosts(make_server: Callable[..., Server]) -> None:
    server = make_server("", start=False)
    other = free_port()
    server.write_config(hosts(server.port, other), start_servers=1)
    server.start()
    assert get(server, "new.example", "/x")[0] == 404  # unknown: a.example, no handler there
    server.write_config(hosts(server.port, other, extra_alias="new.example"), start_servers=1)
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "generation 1 configured" in server.log(), what="the graceful restart")
    wait_for(lambda: get(server, "new.example", "/x")[0] == 200, what="the new alias to answer")
    assert get(server, "a.example", "/a/x")[0] == 200
    assert get(server, "b.test", "/x")[0] == 404  # the alias it replaced


def test_dump_lists_the_hosts(server: Server) -> None:
    result = subprocess.run(server.command("-S"), capture_output=True, text=True, cwd=server.root, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    conf = server.conf.read_text().splitlines()

    def opened(name: str) -> int:
        """The line of the <VirtualHost> whose ServerName line starts with `name`."""
        return next(n for n, line in enumerate(conf) if line.strip().startswith(f"ServerName {name}"))

    assert f"*:{server.port:<20} is a NameVirtualHost" in lines
    assert f"         default server a.example ({server.conf}:{opened('a.example')})" in lines
    assert f"         port {server.port} namevhost b.example ({server.conf}:{opened('b.example')})" in lines
    other: int = server.other  # type: ignore[attr-defined]
    assert f"127.0.0.1:{other:<12} exact.example ({server.conf}:{opened('exact.example')})" in lines
