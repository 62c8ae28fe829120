"""deploy/otel-collector.yaml: its pipelines name only defined components, it receives the
planes' OTLP export, and its Prometheus receiver scrapes exactly the planes' metrics ports."""

from compose_format import load_yaml, mounts_file, parse_addr_port, parse_url

KINDS = ("receivers", "processors", "exporters")


def check_pipelines(report, otel):
    pipelines = (otel.get("service") or {}).get("pipelines") or {}
    if not pipelines:
        report.fail("service.pipelines is empty")
    used = {kind: set() for kind in KINDS}
    for pname, p in pipelines.items():
        if pname.split("/")[0] not in ("traces", "metrics", "logs", "profiles"):
            report.fail(f"pipeline {pname}: unknown signal")
        for kind in KINDS:
            ids = (p or {}).get(kind) or []
            if kind != "processors" and not ids:
                report.fail(f"pipeline {pname}: no {kind}")
            for cid in ids:
                used[kind].add(cid)
                if cid not in (otel.get(kind) or {}):
                    report.fail(f"pipeline {pname}: {kind[:-1]} {cid} is not defined under {kind}")
        procs = (p or {}).get("processors") or []
        if "memory_limiter" in procs and procs[0] != "memory_limiter":
            report.fail(f"pipeline {pname}: memory_limiter must be the first processor")
    for ext in (otel.get("service") or {}).get("extensions") or []:
        if ext not in (otel.get("extensions") or {}):
            report.fail(f"service.extensions: {ext} is not defined under extensions")
    for kind in used:
        for cid in sorted(set(otel.get(kind) or {}) - used[kind]):
            report.note(f"{kind[:-1]} {cid} is defined but in no pipeline")


def check_export(report, fleet, otel, collector):
    """Every plane exports OTLP to the collector's gRPC receiver, which listens beyond localhost."""
    grpc = (((otel.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("grpc")
    grpc_port = (
        parse_addr_port((grpc or {}).get("endpoint", "localhost:4317"))
        if grpc is not None
        else None
    )
    if grpc is None:
        report.fail("receivers.otlp.protocols.grpc is not enabled")
    elif not str((grpc or {}).get("endpoint", "")).startswith("0.0.0.0:"):
        report.fail(
            "receivers.otlp grpc endpoint must bind 0.0.0.0 (the default is localhost only)"
        )
    for name in sorted(fleet.env):
        endpoint = fleet.env[name].get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint is None:
            report.fail(
                f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT not set (traces would not be exported)"
            )
            continue
        host, port = parse_url(endpoint)
        if host not in collector or port != grpc_port:
            report.fail(
                f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint} is not the collector's OTLP gRPC "
                f"({'/'.join(collector)}:{grpc_port})"
            )


def check_scrape(report, fleet, otel):
    prom = (otel.get("receivers") or {}).get("prometheus")
    if not prom:
        return
    targets = {
        t
        for sc in (prom.get("config") or {}).get("scrape_configs") or []
        for stc in sc.get("static_configs") or []
        for t in stc.get("targets") or []
    }
    env = fleet.env
    want = {
        f"{cp}:{parse_addr_port(env.get(cp, {}).get('METRICS_ADDR'))}"
        for cp in fleet.control_planes
    }
    want |= {
        f"{dp}:{parse_addr_port(env.get(dp, {}).get('LISTEN_ADDR'))}" for dp in fleet.data_planes
    }
    if targets != want:
        report.fail(
            f"prometheus scrape targets {sorted(targets)} != planes' metrics ports {sorted(want)}"
        )


def check_otel(report, fleet, path):
    report.section("otel-collector.yaml")
    mark = report.mark()
    otel = load_yaml(path, report) if path.is_file() else None
    if not path.is_file():
        report.fail("deploy/otel-collector.yaml missing")
    collector = [n for n, s in fleet.services.items() if mounts_file(s, "otel-collector.yaml")]
    if not collector:
        report.fail("no service mounts ./otel-collector.yaml")
    if isinstance(otel, dict):
        check_pipelines(report, otel)
        check_export(report, fleet, otel, collector)
        check_scrape(report, fleet, otel)
    if report.clean_since(mark):
        report.ok(
            "pipelines use defined components; planes export OTLP to it; scrape targets match the planes"
        )
