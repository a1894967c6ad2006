"""Directive arguments into setting values: each converter takes the words as written and
returns the value, or raises ValueError saying what was expected (the reader adds the file,
line and directive). Pure: no files, no state.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from .config import Listen
from .dirconfig import OptionsChange

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from '1048576', '512K', '256M' or '1G' (powers of 1024), so limits stay readable."""
    match = re.fullmatch(r"([0-9]+)([kmg]?)", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"expected a size in bytes or with a K, M or G suffix (e.g. 256M), got {text!r}")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def on_off(arg: str) -> bool:
    if arg.lower() not in ("on", "off"):
        raise ValueError(f"expected On or Off, got {arg!r}")
    return arg.lower() == "on"


def count(minimum: int) -> Callable[[str], int]:
    """Whole numbers only: '1.5 workers' or '-1' are mistakes, not something to round."""

    def convert(arg: str) -> int:
        if not re.fullmatch(r"[0-9]+", arg) or int(arg) < minimum:
            raise ValueError(f"expected a whole number >= {minimum}, got {arg!r}")
        return int(arg)

    return convert


def seconds(*, positive: bool) -> Callable[[str], float]:
    """Plain decimals only, so 'inf', 'nan' and '1e9' are rejected rather than surprising."""
    bound = "> 0" if positive else ">= 0"

    def convert(arg: str) -> float:
        if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", arg) or (positive and float(arg) == 0):
            raise ValueError(f"expected seconds {bound}, such as 30 or 2.5, got {arg!r}")
        return float(arg)

    return convert


def choice(*options: str) -> Callable[[str], str]:
    def convert(arg: str) -> str:
        if arg.lower() not in options:
            raise ValueError(f"expected one of {', '.join(options)}; got {arg!r}")
        return arg.lower()

    return convert


HANDLERS = ("wasm-handler", "server-status", "metrics", "health")


def handler_name(arg: str) -> str | None:
    """'none' switches an inherited handler off, as in Apache."""
    name = choice(*HANDLERS, "none")(arg)
    return None if name == "none" else name


def force_type(arg: str) -> str | None:
    """'None' switches an inherited ForceType off, as in Apache."""
    if arg.lower() == "none":
        return None
    if "/" not in arg:
        raise ValueError(f"expected a MIME type such as text/plain, or None; got {arg!r}")
    return arg


def memory_limit(arg: str) -> int | None:
    """0 means no cap, matching the other 0 = unlimited limits."""
    return parse_size(arg) or None


def memory_per_child(soft: str, hard: str | None = None) -> tuple[int, int | None] | None:
    soft_bytes = parse_size(soft)
    hard_bytes = None if hard is None else parse_size(hard)
    if soft_bytes == 0:
        if hard_bytes is not None:
            raise ValueError("soft limit must be above 0 (use 'MaxMemoryPerChild 0' alone for no limit)")
        return None
    if hard_bytes is not None and hard_bytes < soft_bytes:
        raise ValueError(f"hard limit {hard} is below soft limit {soft}; expected SOFT [HARD] with HARD >= SOFT")
    return soft_bytes, hard_bytes


def parse_listen(arg: str, protocol: str = "") -> Listen:
    """A Listen line's address, and its protocol argument ('http' or 'https', as Apache's)."""
    if protocol.lower() not in ("", "http", "https"):
        raise ValueError(f"expected the protocol http or https after the address, got {protocol!r}")
    match = re.fullmatch(r"(?:\[(?P<ipv6>[^\]]+)\]:|(?P<host>[^:\[\]]+):)?(?P<port>[^:]+)", arg)
    if not match:
        raise ValueError(
            f"expected PORT, HOST:PORT or [IPV6]:PORT (e.g. 8080, 127.0.0.1:8080, [::1]:8080), got {arg!r}"
        )
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            raise ValueError(f"{match['ipv6']!r} in brackets is not an IPv6 address") from None
    port = match["port"]
    if not re.fullmatch(r"[0-9]+", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    host = match["ipv6"] or match["host"] or ""
    return Listen("" if host == "*" else host, int(port), protocol=protocol.lower())


def location_regex(pattern: str) -> re.Pattern[str]:
    """A PCRE pattern as Python's re reads it; PCRE's named groups (?<name>...) are accepted too.
    Searched (not anchored) in the normalised path, as Apache does."""
    try:
        return re.compile(re.sub(r"\(\?<(?![=!])", "(?P<", pattern))
    except re.error as e:
        raise ValueError(f"bad regular expression {pattern!r}: {e.msg} at position {e.pos}") from None


def vhost_address(arg: str) -> Listen:
    """'*:8080', '_default_:8080' (the same as *), '127.0.0.1:8080', '[::1]:8080'; without a
    port (or with ':*') any port. Names are refused: Apache would resolve them at start-up."""
    match = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]+)(?::([0-9]+|\*))?", arg)
    if not match:
        raise ValueError(f"expected ADDRESS[:PORT] such as *:8080, 127.0.0.1:8080 or [::1]:8080, got {arg!r}")
    host, port = match[1].strip("[]"), match[2]
    if host in ("*", "_default_"):
        host = ""
    else:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(
                f"{host!r} is not an IP address; use * (any address) or the address to answer on"
            ) from None
    if port and port != "*" and not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    return Listen(host, int(port) if port and port != "*" else 0)


def extensions(args: list[str]) -> list[str]:
    """mod_mime's extensions, with or without their dot, compared case-insensitively."""
    for ext in args:
        if not ext.strip(".") or "/" in ext:
            raise ValueError(f"expected file extensions such as .php or php, got {ext!r}")
    return ["." + ext.lstrip(".").lower() for ext in args]


def mime_type(arg: str) -> str:
    """AddType's: TYPE/SUBTYPE, kept in lower case as MIME types compare case-insensitively."""
    if not re.fullmatch(r"[\w.+-]+/[\w.+-]+", arg):
        raise ValueError(f"expected a MIME type such as text/html, got {arg!r}")
    return arg.lower()



_ETAG_PARTS = {"inode": "INode", "mtime": "MTime", "size": "Size"}


def file_etag(args: list[str]) -> OptionsChange:
    """FileETag's words: INode, MTime, Size, All or None; with + or - each (then they change what
    is inherited), or none (then they replace it), as Apache takes them."""
    signs = {arg[:1] in ("+", "-") for arg in args}
    if len(signs) > 1:
        raise ValueError("either every word starts with + or -, or none does")
    relative = signs == {True}
    add: set[str] = set()
    remove: set[str] = set()
    for arg in args:
        word = arg[1:] if relative else arg
        lower = word.lower()
        if lower in ("all", "none"):
            if relative or len(args) > 1:
                raise ValueError(f"{word} stands alone, without + or - (write 'FileETag {word}')")
            parts = set(_ETAG_PARTS.values()) if lower == "all" else set()
            return OptionsChange(absolute=frozenset(parts))
        if lower not in _ETAG_PARTS:
            raise ValueError(f"unknown FileETag part {word!r}; expected INode, MTime, Size, All or None")
        (remove if arg[0] == "-" else add).add(_ETAG_PARTS[lower])
    if relative:
        return OptionsChange(add=frozenset(add), remove=frozenset(remove))
    return OptionsChange(absolute=frozenset(add))
