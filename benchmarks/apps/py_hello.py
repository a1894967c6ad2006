"""WSGI app for gunicorn: a plain-Python hello (no Wasm), the floor of gunicorn's own cost."""

from __future__ import annotations

from collections.abc import Callable, Iterable

BODY = b"Hello from Python!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict, start_response: Callable[[str, list[tuple[str, str]]], object]) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]
