"""The error log's and access log's layouts and filters, and where their lines go, each as
Apache 2.4 documents it (mod_log_config, core's ErrorLog and LogLevel, piped logs)."""

from __future__ import annotations

import os
import re
import syslog
import time
from pathlib import Path

import pytest

from prefork_wasm.logs import AccessLog, AccessRecord, ErrorLog, FormatError, compile_format, parse_condition
from prefork_wasm.logtargets import (
    FACILITIES,
    RESPAWN_INTERVAL,
    LogFile,
    PipedLog,
    SyslogLog,
    open_target,
    piped_argv,
    syslog_facility,
)

START = 1_796_000_000.25  # a fixed request start


def record(**changes: object) -> AccessRecord:
    values: dict[str, object] = dict(
        remote_addr="192.0.2.7", remote_port=54321, request_line="GET /a?b HTTP/1.1", method="GET", path="/a",
        query="b", protocol="HTTP/1.1", status=200, body_bytes=5, request_headers={}, response_headers={},
        start=START, duration=1.234567, request_id="id1", server_name="www.test", server_port=8080,
        bytes_in=120, bytes_out=200, keepalives=2, connection="+", filename="/srv/www/a", handler="wasm-handler",
        env={"DONTLOG": "1", "TENANT": "acme"},
    )
    values.update(changes)
    return AccessRecord(**values)  # type: ignore[arg-type]


def formatted(fmt: str, **changes: object) -> str:
    return "".join(p if isinstance(p, str) else p(record(**changes)) for p in compile_format(fmt))


# mod_log_config's "Custom Log Formats" table, one row per format string added for Apache configs.
@pytest.mark.parametrize(
    "fmt, expected, apache_says",
    [
        ("%{ms}T", "1234", "%{UNIT}T: the time taken to serve the request, in a time unit given by UNIT: ms"),
        ("%{us}T", "1234567", "... us for microseconds"),
        ("%{s}T", "1", "... s for seconds (the same as %T)"),
        ("%I", "120", "Bytes received, including request and headers (mod_logio)"),
        ("%O", "200", "Bytes sent, including headers (mod_logio)"),
        ("%k", "2", "Number of keepalive requests handled on this connection"),
        ("%X", "+", "Connection status when response is completed: + connection may be kept alive"),
        ("%f", "/srv/www/a", "Filename"),
        ("%{TENANT}e", "acme", "The contents of the environment variable VAR"),
        ("%{NOSUCH}e", "-", "(an unset variable logs '-', as every missing value)"),
        ("%{sec}t", str(int(START)), "%{sec}t: number of seconds since the Epoch"),
        ("%{msec_frac}t", "250", "msec_frac: millisecond fraction"),
        ("%{usec_frac}t", "250000", "usec_frac: microsecond fraction"),
        ("%{%Y}t", time.strftime("%Y", time.localtime(START)), "The time, in the form given by format (strftime)"),
        ("%{end:sec}t", str(int(START + 1.234567)), "end: the time when the log entry was written"),
        ("%{begin:msec}t", str(int(START * 1000)), "begin: the time the request started (the default)"),
        ("%R", "wasm-handler", "The handler generating the response (if any)"),
        ("%{c}a", "192.0.2.7", "Underlying peer IP address of the connection"),
        ("%{remote}p", "54321", "%{format}p: canonical, local, or remote: the client's actual port"),
        ("%{local}p", "8080", "local: the server's actual port"),
        ("%{canonical}p", "8080", "canonical: the canonical port of the server serving the request"),
    ],
)
def test_log_format_strings_log_what_mod_log_config_documents(fmt: str, expected: str, apache_says: str) -> None:
    assert formatted(fmt) == expected, apache_says


def test_absent_values_log_a_dash_as_apache_logs_them() -> None:
    assert formatted("%f %R", filename="", handler="") == "- -"
    assert formatted("%X", connection="-") == "-"


@pytest.mark.parametrize("fmt", ["%{x}T", "%{foo}p", "%{x}a", "%{X}Z", "%Z"])
def test_an_unknown_format_string_is_refused_with_the_supported_ones(fmt: str) -> None:
    with pytest.raises(FormatError, match="supported:"):
        compile_format(fmt)


def test_custom_log_env_logs_only_requests_whose_environment_has_or_lacks_the_variable(tmp_path: Path) -> None:
    """mod_log_config: 'CustomLog logs/access_log common env=!dontlog' logs only requests that
    do not have the variable set; env=VAR only those that have it."""
    target = tmp_path / "access_log"
    with_it = AccessLog(LogFile(str(target)), "with %U", condition=parse_condition("env=DONTLOG"))
    without = AccessLog(LogFile(str(target)), "without %U", condition=parse_condition("env=!DONTLOG"))
    assert with_it.uses_env and without.uses_env
    for log in (with_it, without):
        log.log(record(path="/set"))
        log.log(record(path="/unset", env={}))
    assert target.read_text().splitlines() == ["with /set", "without /unset"]


@pytest.mark.parametrize("arg", ["env=", "expr=%{REQUEST_URI} =~ /x/", "dontlog"])
def test_a_condition_other_than_env_is_refused(arg: str) -> None:
    with pytest.raises(ValueError, match="env=VAR"):
        parse_condition(arg)


def error_lines(tmp_path: Path, level: str, modules: dict[str, str], messages: list[tuple[str, str]]) -> list[str]:
    target = tmp_path / "error_log"
    log = ErrorLog(LogFile(str(target)), level, modules=modules)
    for message_level, module in messages:
        log.log(message_level, f"{module} {message_level}", module)
    return target.read_text().splitlines() if target.exists() else []


def test_error_lines_name_the_module_and_level_as_apache_does(tmp_path: Path) -> None:
    """Apache's default ErrorLogFormat: '[%{u}t] [%-m:%l] [pid %P] ... %M'."""
    (line,) = error_lines(tmp_path, "warn", {}, [("error", "wasm")])
    assert re.fullmatch(r"\[\w{3} \w{3} \d\d \d\d:\d\d:\d\d\.\d{6} \d{4}\] \[wasm:error\] \[pid \d+\] wasm error", line)


def test_log_level_per_module_as_apache_documents_it(tmp_path: Path) -> None:
    """LogLevel: 'LogLevel info ssl:warn' sets the level for one module only; a level without a
    module applies to every other module."""
    lines = error_lines(
        tmp_path, "warn", {"wasm": "debug"},
        [("debug", "wasm"), ("info", "core"), ("warn", "core"), ("debug", "mpm_prefork"), ("trace1", "wasm")],
    )
    assert [line.split("] ", 3)[-1] for line in lines] == ["wasm debug", "core warn"]


def test_notices_are_written_whatever_the_log_level(tmp_path: Path) -> None:
    """Apache writes notice-level messages (start, restart, stop) regardless of LogLevel (LogLevel:
    'notice ... normal but significant condition'; log.c skips only non-notice levels)."""
    lines = error_lines(tmp_path, "crit", {"mpm_prefork": "emerg"}, [("notice", "mpm_prefork"), ("error", "core")])
    assert len(lines) == 1 and "[mpm_prefork:notice]" in lines[0]


def test_piped_log_targets_split_like_apache() -> None:
    """Apache: "|" and "||" run the program without a shell, "|$" through /bin/sh -c."""
    assert piped_argv('|/usr/bin/rotatelogs "/var/log/a b" 86400') == ["/usr/bin/rotatelogs", "/var/log/a b", "86400"]
    assert piped_argv("||cat") == ["cat"]
    assert piped_argv("|$exec cat >>/tmp/x") == ["/bin/sh", "-c", "exec cat >>/tmp/x"]
    with pytest.raises(ValueError):
        piped_argv("|  ")


def wait_for_text(path: Path, text: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and text in (found := path.read_text()):
            return found
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never reached {path}")


def test_a_piped_log_program_reads_the_lines_and_is_started_again_on_the_same_pipe(tmp_path: Path) -> None:
    """Apache: 'httpd will restart the piped logger if it dies' and nothing written meanwhile is
    lost: it waits in the pipe, whose ends the master keeps."""
    out = tmp_path / "piped"
    log = open_target(f"|$exec cat >>{out}")
    assert isinstance(log, PipedLog) and log.pid is not None
    try:
        log.write(b"first\n")
        wait_for_text(out, "first\n")
        os.kill(log.pid, 9)
        assert os.waitpid(log.pid, 0)[0] == log.pid
        log.pid = None  # what the master's reaping does
        log.write(b"while it was gone\n")
        assert not log.due() or time.monotonic() - log.started >= RESPAWN_INTERVAL
        log.started -= RESPAWN_INTERVAL
        assert log.due()
        log.start()
        assert wait_for_text(out, "while it was gone\n") == "first\nwhile it was gone\n"
    finally:
        pid = log.pid
        log.close()  # the program sees the end of its input and exits
        if pid is not None:
            os.waitpid(pid, 0)


def test_a_piped_log_program_that_cannot_start_fails_the_open() -> None:
    with pytest.raises(OSError):
        open_target("|/nonexistent/logger")


@pytest.mark.parametrize(
    "target, expected",
    [
        ("syslog", (syslog.LOG_LOCAL7, "prefork-wasm")),  # Apache: 'ErrorLog syslog' uses local7
        ("syslog:local1", (syslog.LOG_LOCAL1, "prefork-wasm")),
        ("syslog:user:web", (syslog.LOG_USER, "web")),
        ("/var/log/syslog", None),
        ("syslogs", None),
    ],
)
def test_error_log_syslog_facility(target: str, expected: tuple[int, str] | None) -> None:
    assert syslog_facility(target) == expected


def test_an_unknown_syslog_facility_is_refused() -> None:
    with pytest.raises(ValueError, match="local0"):
        syslog_facility("syslog:local9")
    assert len(FACILITIES) == 20


def test_error_log_syslog_sends_entries_with_their_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(syslog, "openlog", lambda *args: None)
    monkeypatch.setattr(syslog, "syslog", lambda priority, text: sent.append((priority, text)))
    target = open_target("syslog:local1")
    assert isinstance(target, SyslogLog)
    ErrorLog(target, "warn").log("error", "AH00106: x", "core")
    (priority, text), = sent
    assert priority == syslog.LOG_LOCAL1 | syslog.LOG_ERR
    assert text.startswith("[core:error] [pid ") and text.endswith("AH00106: x")
