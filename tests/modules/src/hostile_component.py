"""A test component (componentize-py, world prefork:cgi/cgi): what it does is chosen by
QUERY_STRING, or by MODE in its environment (non-CGI mode has no QUERY_STRING)."""

import os
import sys

from componentize_py_types import Err
from wit_world import exports


def respond(body: str, status: str = "200 OK") -> None:
    sys.stdout.write(f"Status: {status}\r\nContent-Type: text/plain\r\n\r\n{body}")


def read_only_check() -> str:
    with open("/data/hello.txt") as f:
        text = f.read()
    try:
        with open("/data/written.txt", "w") as f:
            f.write("should not be possible")
        outcome = "write allowed"
    except OSError as e:
        outcome = f"write refused: {type(e).__name__}"
    return f"{text.strip()}\n{outcome}\n"


class Run(exports.Run):
    def run(self) -> None:
        mode = os.environ.get("QUERY_STRING") or os.environ.get("MODE", "")
        if mode == "env":
            names = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SCRIPT_NAME", "GREETING", "UNIQUE_ID")
            respond("".join(f"{n}={os.environ.get(n, '')}\n" for n in names) + f"argv={sys.argv}\n")
        elif mode == "echo":
            respond(sys.stdin.read())
        elif mode == "read":
            respond(read_only_check())
        elif mode == "missing":
            respond("no such page\n", "404 Not Found")
        elif mode == "raw":  # non-CGI: stdout is the body
            sys.stdout.write("raw body from a component\n")
        elif mode == "loop":
            while True:
                pass
        elif mode == "alloc":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        elif mode == "flood":
            chunk = "x" * 65536
            while True:
                sys.stdout.write(chunk)
        elif mode == "err":
            print("hostile: failing on purpose", file=sys.stderr)
            sys.stderr.flush()
            raise Err(None)
        elif mode == "exit":
            sys.exit(3)
        else:
            respond(f"unknown mode {mode!r}\n", "400 Bad Request")
        sys.stdout.flush()
