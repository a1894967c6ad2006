"""prefork_wasm.cpuquota: the CPUs connections gather on, with a cgroup CPU quota (a container's
CPU limit) read from cgroup trees laid out in a temporary directory as the kernel lays them out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefork_wasm.cpuquota import cgroup_quota, quota_v1, quota_v2, usable, usable_cpus


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("200000 100000", 2.0), ("50000 100000", 0.5),
     ("", None), ("max", None), ("abc 100000", None), ("100000 0", None), ("-1 100000", None)],
)
def test_cgroup_v2_cpu_max_reads_as_cpus_or_none(text: str, cpus: float | None) -> None:
    assert quota_v2(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [("-1\n", "100000\n", None), ("250000\n", "100000\n", 2.5), ("x", "100000", None), ("100000", "0", None)],
)
def test_cgroup_v1_quota_over_period_reads_as_cpus_or_none(quota: str, period: str, cpus: float | None) -> None:
    assert quota_v1(quota, period) == cpus


@pytest.mark.parametrize(
    ("affinity", "quota", "expected"),
    [(8, None, 8), (8, 2.0, 2), (8, 1.5, 2), (8, 0.2, 1), (2, 16.0, 2), (1, None, 1)],
)
def test_a_quota_caps_the_affinity_rounded_up_and_at_least_one(affinity: int, quota: float | None,
                                                                expected: int) -> None:
    assert usable(affinity, quota) == expected


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v2_the_tightest_quota_over_the_cgroup_and_its_ancestors_counts(tmp_path: Path) -> None:
    _write(tmp_path / "kubepods" / "cpu.max", "300000 100000\n")
    _write(tmp_path / "kubepods" / "pod1" / "cpu.max", "max 100000\n")
    _write(tmp_path / "kubepods" / "pod1" / "app" / "cpu.max", "400000 100000\n")
    assert cgroup_quota("0::/kubepods/pod1/app\n", tmp_path) == 3.0
    _write(tmp_path / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    assert cgroup_quota("0::/kubepods/pod1/app\n", tmp_path) == 1.5


def test_v2_without_a_quota_anywhere_is_none(tmp_path: Path) -> None:
    _write(tmp_path / "system.slice" / "cpu.max", "max 100000\n")
    assert cgroup_quota("0::/system.slice/prefork-wasm.service\n", tmp_path) is None
    assert cgroup_quota("0::/\n", tmp_path) is None  # the root cgroup has no cpu.max


def test_lines_that_are_not_cgroup_lines_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "app" / "cpu.max", "100000 100000\n")
    assert cgroup_quota("garbage\n\n0::/app\n", tmp_path) == 1.0
    assert cgroup_quota("nothing here", tmp_path) is None


@pytest.mark.parametrize(
    "proc", ["0::/../\n", "0::/app/../..\n", "4:cpu:/../..\n", "0::/a\0b\n", "0::" + "/a" * 5000 + "\n"]
)
def test_a_path_that_would_leave_the_mount_or_cannot_be_a_file_reads_as_no_quota(tmp_path: Path, proc: str) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    _write(tmp_path / "cpu.max", "100000 100000\n")  # outside the mount: must not be read
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "100000\n")
    _write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(proc, root) is None


def test_v1_reads_the_cpu_controllers_mount_and_skips_the_others(tmp_path: Path) -> None:
    _write(tmp_path / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "200000\n")
    _write(tmp_path / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    _write(tmp_path / "memory" / "docker" / "abc" / "cpu.cfs_quota_us", "10000\n")  # not the cpu controller's
    _write(tmp_path / "memory" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    proc = "9:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    assert cgroup_quota(proc, tmp_path) == 2.0


def test_v1_through_the_cpu_link_as_distributions_mount_it(tmp_path: Path) -> None:
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "100000\n")
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    assert cgroup_quota("4:cpuacct,cpu:/\n", tmp_path) == 1.0


def test_a_container_that_sees_its_own_cgroup_as_its_mounts_root_still_finds_its_quota(tmp_path: Path) -> None:
    # No cgroup namespace: /proc/self/cgroup names the host's path, the mount holds only the
    # container's own cgroup at its root.
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "50000\n")
    _write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota("4:cpu,cpuacct:/docker/0123abcd\n", tmp_path) == 0.5


def test_this_process_gets_between_one_and_its_affinity(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert 1 <= usable_cpus() <= affinity
    assert usable_cpus(tmp_path) == affinity  # no cgroup files under that root: no quota
