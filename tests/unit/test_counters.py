"""The metrics (exposition writer, counters, folding, the page), the health page and
server-status's held counts, without processes; the page is read back with the official
Prometheus parser."""

from __future__ import annotations

import math
import re

from prometheus_client.parser import text_string_to_metric_families

from prefork_wasm.counters import (
    BUCKETS,
    LOCATION_LABELS,
    NAME_BYTES,
    OTHER_LOCATION,
    OTHER_MODULE,
    STATUS_LABELS,
    LabelIndex,
    Names,
    Recorder,
    assign,
    bucket_index,
    status_index,
)
from prefork_wasm.exposition import Exposition
from prefork_wasm.health import HealthPage
from prefork_wasm.held import STATE_NAMES
from prefork_wasm.messages import Request
from prefork_wasm.metrics import MetricsPage
from prefork_wasm.scoreboard import SERVING, STOPPING, Scoreboard, words
from prefork_wasm.status import StatusPage


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the official parser reads, by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_writer_escapes_labels_and_help_and_the_parser_reads_them_back() -> None:
    out = Exposition()
    out.family("x_total", "counter", 'Help with a \\ and a\nnewline and "quotes".')
    out.sample("x_total", [("path", 'a"b\\c\nd')], 3)
    out.sample("x_total", [("path", "")], 1)
    families = list(text_string_to_metric_families(out.text()))
    assert [(f.name, f.type) for f in families] == [("x", "counter")]
    assert families[0].documentation == 'Help with a \\ and a\nnewline and "quotes".'
    assert {s.labels["path"]: s.value for s in families[0].samples} == {'a"b\\c\nd': 3, "": 1}


def test_a_histogram_is_written_cumulative_with_inf_sum_and_count() -> None:
    out = Exposition()
    out.family("d_seconds", "histogram", "Durations.")
    out.histogram("d_seconds", [("where", "/a")], (0.1, 1.0), [2, 0, 5], 7.25)
    found = samples(out.text())
    where = ("where", "/a")
    assert found[("d_seconds_bucket", frozenset({where, ("le", "0.1")}))] == 2
    assert found[("d_seconds_bucket", frozenset({where, ("le", "1.0")}))] == 2
    assert found[("d_seconds_bucket", frozenset({where, ("le", "+Inf")}))] == 7
    assert found[("d_seconds_sum", frozenset({where}))] == 7.25
    assert found[("d_seconds_count", frozenset({where}))] == 7


def test_status_codes_and_durations_fall_into_bounded_labels() -> None:
    assert STATUS_LABELS[status_index(404)] == "404"
    assert STATUS_LABELS[status_index(299)] == "2xx"  # not a registered code: its class
    assert STATUS_LABELS[status_index(599)] == "5xx"
    assert bucket_index(BUCKETS[0]) == 0  # a bucket counts values up to and including its bound
    assert bucket_index(math.nextafter(BUCKETS[0], 1)) == 1
    assert bucket_index(1e9) == len(BUCKETS)  # above the last bound: +Inf only


def test_a_name_keeps_its_index_across_reloads_and_the_table_overflows_into_other() -> None:
    names = Names()
    first = assign(names, ["/a", "/b"], ["/m/x.wasm"])
    # A reload drops /a and adds /c: /b keeps its index, /c gets a new one, /a's is never reused.
    second = assign(names, ["/b", "/c"], ["/m/y.wasm", "/m/x.wasm"])
    assert second.locations["/b"] == first.locations["/b"]
    assert second.locations["/c"] not in first.locations.values()
    assert second.modules["/m/x.wasm"] == first.modules["/m/x.wasm"]
    many = assign(names, [f"/p{i}" for i in range(LOCATION_LABELS)], [])
    # Two reserved indexes and /a, /b, /c are taken: of LOCATION_LABELS more prefixes, 5 do not fit.
    assert list(many.locations.values()).count(OTHER_LOCATION) == 5
    assert assign(names, ["/" + "x" * NAME_BYTES], []).locations["/" + "x" * NAME_BYTES] == OTHER_LOCATION
    assert assign(Names(), [], [f"/m{i}" for i in range(40)]).modules["/m39"] == OTHER_MODULE


def request(target: str = "/metrics") -> Request:
    path = target.partition("?")[0]
    return Request("GET", target, "1.1", [], "127.0.0.1", 1, 80, "id", 0.0, path=path)


def test_counts_fold_on_release_and_the_page_never_goes_backwards() -> None:
    board = Scoreboard(2)
    labels = assign(board.names, ["/app"], ["/srv/app.wasm"])
    page = MetricsPage(board, 0.0)
    app_200 = ("prefork_wasm_requests_total", frozenset({("location", "/app"), ("method", "GET"), ("code", "200")}))
    trap = ("prefork_wasm_guest_outcomes_total", frozenset({("module", "/srv/app.wasm"), ("outcome", "trap")}))
    brew = ("prefork_wasm_requests_total", frozenset({("location", "(none)"), ("method", "other"), ("code", "418")}))
    fast = ("prefork_wasm_request_duration_seconds_bucket", frozenset({("location", "/app"), ("le", "0.005")}))
    for index in (0, 1):
        board.slots[index].claim(100 + index, 0)
    a, b = (Recorder(words(slot.counts), labels) for slot in board.slots)
    a.request("/app", "GET", 200, 0.002, 10, 100)
    b.request("/app", "GET", 200, 0.3, 0, 50)
    b.request(None, "BREW", 418, 0.001, 0, 0)
    b.guest("/srv/app.wasm", "trap", 0.01)
    before = samples(page.text())
    assert before[app_200] == 2
    assert before[trap] == 1
    assert before[brew] == 1
    assert before[("prefork_wasm_response_body_bytes_total", frozenset({("location", "/app")}))] == 150
    assert before[fast] == 1
    assert before[("prefork_wasm_request_duration_seconds_sum", frozenset({("location", "/app")}))] == 0.302
    board.release(1)  # b exits: its counts move into the cumulative record
    after = samples(page.text())
    assert after[app_200] == 2 and after[trap] == 1
    board.slots[1].claim(102, 1)  # a fresh worker in b's slot starts from zero, the totals do not
    Recorder(words(board.slots[1].counts), labels).request("/app", "GET", 200, 0.001, 0, 1)
    assert samples(page.text())[app_200] == 3


def test_the_page_shows_workers_by_state_generation_and_master_counts() -> None:
    board = Scoreboard(3)
    board.slots[0].claim(10, 0)
    board.slots[0].memory = 12345
    board.cumulative.generation = 4
    found = samples(MetricsPage(board, 0.0).text())
    assert found[("prefork_wasm_workers", frozenset({("state", "starting")}))] == 1
    assert found[("prefork_wasm_workers", frozenset({("state", "waiting")}))] == 0
    assert found[("prefork_wasm_worker_memory_bytes", frozenset({("slot", "0"), ("pid", "10")}))] == 12345
    assert found[("prefork_wasm_generation", frozenset())] == 4
    assert found[("prefork_wasm_worker_recycles_total", frozenset({("reason", "max_connections")}))] == 0


def test_held_connections_are_shown_by_state_in_the_metrics_and_server_status() -> None:
    board = Scoreboard(3)
    for index, held in enumerate(([3, 100, 1, 0, 2], [2, 50, 0, 1, 0])):
        board.slots[index].claim(10 + index, 0)
        board.slots[index].held[:] = held
    board.slots[0].state = b"W"  # serving a request besides the connections it holds
    found = samples(MetricsPage(board, 0.0).text())
    by_state = {state: found[("prefork_wasm_held_connections", frozenset({("state", state)}))] for state in STATE_NAMES}
    assert by_state == {"reading": 5, "keepalive": 150, "waiting": 1, "closing": 1, "handshake": 2}
    fields = dict(line.split(": ", 1) for line in StatusPage(board, 0.0, 0, "x").auto().splitlines()[1:])
    assert (fields["ConnsTotal"], fields["ConnsAsyncReading"], fields["ConnsAsyncKeepAlive"]) == ("160", "5", "150")
    assert (fields["ConnsAsyncWaiting"], fields["ConnsAsyncClosing"], fields["ConnsAsyncHandshake"]) == ("1", "1", "2")
    page = StatusPage(board, 0.0, 0, "x").html()
    assert "159 connections held: 5 reading, 150 keepalive, 1 waiting, 1 closing, 2 handshake" in page
    assert "<td>3/100/1/0/2</td>" in page


def test_gathering_spare_and_blocking_workers_are_shown_in_the_metrics_and_server_status() -> None:
    board = Scoreboard(4)
    for index in range(4):
        board.slots[index].claim(10 + index, 0)
    for slot in board.slots[:3]:
        slot.state = b"_"
    board.slots[1].blocking = True
    board.slots[2].spare = True  # slot 3 is still starting: no role
    found = samples(MetricsPage(board, 0.0).text())
    assert found[("prefork_wasm_serving_workers", frozenset({("role", "gathering")}))] == 2
    assert found[("prefork_wasm_serving_workers", frozenset({("role", "spare")}))] == 1
    assert found[("prefork_wasm_blocking_workers", frozenset())] == 1
    fields = dict(line.split(": ", 1) for line in StatusPage(board, 0.0, 0, "x").auto().splitlines()[1:])
    assert (fields["GatheringWorkers"], fields["SpareWorkers"], fields["BlockingWorkers"]) == ("2", "1", "1")
    page = StatusPage(board, 0.0, 0, "x").html()
    assert "2 workers gather connections, 1 spare; guests block in 1" in page
    roles = re.findall(r"<tr><td>(\d)</td>(?:<td>[^<]*</td>){6}<td>([^<]*)</td>", page)
    assert roles == [("0", "gathers"), ("1", "gathers, guests block"), ("2", "spare"), ("3", "")]


def test_health_is_ready_only_while_serving_and_live_whenever_it_answers() -> None:
    board = Scoreboard(1)
    health = HealthPage(board)
    assert health(request("/health")).status == 503  # no generation serves yet
    board.cumulative.phase = SERVING
    assert health(request("/health")).status == 200
    board.cumulative.phase = STOPPING
    stopping = health(request("/health"))
    assert stopping.status == 503 and stopping.body == b"stopping (generation 0)\n"
    assert health(request("/health?live")).status == 200


def test_a_label_index_sends_unknown_names_to_other() -> None:
    labels = LabelIndex({"/a": 2}, {})
    assert labels.location("/a") == 2
    assert labels.location("/gone") == OTHER_LOCATION
