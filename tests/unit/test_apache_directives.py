"""The Apache directives an Apache + mod_wasm site brings along, each read as Apache 2.4 documents
it: one table per directive, each row citing the documented behaviour it checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefork_wasm.config import ServerConfig
from test_config import HELLO, load, location, server_root  # noqa: F401 (its autouse fixture "root" applies here too)


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


# --- DirectoryIndex (mod_dir) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "server_level, in_location, expected, apache_says",
    [
        (["DirectoryIndex index.php", "DirectoryIndex index.html"], [], ["index.php", "index.html"],
         "multiple DirectoryIndex directives within the same context will add to the list rather than replace"),
        (["DirectoryIndex a.html b.html"], [], ["a.html", "b.html"], "several resources, looked for in order"),
        (["DirectoryIndex index.php"], ["DirectoryIndex home.html"], ["home.html"],
         "a more specific context's list replaces the inherited one"),
        (["DirectoryIndex index.php"], ["DirectoryIndex disabled"], [],
         "a single argument of 'disabled' prevents mod_dir from searching for an index"),
        (["DirectoryIndex index.php", "DirectoryIndex disabled", "DirectoryIndex x.html"], [], ["x.html"],
         "'disabled' empties the context's list; a later line adds to it again"),
        (["DirectoryIndex disabled index.html"], [], ["disabled", "index.html"],
         "'disabled' is interpreted literally if it has any arguments before or after it"),
        ([], [], ["index.html"], "the default: DirectoryIndex index.html"),
    ],
)
def test_directory_index(
    server_level: list[str], in_location: list[str], expected: list[str], apache_says: str
) -> None:
    (dir_path := server_root_path() / "www").mkdir(exist_ok=True)
    config = load(
        "Listen 8080\n" + f"DocumentRoot {dir_path}\n" + "".join(f"{line}\n" for line in server_level)
        + "<Location /a>\n" + "".join(f"    {line}\n" for line in in_location) + "</Location>\n"
    )
    assert location(config, "/a").directory_index == expected, apache_says


def server_root_path() -> Path:
    return Path.cwd()
