"""prefork_wasm.descriptors: the master raises RLIMIT_NOFILE's soft limit to the hard one (its
workers inherit it); a worker's share of it."""

from __future__ import annotations

import resource
import subprocess
import sys


def test_the_soft_descriptor_limit_goes_up_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, soft)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    code = (
        "import resource; from prefork_wasm.descriptors import raise_limit, connection_share; "
        "print(*raise_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE), connection_share(64))"
    )
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True)
    before, now, soft_after, hard_after, share = map(int, out.stdout.split())
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert (before, now, soft_after, hard_after) == (low, wanted, wanted, hard)
    assert share == wanted - 64
