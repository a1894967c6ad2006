"""Static files through the real server: validators, 304, ranges, HEAD, directories, access
control on disk, hostile paths, and a 1 GiB file sent with sendfile while the worker's memory
stays flat."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness import Server, wait_for

BODY = b"0123456789abcdefghij"
BIG = 1 << 30


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("static")
    www = base / "www"
    (www / "docs" / "empty").mkdir(parents=True)
    (www / "open").mkdir()
    (www / "closed").mkdir()
    (www / "nolinks").mkdir()
    (www / "file.txt").write_bytes(BODY)
    (www / "empty.txt").write_bytes(b"")
    (www / "page.html").write_text("<p>hi</p>")
    (www / "data.own").write_text("own")
    (www / "docs" / "index.html").write_text("docs index")
    (www / "open" / "a.txt").write_text("a")
    (www / "closed" / "secret.txt").write_text("secret")
    (www / "private.key").write_text("key")
    (www / ".htaccess").write_text("Require all denied")
    (base / "outside.txt").write_text("outside the root")
    (www / "link.txt").symlink_to(base / "outside.txt")
    (www / "nolinks" / "link.txt").symlink_to(base / "outside.txt")
    (www / "nolinks" / "plain.txt").write_text("plain")
    (www / "split\r\nSet-Cookie: owned=1").mkdir()  # a name that would split a response head
    (base / "aliased").mkdir()
    (base / "aliased" / "x.txt").write_text("aliased x")
    with open(www / "big.bin", "wb") as big:
        big.truncate(BIG)  # sparse: no disk, no page cache to speak of
    return www


@pytest.fixture(scope="module")
def server(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    body = f"""
DocumentRoot {site}
Alias /extra/ {site.parent / "aliased"}/
AddType text/x-own .own
<Directory {site}/closed>
    Require all denied
</Directory>
<Directory {site}/open>
    Options +Indexes
</Directory>
<Directory {site}/nolinks>
    Options -FollowSymLinks
</Directory>
<FilesMatch "\\.key$">
    Require all denied
</FilesMatch>
"""
    server = Server(tmp_path_factory.mktemp("static-server"), body, start_servers=1).start()
    yield server
    server.stop()



def test_a_file_with_its_type_and_validators(server: Server, site: Path) -> None:
    status, headers, body, _ = server.get("/file.txt")
    assert (status, body, headers["content-type"]) == (200, BODY, "text/plain")
    st = (site / "file.txt").stat()
    assert headers["etag"] == f'"{st.st_size:x}-{st.st_mtime_ns // 1000:x}"'
    assert headers["last-modified"].endswith(" GMT")
    assert headers["accept-ranges"] == "bytes"
    assert server.get("/page.html")[1]["content-type"] == "text/html"
    assert server.get("/data.own")[1]["content-type"] == "text/x-own"  # AddType


def test_not_modified(server: Server) -> None:
    _, headers, _, _ = server.get("/file.txt")
    status, again, body, _ = server.get("/file.txt", headers={"If-None-Match": headers["etag"]})
    assert (status, body, again["etag"]) == (304, b"", headers["etag"])
    assert "content-length" not in again
    assert server.get("/file.txt", headers={"If-Modified-Since": headers["last-modified"]})[0] == 304
    assert server.get("/file.txt", headers={"If-None-Match": '"stale"'})[0] == 200


def test_ranges(server: Server) -> None:
    status, headers, body, _ = server.get("/file.txt", headers={"Range": "bytes=5-9"})
    assert (status, body, headers["content-range"], headers["content-length"]) == (206, b"56789", "bytes 5-9/20", "5")
    assert server.get("/file.txt", headers={"Range": "bytes=-3"})[2] == b"hij"
    status, headers, _, _ = server.get("/file.txt", headers={"Range": "bytes=20-"})
    assert (status, headers["content-range"]) == (416, "bytes */20")
    status, _, body, _ = server.get("/file.txt", headers={"Range": "bytes=0-1,4-5"})
    assert (status, body) == (200, BODY)  # several ranges: the whole file
    status, _, body, _ = server.get("/file.txt", headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert (status, body) == (200, BODY)
    wait_for(
        lambda: '"GET /file.txt HTTP/1.1" 206 5 ' in server.access_log.read_text(), what="206 logged with its 5 bytes"
    )


def test_head_has_the_length_and_no_body(server: Server) -> None:
    status, headers, body, _ = server.request("HEAD", "/file.txt")
    assert (status, headers["content-length"], body) == (200, "20", b"")
    status, headers, _, _ = server.request("POST", "/file.txt", body=b"x")
    assert (status, headers["allow"]) == (405, "GET, HEAD, OPTIONS")
    status, headers, _, _ = server.request("OPTIONS", "/file.txt")
    assert (status, headers["allow"]) == (200, "GET, HEAD, OPTIONS")


def test_files_on_a_kept_alive_connection(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        # An empty file among them: its head is sent at once, not held (MSG_MORE) for a body.
        for path, headers, status, body in [
            ("/file.txt", {}, 200, BODY),
            ("/file.txt", {"Range": "bytes=1-2"}, 206, b"12"),
            ("/empty.txt", {}, 200, b""),
            ("/file.txt", {}, 200, BODY),
        ]:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            assert (response.status, response.read(), response.getheader("connection")) == (status, body, None)
        conn.request("HEAD", "/file.txt")
        response = conn.getresponse()
        assert (response.status, response.read(), response.getheader("content-length")) == (200, b"", "20")
    finally:
        conn.close()


def test_directories(server: Server) -> None:
    status, headers, _, _ = server.get("/docs?x=1")
    assert (status, headers["location"]) == (301, "/docs/?x=1")  # mod_dir's trailing slash
    assert server.get("/docs/")[2] == b"docs index"  # DirectoryIndex index.html
    assert server.get("/docs/empty/")[0] == 403  # no index, no Options Indexes
    status, _, body, _ = server.get("/open/")
    assert status == 200 and b'<a href="a.txt">a.txt</a>' in body


def test_a_name_that_would_split_the_head_goes_out_encoded(server: Server) -> None:
    """The decoded path holds CR LF: the redirect's Location carries them percent-encoded, and
    no field of the client's making appears in the head."""
    status, headers, _, _ = server.get("/split%0D%0ASet-Cookie:%20owned=1")
    assert (status, headers["location"]) == (301, "/split%0D%0ASet-Cookie:%20owned=1/")
    assert "set-cookie" not in headers


def test_alias(server: Server) -> None:
    assert server.get("/extra/x.txt")[2] == b"aliased x"
    assert server.get("/extra")[0] == 404  # 'Alias /extra/' needs its slash


@pytest.mark.parametrize(
    "target, status",
    [
        ("/closed/secret.txt", 403),  # <Directory> Require all denied
        ("/closed/missing.txt", 403),  # a denied tree does not say what exists in it
        ("/private.key", 403),  # <FilesMatch>
        ("/.htaccess", 403),
        ("/%2ehtaccess", 403),
        ("/../outside.txt", 400),
        ("/%2e%2e/outside.txt", 400),
        ("/docs/%2e%2e/%2e%2e/outside.txt", 400),
        ("/..%2foutside.txt", 404),
        ("/file.txt%00.html", 404),
        ("/file.txt/", 404),  # no PATH_INFO for a static file
        ("//file.txt", 200),
        ("http://elsewhere.example/../outside.txt", 400),
        ("http://elsewhere.example/file.txt", 200),
        ("/nolinks/link.txt", 403),  # Options -FollowSymLinks
        ("/nolinks/plain.txt", 200),
        ("/link.txt", 200),  # FollowSymLinks, Apache's default: the admin's link is followed
        ("/" + "a" * 4000, 404),
        ("/a" * 3000, 404),
    ],
)
def test_hostile_and_refused_paths(server: Server, target: str, status: int) -> None:
    assert server.raw(target)[0] == status


def rss(pids: set[int]) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


def test_a_1_gib_file_is_sent_whole_with_the_worker_memory_flat(server: Server) -> None:
    worker = server.wait_for_workers(lambda pids: len(pids) == 1, what="the one worker")
    server.get("/file.txt")  # the worker has served a file before the baseline
    before = rss(worker)
    peak = before
    received = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        buffer = bytearray(1 << 20)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert b"\r\ncontent-length: 1073741824\r\n" in head.lower() + b"\r\n"
        received = len(rest)
        reads = 0
        while n := sock.recv_into(buffer):
            received += n
            reads += 1
            if reads % 64 == 0:  # sample while the worker is sending
                peak = max(peak, rss(worker))
    assert received == BIG
    assert peak - before < 32 * 1024 * 1024, f"worker RSS grew from {before} to {peak}"
    wait_for(lambda: f'"GET /big.bin HTTP/1.1" 200 {BIG} ' in server.access_log.read_text(), what="1 GiB logged")
