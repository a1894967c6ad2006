"""URL -> disk mapping (filemap.py) and the per-directory merge (dirconfig.py), on real files in
a temporary tree: hostile paths go through paths.request_path first, as in the server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefork_wasm.config import LocationConfig
from prefork_wasm.dirconfig import DirSettings, DiskSection, OptionsChange, parse_options, settings_for
from prefork_wasm.filemap import Mapped, Unmapped, resolve, translate
from prefork_wasm.paths import PathRefused, request_path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """docroot with files, a directory, scripts, a secret outside and symlinks in and out."""
    root = tmp_path / "www"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "index.html").write_text("home")
    (root / "a.txt").write_text("a")
    (root / "dir" / "b.txt").write_text("b")
    (root / "app").mkdir()
    (root / "app" / "index.py").write_text("print()")
    (root / ".htaccess").write_text("deny")
    (root / "dir" / ".htpasswd").write_text("user:x")
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "s.txt").write_text("s")
    (root / "out.txt").symlink_to(tmp_path / "secret.txt")
    (root / "outdir").symlink_to(tmp_path / "outside")
    (root / "in.txt").symlink_to(root / "a.txt")
    (tmp_path / "icons").mkdir()
    (tmp_path / "icons" / "i.png").write_text("png")
    return root


def loc(root: Path, **kw: object) -> LocationConfig:
    return LocationConfig(prefix="/", source="test", document_root=root, **kw)  # type: ignore[arg-type]


def mapper(location: LocationConfig, sections: list[DiskSection] | None = None):  # type: ignore[no-untyped-def]
    def settings_at(directory: str, name: str | None) -> DirSettings:
        return settings_for(location, sections or [], directory, name)

    def run(target: str) -> Mapped:
        return resolve(request_path(target), location, settings_at)

    return run


def status(run, target: str) -> int | str:  # type: ignore[no-untyped-def]
    """What the server would answer: 200 for a file (with its name), or the refusal."""
    try:
        mapped = run(target)
    except PathRefused as e:
        return e.status
    except Unmapped as e:
        return e.status
    return {"file": "file:" + mapped.file.name, "listing": "listing", "slash": 301}[mapped.kind]


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/a.txt", "file:a.txt"),
        ("/", "file:index.html"),
        ("/dir/b.txt", "file:b.txt"),
        ("/dir", 301),
        ("/dir/", "listing"),
        ("/nothing", 404),
        ("/../secret.txt", 400),
        ("/dir/../../secret.txt", 400),
        ("/%2e%2e/secret.txt", 400),
        ("/dir/%2e%2e/%2e%2e/secret.txt", 400),
        ("/..%2fsecret.txt", 404),  # an encoded slash: AllowEncodedSlashes Off
        ("/a.txt%00.html", 404),
        ("//a.txt", "file:a.txt"),
        ("/dir//b.txt", "file:b.txt"),
        ("http://evil.example/../secret.txt", 400),
        ("http://evil.example/a.txt", "file:a.txt"),
        ("/.htaccess", 403),
        ("/dir/.htpasswd", 403),
        ("/%2ehtaccess", 403),
        ("/.HTACCESS", 404),  # a different name on a case-sensitive file system
        ("/" + "x" * 300, 404),  # longer than NAME_MAX
        ("/" + "/".join(["d"] * 2000), 404),
        ("/out.txt", "file:out.txt"),  # FollowSymLinks, Apache's default: the admin's link is followed
        ("/outdir/s.txt", "file:s.txt"),
        ("/in.txt", "file:in.txt"),
    ],
)
def test_hostile_and_ordinary_paths_with_apache_defaults(site: Path, target: str, expected: int | str) -> None:
    assert status(mapper(loc(site)), target) == expected


@pytest.mark.parametrize("target", ["/out.txt", "/outdir/s.txt", "/in.txt"])
def test_without_follow_symlinks_every_symlink_is_refused(site: Path, target: str) -> None:
    sections = [DiskSection("Directory", str(site), "t", {"options": [parse_options(["-FollowSymLinks"])]})]
    assert status(mapper(loc(site), sections), target) == 403
    assert status(mapper(loc(site), sections), "/a.txt") == "file:a.txt"


def test_symlinks_if_owner_match_follows_only_links_owned_like_their_target(site: Path) -> None:
    location = loc(site, options=frozenset({"SymLinksIfOwnerMatch"}))
    assert status(mapper(location), "/in.txt") == "file:in.txt"  # same owner (this test's user)
    if os.geteuid() == 0:
        os.chown(site / "a.txt", 12345, 12345)
        assert status(mapper(location), "/in.txt") == 403


def test_a_directory_index_that_is_a_refused_symlink_is_skipped(site: Path) -> None:
    (site / "dir" / "index.html").symlink_to(site / "a.txt")
    sections = [DiskSection("Directory", str(site), "t", {"options": [parse_options(["-FollowSymLinks"])]})]
    assert status(mapper(loc(site), sections), "/dir/") == "listing"


def test_path_info_follows_the_first_file(site: Path) -> None:
    run = mapper(loc(site))
    mapped = run("/app/index.py/x/y%20z/")
    assert (mapped.kind, mapped.url, mapped.path_info) == ("file", "/app/index.py", "/x/y z/")
    assert run("/app/index.py/").path_info == "/"
    assert run("/app/index.py").path_info == ""


def test_directory_index_takes_the_first_existing_name(site: Path) -> None:
    run = mapper(loc(site, directory_index=["missing.py", "index.py", "index.html"]))
    mapped = run("/app/")
    assert (mapped.file, mapped.url, mapped.path_info) == (site / "app" / "index.py", "/app/index.py", "")
    assert mapper(loc(site, directory_index=[]))("/").kind == "listing"


def test_slash_redirect_keeps_the_directory_url(site: Path) -> None:
    assert mapper(loc(site))("/dir").url == "/dir/"


def test_alias_longest_wins_and_its_trailing_slash_is_required(site: Path, tmp_path: Path) -> None:
    icons = tmp_path / "icons"
    location = loc(site, aliases=[("/i", site / "dir"), ("/icons/", icons), ("/icons/x", tmp_path / "outside")])
    assert translate("/icons/i.png", location) == (icons, "/icons", ["i.png"])
    assert translate("/icons/x/s.txt", location) == (tmp_path / "outside", "/icons/x", ["s.txt"])
    assert translate("/icons", location) == (site, "", ["icons"])  # 'Alias /icons/' needs the slash
    assert translate("/iconsx", location) == (site, "", ["iconsx"])
    assert translate("/i/b.txt", location) == (site / "dir", "/i", ["b.txt"])
    assert translate("/ix", location) == (site, "", ["ix"])  # segment-wise: /i is not /ix
    assert status(mapper(location), "/icons/i.png") == "file:i.png"
    assert status(mapper(location), "/icons/../secret.txt") == 404  # normalised to /secret.txt in the root


def test_alias_to_a_file(site: Path, tmp_path: Path) -> None:
    location = loc(site, aliases=[("/s", tmp_path / "secret.txt")])
    assert status(mapper(location), "/s") == "file:secret.txt"


def test_no_root_maps_nothing(site: Path) -> None:
    location = LocationConfig(prefix="/", source="t")
    assert translate("/a.txt", location) is None
    with pytest.raises(Unmapped) as e:
        resolve("/a.txt", location, lambda d, n: settings_for(location, [], d, n))
    assert e.value.status == 404


def test_a_missing_name_reports_the_deepest_directory_reached(site: Path) -> None:
    with pytest.raises(Unmapped) as e:
        mapper(loc(site))("/dir/sub/missing/deeper")
    assert (e.value.status, e.value.directory) == (404, str(site / "dir" / "sub"))


# --- merging <Directory> and <Files> --------------------------------------------------------------


def test_sections_merge_shortest_directory_first_then_files(site: Path) -> None:
    sections = [
        DiskSection("Files", "*.txt", "t:1", {"require": ["ip 10.0.0.0/8"]}),
        DiskSection("Directory", str(site / "dir"), "t:2", {"require": ["all granted"], "handler": "wasm-handler"}),
        DiskSection("Directory", "/", "t:3", {"require": ["all denied"], "directory_index": ["x"]}),
        DiskSection("DirectoryMatch", r"/di[r]$", "t:4", {"add_types": {".b": "text/x-b"}}),
    ]
    location = loc(site, add_types={".a": "text/x-a"})
    top = settings_for(location, sections, str(site), None)
    assert (top.require, top.directory_index, top.handler) == (["all denied"], ["x"], None)
    inner = settings_for(location, sections, str(site / "dir"), None)
    assert (inner.require, inner.handler, inner.add_types) == (
        ["all granted"],
        "wasm-handler",
        {".a": "text/x-a", ".b": "text/x-b"},
    )
    file = settings_for(location, sections, str(site / "dir"), "b.txt")
    assert file.require == ["ip 10.0.0.0/8"]
    deeper = settings_for(location, sections, str(site / "dir" / "sub"), None)
    assert deeper.add_types == {".a": "text/x-a", ".b": "text/x-b"}  # a parent matching the regex counts


def test_a_location_own_setting_wins_over_sections(site: Path) -> None:
    sections = [DiskSection("Directory", "/", "t", {"require": ["all granted"]})]
    location = loc(site, require=["all denied"], explicit=frozenset({"require"}))
    assert settings_for(location, sections, str(site), "a.txt").require == ["all denied"]


def test_directory_wildcards_match_whole_components(site: Path) -> None:
    section = DiskSection("Directory", "/home/*/public_html", "t")
    assert section.covers_dir("/home/ann/public_html/x")
    assert not section.covers_dir("/home/ann/b/public_html")
    assert not section.covers_dir("/home/ann")


def test_files_inside_a_directory_applies_only_under_it() -> None:
    outer = DiskSection("Directory", "/srv/www", "t")
    files = DiskSection("Files", "*.txt", "t", {}, outer)
    assert files.covers_file("/srv/www/a", "x.txt")
    assert not files.covers_file("/srv/other", "x.txt")
    assert DiskSection("FilesMatch", r"\.ph(p|tml)$", "t").covers_file("/", "a.phtml")


@pytest.mark.parametrize(
    "words, start, result",
    [
        (["Indexes", "FollowSymLinks"], frozenset(), {"Indexes", "FollowSymLinks"}),
        (["None"], frozenset({"Indexes"}), set()),
        (["+Indexes", "-FollowSymLinks"], frozenset({"FollowSymLinks"}), {"Indexes"}),
        (["All"], frozenset(), {"Indexes", "FollowSymLinks", "SymLinksIfOwnerMatch", "ExecCGI", "Includes"}),
    ],
)
def test_options_absolute_and_relative(words: list[str], start: frozenset[str], result: set[str]) -> None:
    assert parse_options(words).apply(start) == result


def test_handler_for_looks_at_the_last_extension_only() -> None:
    settings = DirSettings([], frozenset(), None, {".php": "wasm-handler"}, {}, [])
    assert settings.handler_for("index.PHP") == "wasm-handler"
    assert settings.handler_for("x.php.txt") is None
    assert settings.handler_for(".php") is None  # a dot file has no extension
    assert OptionsChange().apply(frozenset({"Indexes"})) == {"Indexes"}


def test_sections_change_a_scripts_wasm_settings_unless_the_location_set_them(site: Path) -> None:
    sections = [
        DiskSection("Directory", "/", "t:1", {"env": {"A": "1", "B": "1"}, "args": ["-O"]}),
        DiskSection(
            "Directory", str(site / "app"), "t:5", {"env": {"B": "2"}, "timeout": 5.0}, sources={"timeout": "t:7"}
        ),
    ]
    location = loc(site, env={"C": "0"}, args=["-u"], timeout=30.0)
    settings = settings_for(location, sections, str(site / "app"), "index.py")
    assert settings.wasm_from == ("t:1", "t:5")
    assert {k: v for k, v in settings.wasm.items() if k != "sources"} == {
        "env": {"A": "1", "B": "2", "C": "0"}, "args": ["-O"], "timeout": 5.0
    }
    assert (settings.wasm["sources"]["timeout"], settings.wasm["sources"]["args"]) == ("t:7", "t:1")
    explicit = loc(site, args=["-u"], explicit=frozenset({"args", "env", "timeout"}))
    assert settings_for(explicit, sections, str(site / "app"), "index.py").wasm == {}
    assert settings_for(location, [], str(site), "a.py").wasm == {}
