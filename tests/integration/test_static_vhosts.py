"""Static files per virtual host through the real server: two hosts on one port, each with its
own DocumentRoot and <Directory> sections, answer different files by Host; a hostile path under
a host's root reaches neither the other host's files nor anything outside (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Server


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("vhost-files")
    for name in ("one", "two"):
        (base / name / "closed").mkdir(parents=True)
        (base / name / "index.html").write_text(f"index of {name}")
        (base / name / "file.txt").write_text(f"file of {name}")
        (base / name / "closed" / "secret.txt").write_text(f"secret of {name}")
    (base / "one" / "nolinks").mkdir()
    (base / "one" / "nolinks" / "two.txt").symlink_to(base / "two" / "file.txt")
    (base / "outside.txt").write_text("outside both roots")
    return base


@pytest.fixture(scope="module")
def server(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("vhost-files-server"), "", start_servers=1)
    srv.write_config(
        f"""
<VirtualHost *:{srv.port}>
    ServerName one.example
    DocumentRoot {base}/one
    <Directory {base}/one/closed>
        Require all denied
    </Directory>
    <Directory {base}/one/nolinks>
        Options -FollowSymLinks
    </Directory>
</VirtualHost>
<VirtualHost *:{srv.port}>
    ServerName two.example
    DocumentRoot {base}/two
</VirtualHost>
""",
        start_servers=1,
    )
    srv.start()
    yield srv
    srv.stop()



def test_two_hosts_on_one_port_serve_their_own_document_roots(server: Server) -> None:
    assert server.raw("/file.txt", host="one.example") == (200, b"file of one")
    assert server.raw("/file.txt", host="two.example") == (200, b"file of two")
    assert server.raw("/", host="two.example") == (200, b"index of two")
    assert server.raw("/", host="elsewhere.example") == (200, b"index of one")  # the first host: the default
    assert server.raw("http://two.example/file.txt", host="one.example") == (200, b"file of two")  # absolute form wins


def test_a_host_s_directory_sections_are_its_own(server: Server) -> None:
    assert server.raw("/closed/secret.txt", host="one.example")[0] == 403
    assert server.raw("/closed/secret.txt", host="two.example") == (200, b"secret of two")


@pytest.mark.parametrize(
    "target, status",
    [
        ("/../two/file.txt", 400),
        ("/%2e%2e/two/file.txt", 400),
        ("/closed/%2e%2e/%2e%2e/outside.txt", 400),
        ("/..%2ftwo%2ffile.txt", 404),
        ("/file.txt%00.html", 404),
        ("//closed//secret.txt", 403),
        ("/%63losed/secret.txt", 403),
        ("http://one.example/../outside.txt", 400),
        ("/nolinks/two.txt", 403),  # Options -FollowSymLinks in one.example's own <Directory>
        ("/" + "a" * 4000, 404),
    ],
)
def test_hostile_paths_under_a_host_s_root_are_refused(server: Server, target: str, status: int) -> None:
    got, body = server.raw(target, host="one.example")
    assert got == status
    assert b"file of two" not in body and b"outside both roots" not in body and b"secret of" not in body
