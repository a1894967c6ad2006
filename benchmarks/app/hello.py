# A CGI "hello" in Python, run by CPython for WASI under prefork-wasm (/py).
import os
import sys

sys.stdout.write("Content-Type: text/plain\r\n\r\n")
sys.stdout.write(f"Hello from Python {sys.version.split()[0]} on {sys.platform}, "
                 f"{os.environ.get('REQUEST_METHOD', '?')} {os.environ.get('SCRIPT_NAME', '')}\n")
