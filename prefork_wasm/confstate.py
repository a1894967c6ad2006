"""The state a config read builds up, which the directive table (directives.py) writes into:
what was read for each server, the sections open where the reader stands, and the values
that depend on that (paths taken from ServerRoot, checked to exist). Apart from this module
the table needs no reader, and the reader (conffile.py) imports the table, not the reverse.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PREDEFINED_LOG_FORMATS, ConfigError, Listen
from .dirconfig import DiskSection


def join_path(base: Path, arg: str) -> Path:
    """`arg` taken from `base` (an absolute `arg` as it is), with '..' and '.' folded."""
    return Path(os.path.normpath(base / arg))


@dataclass(frozen=True)
class Line:
    """One directive as read: where it is (for messages) and its text."""

    file: str
    number: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.number}"

    def error(self, message: str, directive: str | None = None) -> ConfigError:
        return ConfigError(self.file, self.number, message, directive)


@dataclass
class Scope:
    """Settings given explicitly in one place; presence of a key is what 'set here' means for merging."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Line] = field(default_factory=dict)

    def set(self, attr: str, value: Any, line: Line) -> None:
        self.values[attr] = value
        self.sources[attr] = line

    def append(self, attr: str, value: Any, line: Line) -> None:
        self.values.setdefault(attr, []).append(value)
        self.sources[attr] = line


@dataclass
class LocationBlock:
    """A <Location> or <LocationMatch> as read: each is its own section (Apache merges them all)."""

    line: Line
    pattern: str
    regex: re.Pattern[str] | None = None
    scope: Scope = field(default_factory=Scope)


@dataclass
class ServerRead:
    """What is read for the main server or for one <VirtualHost> (`line`: where it opens)."""

    line: Line | None = None
    addresses: list[Listen] = field(default_factory=list)
    server: Scope = field(default_factory=Scope)  # server-level directives (ServerName, ErrorLog ...)
    defaults: Scope = field(default_factory=Scope)  # location directives outside any <Location>
    blocks: list[LocationBlock] = field(default_factory=list)
    disk_sections: list[DiskSection] = field(default_factory=list)  # <Directory>, <Files> ...
    aliases: list[str] = field(default_factory=list)
    custom_logs: list[tuple[str, str, Line, tuple[str, bool] | None]] = field(default_factory=list)


@dataclass
class OpenSection:
    """An open <...> section; `scope` is set for <Location>, <Directory> and <Files> (`disk`:
    the DiskSection of the latter kinds), `active` is False inside a false condition."""

    name: str
    label: str
    line: Line
    active: bool
    scope: Scope | None = None
    disk: DiskSection | None = None
    vhost: ServerRead | None = None  # set for <VirtualHost>


class ReadState(ABC):
    """What reading has gathered so far (per server, as written), where the reader stands (the
    open sections) and the values that depend on that: what a directive acts on. conffile.Reader
    is the one kind: it adds the reading of files, an Include's among them."""

    def __init__(self, file: Path, defines: Iterable[str]) -> None:
        self.config_dir = file.parent
        self.server_root = self.config_dir
        self.defines = dict.fromkeys(defines, "")
        self.main = ServerRead()
        self.vhosts: list[ServerRead] = []
        self.listens: dict[Listen, Line] = {}
        self.log_formats = dict(PREDEFINED_LOG_FORMATS)
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.stack: list[OpenSection] = []

    def context(self) -> ServerRead:
        """The <VirtualHost> being read, or the main server."""
        return next((section.vhost for section in reversed(self.stack) if section.vhost), self.main)

    def location(self) -> OpenSection | None:
        """The enclosing <Location> (or <Directory>, <Files>), possibly opened in an including file."""
        return next((section for section in reversed(self.stack) if section.scope is not None), None)

    # values that depend on where we are

    def path(self, arg: str) -> Path:
        """`arg` taken from ServerRoot, as Apache takes relative paths."""
        return join_path(self.server_root, arg)

    def existing(self, arg: str, kind: str) -> Path:
        """arg resolved against ServerRoot, which must be an existing 'file' or 'directory'."""
        path = self.path(arg)
        hint = "" if Path(arg).is_absolute() else f" (relative paths are taken from ServerRoot {self.server_root})"
        if not path.exists():
            raise ValueError(f"no such {kind} {arg!r}{hint}")
        if not (path.is_dir() if kind == "directory" else path.is_file()):
            raise ValueError(f"{arg!r} is not a {kind}{hint}")
        return path

    def host_dir(self, arg: str, line: Line, directive: str) -> Path:
        path = self.existing(arg, "directory")
        if path == Path("/"):
            self.warn(line, f"{directive} '/' exposes the whole host file system to the guest; map only what it needs")
        return path

    def warn(self, line: Line, message: str) -> None:
        self.warnings.append(f"{line}: {message}")

    def note(self, line: Line, message: str) -> None:
        self.notes.append(f"{line}: {message}")

    @abstractmethod
    def include(self, pattern: str, optional: bool) -> None:
        """Read the files `pattern` names (Include, IncludeOptional) where the reader stands."""
