"""The unit files under contrib/systemd say what the server does with each signal."""

from __future__ import annotations

import configparser
import signal
from pathlib import Path

from prefork_wasm.arbiter import STOP_GRACE
from prefork_wasm.control import SIGNALS

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # systemd's keys are case-sensitive
    parser.read_string((CONTRIB / name).read_text())
    return parser


def test_service_is_type_notify_in_the_foreground_with_graceful_stop_and_reload() -> None:
    service = unit("prefork-wasm.service")["Service"]
    assert service["Type"] == "notify"
    assert " -k " not in service["ExecStart"]  # the foreground: the main process notifies
    assert signal.Signals[service["KillSignal"]] == SIGNALS["graceful-stop"]
    assert service["KillMode"] == "mixed"  # the signal to the master only; SIGKILL to all at the end
    reload_signal = service["ExecReload"].split()[1].lstrip("-")
    assert signal.Signals["SIG" + reload_signal] == SIGNALS["graceful"]
    assert int(service["TimeoutStopSec"]) > 30 + STOP_GRACE  # the GracefulShutdownTimeout it suggests + stop-now


def test_socket_unit_activates_the_service_of_its_name() -> None:
    sockets = unit("prefork-wasm.socket")
    assert sockets["Socket"]["ListenStream"] == "127.0.0.1:8080"
    assert sockets["Install"]["WantedBy"] == "sockets.target"
