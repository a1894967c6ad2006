# A CGI "hello" in Python. `scripts/bench --interpreter` serves it two ways: as a script run by
# CPython for WASI (a core module that starts the interpreter on every request), and inside a
# componentize-py component (component.py beside it) whose interpreter is pre-initialised.
import os
import sys


def main() -> None:
    sys.stdout.write("Content-Type: text/plain\r\n\r\n")
    sys.stdout.write(f"Hello from Python {sys.version.split()[0]} on {sys.platform}, "
                     f"{os.environ.get('REQUEST_METHOD', '?')} {os.environ.get('SCRIPT_NAME', '')}\n")


if __name__ == "__main__":
    main()
