"""From a parsed request to a response: route, run the guest, translate its output.

This is the worker's `connection.Handler`. Per request it does only what depends on the
request; everything that depends on the merged Location settings alone (the loaded module,
argv, preopens, limits) is prepared once per worker and distinct merged result in a `Route`.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from . import __version__, cgi, static
from .compiler import Artifact
from .config import LocationConfig, Locations, ServerConfig, VirtualHost, canonical_name, require_allows
from .counters import Recorder
from .dirconfig import DirSettings, settings_for
from .filemap import Mapped, Unmapped, resolve, translate
from .logs import AccessLog, AccessRecord, ErrorLog
from .messages import SERVER_SOFTWARE, Request, Response, error_response
from .routing import request_host, select_host
from .runtime import EXIT_GUEST_STUCK, GuestSpec, Loaded, Outcome, RunResult, Runtime
from .scoreboard import LOGGING, MODULE_CHARS, Slot

WASM_HANDLER = "wasm-handler"

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


# A decoded path (%0A) or an exception's text must not break or forge error-log lines.
_LOG_SAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


@dataclass(frozen=True, slots=True)
class Route:
    """A merged Location prepared for serving in this worker."""

    location: LocationConfig
    module: Loaded | None
    spec: GuestSpec
    argv: list[str]
    script_name: str  # the prefix without its trailing '/'
    script_filename: str
    module_name: str
    module_label: str  # the module's path: its label in the metrics


class Routes:
    """The worker's Routes: one per distinct merged LocationConfig, built on its first request;
    and one per script whose <Directory>/<Files> sections change its Wasm settings (per distinct
    set of such sections: the module is already loaded, building one is cheap).

    `Locations` keeps one LocationConfig per distinct set of matching sections for the worker's
    life, so its identity keys the Route (the Route holds it: the id is never reused)."""

    def __init__(self, config: ServerConfig, artifacts: dict[Path, Artifact], loaded: dict[Path, Loaded]) -> None:
        self.config = config
        self.artifacts = artifacts
        self.loaded = loaded
        self._routes: dict[int, Route] = {}
        self._scripts: dict[tuple[int, tuple[str, ...]], Route] = {}

    def __getitem__(self, loc: LocationConfig) -> Route:
        route = self._routes.get(id(loc))
        if route is None:
            route = self._routes[id(loc)] = _route(self.config, loc, self.artifacts, self.loaded)
        return route

    def for_script(self, loc: LocationConfig, settings: DirSettings) -> Route:
        if not settings.wasm:
            return self[loc]
        key = (id(loc), settings.wasm_from)
        route = self._scripts.get(key)
        if route is None:
            changed = dataclasses.replace(loc, **settings.wasm)
            route = self._scripts[key] = _route(self.config, changed, self.artifacts, self.loaded)
        return route


def prepare_routes(config: ServerConfig, runtime: Runtime, artifacts: dict[Path, Artifact]) -> Routes:
    """Load every module once per worker (before it serves: a module that cannot load stops it)."""
    return Routes(config, artifacts, {source: _load(runtime, artifact) for source, artifact in artifacts.items()})


def _load(runtime: Runtime, artifact: Artifact) -> Loaded:
    try:
        return runtime.load(artifact.path, artifact.info.component)
    except Exception as e:
        raise RuntimeError(f"cannot load the compiled form of {artifact.source} ({artifact.path}): {e}") from e


def _route(
    config: ServerConfig, loc: LocationConfig, artifacts: dict[Path, Artifact], loaded: dict[Path, Loaded]
) -> Route:
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
    return Route(
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


_NOT_FOUND = "The requested URL was not found on this server."
_FORBIDDEN = "You don't have permission to access this resource."


class RequestIds:
    """Short ids unique across workers and restarts: a random per-worker prefix and a counter."""

    def __init__(self) -> None:
        self.prefix = os.urandom(5).hex()
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"


class Site:
    """The worker's request handler (implements `connection.Handler`)."""

    def __init__(
        self,
        config: ServerConfig,
        routes: Routes,
        runtime: Runtime,
        error_log: ErrorLog,
        access_logs: list[AccessLog],
        slot: Slot,
        draining: Callable[[], bool],
        recorder: Recorder,
        pages: Mapping[str, Page],
    ) -> None:
        self.config = config
        self.routes = routes
        self.runtime = runtime
        self.error_log = error_log
        self.access_logs = access_logs
        self.slot = slot
        self.draining = draining
        self.recorder = recorder
        self.pages = pages
        self.new_request_id = RequestIds()
        # body_limit, respond and finished all need the request's host and Location: chosen once
        # per request. Keyed by the request's id, not the request, so that an idle worker keeps no
        # request (nor its body).
        self._matched: tuple[str, VirtualHost | None, LocationConfig | None] = ("", None, None)
        # A virtual host's access logs are its own, or the main server's if it has none (Apache's).
        main_logs = [log for log in access_logs if log.host is None]
        self._host_logs = {
            id(host): [log for log in access_logs if log.host == index] or main_logs
            for index, host in enumerate(config.virtual_hosts)
        }
        self._host_logs[id(None)] = main_logs
        self._main_name = canonical_name(config.server_name or "")  # %v, as a host's
        self._host_error_logs = {
            id(host): error_log.hosts.get(index, error_log) for index, host in enumerate(config.virtual_hosts)
        }
        self._answer: Callable[[Response], None] | None = None  # the connection's, for the request in flight
        self.server_software = f"{SERVER_SOFTWARE}/{__version__}"
        # The headers any access log's format uses: a record decodes only these.
        self._logged_request_headers = {
            name.encode("latin-1") for log in access_logs for name in log.request_headers
        }
        self._logged_response_headers = {
            name.encode("latin-1") for log in access_logs for name in log.response_headers
        }

    def body_limit(self, request: Request) -> int:
        loc = self._location(request)
        return loc.limit_request_body if loc else 0

    def _host(self, request: Request) -> VirtualHost | None:
        if self._matched[0] != request.request_id:
            host = select_host(
                self.config.virtual_hosts, request.server_addr, request.server_port,
                request_host(request.target, request.header(b"host")),
            ) if self.config.virtual_hosts else None
            routes = host.routes if host else self.config.routes
            self._matched = (request.request_id, host, routes.match(request.path) if request.path else None)
        return self._matched[1]

    def _location(self, request: Request) -> LocationConfig | None:
        self._host(request)
        return self._matched[2]

    def _table(self, request: Request) -> Locations:
        """The Locations (and <Directory> sections) of the server answering `request`."""
        host = self._host(request)
        return host.routes if host else self.config.routes

    def in_flight(self, answer: Callable[[Response], None]) -> None:
        self._answer = answer

    def respond(self, request: Request) -> Response:
        """Route and answer `request`: the request's fault boundary. Whatever fails on the way
        (a bug, a host resource gone) is a 500 and one error-log line; the worker goes on."""
        route: Route | None = None
        try:
            loc = self._location(request)
            if loc is None:
                return error_response(404, _NOT_FOUND)
            if loc.handler is None:
                return self._from_disk(request, loc)
            if not loc.allows(request.remote_addr):
                return error_response(403, _FORBIDDEN)
            page = self.pages.get(loc.handler)
            if page is not None:
                return page(request)
            if loc.handler == WASM_HANDLER and loc.module is None:
                self._log_failure(request, "-", f"SetHandler wasm-handler without a WasmModule at {loc.source}")
                return error_response(500, _FAILURE_TEXT[500])
            route = self.routes[loc]
            self.slot.module = route.module_name.encode()[:MODULE_CHARS - 1]
            return self._run(request, route)
        except Exception as e:
            self._log_failure(request, route.module_name if route else "-", f"internal error: {_cause(e)}")
            return error_response(500, _FAILURE_TEXT[500])

    def _from_disk(self, request: Request, loc: LocationConfig) -> Response:
        """A Location without a handler serves what its URL names on disk (filemap.py): a file
        through its handler (AddHandler, SetHandler in <Files>) or statically, a directory's
        index or listing. Access is decided on the merged <Directory>/<Files> settings."""
        sections = self._table(request).disk

        def settings_at(directory: str, name: str | None) -> DirSettings:
            return settings_for(loc, sections, directory, name)

        addr = request.remote_addr
        try:
            mapped = resolve(request.path, loc, settings_at)
        except Unmapped as e:
            denied = e.directory is not None and not require_allows(settings_at(e.directory, None).require, addr)
            return error_response(403, _FORBIDDEN) if denied or e.status == 403 else error_response(404, _NOT_FOUND)
        settings = mapped.settings
        if not require_allows(settings.require, addr):
            return error_response(403, _FORBIDDEN)
        if mapped.kind == "slash":  # mod_dir: the directory's URL ends in '/'
            query = f"?{request.query}" if request.query else ""
            response = error_response(301, "The document has moved.")
            response.headers.append((b"location", (quote(mapped.url, safe="/!$&'()*+,;=:@~") + query).encode()))
            return response
        if mapped.kind == "listing":
            if "Indexes" not in settings.options:
                return error_response(403, _FORBIDDEN)
            return static.listing(mapped.file, mapped.url)
        handler = settings.handler_for(mapped.file.name)
        if handler == WASM_HANDLER:
            route = self.routes.for_script(loc, settings)
            self.slot.module = route.module_name.encode()[:MODULE_CHARS - 1]
            return self._run(request, route, mapped)
        page = self.pages.get(handler) if handler is not None else None
        if page is not None:
            return page(request)
        if handler is not None:  # one prefork-wasm lacks (AddHandler cgi-script): never the source
            return error_response(403, _FORBIDDEN)
        if mapped.path_info:  # Apache's default handler takes no PATH_INFO (AcceptPathInfo Default)
            return error_response(404, _NOT_FOUND)
        mime = static.content_type(mapped.file.name, settings.add_types, static.type_table(self.config.types_config))
        return static.file_response(request.method, request.header, mapped.file, mime)

    def _run(self, request: Request, route: Route, script: Mapped | None = None) -> Response:
        """Run the route's module; for a script on disk (`script`), with that script's argv and
        CGI variables: its guest path appended to argv, SCRIPT_NAME its URL, and mod_cgi's
        SCRIPT_FILENAME, PATH_INFO, PATH_TRANSLATED and DOCUMENT_ROOT."""
        loc = route.location
        if route.module is None:
            raise RuntimeError(f"no WasmModule runs the scripts of <Location {loc.prefix}>")
        argv, script_name, script_filename, path_info, extra = (
            route.argv, route.script_name, route.script_filename, None, loc.env
        )
        if script is not None:
            guest = _guest_path(script.file, loc)
            argv = [*argv, guest]
            script_name, path_info = script.url, script.path_info
            script_filename = guest if loc.map_cgi_file_names else str(script.file)
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
            )
        else:
            env = loc.env
        started = time.perf_counter()
        result = self.runtime.run(
            route.module, route.spec, argv, env, request.body,
            abandon=lambda outcome, cause: self._abandon(request, route, outcome, cause, started),
        )
        self._count_guest(route, result.outcome, started)
        if result.stderr:
            self._log_stderr(request, route, result.stderr)
        response = self._translate(request, route, result)
        response.module = route.module_name
        return response

    def _translate(self, request: Request, route: Route, result: RunResult) -> Response:
        loc = route.location
        if result.outcome is Outcome.OK or (result.outcome is Outcome.EXIT and loc.enable_cgi):
            try:
                if loc.enable_cgi:
                    return cgi.parse_cgi_response(result.stdout)
                return cgi.plain_response(result.stdout, loc.force_type or "application/octet-stream")
            except cgi.CgiOutputError as e:
                if result.outcome is Outcome.OK:
                    self._log_failure(request, route.module_name, f"malformed CGI output: {e}")
                    return error_response(502, "The module's output is not a valid CGI response.")
                # A non-zero exit without a valid response falls through to 500.
        return self._failure(request, route, result.outcome, result.detail)

    def _failure(self, request: Request, route: Route, outcome: Outcome, cause: str) -> Response:
        status = FAILURE_STATUS[outcome]
        self._log_failure(request, route.module_name, cause)
        return error_response(status, _FAILURE_TEXT[status])

    def _count_guest(self, route: Route, outcome: Outcome, started: float) -> None:
        self.recorder.guest(route.module_label, outcome.name.lower(), time.perf_counter() - started)

    def _abandon(self, request: Request, route: Route, outcome: Outcome, cause: str, started: float) -> None:
        """Called from the runtime's watcher thread when the guest cannot be stopped (blocked in
        a host call): answer and log now, then end the worker; the master replaces it."""
        try:
            self._count_guest(route, outcome, started)
            response = self._failure(request, route, outcome, cause)
            response.module = route.module_name
            if self._answer is not None:
                self._answer(response)
        finally:
            os._exit(EXIT_GUEST_STUCK)

    def _server_name(self, request: Request) -> str:
        host = request.header(b"host")
        if host:
            name = host.decode("latin-1")
            return name.rsplit(":", 1)[0] if not name.endswith("]") else name
        return self.config.server_name or "localhost"

    def _log_failure(self, request: Request, module: str, cause: str) -> None:
        self._log(request, module, f"{cause} ({request.method} {request.path})")

    def _log_stderr(self, request: Request, route: Route, stderr: bytes) -> None:
        for line in stderr.decode("utf-8", "backslashreplace").splitlines():
            if line.strip():
                self._log(request, route.module_name, f"stderr: {line}")

    def _log(self, request: Request, module: str, text: str) -> None:
        """One error-log line about a request; control characters escaped, since a decoded path
        or a guest's stderr could otherwise forge lines or terminal sequences in the log."""
        message = f"request {request.request_id}: {module}: {text}".translate(_LOG_SAFE)
        log = self._host_error_logs.get(id(self._host(request)), self.error_log)
        log.error(f"[client {request.remote_addr}:{request.remote_port}] {message}")

    def finished(self, request: Request, response: Response, sent: int) -> None:
        self._answer = None
        slot = self.slot
        slot.state = LOGGING
        now = time.time()
        slot.accesses += 1
        slot.bytes += sent
        loc = self._location(request)
        self.recorder.request(
            loc.prefix if loc else None, request.method, response.status, now - request.start,
            len(request.body), sent,
        )
        host = self._host(request)
        logs = self._host_logs[id(host)]
        if logs:
            record = self._access_record(request, response, sent, now, host)
            for log in logs:
                log.log(record)

    def _access_record(
        self, request: Request, response: Response, sent: int, now: float, host: VirtualHost | None = None
    ) -> AccessRecord:
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
            server_name=host.server_name if host else self._main_name,
            server_port=request.server_port,
        )


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


def _cause(error: Exception) -> str:
    """An unexpected exception in one line: its type, message and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _script_variables(loc: LocationConfig, script: Mapped) -> dict[str, str]:
    """mod_cgi's DOCUMENT_ROOT, and PATH_TRANSLATED (PATH_INFO mapped as a URL would be)."""
    env = {"DOCUMENT_ROOT": str(loc.document_root or "")}
    target = translate(script.path_info, loc) if script.path_info else None
    if target is not None:
        root, _, segments = target
        env["PATH_TRANSLATED"] = str(root.joinpath(*segments)) + ("/" if script.path_info.endswith("/") else "")
    return env


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
