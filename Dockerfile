# syntax=docker/dockerfile:1
# prefork-wasm with the example modules, ready for Kubernetes (contrib/k8s/).
#
#   docker build -t prefork-wasm:0.1.0 .
#   docker run --rm -p 8080:8080 prefork-wasm:0.1.0        # then: curl localhost:8080/hello
#
# Debian 12 (bookworm) with Python 3.11, the platform prefork-wasm is tested on.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The server, installed with pip like anywhere else; its source is not left in the image.
COPY pyproject.toml README.md /tmp/src/
COPY prefork_wasm /tmp/src/prefork_wasm
RUN pip install /tmp/src && rm -rf /tmp/src

# A fixed uid, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 prefork-wasm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin prefork-wasm

WORKDIR /srv/prefork-wasm
COPY examples/wasm examples/wasm
COPY examples/data examples/data
COPY conf/container.conf conf/container.conf

# Warm the compile cache: -t compiles every module of the config into WasmCacheDir (cache/),
# so a pod maps the compiled code at start instead of compiling (0.3 s to the first response
# instead of about 12 s on 2 cores). The artifacts stay root's and read-only to the server:
# compiled code is native code, which the serving user must not be able to change.
# Compiled code is specific to the CPU features of the machine that builds the image
# (wasmtime compiles for its host): build on the kind of CPU the nodes have.
RUN prefork-wasm -f conf/container.conf -t && chmod -R a+rX cache

USER 10001:10001
EXPOSE 8080

# SIGWINCH is prefork-wasm's (and Apache's) graceful stop: listeners closed, requests in
# flight answered, bounded by GracefulShutdownTimeout. SIGTERM would stop at once and cut
# them. Docker and Kubernetes' container runtimes (containerd, CRI-O) send this signal on
# stop, then SIGKILL after the grace period. (As with the official httpd image: do not run
# it with `docker run -t`, where resizing the terminal sends SIGWINCH too.)
STOPSIGNAL SIGWINCH

# For plain Docker; Kubernetes uses the Deployment's probes instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

ENTRYPOINT ["prefork-wasm"]
CMD ["-f", "conf/container.conf"]
