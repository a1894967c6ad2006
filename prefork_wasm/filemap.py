"""From a request's normalised path to a file on disk: DocumentRoot, Alias, DirectoryIndex,
PATH_INFO, the symlink policy and the trailing-slash redirect, decided in one place.

`translate` is pure (which root, which segments); `resolve` walks the segments with lstat, as
Apache's directory walk does, so a symlink is judged by the Options of the directory holding
it. Its input is always `paths.request_path`'s output: no '..', no empty segment, no NUL, no
'/' inside a segment, so nothing outside the roots can be named except through a symlink that
FollowSymLinks allows (Apache's default, as its users expect).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import LocationConfig
from .dirconfig import DirSettings

# Apache's stock httpd.conf denies these (<Files ".ht*"> Require all denied); built in here.
_HIDDEN_PREFIX = ".ht"
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP)

SettingsAt = Callable[[str, str | None], DirSettings]  # (directory, file name or None) -> merged


class Unmapped(Exception):
    """The path names nothing servable: 404 (nothing there) or 403 (refused). `directory` is the
    deepest existing directory reached, whose Require still decides 403 over 404 (so a denied
    tree does not reveal which names exist in it)."""

    def __init__(self, status: int, detail: str, directory: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.directory = directory


@dataclass(frozen=True, slots=True)
class Mapped:
    """What a URL names on disk.

    kind 'file': `file` is a regular file, `url` the URL path naming it (SCRIPT_NAME), and
    `path_info` what followed it in the request path. kind 'listing': `file` is a directory
    without an index. kind 'slash': a directory asked for without its trailing slash (301).
    """

    kind: str
    file: Path
    url: str
    path_info: str
    settings: DirSettings


def translate(path: str, loc: LocationConfig) -> tuple[Path, str, list[str]] | None:
    """(root, the URL path of the root, the segments below it), or None: no root serves path.

    The longest matching Alias wins; an alias ending in '/' needs that slash in the URL (Apache:
    'Alias /icons/ …' does not map '/icons'), otherwise it matches whole segments ('/icons'
    covers '/icons' and '/icons/x', not '/iconsx'). Else DocumentRoot.
    """
    best: tuple[str, Path] | None = None
    for url, target in loc.aliases:
        prefix = url.rstrip("/")
        covered = path.startswith(url) if url.endswith("/") else path == prefix or path.startswith(prefix + "/")
        if covered and (best is None or len(url) > len(best[0])):
            best = (url, target)
    if best is not None:
        base, root = best[0].rstrip("/"), best[1]
    elif loc.document_root is not None and path.startswith("/"):
        base, root = "", loc.document_root
    else:
        return None
    return root, base, [segment for segment in path[len(base) :].split("/") if segment]


def resolve(path: str, loc: LocationConfig, settings_at: SettingsAt) -> Mapped:
    """Walk `path` (normalised) to the file it names; raises Unmapped for 403/404.

    The first regular file ends the walk: what follows is PATH_INFO. A directory ends it with
    its first existing DirectoryIndex file, or a listing (Options Indexes, checked by the
    caller), or, without the URL's trailing slash, a redirect to it (mod_dir).
    """
    mapped = translate(path, loc)
    if mapped is None:
        raise Unmapped(404, "No DocumentRoot or Alias maps this URL.")
    current, url, segments = mapped
    try:
        st = os.stat(current)
    except OSError as e:
        raise Unmapped(404 if e.errno in _MISSING else 403, f"The root {current}: {e.strerror}.") from None
    for index, segment in enumerate(segments):  # noqa: B007 (after the loop, index is how far the walk got)
        if not stat.S_ISDIR(st.st_mode):
            break
        directory = str(current)
        current, url = current / segment, f"{url}/{segment}"
        found = _entry(current, segment, directory, settings_at)
        if found is None:
            raise Unmapped(404, f"{current} does not exist.", directory)
        st = found
    else:
        index = len(segments)
        if stat.S_ISDIR(st.st_mode):
            return _directory(path, current, url, settings_at)
    if not stat.S_ISREG(st.st_mode):
        raise Unmapped(403, f"{current} is neither a regular file nor a directory.", str(current.parent))
    path_info = path[len(url) :] if index < len(segments) or path.endswith("/") else ""
    return Mapped("file", current, url, path_info, settings_at(str(current.parent), current.name))


def _directory(path: str, directory: Path, url: str, settings_at: SettingsAt) -> Mapped:
    settings = settings_at(str(directory), None)
    if not path.endswith("/"):
        return Mapped("slash", directory, url + "/", "", settings)
    for name in settings.directory_index:
        st = _entry(directory / name, name, str(directory), settings_at, quiet=True)
        if st is not None and stat.S_ISREG(st.st_mode):
            return Mapped("file", directory / name, f"{url}/{name}", "", settings_at(str(directory), name))
    return Mapped("listing", directory, url + "/", "", settings)


def _entry(
    entry: Path, name: str, directory: str, settings_at: SettingsAt, quiet: bool = False
) -> os.stat_result | None:
    """The stat of one name in `directory`, following a symlink only as the directory's Options
    allow; None when it does not exist. Refusals raise Unmapped(403), or give None when `quiet`
    (a DirectoryIndex candidate that is refused is skipped, as Apache skips it)."""
    try:
        if name.startswith(_HIDDEN_PREFIX):
            raise Unmapped(403, f"{entry}: names starting with .ht are never served.", directory)
        try:
            st = os.lstat(entry)
        except OSError as e:
            if e.errno in _MISSING:
                return None
            raise Unmapped(403, f"{entry}: {e.strerror}.", directory) from None
        if not stat.S_ISLNK(st.st_mode):
            return st
        options = settings_at(directory, None).options
        try:
            target = os.stat(entry)
        except OSError:
            return None  # a dangling or looping link: nothing there
        if "FollowSymLinks" in options or ("SymLinksIfOwnerMatch" in options and target.st_uid == st.st_uid):
            return target
        raise Unmapped(403, f"{entry} is a symbolic link and Options do not allow following it here.", directory)
    except Unmapped:
        if quiet:
            return None
        raise
