"""The deployment files, checked offline (no Docker daemon, no cluster): the Kubernetes
manifests against the API schemas kubernetes-validate bundles, the Dockerfile through
BuildKit's own parser, and that the files agree with each other and with the container's
config (port, health path, non-root uid, graceful-stop timing)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import dockerfile
import kubernetes_validate
import pytest
import yaml

from harness import REPO

K8S = REPO / "contrib" / "k8s"
CONTAINER_CONF = REPO / "conf" / "container.conf"
# The oldest Kubernetes release still in wide use and the newest the package knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests() if d["kind"] == kind]
    return doc


def container() -> dict[str, Any]:
    (c,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def directive(name: str) -> str:
    """A server-level directive's argument in conf/container.conf (read as text: the config may
    name handlers this branch's parser does not know yet)."""
    match = re.search(rf"^{name}\s+(\S+)\s*$", CONTAINER_CONF.read_text(), re.MULTILINE | re.IGNORECASE)
    assert match, f"conf/container.conf has no {name}"
    return match.group(1)


def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(REPO / "Dockerfile")))


def only(cmd: str) -> dockerfile.Command:
    found = [c for c in instructions() if c.cmd == cmd]
    assert len(found) == 1, f"Dockerfile: expected one {cmd}, found {len(found)}"
    return found[0]


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_are_valid_kubernetes_objects(version: str) -> None:
    docs = manifests()
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for doc in docs:
        # strict: an unknown (misspelt) field is an error, not silently dropped by the API server
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_check_catches_a_misspelt_field() -> None:
    """The check above can fail: a typo in a probe is refused."""
    doc = by_kind("Deployment")
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_service_and_hpa_point_at_the_deployment() -> None:
    deployment, service, hpa = by_kind("Deployment"), by_kind("Service"), by_kind("HorizontalPodAutoscaler")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container()["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # a CPU utilisation target is a share of the request: without one the HPA cannot act
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in container()["resources"]["requests"]


def test_probes_ask_the_health_location_on_the_listen_port() -> None:
    health = re.search(r"^<Location (\S+)>\s*\n\s*SetHandler health\s*$", CONTAINER_CONF.read_text(), re.MULTILINE)
    assert health, "conf/container.conf has no <Location> with SetHandler health"
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    listen_port = int(directive("Listen").rsplit(":", 1)[1])
    # readiness: 503 while stopping; liveness (`?live`): 200 whenever a worker answers
    for probe, query in (("readinessProbe", ""), ("livenessProbe", "?live")):
        get = container()[probe]["httpGet"]
        assert get["path"] == health.group(1) + query
        assert ports.get(get["port"], get["port"]) == listen_port


def test_termination_grace_covers_prestop_and_graceful_stop() -> None:
    """The kubelet runs preStop, then sends the stop signal (graceful stop, bounded by
    GracefulShutdownTimeout), and kills at terminationGracePeriodSeconds counted from the start."""
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    graceful = float(directive("GracefulShutdownTimeout"))
    assert pre_stop >= 3, "too short for the endpoint removal to reach every proxy"
    assert graceful > 0, "an unbounded graceful stop always ends in SIGKILL"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + graceful + 2
    liveness = container()["livenessProbe"]
    # a draining pod answers 503: liveness must not restart it before it is done
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= pre_stop + graceful


def test_pod_runs_as_the_images_non_root_user() -> None:
    uid, _, gid = only("USER").value[0].partition(":")
    pod_security = by_kind("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert str(pod_security["runAsUser"]) == uid
    assert str(pod_security["runAsGroup"]) == gid
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    # the one thing the server writes at run time is its pid file: it must be on a volume
    mounts = [m["mountPath"] for m in container()["volumeMounts"]]
    assert any(directive("PidFile").startswith(m.rstrip("/") + "/") for m in mounts)


# --- Dockerfile -----------------------------------------------------------------------------


def test_base_image_is_debian_12_with_python_311() -> None:
    (image,) = only("FROM").value[:1]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm|debian:(12|bookworm)(\.\d+)?-slim", image), image


def test_image_runs_as_a_numeric_non_root_user() -> None:
    cmds = instructions()
    users = [c for c in cmds if c.cmd == "USER"]
    assert users, "no USER: the server would run as root"
    uid = users[-1].value[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    entry = max(i for i, c in enumerate(cmds) if c.cmd in ("ENTRYPOINT", "CMD"))
    assert cmds.index(users[-1]) < entry


def test_compile_cache_is_warmed_with_the_served_config_before_user_switch() -> None:
    cmds = instructions()
    served = [*only("ENTRYPOINT").value, *only("CMD").value]
    config = served[served.index("-f") + 1]
    warm = [
        i
        for i, c in enumerate(cmds)
        if c.cmd == "RUN" and re.search(rf"prefork-wasm -f {re.escape(config)} -t\b", c.value[0])
    ]
    assert warm, f"no RUN prefork-wasm -f {config} -t (the step that compiles the modules into WasmCacheDir)"
    copied = max(i for i, c in enumerate(cmds) if c.cmd == "COPY" and c.value[-1] == config)
    user = max(i for i, c in enumerate(cmds) if c.cmd == "USER")
    assert copied < warm[0] < user  # the artifacts are root's, read-only to the server


def test_stop_signal_is_the_servers_graceful_stop() -> None:
    """SIGWINCH drains (Apache's graceful-stop); SIGTERM, the default, would cut requests."""
    assert only("STOPSIGNAL").value == ("SIGWINCH",)


def test_exposed_port_is_the_listen_port() -> None:
    assert only("EXPOSE").value == (directive("Listen").rsplit(":", 1)[1],)
    assert directive("Listen").startswith("0.0.0.0:")  # reachable from outside the container


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p, pattern[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatchcase("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1))
        if hit:
            result = not negate
    return result


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    sources = [src for c in instructions() if c.cmd == "COPY" for src in c.value[:-1]]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        files = [p for p in (REPO / src).rglob("*") if p.is_file()] if (REPO / src).is_dir() else [REPO / src]
        sent = [f for f in files if not ignored(str(f.relative_to(REPO)), patterns)]
        assert sent, f"COPY {src}: .dockerignore leaves it out of the build context"
    assert ignored(".venv/bin/python", patterns) and ignored("cache/x.cwasm", patterns)
    assert not ignored("prefork_wasm/cli.py", patterns)
    assert ignored("prefork_wasm/__pycache__/cli.cpython-311.pyc", patterns)


def test_dockerfile_serves_files_that_exist() -> None:
    """What the container config names (modules, mapped folders) is copied into the image."""
    copied = [Path(c.value[-1]) for c in instructions() if c.cmd == "COPY"]
    named = re.findall(r"^\s*(?:WasmModule|WasmMapDir \S+)\s+(\S+)", CONTAINER_CONF.read_text(), re.MULTILINE)
    assert named
    for rel in named:
        assert (REPO / rel).exists(), rel
        assert any(Path(rel) == c or c in Path(rel).parents for c in copied), f"{rel} is not copied into the image"


# --- docs/operations.md ---------------------------------------------------------------------


def deploying_block(language: str) -> str:
    section = (REPO / "docs" / "operations.md").read_text().split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"docs/operations.md's Deploying section: expected one {language} block"
    return blocks[0]


def test_operations_page_shows_the_dockerfile_as_it_is() -> None:
    def essentials(commands: list[dockerfile.Command]) -> list[tuple[Any, ...]]:
        return [(c.cmd, c.flags, c.value) for c in commands]

    assert essentials(list(dockerfile.parse_string(deploying_block("dockerfile")))) == essentials(instructions())


def test_operations_page_shows_the_deployments_container_as_it_is() -> None:
    shown = yaml.safe_load(deploying_block("yaml"))
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    assert shown == {"terminationGracePeriodSeconds": pod["terminationGracePeriodSeconds"],
                     "containers": pod["containers"]}
