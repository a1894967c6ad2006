"""Per-directory configuration: `Options`, and the `<Directory>`, `<DirectoryMatch>`, `<Files>`
and `<FilesMatch>` sections that apply once a URL has been mapped to a file on disk.

Apache merges them in this order (its directory walk, then its file walk): the server-level
defaults, `<Directory>` sections shortest path first, `<DirectoryMatch>` in config order, then
`<Files>`/`<FilesMatch>` in config order; what the matching `<Location>`s set themselves comes
last and wins (`LocationConfig.explicit`). Pure: no I/O, paths are compared as strings.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

# Options Apache knows, by lowercase name; only Indexes, FollowSymLinks and
# SymLinksIfOwnerMatch change anything here (ExecCGI, Includes, MultiViews are accepted).
OPTION_NAMES = {
    name.lower(): name
    for name in (
        "Indexes", "FollowSymLinks", "SymLinksIfOwnerMatch", "ExecCGI", "Includes", "IncludesNOEXEC", "MultiViews"
    )
}
DEFAULT_OPTIONS = frozenset({"FollowSymLinks"})  # Apache 2.4's default
_ALL = frozenset({"Indexes", "FollowSymLinks", "SymLinksIfOwnerMatch", "ExecCGI", "Includes"})  # 'All': not MultiViews
INERT_OPTIONS = frozenset({"ExecCGI", "Includes", "IncludesNOEXEC", "MultiViews"})

# What a section or a Location can set that the file walk merges (scope attribute names).
DISK_SETTINGS = (
    "require", "options", "handler", "add_handlers", "add_types", "directory_index", "fallback_resource"
)
# How a script's guest runs (mod_wasm takes its directives in <Directory> too, mod_ssl its
# SSLOptions +StdEnvVars): a section's value replaces the inherited one, WasmEnv adds by name.
WASM_SETTINGS = (
    "module", "mounts", "args", "env", "enable_cgi", "map_cgi_file_names", "entry_point", "timeout", "memory_limit",
    "ssl_std_env_vars",
)


class LocationSettings(Protocol):
    """What the file walk reads of a Location's merged settings (config.LocationConfig): named
    here so that the settings data may build on this module without it importing them back."""

    require: list[str]
    options: frozenset[str]
    handler: str | None
    add_handlers: dict[str, str]
    add_types: dict[str, str]
    directory_index: list[str]
    fallback_resource: str | None
    env: dict[str, str]
    explicit: frozenset[str]  # what the matching <Location>s set themselves: it wins over sections
    sources: dict[str, str]


@dataclass(frozen=True)
class OptionsChange:
    """One `Options` line: an absolute set (no +/-), or options added and removed."""

    absolute: frozenset[str] | None = None
    add: frozenset[str] = frozenset()
    remove: frozenset[str] = frozenset()

    def apply(self, current: frozenset[str]) -> frozenset[str]:
        if self.absolute is not None:
            return self.absolute
        return (current - self.remove) | self.add


def parse_options(args: list[str]) -> OptionsChange:
    """Apache's rule: either every word has a + or -, or none has (a mix is an error)."""
    signs = {arg[:1] in ("+", "-") for arg in args}
    if len(signs) > 1:
        raise ValueError("either all Options must start with + or -, or no Option may")
    if signs == {True}:
        add: set[str] = set()
        remove: set[str] = set()
        for arg in args:
            name = _option(arg[1:], relative=True)
            (add if arg[0] == "+" else remove).update(name)
        return OptionsChange(add=frozenset(add), remove=frozenset(remove))
    absolute: set[str] = set()
    for arg in args:
        absolute.update(_option(arg, relative=False))
    return OptionsChange(absolute=frozenset(absolute))


def _option(word: str, relative: bool) -> frozenset[str]:
    lower = word.lower()
    if lower in ("all", "none"):
        if relative:
            raise ValueError(f"{word} cannot take + or -; write 'Options {word}'")
        return _ALL if lower == "all" else frozenset()
    if lower not in OPTION_NAMES:
        raise ValueError(f"unknown option {word!r}; expected {', '.join(OPTION_NAMES.values())}, All or None")
    return frozenset({OPTION_NAMES[lower]})


def apply_options(current: frozenset[str], changes: list[OptionsChange]) -> frozenset[str]:
    for change in changes:
        current = change.apply(current)
    return current


@dataclass(frozen=True)
class DiskSection:
    """One `<Directory>`, `<DirectoryMatch>`, `<Files>` or `<FilesMatch>` and what it sets.

    `pattern` is an absolute directory path (wildcards `*?[]` per component, as Apache's) or a
    file name wildcard, or for the Match kinds (and `~`) a regular expression. A `<Files>`
    nested in a `<Directory>` applies only under it (`within`).
    """

    kind: str  # 'Directory', 'DirectoryMatch', 'Files' or 'FilesMatch'
    pattern: str
    source: str
    settings: dict[str, Any] = field(default_factory=dict)
    within: DiskSection | None = None
    sources: dict[str, Any] = field(default_factory=dict)  # where each setting was made: str() is 'FILE:LINE'
    regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)  # for the Match kinds

    def __post_init__(self) -> None:
        # Compiled once with the section (check_pattern has refused a bad one at its line).
        object.__setattr__(self, "regex", re.compile(self.pattern) if self.kind.endswith("Match") else None)

    def covers_dir(self, directory: str) -> bool:
        """A Directory section covers its directory and everything below it."""
        if self.kind == "DirectoryMatch":
            regex = self.regex
            assert regex is not None
            path = PurePosixPath(directory)
            return any(regex.search(str(parent)) for parent in (path, *path.parents))
        want = PurePosixPath(self.pattern).parts
        have = PurePosixPath(directory).parts
        return len(have) >= len(want) and all(fnmatch.fnmatchcase(h, w) for h, w in zip(have, want, strict=False))

    def covers_file(self, directory: str, name: str) -> bool:
        if self.within is not None and not self.within.covers_dir(directory):
            return False
        if self.kind == "FilesMatch":
            regex = self.regex
            assert regex is not None
            return regex.search(name) is not None
        return fnmatch.fnmatchcase(name, self.pattern)


def check_pattern(kind: str, pattern: str) -> None:
    """Refuse a bad regular expression or a relative directory at its config line."""
    if kind.endswith("Match"):
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None
    elif kind == "Directory" and not pattern.startswith("/"):
        raise ValueError(f"expected an absolute directory path, got {pattern!r}")
    elif kind == "Files" and "/" in pattern:
        raise ValueError(f"expected a file name (wildcards allowed), not a path: {pattern!r}")


@dataclass(frozen=True)
class DirSettings:
    """The merged settings for one file (or directory) on disk."""

    require: list[str]
    options: frozenset[str]
    handler: str | None
    add_handlers: dict[str, str]
    add_types: dict[str, str]
    directory_index: list[str]
    fallback_resource: str | None = None  # FallbackResource: where a URL mapping to nothing here goes
    # The Location's Wasm settings that sections change for a script here (dataclasses.replace
    # arguments, `sources` included), and the sections that changed them (a cache key).
    wasm: dict[str, Any] = field(default_factory=dict)
    wasm_from: tuple[str, ...] = ()

    def handler_for(self, name: str) -> str | None:
        """SetHandler wins; else AddHandler by the name's last extension (see docs/configuration.md: a name's
        other extensions are not looked at, unlike mod_mime, so 'x.php.txt' is no script)."""
        if self.handler is not None:
            return self.handler
        return self.add_handlers.get(extension(name))


def extension(name: str) -> str:
    """'.php' for 'index.PHP': AddType and AddHandler compare extensions case-insensitively."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def settings_for(
    loc: LocationSettings, sections: list[DiskSection], directory: str, name: str | None
) -> DirSettings:
    """Merge, in Apache's order, what applies to `name` in `directory` (None: the directory
    itself); what the matching Locations set in their own blocks wins over every section."""
    values: dict[str, Any] = {attr: getattr(loc, attr) for attr in DISK_SETTINGS}
    dirs = sorted(
        (s for s in sections if s.kind == "Directory" and s.covers_dir(directory)),
        key=lambda s: len(PurePosixPath(s.pattern).parts),
    )
    matching = [*dirs, *(s for s in sections if s.kind == "DirectoryMatch" and s.covers_dir(directory))]
    if name is not None:
        matching += [s for s in sections if s.kind in ("Files", "FilesMatch") and s.covers_file(directory, name)]
    wasm: dict[str, Any] = {}
    wasm_from: list[str] = []
    for section in matching:
        for attr, value in section.settings.items():
            if attr in loc.explicit:
                continue
            if attr == "options":
                values[attr] = apply_options(values[attr], value)
            elif attr in ("add_handlers", "add_types"):
                values[attr] = {**values[attr], **value}
            elif attr not in WASM_SETTINGS:
                values[attr] = value
        changed = wasm_overrides(loc, section, wasm)
        if changed:
            wasm, wasm_from = changed, [*wasm_from, section.source]
    return DirSettings(**values, wasm=wasm, wasm_from=tuple(wasm_from))


def wasm_overrides(loc: LocationSettings, section: DiskSection, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base` (overrides so far) with the section's Wasm settings applied; {} if it sets none
    the Location leaves open."""
    own = [attr for attr in WASM_SETTINGS if attr in section.settings and attr not in loc.explicit]
    if not own:
        return {}
    merged = dict(base or {})
    sources = dict(merged.get("sources", loc.sources))
    for attr in own:
        value = section.settings[attr]
        merged[attr] = {**merged.get("env", loc.env), **value} if attr == "env" else value
        sources[attr] = str(section.sources.get(attr, section.source))
    merged["sources"] = sources
    return merged
