"""Tests for what stock Apache and mod_wasm configs need of the parser: every error at once,
LoadModule and <IfModule>, and Apache directives accepted without effect."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefork_wasm.arbiter import silence_limit
from prefork_wasm.config import MAX_ERRORS, ConfigErrors
from prefork_wasm.connection import LINGER_SECONDS
from test_config import HELLO, load, server_root  # noqa: F401 (its autouse fixture "root" applies here too)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load(text)
    return str(info.value).splitlines()


def test_five_errors_are_all_reported_with_file_and_line() -> None:
    lines = errors(
        """\
        Listen 8080
        Timeout soon
        <Location /a>
            SetHandler wasm-handler
            WasmModule missing.wasm
            WasmEnableCGI maybe
        </Location>
        Frobnicate 1
        KeepAlive sometimes
        """
    )
    assert lines == [
        "server.conf:2: Timeout: expected seconds > 0, such as 30 or 2.5, got 'soon'",
        "server.conf:5: WasmModule: no such file 'missing.wasm' "
        f"(relative paths are taken from ServerRoot {Path.cwd()})",
        "server.conf:6: WasmEnableCGI: expected On or Off, got 'maybe'",
        "server.conf:8: Invalid command 'Frobnicate', perhaps misspelled?",
        "server.conf:9: KeepAlive: expected On or Off, got 'sometimes'",
    ]


def test_errors_stop_at_the_cap() -> None:
    lines = errors("Listen 8080\n" + "Timeout x\n" * (MAX_ERRORS + 5))
    assert len(lines) == MAX_ERRORS + 1
    assert lines[-2].startswith(f"server.conf:{MAX_ERRORS + 1}: Timeout:")
    assert lines[-1] == f"stopped after {MAX_ERRORS} errors; fix these and run -t again"


def test_a_section_that_fails_to_open_is_skipped_whole() -> None:
    # Its body neither reports errors of its own nor lands at server level.
    lines = errors(HELLO + "<Location relative>\n    SetHandler wasm-handler\n    Bogus\n</Location>\nTimeout x\n")
    assert lines == [
        "server.conf:6: <Location>: URL prefix must start with '/', got 'relative'",
        "server.conf:10: Timeout: expected seconds > 0, such as 30 or 2.5, got 'x'",
    ]


def test_a_mismatched_close_recovers_at_the_matching_section() -> None:
    lines = errors(HELLO + "<Location /b>\n<IfDefine X>\n</Location>\nTimeout x\n")
    assert (
        lines[0]
        == "server.conf:8: </Location> does not match <IfDefine X> opened at server.conf:7; add '</IfDefine>' first"
    )
    assert lines[1:] == ["server.conf:9: Timeout: expected seconds > 0, such as 30 or 2.5, got 'x'"]


def test_load_module_of_a_provided_module_is_a_note_and_the_path_is_not_read() -> None:
    config = load("LoadModule wasm_module modules/mod_wasm.so\nLoadModule mpm_event_module x.so\n" + HELLO)
    assert config.notes == [
        "server.conf:1: LoadModule wasm_module: built into prefork-wasm, nothing to load",
        "server.conf:2: LoadModule mpm_event_module: prefork-wasm is always mpm_prefork_module; ignored",
    ]
    assert config.warnings == []


def test_load_module_of_an_unknown_module_is_a_warning_not_an_error() -> None:
    config = load("LoadModule rewrite_module modules/mod_rewrite.so\n" + HELLO)
    assert config.warnings == [
        "server.conf:1: prefork-wasm has no equivalent of rewrite_module; its directives will be refused"
    ]


@pytest.mark.parametrize(
    "condition, active",
    [
        ("wasm_module", True),
        ("mod_wasm.c", True),
        ("!wasm_module", False),
        ("prefork.c", True),
        ("rewrite_module", False),
        ("!mod_rewrite.c", True),
    ],
)
def test_ifmodule_is_true_for_provided_modules_by_either_name(condition: str, active: bool) -> None:
    config = load(f"Listen 8080\n<IfModule {condition}>\n    Timeout 7\n</IfModule>\n")
    assert config.timeout == (7.0 if active else 60.0)


def test_a_skipped_ifmodule_does_not_read_its_include() -> None:
    Path("broken.conf").write_text("Bogus directive\n")
    config = load(
        HELLO
        + "<IfModule mod_gnutls.c>\n    Include missing/extra.conf\n    Include broken.conf\n"
        "    GnuTLSEnable on\n</IfModule>\n"
        + "<IfModule !wasm_module>\n    Include broken.conf\n</IfModule>\n"
    )
    assert config.warnings == []


def test_ifmodule_inside_a_location_sets_the_location() -> None:
    config = load(
        HELLO.replace("    </Location>", "    <IfModule wasm_module>\n        WasmArg x\n    </IfModule>\n</Location>")
    )
    assert config.locations[0].args == ["x"]


def test_load_module_is_no_longer_misread_as_wasm_module() -> None:
    assert "Did you mean" not in " ".join(errors("Listen 8080\nLoadModule wasm_module\n"))


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "RewriteRule ^/a /b",
            "Invalid command 'RewriteRule': a directive of rewrite_module, which prefork-wasm has no equivalent of",
        ),
        ("SetEnv A b", "a directive of env_module, which prefork-wasm has no equivalent of; WasmEnv NAME VALUE sets"),
        ("Listn 80", "Invalid command 'Listn', perhaps misspelled? Did you mean 'Listen'?"),
    ],
)
def test_apache_directives_say_whose_they_are_instead_of_a_look_alike(line: str, message: str) -> None:
    assert message in errors(HELLO + line + "\n")[0]


def test_directory_and_files_sections_are_kept_in_config_order() -> None:
    config = load(
        HELLO
        + '<Directory />\n    AllowOverride none\n    Require all denied\n</Directory>\n'
        + '<Directory "/srv/www">\n    Options Indexes FollowSymLinks\n    Require all granted\n'
        + '    <Files "*.txt">\n        Require all granted\n    </Files>\n</Directory>\n'
        + '<Files ".ht*">\n    Require all denied\n</Files>\n<Directory ~ "^/srv/(a|b)">\n</Directory>\n'
    )
    assert [loc.require for loc in config.locations] == [[]]  # nothing reached the Location
    sections = config.routes.disk
    assert [(s.kind, s.pattern, s.source) for s in sections] == [
        ("Directory", "/", "server.conf:6"),
        ("Directory", "/srv/www", "server.conf:10"),
        ("Files", "*.txt", "server.conf:13"),
        ("Files", ".ht*", "server.conf:17"),
        ("DirectoryMatch", "^/srv/(a|b)", "server.conf:20"),
    ]
    assert sections[2].within is sections[1]
    assert sections[0].settings == {"require": ["all denied"]}
    assert sections[1].settings["require"] == ["all granted"]


@pytest.mark.parametrize(
    "body, message",
    [
        ("<Directory />\n    ForceType text/plain\n</Directory>\n", "ForceType: not supported inside <Directory />"),
        (
            "<Directory />\n    <Directory /a>\n    </Directory>\n</Directory>\n",
            "<Directory>: not allowed inside <Directory />",
        ),
        ("<Directory ~ (>\n</Directory>\n", "<Directory>: invalid regular expression '('"),
        ("<Location /x>\n    DocumentRoot /srv\n</Location>\n", "DocumentRoot: not allowed inside <Location /x>"),
        ("Options +Indexes FollowSymLinks\n", "Options: either all Options must start with + or -"),
        ("Options Indexs\n", "Options: unknown option 'Indexs'"),
        ("AddType text .txt\n", "AddType: expected a MIME type such as text/html"),
        ("DirectoryIndex /index.php\n", "DirectoryIndex: expected file names such as index.html"),
        ("TypesConfig nowhere.types\n", "TypesConfig: no such file 'nowhere.types'"),
        ("<Directory />\n    Require everyone\n</Directory>\n", "Require: expected 'all granted'"),
        ("<Location /x>\n    <Files a>\n    </Files>\n</Location>\n", "<Files>: not allowed inside <Location /x>"),
        (
            "<Location /x>\n    <Directory />\n    </Directory>\n</Location>\n",
            "<Directory>: not allowed inside <Location /x>",
        ),
        ("HostnameLookups On\n", "HostnameLookups: only 'Off' is supported"),
        ("AddDefaultCharset utf-8\n", "AddDefaultCharset: only 'Off' is supported"),
    ],
)
def test_what_apache_sections_and_directives_refuse(body: str, message: str) -> None:
    assert message in errors(HELLO + body)[0]


def test_accepted_apache_directives_say_they_have_no_effect() -> None:
    config = load(
        HELLO + "ServerAdmin you@example.com\nDocumentRoot /nowhere/www\nHostnameLookups Off\nAddDefaultCharset Off\n"
    )
    assert config.warnings == [
        "server.conf:7: DocumentRoot /nowhere/www does not exist (or is not a directory): its URLs answer 404"
    ]
    assert [note.split(": ", 1)[1].split()[0] for note in config.notes] == ["ServerAdmin", "client", "a"]


def test_add_handler_runs_the_location_module_for_files_by_extension(root: Path) -> None:
    config = load(
        "Listen 8080\n<Location /php>\n    AddHandler wasm-handler .php PHP7\n    WasmModule hello.wasm\n</Location>\n"
    )
    assert config.warnings == []
    loc = config.locations[0]
    assert (loc.handler, loc.add_handlers) == (None, {".php": "wasm-handler", ".php7": "wasm-handler"})
    assert config.modules() == [root / "hello.wasm"]


def test_add_handler_of_a_handler_prefork_wasm_lacks_is_a_warning() -> None:
    config = load(HELLO + "AddHandler cgi-script .cgi .PL\n")
    assert config.warnings == [
        "server.conf:6: AddHandler cgi-script: prefork-wasm has no such handler "
        "(it has wasm-handler, server-status, metrics, health); requests for .cgi .PL files are refused (403)"
    ]
    assert config.locations[0].add_handlers == {".cgi": "cgi-script", ".pl": "cgi-script"}


def test_wasm_settings_in_a_directory_are_compiled_and_checked(root: Path) -> None:
    (root / "other.wasm").write_bytes((root / "hello.wasm").read_bytes())
    config = load(
        f"Listen 8080\nDocumentRoot {root}\nAddHandler wasm-handler .py\n"
        f"<Directory {root}/app>\n    WasmModule other.wasm\n    WasmArg -u\n    WasmTimeout 5\n</Directory>\n"
    )
    assert config.warnings == []
    [run] = config.section_runs()
    assert (run.module, run.args, run.timeout, run.sources["module"]) == (
        root / "other.wasm",
        ["-u"],
        5.0,
        "server.conf:5",
    )
    assert config.modules() == [root / "other.wasm"]


def test_scripts_wasm_timeout_bounds_a_worker_s_silence_and_static_files_do_not(root: Path) -> None:
    config = load(
        f"Listen 8080\nTimeout 10\nDocumentRoot {root}\n<Location /files>\n    WasmTimeout 400\n</Location>\n"
        f"<Location /py>\n    AddHandler wasm-handler .py\n    WasmModule hello.wasm\n</Location>\n"
        f"<Directory {root}/slow>\n    WasmTimeout 200\n</Directory>\n"
    )
    assert silence_limit(config) == 10 + 200 + LINGER_SECONDS  # not the 400 of /files, which only serves files


def test_add_handler_without_a_module_is_an_error() -> None:
    assert (
        "AddHandler wasm-handler needs a WasmModule"
        in errors("Listen 8080\n<Location /php>\n    AddHandler wasm-handler .php\n</Location>\n")[0]
    )


def test_add_handler_without_a_module_is_one_error_at_its_line_however_many_locations_inherit_it(root: Path) -> None:
    lines = errors(
        f"Listen 8080\nDocumentRoot {root}\nAddHandler wasm-handler .py\n"
        f"<VirtualHost *:8080>\n    DocumentRoot {root}\n    <Location /x>\n    </Location>\n</VirtualHost>\n"
    )
    assert lines == [
        "server.conf:3: AddHandler: AddHandler wasm-handler needs a WasmModule, the interpreter that runs the "
        "scripts (add 'WasmModule FILE.wasm' beside it or in the <Location> it serves)"
    ]


def test_file_settings_merge_from_server_level_into_a_location(root: Path) -> None:
    config = load(
        f"Listen 8080\nDocumentRoot {root}\nAddType text/x-a .a\nOptions -FollowSymLinks +Indexes\nDirectoryIndex a b\n"
        "<Location /x>\n    AddType text/x-b .b\n    Options +FollowSymLinks\n</Location>\n"
    )
    top, x = sorted(config.locations, key=lambda loc: loc.prefix)
    assert (top.prefix, top.document_root, top.options) == ("/", root, frozenset({"Indexes"}))
    assert x.add_types == {".a": "text/x-a", ".b": "text/x-b"}
    assert x.options == frozenset({"Indexes", "FollowSymLinks"})
    assert (x.directory_index, x.explicit) == (["a", "b"], frozenset({"add_types", "options"}))


def test_wasm_map_dir_takes_a_relative_guest_path_as_mod_wasm_does() -> None:
    config = load(HELLO.replace("    </Location>", "    WasmMapDir ./ data\n    WasmMapDir uploads/ data\n</Location>"))
    assert [mount.guest for mount in config.locations[0].mounts] == ["./", "uploads/"]
