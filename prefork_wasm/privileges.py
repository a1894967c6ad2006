"""Running as root: workers drop to `User`/`Group` after loading their modules, before serving.

The master keeps root (it binds the listeners, prepares the cache, opens the logs and must
signal workers); everything that touches a client runs as the unprivileged user.
"""

from __future__ import annotations

import grp
import os
import pwd

from . import prctl


def user_id(name: str) -> int:
    """A User argument: a name or '#uid' (Apache's form); KeyError if there is no such user."""
    return int(name[1:]) if name.startswith("#") else pwd.getpwnam(name).pw_uid


def group_id(name: str) -> int:
    return int(name[1:]) if name.startswith("#") else grp.getgrnam(name).gr_gid


def root_warning(user: str | None) -> str | None:
    """What to tell an operator who runs as root without `User` (containers often do)."""
    if os.geteuid() != 0 or user:
        return None
    return (
        "running as root without User: workers serve requests with root privileges; "
        "add 'User nobody' and 'Group nogroup' (or a dedicated account) to drop them"
    )


def credentials(user: str, group: str | None) -> tuple[int, int, list[int]]:
    """The uid, gid and supplementary groups `User` and `Group` stand for (initgroups' list for
    a user by name, the gid alone for '#uid')."""
    uid = user_id(user)
    gid = group_id(group) if group else pwd.getpwuid(uid).pw_gid
    if user.startswith("#"):
        return uid, gid, [gid]
    return uid, gid, os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)


def become(uid: int, gid: int, groups: list[int]) -> None:
    """setgid, setgroups, setuid: in that order, while the process still may."""
    os.setgid(gid)
    os.setgroups(groups)
    os.setuid(uid)


def drop(user: str, group: str | None) -> None:
    """setgid, setgroups, setuid — in that order, while we still may; no-op unless root."""
    if os.geteuid() != 0:
        return
    uid, gid, groups = credentials(user, group)
    become(uid, gid, groups)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise PermissionError(f"still root after setuid({uid})")
    # A credential change makes the process non-dumpable, which makes /proc/self/fd/N (how
    # wasmtime opens the stdio memfds) root-owned and unreadable; undo that.
    prctl.make_dumpable()
