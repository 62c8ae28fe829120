"""How the fleet's services find each other: data planes reach the control plane's gRPC port
with its token, nodes keep distinct names and state volumes, shutdown has time to flush, and
depends_on only waits for health a service can report."""

import re
from dataclasses import dataclass
from pathlib import Path

from compose_format import duration_secs, mounted_sources, parse_addr_port, parse_url


@dataclass
class Fleet:
    """The compose services, and which of ours run which plane."""

    services: dict
    env: dict  # {service built here: effective environment}
    control_planes: list
    data_planes: list


def fleet(services, builds, service_env):
    by_target = {}
    for name, build in builds.items():
        by_target.setdefault(build.target, []).append(name)
    return Fleet(
        services,
        service_env,
        by_target.get("control-plane", []),
        by_target.get("data-plane", []),
    )


def check_data_plane(report, fleet, dp, volumes):
    env = fleet.env.get(dp, {})
    cps = fleet.control_planes
    host, port = parse_url(env.get("CONTROL_PLANE_URL", ""))
    if host not in cps:
        report.fail(f"{dp}: CONTROL_PLANE_URL host {host} is not a control-plane service ({cps})")
    elif port != parse_addr_port(fleet.env.get(host, {}).get("GRPC_ADDR")):
        report.fail(
            f"{dp}: CONTROL_PLANE_URL port {port} != {host} GRPC_ADDR "
            f"{fleet.env.get(host, {}).get('GRPC_ADDR')}"
        )
    for cp in cps:
        if env.get("DATA_PLANE_TOKEN") != fleet.env.get(cp, {}).get("DATA_PLANE_TOKEN"):
            report.fail(f"{dp}: DATA_PLANE_TOKEN differs from {cp}'s")
    svc = fleet.services[dp]
    grace = int(env.get("SHUTDOWN_GRACE_SECS", "30"))
    stop = duration_secs(svc.get("stop_grace_period", "10s"))
    if stop is None or stop < grace + 10:
        report.fail(
            f"{dp}: stop_grace_period {svc.get('stop_grace_period', '10s (default)')} "
            f"< SHUTDOWN_GRACE_SECS {grace} + 10 s to flush"
        )
    mounts = mounted_sources(svc)
    # The spool and the last good snapshot live in STATE_DIR unless a path of their own is set.
    state = env.get("STATE_DIR")
    if not state or not state.startswith("/"):
        report.fail(f"{dp}: STATE_DIR should be an absolute path on a volume (is {state!r})")
    elif state.rstrip("/") not in mounts:
        report.fail(f"{dp}: STATE_DIR {state} is not a mounted volume (mounts: {sorted(mounts)})")
    else:
        volumes.setdefault("STATE_DIR", {})[dp] = mounts[state.rstrip("/")]
    for key in ("SPOOL_PATH", "SNAPSHOT_PATH"):
        path = env.get(key)
        if path is None:
            continue
        parent = str(Path(path).parent)
        if not path.startswith("/") or parent not in mounts:
            report.fail(
                f"{dp}: {key} {path!r} is not on a mounted volume (mounts: {sorted(mounts)})"
            )


def check_distinct(report, fleet, volumes):
    """Data planes never share a NODE_ID or a spool volume; control planes a CONSUMER_NAME."""
    values = {
        "NODE_ID": {dp: fleet.env.get(dp, {}).get("NODE_ID") for dp in fleet.data_planes},
        "STATE_DIR volume": {dp: volumes.get("STATE_DIR", {}).get(dp) for dp in fleet.data_planes},
    }
    for label, by_dp in values.items():
        seen = {}
        for dp, val in by_dp.items():
            if val is not None and val in seen:
                report.fail(f"{dp} and {seen[val]} share {label} {val}")
            seen.setdefault(val, dp)
    consumer = [fleet.env.get(c, {}).get("CONSUMER_NAME") for c in fleet.control_planes]
    if len(set(consumer)) != len(consumer):
        report.fail(f"control-plane replicas share a CONSUMER_NAME: {consumer}")


def check_depends_on(report, services):
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        for dep, spec in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            if dep not in services:
                report.fail(f"{name}: depends_on unknown service {dep}")
            elif (spec or {}).get("condition") == "service_healthy" and not services[dep].get(
                "healthcheck"
            ):
                report.fail(
                    f"{name}: depends_on {dep} service_healthy, but {dep} has no healthcheck"
                )


def check_redis(report, services):
    for r in [n for n, s in services.items() if str(s.get("image", "")).startswith("redis")]:
        cmd = services[r].get("command")
        cmd = " ".join(cmd) if isinstance(cmd, list) else str(cmd or "")
        if not re.search(r"--appendonly\s+yes", cmd):
            report.fail(f"{r}: Redis holds unsettled usage: run it with --appendonly yes")


def check_wiring(report, fleet):
    mark = report.mark()
    if not fleet.control_planes:
        report.fail("no control-plane service")
    if len(fleet.data_planes) < 2:
        report.fail(f"expected at least two data-plane services, found {fleet.data_planes}")
    volumes = {}
    for dp in fleet.data_planes:
        check_data_plane(report, fleet, dp, volumes)
    check_distinct(report, fleet, volumes)
    check_depends_on(report, fleet.services)
    check_redis(report, fleet.services)
    if report.clean_since(mark):
        report.ok(
            "planes wired: CONTROL_PLANE_URL, DATA_PLANE_TOKEN, NODE_ID, state volumes, "
            "stop grace, depends_on"
        )
