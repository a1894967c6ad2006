"""A small JSON API as a CGI program, built into a WASI 0.2 component by componentize-py.

componentize-py runs this module's imports at build time and snapshots the interpreter, so a
request only runs `Run.run`: read the CGI environment and stdin, write a CGI response to stdout.

    GET  /app[/]?x=1     the method, PATH_INFO, the query arguments and GREETING (a WasmEnv)
    POST /app/echo       parses the JSON request body and sends it back
    GET  /app/files/NAME a file from /data (a read-only WasmMapDir); PUT tries to write one
    anything else        404, set by the guest with a `Status:` header
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import parse_qs

from wit_world import exports

DATA = "/data"


def respond(status: str, body: bytes, content_type: str = "application/json", **headers: str) -> None:
    head = [f"Status: {status}", f"Content-Type: {content_type}"]
    head += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    sys.stdout.buffer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    sys.stdout.buffer.flush()


def send_json(status: str, value: Any, **headers: str) -> None:
    respond(status, json.dumps(value, indent=1).encode() + b"\n", **headers)


def info(env: dict[str, str]) -> None:
    send_json("200 OK", {
        "method": env.get("REQUEST_METHOD"),
        "path_info": env.get("PATH_INFO", ""),
        "query": parse_qs(env.get("QUERY_STRING", "")),
        "greeting": env.get("GREETING"),
        "python": sys.version.split()[0],
    })


def echo(env: dict[str, str]) -> None:
    body = sys.stdin.buffer.read(int(env.get("CONTENT_LENGTH") or 0))
    try:
        value = json.loads(body)
    except ValueError as e:
        send_json("400 Bad Request", {"error": f"the body is not JSON: {e}"})
        return
    send_json("200 OK", {"received": value, "bytes": len(body), "content_type": env.get("CONTENT_TYPE")})


def files(env: dict[str, str]) -> None:
    path = DATA + env["PATH_INFO"][len("/files"):]
    if env.get("REQUEST_METHOD") == "PUT":
        try:
            with open(path, "wb") as f:
                f.write(sys.stdin.buffer.read(int(env.get("CONTENT_LENGTH") or 0)))
        except OSError as e:
            send_json("403 Forbidden", {"error": f"cannot write {path}: {e.strerror}"})
            return
        send_json("201 Created", {"written": path})
        return
    try:
        with open(path, "rb") as f:
            respond("200 OK", f.read(), "text/plain")
    except OSError as e:
        send_json("404 Not Found", {"error": f"cannot read {path}: {e.strerror}"})


class Run(exports.Run):
    def run(self) -> None:
        env = dict(os.environ)
        method, path = env.get("REQUEST_METHOD", "GET"), env.get("PATH_INFO", "")
        if path in ("", "/"):
            allowed, handler = "GET, HEAD", info
        elif path == "/echo":
            allowed, handler = "POST", echo
        elif path.startswith("/files/") and path != "/files/":
            allowed, handler = "GET, HEAD, PUT", files
        else:
            send_json("404 Not Found", {"error": "no such route", "path_info": path})
            return
        if method not in allowed.split(", "):
            send_json("405 Method Not Allowed", {"error": f"{method} is not allowed here"}, Allow=allowed)
            return
        handler(env)
