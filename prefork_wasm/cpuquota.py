"""How many CPUs the server can keep busy: those it may run on (its affinity mask), fewer when
a cgroup CPU quota caps it (a container's CPU limit, systemd's CPUQuota=).

Connections gather on that many workers (held.gatherers). The affinity mask of a container
shows every CPU of its host, so without the quota a server limited to 2 CPUs on a 64-CPU host
would gather on 64 workers, which the kernel then throttles in turn.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """The CPUs of the affinity mask, capped by the tightest quota over this process's cgroups."""
    try:
        with open("/proc/self/cgroup") as f:
            quota = cgroup_quota(f.read(), root)
    except OSError:
        quota = None
    return usable(len(os.sched_getaffinity(0)), quota)


def usable(affinity: int, quota: float | None) -> int:
    """A quota of 1.5 CPUs keeps 2 workers busy part of the time: rounded up, and at least one."""
    if quota is None:
        return affinity
    return max(1, min(affinity, math.ceil(quota)))


def cgroup_quota(proc_cgroup: str, root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota, in CPUs, over the cgroups `proc_cgroup` (/proc/self/cgroup)
    names and their ancestors (a parent's quota caps its children): cgroup v2's cpu.max, or
    v1's cfs_quota_us over cfs_period_us. None when no quota is set or none can be read. A
    container without its own cgroup namespace names a path its mount does not have: the
    ancestors that exist, down to the mount's root (the container's own cgroup), still count."""
    quotas = []
    for line in proc_cgroup.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue  # not a cgroup line: the kernel writes none such, and none caps the CPUs
        hierarchy, controllers, path = fields
        if "\0" in path or ".." in path.split("/"):
            continue  # a path that would leave the cgroup mount: not the kernel's, not read
        if hierarchy == "0" and not controllers:  # v2, the unified hierarchy
            mount, read = root, _read_v2
        elif "cpu" in controllers.split(","):
            mount = root / "cpu" if (root / "cpu").is_dir() else root / controllers
            read = _read_v1
        else:
            continue
        directory = mount / path.lstrip("/")
        while True:
            quota = read(directory)
            if quota is not None:
                quotas.append(quota)
            if directory == mount:  # no '..' in `path`: walking up reaches it
                break
            directory = directory.parent
    return min(quotas) if quotas else None


def quota_v2(cpu_max: str) -> float | None:
    """cgroup v2's cpu.max ('150000 100000': 1.5 CPUs; 'max 100000': none)."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def quota_v1(cfs_quota_us: str, cfs_period_us: str) -> float | None:
    """cgroup v1's cpu.cfs_quota_us over cpu.cfs_period_us (a quota of -1: none)."""
    try:
        quota, period = int(cfs_quota_us), int(cfs_period_us)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read_v2(directory: Path) -> float | None:
    try:
        return quota_v2((directory / "cpu.max").read_text())
    except OSError:
        return None


def _read_v1(directory: Path) -> float | None:
    try:
        return quota_v1((directory / "cpu.cfs_quota_us").read_text(), (directory / "cpu.cfs_period_us").read_text())
    except OSError:
        return None
