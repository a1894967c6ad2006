"""Apache's <Location> merge through the real server: every matching section counts (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import Server, env_of

# The app is a <Location />, not server-level defaults; /admin only restricts. Under
# longest-prefix routing /admin had no handler (404); under Apache's merge it has the app and
# the Require.
NESTED = """
<Location />
    SetHandler wasm-handler
    WasmModule ${EXAMPLES}/env.wasm
    WasmEnableCGI On
</Location>
<Location /admin>
    Require ip 10.0.0.0/8
</Location>
<Location /admin/open>
    Require all granted
</Location>
<LocationMatch "^/(secret|private)(/|$)">
    Require ip 10.0.0.0/8
</LocationMatch>
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("routing"), NESTED, start_servers=1).start()
    yield srv
    srv.stop()



@pytest.mark.parametrize(
    "target",
    [b"/admin", b"/admin/x", b"/%61dmin/x", b"/x/../admin", b"//admin", b"/x/%2e%2e/admin/x",
     b"http://localhost/%61dmin", b"/admin/./open/..", b"/admin/" + b"a/" * 2000],
)
def test_every_spelling_of_admin_is_denied(server: Server, target: bytes) -> None:
    assert server.raw(target)[0] == 403


@pytest.mark.parametrize(
    "target", [b"/secret", b"/%73ecret/x", b"/x/../private", b"//secret/", b"/a/%2e%2e/private/b"]
)
def test_every_spelling_of_a_location_match_is_denied(server: Server, target: bytes) -> None:
    assert server.raw(target)[0] == 403


def test_the_app_serves_beside_and_inside_the_restricted_area(server: Server) -> None:
    status, _, body, _ = server.get("/administrator?x=1")
    assert status == 200  # /admin covers whole segments only
    env = env_of(body)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/administrator")
    status, _, body, _ = server.get("/admin/open/page")  # a later, deeper section opens it again
    assert status == 200
    assert env_of(body)["PATH_INFO"] == "/admin/open/page"  # still the app mounted at /
    assert server.get("/secretary")[0] == 200
