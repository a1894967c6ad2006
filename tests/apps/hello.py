# A CGI program for CPython built for WASI: the "real program" check of the test suite.
import os
import sys

body = sys.stdin.buffer.read()
sys.stdout.write("Content-Type: text/plain\r\nX-Interpreter: CPython\r\n\r\n")
sys.stdout.write(f"Hello from Python {sys.version_info.major}.{sys.version_info.minor} on {sys.platform}\n")
sys.stdout.write(f"PATH_INFO={os.environ.get('PATH_INFO', '')}\n")
sys.stdout.write(f"QUERY_STRING={os.environ.get('QUERY_STRING', '')}\n")
sys.stdout.write(f"body={body.decode('utf-8', 'replace')}\n")
sys.stdout.flush()
