"""Every request gets an answer and no request kills a worker (issue 8, item 2); the scoreboard
names the module of the request it shows (item 6)."""

from __future__ import annotations

import re
from collections.abc import Callable

from harness import HELLO, Server, wait_for


def test_a_removed_wasm_dir_is_a_logged_500_and_the_worker_lives_on(make_server: Callable[..., Server]) -> None:
    server = make_server("", start=False, start_servers=1)
    data = server.root / "data"
    data.mkdir()
    (data / "greeting.txt").write_text("hi\n")
    server.write_config(
        HELLO + f"""
<Location /cat>
    SetHandler wasm-handler
    WasmModule ${{EXAMPLES}}/cat.wasm
    WasmEnableCGI On
    WasmDir {data}
</Location>
CustomLog logs/ids_log "%L %>s"
""",
        start_servers=1,
    )
    server.start()
    assert server.get(f"/cat?{data}/greeting.txt")[2] == b"hi\n"
    workers = server.worker_pids()
    assert len(workers) == 1
    (data / "greeting.txt").unlink()
    data.rmdir()

    status, _, body, _ = server.get(f"/cat?{data}/greeting.txt")
    assert status == 500 and b"The module failed" in body
    ids = server.root / "logs" / "ids_log"
    request_id = wait_for(lambda: [line.split()[0] for line in ids.read_text().splitlines() if line.endswith(" 500")])
    line = (
        f"request {request_id[0]}: cat.wasm: cannot pre-open host directory {data} (guest path {data}): "
        "No such file or directory"
    )
    wait_for(lambda: line in server.log(), what=line)

    assert server.get("/hello")[0] == 200
    assert server.get(f"/cat?{data}/greeting.txt")[0] == 500  # and again, as long as it is gone
    assert server.worker_pids() == workers  # the same worker served them all
    assert "crashed" not in server.log()


STATUS = HELLO + """
<Location /server-status>
    SetHandler server-status
</Location>
"""


def test_the_status_page_shows_no_stale_module(make_server: Callable[..., Server]) -> None:
    server = make_server(STATUS, start_servers=1)
    assert server.get("/hello")[0] == 200
    assert server.get("/nothing")[0] == 404
    page = server.get("/server-status")[2].decode()
    # The only worker's row: its current request (this one), with no module beside it.
    (row,) = [r for r in page.splitlines() if "GET /server-status" in r]
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[-2:] == ["", "GET /server-status HTTP/1.1"]
