"""The Apache directives an Apache + mod_wasm site brings along, each read as Apache 2.4 documents
it: one table per directive, each row citing the documented behaviour it checks."""

from __future__ import annotations

import pytest

from prefork_wasm.config import ServerConfig
from test_config import HELLO, load, server_root  # noqa: F401 (its autouse fixture "root" applies here too)


def config_with(*lines: str) -> ServerConfig:
    return load(HELLO + "".join(f"{line}\n" for line in lines))


# --- LogLevel (core) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines, level, modules, apache_says",
    [
        (["LogLevel warn wasm:debug"], "warn", {"wasm": "debug"}, "a level for one module: MODULE:LEVEL"),
        (["LogLevel info mod_wasm.c:debug core:error"], "info", {"wasm": "debug", "core": "error"},
         "the module source file name, the module identifier, or the identifier without _module"),
        (["LogLevel wasm_module:trace2"], "warn", {"wasm": "trace2"}, "a module alone leaves the others' level"),
        (["LogLevel wasm:debug", "LogLevel error"], "error", {},
         "a level without a module name resets the level for all modules to that level"),
        (["LogLevel crit mpm_prefork:info"], "crit", {"mpm_prefork": "info"}, "prefork's lines are mpm_prefork's"),
    ],
)
def test_log_level(lines: list[str], level: str, modules: dict[str, str], apache_says: str) -> None:
    config = config_with(*lines)
    assert (config.log_level, config.module_log_levels) == (level, modules), apache_says


def test_log_level_of_an_apache_module_prefork_wasm_lacks_is_noted_not_refused() -> None:
    config = config_with("LogLevel warn ssl:info")
    assert config.module_log_levels == {}
    assert any("LogLevel ssl:info: prefork-wasm has no ssl; no effect" in note for note in config.notes)


# --- ErrorLog and CustomLog targets (core, mod_log_config) -----------------------------------------


@pytest.mark.parametrize(
    "line, target, apache_says",
    [
        ("ErrorLog syslog", "syslog", "ErrorLog syslog: to the system logger, facility local7"),
        ("ErrorLog syslog:local1", "syslog:local1", "syslog:facility: any facility of syslog(3)"),
        ('ErrorLog "|/bin/cat"', "|/bin/cat", "a pipe character '|' then the path of a program to receive the log"),
        ('ErrorLog "|$cat >/dev/null"', "|$cat >/dev/null", "'|$' runs the program through a shell"),
    ],
)
def test_error_log_targets(line: str, target: str, apache_says: str) -> None:
    assert config_with(line).error_log == target, apache_says


@pytest.mark.parametrize(
    "line, target, condition, apache_says",
    [
        ('CustomLog "|/bin/cat" common', "|/bin/cat", None, "piped logs: the program gets the lines on its stdin"),
        ("CustomLog stdout common env=!dontlog", "stdout", ("dontlog", False),
         "env=!VAR: logged only if VAR is not set in the request's environment"),
        ("CustomLog stdout common env=tenant", "stdout", ("tenant", True), "env=VAR: logged only if VAR is set"),
    ],
)
def test_custom_log_targets_and_conditions(
    line: str, target: str, condition: tuple[str, bool] | None, apache_says: str
) -> None:
    (log,) = config_with(line).custom_logs
    assert (log.target, log.condition) == (target, condition), apache_says


def test_log_format_takes_mod_log_config_s_newer_strings() -> None:
    fmt = "%{ms}T %{us}T %I %O %k %X %f %{VAR}e %{%d/%b/%Y}t %R %{c}a %{remote}p"
    (log,) = config_with(f'LogFormat "{fmt}" timing', "CustomLog stdout timing").custom_logs
    assert log.format == fmt
