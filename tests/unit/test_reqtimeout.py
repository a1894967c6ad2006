"""RequestReadTimeout's arithmetic (mod_reqtimeout): the deadline of one read phase as bytes arrive."""

from __future__ import annotations

import pytest

from prefork_wasm.reqtimeout import (
    BODY_DEFAULT,
    HEADER_DEFAULT,
    Deadline,
    ReadTimeout,
    parse_phase,
)


@pytest.mark.parametrize(
    "text, rule",
    [
        ("20-40,MinRate=500", ReadTimeout(20, 40, 500)),
        ("20,minrate=500", ReadTimeout(20, 0, 500)),
        ("10", ReadTimeout(10)),
        ("0", ReadTimeout(0)),
    ],
)
def test_parse_phase(text: str, rule: ReadTimeout) -> None:
    assert parse_phase(text) == rule
    assert parse_phase(str(rule)) == rule


def test_the_defaults_are_mod_reqtimeouts() -> None:
    assert str(HEADER_DEFAULT) == "20-40,MinRate=500"
    assert str(BODY_DEFAULT) == "20,MinRate=500"


def test_a_silent_client_gets_the_initial_timeout() -> None:
    deadline = Deadline(100.0, 60, ReadTimeout(20, 40, 500))
    assert (deadline.at, deadline.limit) == (120.0, "RequestReadTimeout")


def test_each_min_rate_bytes_add_a_second_up_to_the_maximum() -> None:
    deadline = Deadline(100.0, 60, ReadTimeout(20, 40, 500))
    deadline.received(500)
    assert deadline.at == 121.0
    deadline.received(250)
    assert deadline.at == 121.5
    deadline.received(1_000_000)
    assert deadline.at == 140.0  # capped at the maximum, from the phase's start


def test_without_a_maximum_the_rate_extends_until_timeout() -> None:
    deadline = Deadline(100.0, 60, ReadTimeout(20, 0, 500))
    deadline.received(500 * 30)
    assert (deadline.at, deadline.limit) == (150.0, "RequestReadTimeout")
    deadline.received(500 * 30)
    assert (deadline.at, deadline.limit) == (160.0, "Timeout")  # Timeout bounds the phase as a whole


def test_a_fixed_timeout_is_not_extended() -> None:
    deadline = Deadline(100.0, 60, ReadTimeout(5))
    deadline.received(10_000)
    assert deadline.at == 105.0


def test_zero_disables_the_phase_leaving_timeout() -> None:
    deadline = Deadline(100.0, 60, ReadTimeout(0))
    deadline.received(10_000)
    assert (deadline.at, deadline.limit) == (160.0, "Timeout")


def test_a_shorter_timeout_wins_over_request_read_timeout() -> None:
    deadline = Deadline(100.0, 2, ReadTimeout(20, 40, 500))
    assert (deadline.at, deadline.limit) == (102.0, "Timeout")


def test_a_deadline_goes_on_in_another_process_as_it_was() -> None:
    deadline = Deadline(100.0, 60, ReadTimeout(20, 40, 500))
    deadline.received(500)
    copy = Deadline.restored(deadline.saved())
    copy.received(250)
    assert (copy.at, copy.limit) == (121.5, "RequestReadTimeout")
    copy.received(1_000_000)
    assert copy.at == 140.0
