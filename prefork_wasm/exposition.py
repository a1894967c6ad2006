"""The Prometheus text exposition format (version 0.0.4), written by hand.

The server must not depend on a metrics library for a page this simple; the tests check the
output with the official parser (prometheus_client).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

Labels = Sequence[tuple[str, str]]

_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})


def number(value: float) -> str:
    """A sample value or `le` bound: integers without a fraction, infinities as Prometheus
    spells them."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{value.translate(_LABEL_ESCAPES)}"' for name, value in labels) + "}"


class Exposition:
    """Families in the order they are begun; each family's samples follow its HELP and TYPE."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        """Begin a metric family; `kind` is counter, gauge or histogram. `name` is the samples'
        (a counter's ends in `_total`; a histogram's samples add `_bucket`, `_sum`, `_count`)."""
        self._lines.append(f"# HELP {name} {help.translate(_HELP_ESCAPES)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Labels, value: float) -> None:
        self._lines.append(f"{name}{_labels(labels)} {number(value)}")

    def histogram(
        self, name: str, labels: Labels, bounds: Sequence[float], counts: Iterable[int], total: float
    ) -> None:
        """One labelled histogram from per-bucket (not cumulative) counts, the last for +Inf."""
        running = 0
        for bound, count in zip([*bounds, math.inf], counts, strict=True):
            running += count
            self.sample(f"{name}_bucket", [*labels, ("le", number(float(bound)))], running)
        self.sample(f"{name}_sum", labels, total)
        self.sample(f"{name}_count", labels, running)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
