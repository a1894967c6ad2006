"""Tests for prefork_wasm.config: httpd.conf syntax, directive values, merging, limits and errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prefork_wasm.conffile import parse_config
from prefork_wasm.config import ConfigError, CustomLog, Listen, LocationConfig, Mount, ServerConfig
from prefork_wasm.convert import parse_size
from prefork_wasm.reqtimeout import ReadTimeout
from prefork_wasm.router import LocationIndex

COMMON = '%h %l %u %t "%r" %>s %b'
COMBINED = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'


@pytest.fixture(autouse=True, name="root")
def server_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A server root holding two dummy modules and a data folder; configs are written as server.conf."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hello.wasm").write_bytes(b"\0asm")
    (tmp_path / "other.wat").write_text("(module)")
    (tmp_path / "data").mkdir()
    return Path.cwd()  # as the parser sees it, should tmp_path involve a symlink


def write(text: str, name: str = "server.conf") -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(text: str, *defines: str) -> ServerConfig:
    return parse_config(write(text), defines)


def fails(text: str, *defines: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, *defines)
    return info.value


def match(config: ServerConfig, path: str) -> LocationConfig | None:
    """The main server's merged settings for `path`, as a worker's router matches them."""
    return LocationIndex(config.routes).match(path)


def location(config: ServerConfig, path: str) -> LocationConfig:
    """What a request for `path` gets: every section matching it merged over the defaults."""
    loc = match(config, path)
    assert loc is not None
    return loc


HELLO = """\
    Listen 8080
    <Location /hello>
        SetHandler wasm-handler
        WasmModule hello.wasm
    </Location>
"""


# --- syntax -------------------------------------------------------------------------------------


def test_comments_and_blank_lines_are_ignored() -> None:
    config = load("""\
        # a comment
           # an indented comment

        Listen 8080
    """)
    assert config.listens == [Listen("", 8080)]


def test_hash_inside_a_line_is_not_a_comment() -> None:
    assert load("Listen 8080\nServerName a#b\n").server_name == "a#b"
    err = fails("Listen 8080 # the port\n")
    assert str(err).startswith("server.conf:1: Listen: expected 1 to 2 arguments, got 4")


def test_backslash_continues_a_line_joined_with_a_space() -> None:
    config = load("""\
        Listen \\
            8080
        <Location /hello>
            SetHandler wasm-handler
            WasmModule hello.wasm
            WasmArg "joined \\
                with a space"
        </Location>
    """)
    assert config.listens == [Listen("", 8080)]
    assert location(config, "/hello").args == ["joined with a space"]


def test_continued_directive_errors_report_its_first_line() -> None:
    err = fails("""\
        Listen 8080
        Timeout \\
            soon
    """)
    assert (err.file, err.line) == ("server.conf", 2)
    assert str(err) == "server.conf:2: Timeout: expected seconds > 0, such as 30 or 2.5, got 'soon'"


def test_continuation_on_the_last_line_still_ends_the_directive() -> None:
    assert load("Listen 8080 \\").listens == [Listen("", 8080)]


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ('"two words"', "two words"),
        ("'single quoted'", "single quoted"),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'it\'s'", "it's"),
        ('""', ""),
        ('a"b', 'a"b'),  # quotes only group at the start of a word, as in Apache
    ],
)
def test_quoted_arguments(line: str, value: str) -> None:
    config = load(HELLO.replace("</Location>", f"WasmArg {line}\n</Location>"))
    assert location(config, "/hello").args == [value]


@pytest.mark.parametrize("quote", ['"', "'"])
def test_unterminated_quote_is_an_error(quote: str) -> None:
    err = fails(f"Listen 8080\nServerName {quote}example.com\n")
    assert str(err).startswith(f"server.conf:2: ServerName: unterminated {quote} quote")


def test_directive_and_section_names_are_case_insensitive() -> None:
    config = load("""\
        LISTEN 8080
        keepalive off
        <location /hello>
            sethandler Wasm-Handler
            WASMMODULE hello.wasm
            wasmenablecgi ON
        </LOCATION>
    """)
    hello = location(config, "/hello")
    assert (config.keep_alive, hello.handler, hello.enable_cgi) == (False, "wasm-handler", True)


# --- Define and ${NAME} -------------------------------------------------------------------------


def test_define_substitutes_in_later_lines_and_section_arguments() -> None:
    config = load("""\
        Define port 8080
        Define app /hello
        Define mod hello.wasm
        Listen 127.0.0.1:${port}
        <Location ${app}>
            SetHandler wasm-handler
            WasmModule ${mod}
            WasmArg x${port}y
        </Location>
    """)
    assert config.listens == [Listen("127.0.0.1", 8080)]
    assert location(config, "/hello").args == ["x8080y"]
    assert config.defines == {"port": "8080", "app": "/hello", "mod": "hello.wasm"}


def test_define_without_value_and_command_line_defines_are_empty() -> None:
    config = load("Define FLAG\nListen 8080${FLAG}${CLI}\n", "CLI")
    assert config.defines == {"CLI": "", "FLAG": ""}
    assert config.listens == [Listen("", 8080)]


def test_later_define_overrides() -> None:
    assert load("Define P 1\nDefine P 8080\nListen ${P}\n").listens == [Listen("", 8080)]


def test_undefined_variable_names_it_and_how_to_define_it() -> None:
    err = fails("Listen ${PORT}\nDefine PORT 8080\n")
    assert str(err) == (
        "server.conf:1: Listen: undefined variable ${PORT} (add 'Define PORT value' before this line, or pass -D PORT)"
    )


def test_define_rejects_bad_names() -> None:
    assert "invalid variable name 'a:b'" in str(fails("Define a:b 1\n"))


# --- IfDefine -----------------------------------------------------------------------------------

IFDEFINE = """\
    Listen 8080
    <IfDefine {test}>
        ServerName inside
        <IfDefine !INNER>
            User nobody
        </IfDefine>
    </IfDefine>
"""


@pytest.mark.parametrize(
    ("test", "defines", "server_name", "user"),
    [
        ("DEV", ["DEV"], "inside", "nobody"),
        ("DEV", [], None, None),
        ("!DEV", [], "inside", "nobody"),
        ("!DEV", ["DEV"], None, None),
        ("DEV", ["DEV", "INNER"], "inside", None),
    ],
)
def test_ifdefine(test: str, defines: list[str], server_name: str | None, user: str | None) -> None:
    config = load(IFDEFINE.format(test=test), *defines)
    assert (config.server_name, config.user) == (server_name, user)


def test_ifdefine_sees_define_directives() -> None:
    assert load("Define X\n<IfDefine X>\nListen 8080\n</IfDefine>\n").listens == [Listen("", 8080)]


def test_false_ifdefine_contents_are_not_parsed() -> None:
    config = load("""\
        Listen 8080
        <IfDefine NOPE>
            NoSuchDirective ${UNDEFINED}
            <Whatever x>
            </Whatever>
        </IfDefine>
    """)
    assert config.listens == [Listen("", 8080)]


def test_false_ifdefine_sections_must_still_balance() -> None:
    err = fails("""\
        Listen 8080
        <IfDefine NOPE>
            <Location /x>
        </IfDefine>
    """)
    assert str(err).startswith("server.conf:4: </IfDefine> does not match <Location> opened at server.conf:3")


@pytest.mark.parametrize("tag", ["<IfDefine>", "<IfDefine !>", "<IfDefine A B>"])
def test_ifdefine_needs_one_name(tag: str) -> None:
    err = fails(f"Listen 8080\n{tag}\n</IfDefine>\n")
    assert str(err).startswith("server.conf:2: <IfDefine>: expected")


# --- sections -----------------------------------------------------------------------------------


def test_unclosed_section_names_its_opening_line() -> None:
    err = fails("Listen 8080\n<Location /x>\nWasmArg a\n")
    assert str(err) == "server.conf:2: <Location /x>: section is never closed (add '</Location>')"


def test_stray_closing_tag() -> None:
    assert str(fails("Listen 8080\n</Location>\n")) == "server.conf:2: </Location> without matching <Location>"


def test_mismatched_closing_tag() -> None:
    err = fails("Listen 8080\n<IfDefine X>\n<Location /x>\n</IfDefine>\n", "X")
    assert str(err) == (
        "server.conf:4: </IfDefine> does not match <Location /x> opened at server.conf:3; add '</Location>' first"
    )


def test_nested_location_is_an_error() -> None:
    err = fails("Listen 8080\n<Location /a>\n<Location /a/b>\n</Location>\n</Location>\n")
    assert str(err) == (
        "server.conf:3: <Location>: not allowed inside <Location /a> (opened at server.conf:2); move it to server level"
    )


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("<Location>", "<Location>: expected 1 to 2 arguments, got 0 (usage: <Location /PREFIX|~ REGEX>)"),
        ("<Location /a /b>", "<Location>: expected one /PREFIX, got 2 arguments (quote a prefix with spaces)"),
        ("<Location hello>", "<Location>: URL prefix must start with '/', got 'hello'"),
        ("<Location /x", "<Location>: missing closing '>'"),
    ],
)
def test_bad_location_tags(tag: str, message: str) -> None:
    assert str(fails(f"Listen 8080\n{tag}\n</Location>\n")) == f"server.conf:2: {message}"


def test_repeated_location_merges_and_later_directives_win() -> None:
    config = load("""\
        Listen 8080
        <Location /hello>
            SetHandler wasm-handler
            WasmModule hello.wasm
            WasmTimeout 5
        </Location>
        <Location /hello>
            WasmTimeout 7
            WasmEnv A 1
        </Location>
    """)
    assert len(config.locations) == 1
    hello = config.locations[0]
    assert (hello.timeout, hello.env, hello.source) == (7.0, {"A": "1"}, "server.conf:2")


def test_unknown_section_suggests_a_known_one() -> None:
    err = fails("Listen 8080\n<Locaton /x>\n</Locaton>\n")
    assert str(err) == "server.conf:2: Invalid command '<Locaton', perhaps misspelled? Did you mean '<Location>'?"


# --- Include ------------------------------------------------------------------------------------


def test_include_is_relative_to_server_root_and_globs_are_sorted(root: Path) -> None:
    write("Listen 8082\n", "conf.d/b.conf")
    write("Listen 8081\n", "conf.d/a.conf")
    write("Listen 8083\n", "conf.d/c.txt")
    config = load("Listen 8080\nInclude conf.d/*.conf\n")
    assert [listen.port for listen in config.listens] == [8080, 8081, 8082]


def test_include_of_a_single_file_at_an_absolute_path(root: Path) -> None:
    write("Listen 9000\n", "extra.conf")
    assert load(f"Include {root / 'extra.conf'}\n").listens == [Listen("", 9000)]


def test_errors_in_included_files_name_that_file_and_line(root: Path) -> None:
    write("# first\nTimeout never\n", "conf.d/bad.conf")
    err = fails("Listen 8080\nInclude conf.d/bad.conf\n")
    assert (err.file, err.line) == (str(root / "conf.d" / "bad.conf"), 2)
    assert str(err) == f"{root}/conf.d/bad.conf:2: Timeout: expected seconds > 0, such as 30 or 2.5, got 'never'"


def test_include_of_a_missing_file(root: Path) -> None:
    err = fails("Listen 8080\nInclude nope.conf\n")
    assert str(err) == (
        f"server.conf:2: Include: no such file 'nope.conf' (relative paths are taken from ServerRoot {root})"
    )


def test_include_glob_matching_nothing_is_an_error() -> None:
    err = fails("Listen 8080\nInclude conf.d/*.conf\n")
    assert str(err) == ("server.conf:2: Include: no files match 'conf.d/*.conf' (use IncludeOptional if that is fine)")


def test_include_optional_allows_nothing_to_match() -> None:
    config = load("Listen 8080\nIncludeOptional conf.d/*.conf\nIncludeOptional missing.conf\n")
    assert config.listens == [Listen("", 8080)]


def test_include_optional_still_reads_what_exists() -> None:
    write("Listen 8081\n", "conf.d/a.conf")
    assert len(load("Listen 8080\nIncludeOptional conf.d/*.conf\n").listens) == 2


def test_include_of_a_directory_is_an_error() -> None:
    Path("conf.d").mkdir()
    assert "Include: 'conf.d' is not a file" in str(fails("Listen 8080\nInclude conf.d\n"))


def test_recursive_include_is_an_error(root: Path) -> None:
    write("Include b.conf\n", "a.conf")
    write("Include a.conf\n", "b.conf")
    err = fails("Listen 8080\nInclude a.conf\n")
    assert (err.file, err.line) == (str(root / "b.conf"), 1)
    assert str(err) == f"{root}/b.conf:1: Include: '{root}/a.conf' is already being read (recursive Include)"


def test_included_directives_apply_to_the_enclosing_location() -> None:
    write("SetHandler wasm-handler\nWasmModule hello.wasm\n", "hello.conf")
    config = load("Listen 8080\n<Location /hello>\nInclude hello.conf\n</Location>\n")
    assert location(config, "/hello").handler == "wasm-handler"


def test_sections_must_close_in_the_file_that_opened_them(root: Path) -> None:
    write("<Location /x>\n", "open.conf")
    err = fails("Listen 8080\nInclude open.conf\n</Location>\n")
    assert str(err).splitlines() == [
        f"{root}/open.conf:1: <Location /x>: section is never closed (add '</Location>')",
        "server.conf:3: </Location> without matching <Location>",
    ]


def test_main_file_missing() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("missing.conf")
    assert str(info.value).startswith("missing.conf: cannot read ")
    assert info.value.line == 0


# --- unknown directives and contexts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Listn 80", "Invalid command 'Listn', perhaps misspelled? Did you mean 'Listen'?"),
        ("WasmEnableCgi2 On", "Invalid command 'WasmEnableCgi2', perhaps misspelled? Did you mean 'WasmEnableCGI'?"),
        ("Frobnicate", "Invalid command 'Frobnicate', perhaps misspelled?"),
    ],
)
def test_unknown_directive(line: str, message: str) -> None:
    err = fails(f"Listen 8080\n{line}\n")
    assert str(err) == f"server.conf:2: {message}"


@pytest.mark.parametrize(
    "line",
    [
        "Listen 9090", "Timeout 5", "ServerRoot .", "MaxRequestWorkers 10", "CustomLog x common", "User nobody",
        "AllowEncodedSlashes On",
    ],
)
def test_server_directives_are_refused_inside_location(line: str) -> None:
    err = fails(f"Listen 8080\n<Location /x>\n{line}\n</Location>\n")
    name = line.split(maxsplit=1)[0]
    assert str(err) == (
        f"server.conf:3: {name}: not allowed inside <Location /x> (opened at server.conf:2); move it to server level"
    )


def test_define_and_include_are_fine_inside_location() -> None:
    write("WasmArg included\n", "args.conf")
    config = load("""\
        Listen 8080
        <Location /hello>
            Define who world
            SetHandler wasm-handler
            WasmModule hello.wasm
            Include args.conf
            WasmArg ${who}
        </Location>
    """)
    assert location(config, "/hello").args == ["included", "world"]


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("KeepAlive yes", "KeepAlive: expected On or Off, got 'yes'"),
        ("Timeout -1", "Timeout: expected seconds > 0, such as 30 or 2.5, got '-1'"),
        ("KeepAliveTimeout inf", "KeepAliveTimeout: expected seconds >= 0, such as 30 or 2.5, got 'inf'"),
        ("StartServers 0", "StartServers: expected a whole number >= 1, got '0'"),
        ("MaxRequestWorkers 1.5", "MaxRequestWorkers: expected a whole number >= 1, got '1.5'"),
        ("ServerLimit 0", "ServerLimit: expected a whole number >= 1, got '0'"),
        ("MaxSpareServers -3", "MaxSpareServers: expected a whole number >= 0, got '-3'"),
        ("LimitRequestFields many", "LimitRequestFields: expected a whole number >= 0, got 'many'"),
        ("LogLevel verbose", "LogLevel: expected one of emerg, alert, crit, error, warn, notice, info, debug, trace1"),
        ("MemoryMetric vss", "MemoryMetric: expected one of uss, pss, rss; got 'vss'"),
        ("AllowEncodedSlashes Maybe", "AllowEncodedSlashes: expected one of off, on, nodecode; got 'Maybe'"),
        ("LimitResponseBody 1X", "LimitResponseBody: expected a size in bytes or with a K, M or G suffix"),
        ("MaxMemoryPerChild 2G 1G", "MaxMemoryPerChild: hard limit 1G is below soft limit 2G"),
        ("MaxMemoryPerChild 0 1G", "MaxMemoryPerChild: soft limit must be above 0"),
        ("Listen 0", "Listen: port must be 1-65535, got '0'"),
        ("Listen 127.0.0.1:70000", "Listen: port must be 1-65535, got '70000'"),
        ("Listen ::1:8080", "Listen: expected PORT, HOST:PORT or [IPV6]:PORT"),
        ("Listen [nope]:8080", "Listen: 'nope' in brackets is not an IPv6 address"),
        ("ServerRoot nowhere", "ServerRoot: no such directory 'nowhere'"),
        ("ErrorLog |/nonexistent/rotatelogs", "ErrorLog: piped log program '/nonexistent/rotatelogs' is not found"),
        ("ErrorLog syslog:local9", "ErrorLog: unknown syslog facility 'local9'; expected one of kern, user"),
        ("CustomLog access.log common expr=true", "CustomLog: expr= conditions are not supported; use env=VAR"),
        ("LogLevel warn wasm:verbose", "LogLevel: expected one of emerg, alert, crit, error, warn, notice, info"),
        ("LogLevel warn nosuch:debug", "LogLevel: no module 'nosuch'; LogLevel MODULE:LEVEL takes one of"),
        ("Timeout 1 2", "Timeout: expected 1 argument, got 2 (usage: Timeout SECONDS)"),
        ("Listen", "Listen: expected 1 to 2 arguments, got 0 (usage: Listen [HOST:]PORT [http|https])"),
        ("Define", "Define: expected 1 to 2 arguments, got 0 (usage: Define NAME [VALUE])"),
        ("CustomLog access.log", "CustomLog: expected 2 to 3 arguments, got 1"),
        (
            "SetHandler cgi-script",
            "SetHandler: expected one of wasm-handler, server-status, metrics, health, none; got 'cgi-script'",
        ),
        ("WasmEnableCGI yes", "WasmEnableCGI: expected On or Off, got 'yes'"),
        ("WasmTimeout 0", "WasmTimeout: expected seconds > 0, such as 30 or 2.5, got '0'"),
        ("Timeout 0", "Timeout: expected seconds > 0, such as 30 or 2.5, got '0'"),
        ("WasmMemoryLimit lots", "WasmMemoryLimit: expected a size in bytes or with a K, M or G suffix"),
        ("LimitRequestBody -1", "LimitRequestBody: expected a size in bytes or with a K, M or G suffix"),
        ("ForceType html", "ForceType: expected a MIME type such as text/plain, or None; got 'html'"),
        ("WasmEnv A=B c", "WasmEnv: invalid environment variable name 'A=B'"),
        (
            "WasmMapDir /data",
            "WasmMapDir: expected 2 to 3 arguments, got 1 (usage: WasmMapDir GUEST-PATH HOST-DIRECTORY [ro|rw])",
        ),
        ("WasmArg", "WasmArg: expected 1 argument, got 0"),
        ("Require", "Require: expected at least 1 argument, got 0"),
        ("Require user bob", "Require: expected 'all granted', 'all denied', 'local' or 'ip ADDRESS[/BITS] ...'"),
        ("Require all", "Require: expected 'all granted', 'all denied', 'local' or 'ip ADDRESS[/BITS] ...'"),
        ("Require ip", "Require: expected 'all granted', 'all denied', 'local' or 'ip ADDRESS[/BITS] ...'"),
        ("Require ip 10.0.0.300", "Require: 'ip' takes IPv4/IPv6 addresses or networks such as 10.0.0.0/8"),
    ],
)
def test_bad_values_name_file_line_directive_and_what_is_accepted(line: str, message: str) -> None:
    err = fails(f"Listen 8080\n{line}\n")
    assert (err.file, err.line, err.directive) == ("server.conf", 2, line.split(maxsplit=1)[0])
    assert str(err).startswith(f"server.conf:2: {message}")


def test_duplicate_listen() -> None:
    err = fails("Listen 8080\nListen *:8080\n")
    assert str(err) == "server.conf:2: Listen: *:8080 is already listed at server.conf:1; remove one"


def test_no_listen() -> None:
    err = fails("ServerName example.com\n")
    assert str(err) == "server.conf: no Listen directive (add e.g. 'Listen 127.0.0.1:8080')"
    assert err.line == 0


# --- module and directory checks ----------------------------------------------------------------


def test_missing_module_says_where_relative_paths_start(root: Path) -> None:
    err = fails("Listen 8080\nWasmModule nope.wasm\n")
    assert str(err) == (
        f"server.conf:2: WasmModule: no such file 'nope.wasm' (relative paths are taken from ServerRoot {root})"
    )


def test_missing_absolute_module_has_no_server_root_hint() -> None:
    assert str(fails("Listen 8080\nWasmModule /no/such.wasm\n")) == (
        "server.conf:2: WasmModule: no such file '/no/such.wasm'"
    )


def test_module_must_be_wasm_or_wat(root: Path) -> None:
    (root / "hello.txt").write_text("")
    assert str(fails("Listen 8080\nWasmModule hello.txt\n")) == (
        "server.conf:2: WasmModule: 'hello.txt' is not a .wasm or .wat file"
    )


def test_module_must_be_a_file() -> None:
    Path("dir.wasm").mkdir()
    assert "WasmModule: 'dir.wasm' is not a file" in str(fails("Listen 8080\nWasmModule dir.wasm\n"))


@pytest.mark.parametrize("line", ["WasmDir nope", "WasmMapDir /data nope"])
def test_missing_host_directory(line: str, root: Path) -> None:
    err = fails(f"Listen 8080\n{line}\n")
    assert str(err).endswith(f": no such directory 'nope' (relative paths are taken from ServerRoot {root})")


@pytest.mark.parametrize("line", ["WasmDir hello.wasm", "WasmMapDir /data hello.wasm"])
def test_host_directory_must_be_a_directory(line: str) -> None:
    assert "'hello.wasm' is not a directory" in str(fails(f"Listen 8080\n{line}\n"))


@pytest.mark.parametrize(("line", "directive"), [("WasmDir /", "WasmDir"), ("WasmMapDir /host /", "WasmMapDir")])
def test_mapping_the_host_root_warns(line: str, directive: str) -> None:
    config = load(f"Listen 8080\n{line}\n")
    assert config.warnings == [
        f"server.conf:2: {directive} '/' exposes the whole host file system to the guest; map only what it needs"
    ]


def test_wasm_handler_without_module_is_reported_at_the_location() -> None:
    err = fails("Listen 8080\n<Location /app>\nSetHandler wasm-handler\n</Location>\n")
    assert str(err) == (
        "server.conf:2: <Location /app>: SetHandler wasm-handler needs a WasmModule "
        "(add 'WasmModule FILE.wasm' here or at server level)"
    )


def test_server_level_wasm_handler_without_module_is_reported_at_set_handler() -> None:
    err = fails("Listen 8080\nSetHandler wasm-handler\n")
    assert str(err).startswith("server.conf:2: SetHandler: SetHandler wasm-handler needs a WasmModule")


@pytest.mark.parametrize("handler", ["", "SetHandler server-status", "SetHandler none"])
def test_module_without_wasm_handler_is_reported_at_the_location(handler: str) -> None:
    err = fails(f"Listen 8080\n<Location /app>\nWasmModule hello.wasm\n{handler}\n</Location>\n")
    assert str(err) == (
        "server.conf:2: <Location /app>: WasmModule without 'SetHandler wasm-handler' "
        "or 'AddHandler wasm-handler .EXT' (add one to this <Location>)"
    )


def test_server_level_module_nobody_serves_warns() -> None:
    config = load("Listen 8080\nWasmModule hello.wasm\n")
    assert config.warnings == [
        "server.conf:2: WasmModule at server level is not served anywhere; "
        "add 'SetHandler wasm-handler' or 'AddHandler wasm-handler .EXT' (at server level or in a <Location>)"
    ]


# --- defaults and values ------------------------------------------------------------------------


def test_server_defaults_are_apaches(root: Path) -> None:
    config = load("Listen 8080\n")
    assert config == ServerConfig(
        file=root / "server.conf",
        server_root=root,
        defines={},
        listens=[Listen("", 8080)],
        server_name=None,
        pid_file=root / "logs" / "prefork-wasm.pid",
        error_log="stderr",
        log_level="warn",
        log_formats={"common": COMMON, "combined": COMBINED},
        custom_logs=[],
        timeout=60.0,
        keep_alive=True,
        keep_alive_timeout=5.0,
        max_keep_alive_requests=100,
        start_servers=5,
        min_spare_servers=5,
        max_spare_servers=10,
        max_request_workers=256,
        server_limit=256,
        max_connections_per_child=0,
        max_held_connections=8192,
        max_memory_per_child=None,
        memory_metric="uss",
        graceful_shutdown_timeout=0.0,
        wasm_cache_dir=root / "cache",
        user=None,
        group=None,
        limit_request_line=8190,
        limit_request_field_size=8190,
        limit_request_fields=100,
        listen_backlog=511,
        limit_response_body=1073741824,
        allow_encoded_slashes="off",
        locations=[],
        warnings=[],
    )


def test_location_defaults(root: Path) -> None:
    assert load(HELLO).locations == [
        LocationConfig(
            prefix="/hello",
            source="server.conf:2",
            handler="wasm-handler",
            module=root / "hello.wasm",
            mounts=[],
            args=[],
            env={},
            enable_cgi=False,
            map_cgi_file_names=False,
            entry_point="_start",
            timeout=30.0,
            memory_limit=None,
            force_type=None,
            require=[],
            limit_request_body=1073741824,
            explicit=frozenset({"handler", "module"}),
        )
    ]


@pytest.mark.parametrize(
    ("line", "attr", "value"),
    [
        ("ServerName example.com:80", "server_name", "example.com:80"),
        ("LogLevel Debug", "log_level", "debug"),
        ("LogLevel trace8", "log_level", "trace8"),
        ("Timeout 2.5", "timeout", 2.5),
        ("KeepAlive Off", "keep_alive", False),
        ("KeepAliveTimeout 0", "keep_alive_timeout", 0.0),
        ("MaxKeepAliveRequests 0", "max_keep_alive_requests", 0),
        ("MaxRequestWorkers 50", "max_request_workers", 50),
        ("MaxClients 40", "max_request_workers", 40),
        ("MaxConnectionsPerChild 1000", "max_connections_per_child", 1000),
        ("MaxRequestsPerChild 10", "max_connections_per_child", 10),
        ("MaxHeldConnections 100000", "max_held_connections", 100000),
        ("MaxHeldConnections 0", "max_held_connections", 0),
        ("MaxMemoryPerChild 256M", "max_memory_per_child", (256 * 2**20, None)),
        ("MaxMemoryPerChild 256M 1G", "max_memory_per_child", (256 * 2**20, 2**30)),
        ("MaxMemoryPerChild 0", "max_memory_per_child", None),
        ("MemoryMetric PSS", "memory_metric", "pss"),
        ("AllowEncodedSlashes NoDecode", "allow_encoded_slashes", "nodecode"),
        ("AllowEncodedSlashes On", "allow_encoded_slashes", "on"),
        ("GracefulShutdownTimeout 10", "graceful_shutdown_timeout", 10.0),
        ("User www-data", "user", "www-data"),
        ("Group www-data", "group", "www-data"),
        ("LimitRequestLine 4094", "limit_request_line", 4094),
        ("LimitRequestFieldSize 1024", "limit_request_field_size", 1024),
        ("LimitRequestFields 0", "limit_request_fields", 0),
        ("ListenBacklog 128", "listen_backlog", 128),
        ("LimitResponseBody 10M", "limit_response_body", 10 * 2**20),
    ],
)
def test_server_directive_values(line: str, attr: str, value: object) -> None:
    assert getattr(load(f"Listen 8080\n{line}\n"), attr) == value


@pytest.mark.parametrize(
    ("line", "attr", "value"),
    [
        ("WasmEnableCGI On", "enable_cgi", True),
        ("WasmMapCGIFileNames on", "map_cgi_file_names", True),
        ("WasmEntryPoint run", "entry_point", "run"),
        ("WasmTimeout 0.5", "timeout", 0.5),
        ("WasmMemoryLimit 64M", "memory_limit", 64 * 2**20),
        ("WasmMemoryLimit 0", "memory_limit", None),
        ("ForceType text/plain", "force_type", "text/plain"),
        ("ForceType None", "force_type", None),
        ("LimitRequestBody 0", "limit_request_body", 0),
        ("LimitRequestBody 1K", "limit_request_body", 1024),
        ("WasmArg --verbose", "args", ["--verbose"]),
        ("WasmEnv GREETING hi", "env", {"GREETING": "hi"}),
    ],
)
def test_location_directive_values(line: str, attr: str, value: object) -> None:
    config = load(HELLO.replace("</Location>", f"{line}\n</Location>"))
    assert getattr(location(config, "/hello"), attr) == value


def test_args_and_dirs_accumulate_in_order(root: Path) -> None:
    (root / "more").mkdir()
    config = load(
        HELLO.replace(
            "</Location>",
            """\
        WasmArg a
        WasmArg 'b c'
        WasmDir more
        WasmDir data rw
        WasmMapDir /srv data
        WasmMapDir /etc/app more RW
    </Location>""",
        )
    )
    hello = location(config, "/hello")
    assert hello.args == ["a", "b c"]
    assert hello.mounts == [
        Mount(str(root / "more"), root / "more"),
        Mount(str(root / "data"), root / "data", writable=True),
        Mount("/srv", root / "data"),
        Mount("/etc/app", root / "more", writable=True),
    ]


# --- paths and logs -----------------------------------------------------------------------------


def test_relative_paths_follow_server_root(root: Path) -> None:
    (root / "srv" / "mods").mkdir(parents=True)
    (root / "srv" / "mods" / "app.wasm").write_bytes(b"")
    config = load("""\
        ErrorLog before.log
        ServerRoot srv
        Listen 8080
        PidFile run/httpd.pid
        CustomLog logs/access.log common
        WasmCacheDir /var/cache/wasm
        <Location /app>
            SetHandler wasm-handler
            WasmModule mods/app.wasm
        </Location>
    """)
    srv = root / "srv"
    assert config.server_root == srv
    assert config.pid_file == srv / "run" / "httpd.pid"
    assert config.error_log == str(root / "before.log")
    assert config.custom_logs == [CustomLog(str(srv / "logs" / "access.log"), COMMON)]
    assert config.wasm_cache_dir == Path("/var/cache/wasm")
    assert location(config, "/app").module == srv / "mods" / "app.wasm"


def test_server_root_defaults_to_the_config_files_folder(root: Path) -> None:
    write("Listen 8080\n", "conf/httpd.conf")
    config = parse_config("conf/httpd.conf")
    assert (config.file, config.server_root) == (root / "conf" / "httpd.conf", root / "conf")
    assert config.pid_file == root / "conf" / "logs" / "prefork-wasm.pid"


def test_relative_server_root_is_taken_from_the_config_files_folder(root: Path) -> None:
    write("ServerRoot ..\nListen 8080\n", "conf/httpd.conf")
    assert parse_config("conf/httpd.conf").server_root == root


def test_custom_logs_resolve_nicknames_literals_and_streams(root: Path) -> None:
    config = load("""\
        Listen 8080
        CustomLog logs/access.log combined
        CustomLog stdout "%h %r"
        CustomLog stderr short
        LogFormat "%h" short
        LogFormat "%h %u"
    """)
    assert config.custom_logs == [
        CustomLog(str(root / "logs" / "access.log"), COMBINED),
        CustomLog("stdout", "%h %r"),
        CustomLog("stderr", "%h"),
    ]
    assert [log.source for log in config.custom_logs] == ["server.conf:2", "server.conf:3", "server.conf:4"]
    assert config.log_formats == {"common": COMMON, "combined": COMBINED, "short": "%h"}


def test_error_log_stderr_is_literal() -> None:
    assert load("Listen 8080\nErrorLog stderr\n").error_log == "stderr"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('LogFormat "%h %Z" bad\n', "server.conf:2: LogFormat:", "unknown %Z in '%h %Z'"),
        ('LogFormat "%h %{X}z"\n', "server.conf:2: LogFormat:", "unknown %{X}z"),
        ('LogFormat "%{Referer" r\n', "server.conf:2: LogFormat:", "unterminated %{...}"),
        ('LogFormat "100%" pct\n', "server.conf:2: LogFormat:", "'%' at the end"),
        ('CustomLog logs/access "%h %Q"\n', "server.conf:2: CustomLog:", "unknown %Q"),
    ],
)
def test_log_formats_the_access_log_cannot_write_are_refused_at_their_line(
    text: str, where: str, message: str
) -> None:
    error = str(fails("Listen 8080\n" + text))
    assert error.startswith(where) and message in error
    assert "supported: %% %a" in error or "expected e.g." in error


def test_a_custom_log_format_that_is_no_nickname_and_no_format_is_warned_about() -> None:
    config = load("Listen 8080\nCustomLog logs/access combind\n")
    assert config.custom_logs == [CustomLog(str(Path.cwd() / "logs" / "access"), "combind")]
    assert config.warnings == [
        "server.conf:2: CustomLog format 'combind' is no LogFormat nickname and logs that text on every line; "
        "did you mean 'combined'?"
    ]


def test_settings_remember_their_lines_for_errors_found_after_parsing() -> None:
    config = load("""\
        Listen 127.0.0.1:8080
        ErrorLog logs/error
        WasmEntryPoint run
        <Location /hello>
            SetHandler wasm-handler
            WasmModule hello.wasm
        </Location>
        Listen 8081
    """)
    assert [listen.source for listen in config.listens] == ["server.conf:1", "server.conf:8"]
    assert config.sources["error_log"] == "server.conf:2"
    hello = location(config, "/hello")
    assert hello.sources["entry_point"] == "server.conf:3" and hello.sources["module"] == "server.conf:6"


# --- clamping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected", "warnings"),
    [
        (
            "ServerLimit 30000\nMaxRequestWorkers 30000",
            {"server_limit": 20000, "max_request_workers": 20000},
            [
                "server.conf:2: ServerLimit of 30000 exceeds the maximum of 20000, lowering ServerLimit to 20000",
                "server.conf:3: MaxRequestWorkers of 30000 exceeds ServerLimit of 20000, "
                "lowering MaxRequestWorkers to 20000",
            ],
        ),
        (
            "MaxRequestWorkers 300",
            {"max_request_workers": 256},
            ["server.conf:2: MaxRequestWorkers of 300 exceeds ServerLimit of 256, lowering MaxRequestWorkers to 256"],
        ),
        (
            "ServerLimit 2",  # lowers the default MaxRequestWorkers, which then lowers StartServers
            {"max_request_workers": 2, "start_servers": 2},
            [
                "server.conf:2: MaxRequestWorkers of 256 exceeds ServerLimit of 2, lowering MaxRequestWorkers to 2",
                "server.conf:2: StartServers of 5 exceeds MaxRequestWorkers of 2, lowering StartServers to 2",
            ],
        ),
        (
            "StartServers 20\nMaxRequestWorkers 10",
            {"start_servers": 10},
            ["server.conf:2: StartServers of 20 exceeds MaxRequestWorkers of 10, lowering StartServers to 10"],
        ),
        (
            "MinSpareServers 0",
            {"min_spare_servers": 1},
            ["server.conf:2: MinSpareServers of 0 is below 1, raising MinSpareServers to 1"],
        ),
        (
            "MaxSpareServers 3",
            {"max_spare_servers": 6},
            ["server.conf:2: MaxSpareServers of 3 is not above MinSpareServers of 5, raising MaxSpareServers to 6"],
        ),
        (
            "MinSpareServers 20",
            {"max_spare_servers": 21},
            ["server.conf:2: MaxSpareServers of 10 is not above MinSpareServers of 20, raising MaxSpareServers to 21"],
        ),
    ],
)
def test_apache_prefork_limits_are_clamped_with_a_warning(
    lines: str, expected: dict[str, int], warnings: list[str]
) -> None:
    config = load(f"Listen 8080\n{lines}\n")
    assert {attr: getattr(config, attr) for attr in expected} == expected
    assert config.warnings == warnings


def test_consistent_limits_produce_no_warnings() -> None:
    config = load("Listen 8080\nServerLimit 10\nMaxRequestWorkers 10\nStartServers 2\nMinSpareServers 1\n")
    assert config.warnings == []


# --- Listen -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "host", "port", "text"),
    [
        ("8080", "", 8080, "*:8080"),
        ("*:80", "", 80, "*:80"),
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        ("0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"),
        ("localhost:65535", "localhost", 65535, "localhost:65535"),
        ("[::1]:8080", "::1", 8080, "[::1]:8080"),
        ("[::]:443", "::", 443, "[::]:443"),
    ],
)
def test_listen_forms(arg: str, host: str, port: int, text: str) -> None:
    (listen,) = load(f"Listen {arg}\n").listens
    assert listen == Listen(host, port)
    assert str(listen) == text


def test_listens_keep_config_order() -> None:
    config = load("Listen [::1]:8080\nListen 127.0.0.1:8080\nListen 8081\n")
    assert [str(listen) for listen in config.listens] == ["[::1]:8080", "127.0.0.1:8080", "*:8081"]


# --- match() and modules() ----------------------------------------------------------------------

ROUTES = """\
    Listen 8080
    SetHandler server-status
    WasmModule hello.wasm
    <Location /hello>
        SetHandler wasm-handler
    </Location>
    <Location /hello/admin>
        SetHandler wasm-handler
        WasmModule other.wat
    </Location>
    <Location /files/>
        SetHandler wasm-handler
    </Location>
"""


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/hello", "/hello"),
        ("/hello/", "/hello"),
        ("/hello/x/y", "/hello"),
        ("/hello?name=x", "/"),  # a '?' in a path is a decoded %3F, part of the segment (Apache)
        ("/helloworld", "/"),
        ("/hello/admin", "/hello/admin"),
        ("/hello/admin/users", "/hello/admin"),
        ("/hello/administrator", "/hello"),
        ("/files/a.txt", "/files/"),
        ("/files", "/"),
        ("/", "/"),
        ("/anything", "/"),
    ],
)
def test_match_picks_the_longest_prefix_on_segment_boundaries(path: str, prefix: str) -> None:
    found = match(load(ROUTES), path)
    assert found is not None and found.prefix == prefix


def test_match_without_a_catch_all_can_miss() -> None:
    config = load(HELLO)
    assert match(config, "/helloworld") is None
    assert match(config, "/") is None


def test_locations_keep_config_order_the_merge_order() -> None:
    # Apache merges the matching sections in config order: no longest-first sort any more.
    assert [loc.source for loc in load(ROUTES).locations] == [f"server.conf:{n}" for n in (2, 4, 7, 11)]


def test_modules_lists_each_served_module_once(root: Path) -> None:
    assert load(ROUTES).modules() == [root / "hello.wasm", root / "other.wat"]


# --- inheritance from server level --------------------------------------------------------------


def test_location_inherits_and_overrides_server_level_settings(root: Path) -> None:
    (root / "more").mkdir()
    config = load("""\
        Listen 8080
        WasmModule hello.wasm
        WasmTimeout 10
        WasmEntryPoint main
        WasmEnv A server
        WasmEnv B server
        WasmArg server-arg
        WasmDir data
        Require local
        <Location /inherits>
            SetHandler wasm-handler
        </Location>
        <Location /overrides>
            SetHandler wasm-handler
            WasmModule other.wat
            WasmTimeout 2
            WasmEnv B location
            WasmEnv C location
            WasmArg location-arg
            WasmDir more
            Require all granted
        </Location>
    """)
    inherits, overrides = location(config, "/inherits"), location(config, "/overrides")
    assert (inherits.module, inherits.timeout, inherits.entry_point) == (root / "hello.wasm", 10.0, "main")
    assert (inherits.env, inherits.args, inherits.mounts) == (
        {"A": "server", "B": "server"},
        ["server-arg"],
        [Mount(str(root / "data"), root / "data")],
    )
    assert inherits.require == ["local"]
    assert (overrides.module, overrides.timeout, overrides.entry_point) == (root / "other.wat", 2.0, "main")
    assert overrides.env == {"A": "server", "B": "location", "C": "location"}
    assert (overrides.args, overrides.mounts) == (["location-arg"], [Mount(str(root / "more"), root / "more")])
    assert overrides.require == ["all granted"]
    assert config.warnings == []


def test_inherited_lists_are_not_shared_between_locations() -> None:
    config = load("""\
        Listen 8080
        SetHandler wasm-handler
        WasmModule hello.wasm
        WasmArg a
        <Location /x>
        </Location>
    """)
    location(config, "/x").args.append("b")
    assert location(config, "/").args == ["a"]


def test_server_level_set_handler_creates_a_root_location(root: Path) -> None:
    config = load("Listen 8080\nWasmModule hello.wasm\nSetHandler wasm-handler\nWasmArg x\n")
    (catch_all,) = config.locations
    assert (catch_all.prefix, catch_all.source) == ("/", "server.conf:3")
    assert (catch_all.handler, catch_all.module, catch_all.args) == ("wasm-handler", root / "hello.wasm", ["x"])


def test_explicit_root_location_merges_over_server_level_settings() -> None:
    config = load("""\
        Listen 8080
        SetHandler wasm-handler
        WasmModule hello.wasm
        WasmTimeout 3
        <Location />
            WasmEntryPoint run
        </Location>
    """)
    (root_location,) = config.locations
    assert root_location.source == "server.conf:5"
    assert (root_location.handler, root_location.timeout, root_location.entry_point) == ("wasm-handler", 3.0, "run")


def test_location_can_switch_off_an_inherited_handler() -> None:
    config = load("""\
        Listen 8080
        SetHandler wasm-handler
        WasmModule hello.wasm
        WasmMemoryLimit 64M
        <Location /static>
            SetHandler none
            WasmMemoryLimit 0
        </Location>
    """)
    static = location(config, "/static")
    assert (static.handler, static.memory_limit) == (None, None)
    assert location(config, "/").memory_limit == 64 * 2**20


# --- Require and allows() -----------------------------------------------------------------------


def _allows(requires: list[str], addr: str) -> bool:
    return LocationConfig(prefix="/", source="test", require=requires).allows(addr)


@pytest.mark.parametrize(
    ("requires", "addr", "allowed"),
    [
        ([], "203.0.113.9", True),
        (["all granted"], "203.0.113.9", True),
        (["all granted"], "not-an-ip", True),
        (["all denied"], "127.0.0.1", False),
        (["local"], "127.0.0.1", True),
        (["local"], "127.8.9.10", True),
        (["local"], "::1", True),
        (["local"], "::ffff:127.0.0.1", True),
        (["local"], "192.168.1.1", False),
        (["local"], "not-an-ip", False),
        (["ip 10.0.0.0/8 192.168.1.7"], "10.20.30.40", True),
        (["ip 10.0.0.0/8 192.168.1.7"], "192.168.1.7", True),
        (["ip 10.0.0.0/8 192.168.1.7"], "192.168.1.8", False),
        (["ip 10.0.0.0/8"], "::ffff:10.1.1.1", True),
        (["ip 2001:db8::/32"], "2001:db8::1", True),
        (["ip 2001:db8::/32"], "2001:db9::1", False),
        (["ip 10.1.2.3/8"], "10.9.9.9", True),  # host bits allowed (strict=False)
        (["all denied", "local"], "127.0.0.1", True),  # any line granting is enough
        (["all denied", "ip 10.0.0.0/8"], "192.0.2.1", False),
        (["All Granted"], "192.0.2.1", True),
    ],
)
def test_allows(requires: list[str], addr: str, allowed: bool) -> None:
    assert _allows(requires, addr) is allowed


def test_require_lines_are_stored_as_joined_arguments() -> None:
    config = load(HELLO.replace("</Location>", "Require local\nRequire ip 127.0.0.1 10.0.0.0/8\n</Location>"))
    hello = location(config, "/hello")
    assert hello.require == ["local", "ip 127.0.0.1 10.0.0.0/8"]
    assert hello.allows("10.1.1.1") and hello.allows("::1") and not hello.allows("192.0.2.1")


# --- parse_size and ConfigError -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("512K", 512 * 1024),
        ("512k", 512 * 1024),
        ("256M", 256 * 1024**2),
        ("1G", 1024**3),
        ("1g", 1024**3),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1", "1.5G", "1T", "1 M", "1MB", "ten"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a size in bytes or with a K, M or G suffix"):
        parse_size(text)


def test_config_error_fields_and_text() -> None:
    err = ConfigError("a.conf", 3, "bad", "Timeout")
    assert (err.file, err.line, err.message, err.directive) == ("a.conf", 3, "bad", "Timeout")
    assert str(err) == "a.conf:3: Timeout: bad"
    assert str(ConfigError("a.conf", 0, "whole file")) == "a.conf: whole file"


# --- RequestReadTimeout --------------------------------------------------------------------


def test_request_read_timeout_defaults_are_mod_reqtimeouts() -> None:
    config = load(HELLO)
    assert config.read_timeout_header == ReadTimeout(20, 40, 500)
    assert config.read_timeout_body == ReadTimeout(20, 0, 500)


def test_request_read_timeout_sets_each_named_phase_and_keeps_the_others() -> None:
    config = load(HELLO + "RequestReadTimeout header=2-3,MinRate=100\n")
    assert (config.read_timeout_header, config.read_timeout_body) == (ReadTimeout(2, 3, 100), ReadTimeout(20, 0, 500))
    config = load(HELLO + "RequestReadTimeout header=0 body=10\nRequestReadTimeout body=5,minrate=1000\n")
    assert (config.read_timeout_header, config.read_timeout_body) == (ReadTimeout(0, 0, 0), ReadTimeout(5, 0, 1000))


def test_request_read_timeout_handshake_bounds_a_tls_handshake_and_is_on_by_default() -> None:
    assert load(HELLO).read_timeout_handshake == ReadTimeout(20)  # Apache leaves it off; on here
    config = load(HELLO + "RequestReadTimeout handshake=5 header=10\n")
    assert (config.read_timeout_handshake, config.read_timeout_header) == (ReadTimeout(5), ReadTimeout(10))
    assert config.warnings == []


@pytest.mark.parametrize(
    "args, message",
    [
        ("header", "expected handshake=, header= or body="),
        ("headers=10", "expected handshake=, header= or body="),
        ("header=ten", "expected timeout[-maxtimeout][,MinRate=rate]"),
        ("header=1.5", "expected timeout[-maxtimeout][,MinRate=rate]"),
        ("header=20-10,MinRate=500", "the maximum timeout must be larger than the initial one"),
        ("header=20-40", "a timeout range needs MinRate"),
        ("body=20,MinRate=0", "MinRate must be > 0"),
    ],
)
def test_request_read_timeout_errors_name_the_line(args: str, message: str) -> None:
    err = fails(HELLO + f"RequestReadTimeout {args}\n")
    assert str(err).startswith(f"server.conf:{HELLO.count(chr(10)) + 1}: RequestReadTimeout: ")
    assert message in str(err)
