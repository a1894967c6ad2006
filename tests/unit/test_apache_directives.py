"""The Apache directives an Apache + mod_wasm site brings along, each read as Apache 2.4 documents
it: one table per directive, each row citing the documented behaviour it checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prefork_wasm.config import ConfigError, ServerConfig
from prefork_wasm.messages import server_banner
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
    config = config_with("LogLevel warn http2:info")
    assert config.module_log_levels == {}
    assert any("LogLevel http2:info: prefork-wasm has no http2; no effect" in note for note in config.notes)


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


# --- server identity and protocol (core, mod_status) ------------------------------------------------


@pytest.mark.parametrize(
    "tokens, banner, apache_says",
    [
        ("Prod", "prefork-wasm", "ServerTokens Prod[uctOnly]: Server: Apache"),
        ("Major", "prefork-wasm/0", "ServerTokens Major: Server: Apache/2"),
        ("Minor", "prefork-wasm/0.1", "ServerTokens Minor: Server: Apache/2.4"),
        ("Min", "prefork-wasm/0.1.0", "ServerTokens Min[imal]: Server: Apache/2.4.2"),
        ("OS", "prefork-wasm/0.1.0 (Linux)", "ServerTokens OS: Server: Apache/2.4.2 (Unix)"),
    ],
)
def test_server_tokens(tokens: str, banner: str, apache_says: str) -> None:
    config = config_with(f"ServerTokens {tokens}")
    assert server_banner(config.server_tokens, "0.1.0", "wasmtime/1 Python/3") == banner, apache_says


def test_server_tokens_full_names_the_runtime_and_the_default_is_the_product() -> None:
    """ServerTokens Full: 'Apache/2.4.2 (Unix) PHP/4.2.2 MyMod/1.2'. Not set: this server's
    default is Prod (Apache's is Full)."""
    assert server_banner("full", "0.1.0", "wasmtime/1 Python/3") == "prefork-wasm/0.1.0 (Linux) wasmtime/1 Python/3"
    assert server_banner(None, "0.1.0", "x") == "prefork-wasm"


@pytest.mark.parametrize(
    "line, attr, value, apache_says",
    [
        ("ServerSignature On", "server_signature", "on", "a footer line on server-generated documents"),
        ("ServerSignature EMail", "server_signature", "email", "EMail: also a mailto: ServerAdmin (no effect)"),
        ("FileETag None", "file_etag", frozenset(), "None: no ETag"),
        ("FileETag All", "file_etag", frozenset({"INode", "MTime", "Size"}), "All: INode MTime Size"),
        ("FileETag -Size", "file_etag", frozenset({"MTime"}), "-: removed from the inherited MTime Size"),
        ("FileETag +INode", "file_etag", frozenset({"INode", "MTime", "Size"}), "+: added to the inherited"),
        ("FileETag MTime", "file_etag", frozenset({"MTime"}), "no +/-: replaces the inherited"),
    ],
)
def test_location_level_identity_settings(line: str, attr: str, value: object, apache_says: str) -> None:
    assert getattr(location(config_with(line), "/hello"), attr) == value, apache_says


def test_trace_enable_values() -> None:
    """TraceEnable [on|off|extended]; the default is on, as Apache's."""
    assert config_with().trace_enable == "on"
    assert config_with("TraceEnable extended").trace_enable == "extended"


def test_protocols_and_extended_status_are_accepted_with_what_they_do_here() -> None:
    config = config_with("Protocols h2 h2c http/1.1", "ExtendedStatus On")
    assert any("Protocols h2 h2c: not spoken here" in warning for warning in config.warnings)
    assert any("server-status always shows what each worker serves" in note for note in config.notes)


@pytest.mark.parametrize(
    "line, message",
    [
        ("Protocols h2", "prefork-wasm speaks http/1.1 only"),
        ("ExtendedStatus Off", "only 'On' is supported"),
        ("FileETag +All", "All stands alone"),
        ("FileETag MTime -Size", "either every word starts with + or -"),
        ("ServerTokens Verbose", "expected one of prod"),
        ("<Location /x>\n    Header set X 1 early\n</Location>", "'early' is allowed only at server level"),
        ("<Directory /tmp>\n    Header set X 1\n</Directory>", "put it in a <Location> or at server level"),
        ("Redirect /a", "expected URL-path URL"),
        ("ErrorDocument 200 /ok.html", "expected an error status 400-599"),
        ("FallbackResource index.php", "expected a local URL-path such as /index.php"),
    ],
)
def test_what_is_refused_says_why_and_names_the_alternative(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_with(line)


# --- per-request settings, merged as Apache merges them ---------------------------------------------


def test_header_lines_run_outer_context_first_and_redirects_inner_first() -> None:
    config = config_with(
        "Header set X-A server", "Redirect /r http://server.test/", "ErrorDocument 404 /404.html",
        "<Location /hello>", "    Header set X-A location", "    Redirect http://location.test/",
        "    ErrorDocument 404 default", "    FallbackResource disabled", "</Location>",
        "FallbackResource /index.php",
    )
    loc = location(config, "/hello")
    assert [action.value for action in loc.headers] == ["server", "location"]  # mod_headers: merged in order
    assert [rule.in_location for rule in loc.redirects] == [True, False]  # mod_alias: the inner context's first
    assert loc.error_documents == {404: None}  # 'default' undoes the inherited one
    assert loc.fallback_resource is None and location(config, "/other").fallback_resource == "/index.php"
