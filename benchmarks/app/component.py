# hello.py as a wasi:cli/command component (scripts/build-components builds it for the bench):
# hello is imported at build time, so a request only runs main().
import sys

from wit_world import exports

import hello


class Run(exports.Run):
    def run(self) -> None:
        hello.main()
        sys.stdout.flush()
