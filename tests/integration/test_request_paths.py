"""Access control and routing on the one normalised path, through the real server (issue 8, item 1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from harness import Server, env_of, wait_for

# Everything goes to the env module; /admin is for 10.0.0.0/8 only, which denies 127.0.0.1.
ADMIN = """
SetHandler wasm-handler
WasmModule ${EXAMPLES}/env.wasm
WasmEnableCGI On
<Location /admin>
    Require ip 10.0.0.0/8
</Location>
CustomLog logs/paths_log "%U|%r|%>s"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("paths"), ADMIN, start_servers=1).start()
    yield srv
    srv.stop()



@pytest.mark.parametrize(
    "target",
    [b"/admin/x", b"/%61dmin/x", b"/x/../admin/x", b"//admin/x", b"/x/%2e%2e/admin/x", b"/./admin",
     b"http://localhost/%61dmin/x", b"/admin/."],
)
def test_every_spelling_of_admin_is_denied(server: Server, target: bytes) -> None:
    assert server.raw(target)[0] == 403


@pytest.mark.parametrize(
    "target, status",
    [
        (b"/../admin/x", 400),  # climbs above '/'
        (b"/x/../../admin", 400),
        (b"/%2e%2e/admin", 400),
        (b"/%zz", 400),  # malformed escape
        (b"/%C0%AE%C0%AE/admin", 400),  # overlong UTF-8 '..': not a dot segment, not UTF-8
        (b"/admin%2Fx", 404),  # AllowEncodedSlashes Off
        (b"/x%2F..%2Fadmin", 404),
        (b"/a%00b", 404),  # encoded NUL
    ],
)
def test_hostile_paths_are_refused(server: Server, target: bytes, status: int) -> None:
    assert server.raw(target)[0] == status


def test_the_guest_sees_the_path_that_was_matched(server: Server) -> None:
    status, _, body, _ = server.get("/public/..//%61pp/./x%20y?q=/../admin")
    assert status == 200
    env = env_of(body)
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/app/x y"
    assert env["REQUEST_URI"] == "/public/..//%61pp/./x%20y?q=/../admin"  # raw, as sent
    assert env["QUERY_STRING"] == "q=/../admin"


def test_access_log_has_the_decoded_path_and_the_raw_request_line(server: Server) -> None:
    server.get("/x/../%61dmin/y")
    line = "/admin/y|GET /x/../%61dmin/y HTTP/1.1|403"
    log = server.root / "logs" / "paths_log"
    wait_for(lambda: line in log.read_text().splitlines(), what="the access log line")


@pytest.fixture
def encoded_slashes(make_server: Callable[..., Server]) -> Callable[[str], Server]:
    def make(setting: str) -> Server:
        return make_server(ADMIN + f"AllowEncodedSlashes {setting}\n", start_servers=1)

    return make


def test_allow_encoded_slashes_on_decodes_then_matches(encoded_slashes: Callable[[str], Server]) -> None:
    server = encoded_slashes("On")
    assert server.raw(b"/x%2F..%2Fadmin/y")[0] == 403  # decoded, normalised, then matched
    assert server.raw(b"/admin%2Fy")[0] == 403
    assert env_of(server.get("/a%2Fb")[2])["PATH_INFO"] == "/a/b"
    assert server.raw(b"/a%00b")[0] == 404


def test_allow_encoded_slashes_nodecode_keeps_them_encoded(encoded_slashes: Callable[[str], Server]) -> None:
    server = encoded_slashes("NoDecode")
    status, _, body, _ = server.get("/admin%2Fy")
    assert status == 200  # one segment 'admin%2Fy', which /admin does not cover (as in Apache)
    assert env_of(body)["PATH_INFO"] == "/admin%2Fy"
    assert server.raw(b"/x/..%2F%2e%2e/admin")[0] == 200  # '..%2F..' is a name, not dot segments
