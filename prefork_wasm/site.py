"""What answers a routed request: the guest run (its CGI or plain output translated into a
response), a file, a listing, a redirect, a server page or a refusal; and the error and access
logs of each exchange.

`Site` is the worker's `connection.Site`: the decision comes from router.py, once per request.
Per request it does only what depends on the request; everything that depends on the merged
Location settings alone (the loaded module, argv, preopens, limits) is prepared once per worker
and distinct merged result, in a `Guest`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import __version__, cgi, headers, static, wasi_http_resources
from .compiler import Artifact
from .config import LocationConfig, ServerConfig
from .counters import Recorder
from .dirconfig import DirSettings
from .engine import WASMTIME_VERSION
from .filemap import Mapped, translate
from .headers import Exchange
from .http1 import set_server_tokens
from .logs import AccessLog, AccessRecord
from .messages import SERVER_SOFTWARE, Request, Response, SpooledBody, error_response, server_banner
from .paths import PathRefused, request_path
from .redirects import error_document_kind
from .router import (
    Decision,
    Fault,
    ListDirectory,
    Redirect,
    Refusal,
    Router,
    RunGuest,
    RunScript,
    SendFile,
    ServerPage,
    Trace,
    cause,
    request_host,
)
from .runtime import EXIT_GUEST_STUCK, GuestSpec, Loaded, Outcome, RunResult, Runtime
from .scoreboard import LOGGING, MODULE_CHARS, Slot
from .wasi_http import ProxyComponent

# A handler that answers from the server's own state (server-status, metrics, health).
Page = Callable[[Request], Response]

# How each way a guest run can fail is answered.
FAILURE_STATUS = {
    Outcome.EXIT: 500,
    Outcome.TRAP: 500,
    Outcome.ERROR: 500,
    Outcome.TIMEOUT: 504,
    Outcome.TOO_LARGE: 502,
}


# What ServerTokens Full adds to the product and its version.
_PLATFORM = f"wasmtime/{WASMTIME_VERSION} Python/{platform.python_version()}"

# A decoded path (%0A) or an exception's text must not break or forge error-log lines.
_LOG_SAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


@dataclass(frozen=True, slots=True)
class Guest:
    """A merged Location's guest, prepared for running in this worker."""

    location: LocationConfig
    module: Loaded | None
    spec: GuestSpec
    argv: list[str]
    script_name: str  # the prefix without its trailing '/'
    script_filename: str
    module_name: str
    module_label: str  # the module's path: its label in the metrics


class Guests:
    """The worker's Guests: one per distinct merged LocationConfig, built on its first request;
    and one per script whose <Directory>/<Files> sections change its Wasm settings (per distinct
    set of such sections: the module is already loaded, building one is cheap).

    The router keeps one LocationConfig per distinct set of matching sections for the worker's
    life (router.LocationIndex), so its identity keys the Guest (the Guest holds it: the id is
    never reused)."""

    def __init__(self, config: ServerConfig, artifacts: dict[Path, Artifact], loaded: dict[Path, Loaded]) -> None:
        self.config = config
        self.artifacts = artifacts
        self.loaded = loaded
        self._guests: dict[int, Guest] = {}
        self._scripts: dict[tuple[int, tuple[str, ...]], Guest] = {}

    def __getitem__(self, loc: LocationConfig) -> Guest:
        guest = self._guests.get(id(loc))
        if guest is None:
            guest = self._guests[id(loc)] = _prepare(self.config, loc, self.artifacts, self.loaded)
        return guest

    def for_script(self, loc: LocationConfig, settings: DirSettings) -> Guest:
        if not settings.wasm:
            return self[loc]
        key = (id(loc), settings.wasm_from)
        guest = self._scripts.get(key)
        if guest is None:
            changed = dataclasses.replace(loc, **settings.wasm)
            guest = self._scripts[key] = _prepare(self.config, changed, self.artifacts, self.loaded)
        return guest


def prepare_guests(config: ServerConfig, runtime: Runtime, artifacts: dict[Path, Artifact]) -> Guests:
    """Load every module once per worker (before it serves: a module that cannot load stops it)."""
    return Guests(config, artifacts, {source: _load(runtime, artifact) for source, artifact in artifacts.items()})


def _load(runtime: Runtime, artifact: Artifact) -> Loaded:
    try:
        return runtime.load(artifact.path, artifact.info.component, artifact.info.http_handler)
    except Exception as e:
        raise RuntimeError(f"cannot load the compiled form of {artifact.source} ({artifact.path}): {e}") from e


def _prepare(
    config: ServerConfig, loc: LocationConfig, artifacts: dict[Path, Artifact], loaded: dict[Path, Loaded]
) -> Guest:
    preopens = tuple((str(m.host), m.guest, m.writable) for m in loc.mounts)
    # Only wasm-handler (of the Location, or of its scripts on disk) runs a module, and only
    # those modules are compiled; another handler may still inherit a server-level WasmModule.
    module_path = loc.guest_module
    if module_path is not None and module_path not in artifacts:
        # Only where a <LocationMatch> merges with other sections can a combination -t did not see
        # arise (Locations.modules compiles every module it could name; check_routes warned).
        raise RuntimeError(f"no compiled module for the merged settings of {loc.source}")
    script_filename = str(module_path) if module_path else ""
    if loc.map_cgi_file_names and module_path:
        script_filename = _guest_path(module_path, loc)
    spec = GuestSpec(
        entry_point=artifacts[module_path].info.entry_point(loc) if module_path else loc.entry_point,
        timeout=loc.timeout,
        memory_limit=loc.memory_limit,
        output_limit=config.limit_response_body,
        preopens=preopens,
    )
    return Guest(
        location=loc,
        module=loaded[module_path] if module_path else None,
        spec=spec,
        argv=[module_path.name if module_path else "", *loc.args],
        script_name=loc.prefix.rstrip("/"),
        script_filename=script_filename,
        module_name=module_path.name if module_path else "",
        module_label=str(module_path) if module_path else "",
    )


def _guest_path(host_file: Path, loc: LocationConfig) -> str:
    """WasmMapCGIFileNames: name a host file as the guest sees it through WasmMapDir."""
    for mount in loc.mounts:
        if host_file.is_relative_to(mount.host):
            return str(Path(mount.guest) / host_file.relative_to(mount.host))
    return str(host_file)


class Site:
    """A worker's server side (connection.Site): routes each request once (router.py), answers
    the decision and logs the exchange."""

    def __init__(
        self,
        config: ServerConfig,
        router: Router,
        guests: Guests,
        runtime: Runtime,
        access_logs: list[AccessLog],
        slot: Slot,
        recorder: Recorder,
        pages: Mapping[str, Page],
    ) -> None:
        self.config = config
        self.router = router
        self.guests = guests
        self.runtime = runtime
        self.slot = slot
        self.recorder = recorder
        self.pages = pages
        self.server_banner = server_banner(config.server_tokens, __version__, _PLATFORM)
        set_server_tokens(self.server_banner)
        # SERVER_SOFTWARE as ServerTokens says, or with the version when it says nothing.
        self.server_software = self.server_banner if config.server_tokens else f"{SERVER_SOFTWARE}/{__version__}"
        # The headers any access log's format uses: a record decodes only these.
        self._logged_request_headers = {
            name.encode("latin-1") for log in access_logs for name in log.request_headers
        }
        self._logged_response_headers = {
            name.encode("latin-1") for log in access_logs for name in log.response_headers
        }

    def route(self, request: Request) -> Decision:
        return self.router.route(request)

    def respond(self, request: Request, decision: Decision, give_up: Callable[[Response], None]) -> Response:
        """Answer `request` as decided, with what Apache's modules do around the handler: the
        RequestHeader lines before it, an ErrorDocument for an error page of the server's own,
        the Header lines after it. `give_up` answers from another thread, for a guest that
        cannot be stopped."""
        loc = decision.location or decision.server.locations.defaults
        request.env = loc.env
        if loc.request_headers:
            request.headers = _request_fields(loc, request)
        response = self._answer(request, decision, loc, give_up)
        if response.local_error and loc.error_documents.get(response.status):
            response = self._error_document(request, decision, loc, response, give_up)
        if loc.headers:
            response.headers = _response_fields(loc, request, response)
        return response

    def _answer(
        self, request: Request, decision: Decision, loc: LocationConfig, give_up: Callable[[Response], None]
    ) -> Response:
        """The handler's answer: the request's fault boundary. Whatever fails on the way (a bug,
        a host resource gone) is a 500 and one error-log line; the worker goes on."""
        guest: Guest | None = None
        try:
            target = decision.target
            match target:  # by frequency: a case costs an isinstance
                case RunGuest():
                    assert decision.location is not None
                    guest = self.guests[decision.location]
                    return self._run(request, decision, guest, None, give_up)
                case SendFile():
                    return static.file_response(
                        request.method, request.header, target.file, target.content_type, target.etag
                    )
                case RunScript():
                    assert decision.location is not None
                    guest = self.guests.for_script(decision.location, target.script.settings)
                    return self._run(request, decision, guest, target.script, give_up)
                case ServerPage():
                    return self.pages[target.name](request)
                case Refusal():
                    return self._error_page(request, loc, target.status, target.text)
                case Redirect():
                    response = self._error_page(request, loc, target.status, "The document has moved.")
                    response.headers.append((b"Location", target.location))
                    return response
                case ListDirectory():
                    return static.listing(target.directory, target.url)
                case Trace():
                    return self._trace(request, loc)
                case Fault():
                    self._log_failure(request, decision, "-", target.cause)
                    return self._error_page(request, loc, 500, _FAILURE_TEXT[500])
        except Exception as e:
            self._log_failure(request, decision, guest.module_name if guest else "-", f"internal error: {cause(e)}")
        return self._error_page(request, loc, 500, _FAILURE_TEXT[500])

    def _error_page(self, request: Request, loc: LocationConfig, status: int, text: str) -> Response:
        """The server's own error page, with ServerSignature's line when it is on."""
        signature = ""
        if loc.server_signature != "off":
            signature = f"{self.server_banner} Server at {self._server_name(request)} Port {request.server_port}"
        return error_response(status, text, signature)

    def _trace(self, request: Request, loc: LocationConfig) -> Response:
        """TraceEnable: the request as received, as message/http (a body only with 'extended')."""
        received = request.body if isinstance(request.body, bytes) else None  # (a TRACE body is never spooled)
        if received is None or (received and self.config.trace_enable != "extended"):
            return self._error_page(request, loc, 413, "TRACE with a request body is not allowed (TraceEnable On).")
        head = [request.request_line, *(f"{n.decode('latin-1')}: {v.decode('latin-1')}" for n, v in request.headers)]
        body = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + received
        return Response(200, [(b"Content-Type", b"message/http")], body)

    def _error_document(
        self,
        request: Request,
        decision: Decision,
        loc: LocationConfig,
        response: Response,
        give_up: Callable[[Response], None],
    ) -> Response:
        """core's ErrorDocument for an error page the server made: a text instead of it, a 302 to
        a URL, or a local URL's answer (found as a GET for it would be) with the error's status.
        Should the local URL fail too, the server's own page stands, as in Apache."""
        document = loc.error_documents[response.status]
        assert document is not None
        kind = error_document_kind(document)
        if kind == "text":
            text = document.removeprefix('"')
            return Response(response.status, [(b"Content-Type", b"text/html; charset=utf-8")], text.encode(),
                            local_error=True)
        if kind == "remote":
            redirect = Response(302, [(b"Location", document.encode("utf-8"))], local_error=True)
            redirect.body = self._error_page(request, loc, 302, "The document has moved.").body
            redirect.headers.insert(0, (b"Content-Type", b"text/html; charset=utf-8"))
            return redirect
        try:
            path = request_path(document.partition("?")[0], self.config.allow_encoded_slashes)
        except PathRefused:
            return response
        sub = dataclasses.replace(
            request, method="HEAD" if request.method == "HEAD" else "GET", target=document, path=path, body=b""
        )
        answer = self._answer(sub, self.router.decide(sub, decision.server, path, fallback=False), loc, give_up)
        if answer.local_error or not 200 <= answer.status <= 299:
            return response
        answer.status, answer.reason, answer.local_error = response.status, b"", True
        return answer

    def _run(
        self,
        request: Request,
        decision: Decision,
        guest: Guest,
        script: Mapped | None,
        give_up: Callable[[Response], None],
    ) -> Response:
        """Run the guest's module; for a script on disk (`script`), with that script's argv and
        CGI variables: its guest path appended to argv, SCRIPT_NAME its URL, and mod_cgi's
        SCRIPT_FILENAME, PATH_INFO, PATH_TRANSLATED and DOCUMENT_ROOT."""
        loc = guest.location
        self.slot.module = guest.module_name.encode()[:MODULE_CHARS - 1]
        if guest.module is None:
            raise RuntimeError(f"no WasmModule runs the scripts of <Location {loc.prefix}>")
        if isinstance(guest.module, ProxyComponent):
            return self._run_proxy(request, decision, guest, guest.module, give_up)
        argv, script_name, script_filename, path_info, extra = (
            guest.argv, guest.script_name, guest.script_filename, None, loc.env
        )
        if script is not None:
            guest_path = _guest_path(script.file, loc)
            argv = [*argv, guest_path]
            script_name, path_info = script.url, script.path_info
            script_filename = guest_path if loc.map_cgi_file_names else str(script.file)
            extra = {**_script_variables(loc, script), **loc.env}
        if loc.enable_cgi:
            env = cgi.build_environ(
                request,
                server_name=self._server_name(request),
                script_name=script_name,
                script_filename=script_filename,
                content_length=_content_length(request),
                extra=extra,
                server_software=self.server_software,
                path_info=path_info,
                ssl_vars=loc.ssl_std_env_vars,
            )
        else:
            env = loc.env
        request.env = env
        started = time.perf_counter()
        result = self.runtime.run(
            guest.module, guest.spec, argv, env, stdin(request.body),
            abandon=lambda outcome, why: self._abandon(request, decision, guest, outcome, why, started, give_up),
        )
        self._count_guest(guest, result.outcome, started)
        if result.stderr:
            self._log_stderr(request, decision, guest, result.stderr)
        response = self._translate(request, decision, guest, result)
        response.module = guest.module_name
        return response

    def _run_proxy(
        self,
        request: Request,
        decision: Decision,
        guest: Guest,
        proxy: ProxyComponent,
        give_up: Callable[[Response], None],
    ) -> Response:
        """A wasi:http component (wasi_http.py): the request goes in as an incoming-request, the
        guest's outgoing-response comes back; failures are answered as for the other kinds."""
        loc = guest.location
        exchange = wasi_http_resources.Exchange(
            wasi_http_resources.incoming_request(request, request.scheme),
            body_limit=self.config.limit_response_body,
            policy=loc.outbound,
            log=lambda text: self._log(request, decision, guest.module_name, text),
        )
        started = time.perf_counter()
        result = self.runtime.run_proxy(
            proxy, guest.spec, guest.argv, loc.env, exchange,
            abandon=lambda outcome, why: self._abandon(request, decision, guest, outcome, why, started, give_up),
        )
        self._count_guest(guest, result.outcome, started)
        if result.stderr:
            self._log_stderr(request, decision, guest, result.stderr)
        if result.outcome is not Outcome.OK:
            return self._failure(request, decision, guest, result.outcome, result.detail)
        try:
            response = wasi_http_resources.response_of(exchange)
        except wasi_http_resources.ResponseError as e:
            self._log_failure(request, decision, guest.module_name, str(e))
            return error_response(e.status, _FAILURE_TEXT[e.status])
        response.module = guest.module_name
        return response

    def _translate(self, request: Request, decision: Decision, guest: Guest, result: RunResult) -> Response:
        loc = guest.location
        if result.outcome is Outcome.OK or (result.outcome is Outcome.EXIT and loc.enable_cgi):
            try:
                if loc.enable_cgi:
                    return cgi.parse_cgi_response(result.stdout)
                return cgi.plain_response(result.stdout, loc.force_type or "application/octet-stream")
            except cgi.CgiOutputError as e:
                if result.outcome is Outcome.OK:
                    self._log_failure(request, decision, guest.module_name, f"malformed CGI output: {e}")
                    return self._error_page(request, loc, 502, "The module's output is not a valid CGI response.")
                # A non-zero exit without a valid response falls through to 500.
        return self._failure(request, decision, guest, result.outcome, result.detail)

    def _failure(self, request: Request, decision: Decision, guest: Guest, outcome: Outcome, why: str) -> Response:
        status = FAILURE_STATUS[outcome]
        self._log_failure(request, decision, guest.module_name, why)
        return self._error_page(request, guest.location, status, _FAILURE_TEXT[status])

    def _count_guest(self, guest: Guest, outcome: Outcome, started: float) -> None:
        self.recorder.guest(guest.module_label, outcome.name.lower(), time.perf_counter() - started)

    def _abandon(
        self,
        request: Request,
        decision: Decision,
        guest: Guest,
        outcome: Outcome,
        why: str,
        started: float,
        give_up: Callable[[Response], None],
    ) -> None:
        """Called from the runtime's watcher thread when the guest cannot be stopped (blocked in
        a host call): answer and log now, then end the worker; the master replaces it."""
        try:
            self._count_guest(guest, outcome, started)
            response = self._failure(request, decision, guest, outcome, why)
            response.module = guest.module_name
            give_up(response)
        finally:
            os._exit(EXIT_GUEST_STUCK)

    def _server_name(self, request: Request) -> str:
        """SERVER_NAME: the name the request is addressed to (an absolute-form target's
        authority wins over Host, RFC 9112 3.2.2, as routing takes it), else ServerName."""
        return request_host(request.target, request.header(b"host")) or self.config.server_name or "localhost"

    def _log_failure(self, request: Request, decision: Decision, module: str, why: str) -> None:
        self._log(request, decision, module, f"{why} ({request.method} {request.path})")

    def _log_stderr(self, request: Request, decision: Decision, guest: Guest, stderr: bytes) -> None:
        for line in stderr.decode("utf-8", "backslashreplace").splitlines():
            if line.strip():
                self._log(request, decision, guest.module_name, f"stderr: {line}")

    def _log(self, request: Request, decision: Decision, module: str, text: str) -> None:
        """One error-log line about a request, in its server's error log; control characters
        escaped, since a decoded path or a guest's stderr could otherwise forge lines or
        terminal sequences in the log."""
        message = f"request {request.request_id}: {module}: {text}".translate(_LOG_SAFE)
        decision.server.error_log.error(
            f"[client {request.remote_addr}:{request.remote_port}] {message}", "core" if module == "-" else "wasm"
        )

    def finished(self, request: Request, decision: Decision, response: Response, sent: int) -> None:
        slot = self.slot
        slot.state = LOGGING
        now = time.time()
        slot.accesses += 1
        slot.bytes += sent
        loc = decision.location
        self.recorder.request(
            loc.prefix if loc else None, request.method, response.status, now - request.start,
            len(request.body), sent,
        )
        logs = decision.server.access_logs
        if logs:
            record = self._access_record(request, decision, response, sent, now)
            for log in logs:
                log.log(record)

    def _access_record(
        self, request: Request, decision: Decision, response: Response, sent: int, now: float
    ) -> AccessRecord:
        filename, handler = _file_and_handler(decision)
        return AccessRecord(
            remote_addr=request.remote_addr,
            remote_port=request.remote_port,
            request_line=request.request_line,
            method=request.method,
            path=request.path,
            query=request.query,
            protocol=f"HTTP/{request.http_version}",
            status=response.status,
            body_bytes=sent,
            request_headers=_logged(request.headers, self._logged_request_headers),
            response_headers=_logged(response.headers, self._logged_response_headers),
            start=request.start,
            duration=now - request.start,
            request_id=request.request_id,
            server_name=decision.server.name,
            server_port=request.server_port,
            bytes_in=request.head_bytes + len(request.body),
            bytes_out=response.head_bytes + sent,
            keepalives=request.keepalives,
            connection="+" if response.keeps_alive else "-",
            filename=filename,
            handler=handler,
            env=request.env,
            tls=request.tls,
        )


def _file_and_handler(decision: Decision) -> tuple[str, str]:
    """%f and %R: the file a request was answered from and the handler that answered it."""
    target = decision.target
    match target:
        case RunGuest():
            module = decision.location.module if decision.location else None
            return str(module or ""), "wasm-handler"
        case RunScript():
            return str(target.script.file), "wasm-handler"
        case SendFile():
            return str(target.file), ""
        case ListDirectory():
            return str(target.directory), ""
        case ServerPage():
            return "", target.name
    return "", ""


def _request_fields(loc: LocationConfig, request: Request) -> list[tuple[bytes, bytes]]:
    """The request's fields after the RequestHeader lines (the early ones first), names
    lowercased as the request's are."""
    actions = sorted(loc.request_headers, key=lambda action: not action.early)
    fields = headers.apply(actions, request.headers, Exchange(request.start, loc.env))
    return [(name.lower(), value) for name, value in fields]


def _response_fields(loc: LocationConfig, request: Request, response: Response) -> list[tuple[bytes, bytes]]:
    """The response's fields after the Header lines (the early ones first): only the `always`
    ones on an error page the server made itself, as Apache keeps onsuccess fields off it."""
    actions = sorted(loc.headers, key=lambda action: not action.early)
    if response.local_error:
        actions = [action for action in actions if action.always]
    return headers.apply(actions, response.headers, Exchange(request.start, request.env), request.headers)


def _logged(headers: list[tuple[bytes, bytes]], names: set[bytes]) -> dict[str, str]:
    """The headers among `names` (lowercased), decoded for the access log (a repeated one: the
    last)."""
    found: dict[str, str] = {}
    if names:
        for name, value in headers:
            key = name.lower()
            if key in names:
                found[key.decode("latin-1")] = value.decode("latin-1")
    return found


def _script_variables(loc: LocationConfig, script: Mapped) -> dict[str, str]:
    """mod_cgi's DOCUMENT_ROOT, and PATH_TRANSLATED (PATH_INFO mapped as a URL would be)."""
    env = {"DOCUMENT_ROOT": str(loc.document_root or "")}
    target = translate(script.path_info, loc) if script.path_info else None
    if target is not None:
        root, _, segments = target
        env["PATH_TRANSLATED"] = str(root.joinpath(*segments)) + ("/" if script.path_info.endswith("/") else "")
    return env


def stdin(body: bytes | SpooledBody) -> bytes | str:
    """A guest's stdin: the body's bytes, or the path of the memfd a large one was written to."""
    return body.path if isinstance(body, SpooledBody) else body


def _content_length(request: Request) -> int | None:
    """CONTENT_LENGTH is set when the request has a body, whatever its framing (RFC 3875 4.1.2)."""
    if request.body or request.header(b"content-length") or request.header(b"transfer-encoding"):
        return len(request.body)
    return None


_FAILURE_TEXT = {
    500: "The module failed while handling the request.",
    502: "The module's output could not be used as a response.",
    504: "The module did not finish within WasmTimeout.",
}
