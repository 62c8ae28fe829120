"""Invariants of the chart's rendered manifests that no schema states: secrets never leave
Secrets, pods are locked down, selectors select what the chart renders, the data plane's drain
fits its termination grace, and the migration hook runs before anything needs the schema."""

import base64
import json
import re

SECRET_ENV = {
    "ADMIN_TOKEN",
    "DATA_PLANE_TOKEN",
    "ENCRYPTION_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "GATEWAY_ADMIN_TOKEN",
}


class Case:
    """The findings of one rendered value set: each `check` counts, a false one is recorded
    once under the case's name."""

    def __init__(self, name, failures):
        self.name = name
        self.failures = failures
        self.checks_run = 0

    def check(self, cond, what):
        self.checks_run += 1
        entry = f"[{self.name}] {what}"
        if not cond and entry not in self.failures:
            self.failures.append(entry)
        return cond


def kn(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def hook(doc):
    """(hook phases, hook weight, delete policy) of a Helm hook resource."""
    ann = doc["metadata"].get("annotations") or {}
    phases = set(filter(None, (ann.get("helm.sh/hook") or "").split(",")))
    weight = int(ann.get("helm.sh/hook-weight", "0"))
    return phases, weight, ann.get("helm.sh/hook-delete-policy", "")


def pod_spec(doc):
    if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return doc["spec"]["template"]
    return None


def env_of(container):
    return {e["name"]: e for e in container.get("env") or []}


def field_ref(env, name):
    return env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def component(docs, name):
    return [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == name
    ]


def check_secrets(case, docs, by_kind):
    """Secret values appear in no other manifest; generated ones have the required form."""
    secret_values = set()
    for s in by_kind.get("Secret", []):
        for v in (s.get("data") or {}).values():
            secret_values.add(base64.b64decode(v).decode())
            secret_values.add(v)
        secret_values.update((s.get("stringData") or {}).values())
        data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        if "ENCRYPTION_KEY" in data:
            case.check(
                re.fullmatch(r"[0-9a-fA-F]{64}", data["ENCRYPTION_KEY"]),
                f"{kn(s)}: ENCRYPTION_KEY is not 64 hex chars",
            )
        for k in ("ADMIN_TOKEN", "DATA_PLANE_TOKEN"):
            if k in data:
                case.check(len(data[k]) >= 16, f"{kn(s)}: {k} shorter than 16 chars")
    secret_values = {v for v in secret_values if len(v) >= 8}
    for d in docs:
        if d["kind"] == "Secret":
            continue
        text = json.dumps(d)
        for v in secret_values:
            case.check(v not in text, f"{kn(d)} contains a value of a Secret")
    case.check(
        not by_kind.get("ConfigMap")
        or all(not (set((c.get("data") or {}).keys()) & SECRET_ENV) for c in by_kind["ConfigMap"]),
        "a ConfigMap carries a credential key",
    )


def check_container(case, where, c, psc):
    """Locked down, sized, pinned, and credentials only from secretKeyRefs."""
    sc = c.get("securityContext") or {}
    case.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot")
    case.check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
    case.check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation")
    case.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{where}: drop ALL")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    case.check(seccomp == "RuntimeDefault", f"{where}: seccomp RuntimeDefault")
    res = c.get("resources") or {}
    case.check({"cpu", "memory"} <= set(res.get("requests") or {}), f"{where}: cpu/memory requests")
    case.check("memory" in (res.get("limits") or {}), f"{where}: memory limit")
    case.check(not c["image"].endswith((":", ":latest")), f"{where}: unpinned image {c['image']}")
    env_names = [e["name"] for e in c.get("env") or []]
    case.check(len(env_names) == len(set(env_names)), f"{where}: duplicate env vars")
    for e in c.get("env") or []:
        if e["name"] in SECRET_ENV:
            case.check(
                "value" not in e and "secretKeyRef" in (e.get("valueFrom") or {}),
                f"{where}: {e['name']} must come from a secretKeyRef",
            )


def spread_selectors(spec):
    """matchLabels of the pod's topology spread and anti-affinity terms."""
    selectors = [
        t.get("labelSelector", {}).get("matchLabels")
        for t in spec.get("topologySpreadConstraints") or []
    ]
    anti = (spec.get("affinity") or {}).get("podAntiAffinity") or {}
    selectors += [
        t["labelSelector"].get("matchLabels")
        for t in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []
    ]
    selectors += [
        t["podAffinityTerm"]["labelSelector"].get("matchLabels")
        for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    ]
    return selectors


def check_pods(case, docs):
    checksums = set()
    for d in docs:
        tpl = pod_spec(d)
        if not tpl:
            continue
        spec, labels = tpl["spec"], tpl["metadata"].get("labels") or {}
        ann = tpl["metadata"].get("annotations") or {}
        if "checksum/secret" in ann:
            checksums.add(ann["checksum/secret"])
        psc = spec.get("securityContext") or {}
        case.check(
            spec.get("automountServiceAccountToken") is False,
            f"{kn(d)}: service account token is mounted",
        )
        for c in spec["containers"] + (spec.get("initContainers") or []):
            check_container(case, f"{kn(d)} container {c['name']}", c, psc)
        # Spread and anti-affinity selectors must select the pod's own replicas.
        for sel in spread_selectors(spec):
            case.check(
                matches(sel, labels),
                f"{kn(d)}: spread/anti-affinity selector {sel} misses its own pods",
            )
    case.check(len(checksums) <= 1, "pods disagree on checksum/secret (generated values drifted)")


def check_references(case, docs, by_kind):
    """Services, PDBs, HPAs and ServiceMonitors point at what the chart renders. Returns the
    Services by name."""
    workloads = [d for d in docs if pod_spec(d) and d["kind"] != "Job"]
    services = {}
    for svc in by_kind.get("Service", []):
        case.check(len(svc["metadata"]["name"]) <= 63, f"{kn(svc)}: name longer than 63")
        sel = svc["spec"].get("selector")
        targets = [
            w for w in workloads if matches(sel, w["spec"]["template"]["metadata"]["labels"])
        ]
        if case.check(len(targets) == 1, f"{kn(svc)}: selector matches {len(targets)} workloads"):
            ports = {
                p["name"]
                for c in targets[0]["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports") or []
            }
            for p in svc["spec"]["ports"]:
                case.check(
                    p["targetPort"] in ports,
                    f"{kn(svc)}: targetPort {p['targetPort']} not a container port",
                )
        services[svc["metadata"]["name"]] = svc
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"]["selector"]["matchLabels"]
        case.check(
            any(matches(sel, w["spec"]["template"]["metadata"]["labels"]) for w in workloads),
            f"{kn(pdb)}: selects no workload",
        )
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        target = [
            w for w in workloads if (w["kind"], w["metadata"]["name"]) == (ref["kind"], ref["name"])
        ]
        if case.check(target, f"{kn(hpa)}: scale target missing"):
            case.check("replicas" not in target[0]["spec"], f"{kn(hpa)}: target also sets replicas")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        svcs = [s for s in services.values() if matches(sel, s["metadata"]["labels"])]
        if case.check(len(svcs) == 1, f"{kn(sm)}: selects {len(svcs)} Services"):
            ports = {p["name"] for p in svcs[0]["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                case.check(ep["port"] in ports, f"{kn(sm)}: port {ep['port']} not on the Service")
    return services


def check_data_planes(case, docs, services):
    """Drain and flush fit in the termination grace; readiness tied to /readyz; state on
    emptyDirs; CONTROL_PLANE_URL is the control-plane Service's grpc port."""
    for dp in component(docs, "data-plane"):
        spec = dp["spec"]["template"]["spec"]
        c = spec["containers"][0]
        env = env_of(c)
        has_grace = case.check("SHUTDOWN_GRACE_SECS" in env, f"{kn(dp)}: SHUTDOWN_GRACE_SECS unset")
        grace = int(env["SHUTDOWN_GRACE_SECS"]["value"]) if has_grace else 30
        pre_stop = (c.get("lifecycle") or {}).get("preStop") or {}
        case.check("exec" not in pre_stop, f"{kn(dp)}: preStop exec needs a shell the image lacks")
        sleep = (pre_stop.get("sleep") or {}).get("seconds", 0)
        tgps = spec.get("terminationGracePeriodSeconds", 30)
        case.check(
            tgps > grace + sleep,
            f"{kn(dp)}: terminationGracePeriodSeconds {tgps} <= SHUTDOWN_GRACE_SECS {grace} + preStop {sleep}",
        )
        case.check(
            c["readinessProbe"]["httpGet"]["path"] == "/readyz",
            f"{kn(dp)}: readiness is not /readyz",
        )
        case.check(
            c["livenessProbe"]["httpGet"]["path"] == "/healthz",
            f"{kn(dp)}: liveness is not /healthz",
        )
        case.check(
            field_ref(env, "NODE_ID") == "metadata.name", f"{kn(dp)}: NODE_ID is not the pod name"
        )
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        state = env.get("STATE_DIR", {}).get("value", "")
        vol = [n for m, n in mounts.items() if state.rstrip("/") == m.rstrip("/")]
        case.check(
            vol and "emptyDir" in vols.get(vol[0], {}),
            f"{kn(dp)}: STATE_DIR={state!r} is not a writable emptyDir",
        )
        url = env.get("CONTROL_PLANE_URL", {}).get("value", "")
        m = re.fullmatch(r"http://([^.:/]+)(?:\.[^:/]+)?:(\d+)", url)
        cp_svc = services.get(m.group(1)) if m else None
        case.check(
            cp_svc
            and int(m.group(2))
            in [p["port"] for p in cp_svc["spec"]["ports"] if p["name"] == "grpc"],
            f"{kn(dp)}: CONTROL_PLANE_URL {url!r} is not the control-plane Service's grpc port",
        )


def check_control_planes(case, docs):
    for cp in component(docs, "control-plane"):
        c = cp["spec"]["template"]["spec"]["containers"][0]
        env = env_of(c)
        case.check(
            c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"},
            f"{kn(cp)}: readiness is not /readyz on the metrics port",
        )
        case.check(
            c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"},
            f"{kn(cp)}: liveness is not /healthz on the metrics port",
        )
        metrics_port = [p["containerPort"] for p in c["ports"] if p["name"] == "metrics"]
        case.check(
            metrics_port
            and env.get("METRICS_ADDR", {}).get("value", "").endswith(f":{metrics_port[0]}"),
            f"{kn(cp)}: METRICS_ADDR does not match the metrics port",
        )
        case.check(
            field_ref(env, "CONSUMER_NAME") == "metadata.name",
            f"{kn(cp)}: CONSUMER_NAME is not the pod name",
        )


def check_migration(case, docs, by_kind):
    """A pre-install/pre-upgrade hook whose Secret and ServiceAccount exist by then."""
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    jobs = by_kind.get("Job", [])
    case.check(len(jobs) == 1, f"expected one migration Job, found {len(jobs)}")
    hook_secrets = {s["metadata"]["name"]: hook(s) for s in by_kind.get("Secret", [])}
    for job in jobs:
        phases, weight, policy = hook(job)
        case.check(
            {"pre-install", "pre-upgrade"} <= phases,
            f"{kn(job)}: not a pre-install,pre-upgrade hook",
        )
        case.check(
            {"before-hook-creation", "hook-succeeded"} <= set(policy.split(",")),
            f"{kn(job)}: hook-delete-policy {policy!r}",
        )
        spec = job["spec"]["template"]["spec"]
        c = spec["containers"][0]
        env = env_of(c)
        case.check(
            env.get("MIGRATE_ONLY", {}).get("value") == "true"
            or "--migrate-only" in (c.get("args") or []) + (c.get("command") or []),
            f"{kn(job)}: does not run --migrate-only",
        )
        for e in env.values():
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["name"] in hook_secrets:
                s_phases, s_weight, _ = hook_secrets[ref["name"]]
                case.check(
                    "pre-install" in s_phases and s_weight < weight,
                    f"{kn(job)}: Secret {ref['name']} is not a pre-install hook created before it",
                )
        sa = spec.get("serviceAccountName", "default")
        case.check(
            ("ServiceAccount", sa) not in names
            or hook(
                next(
                    d for d in docs if (d["kind"], d["metadata"]["name"]) == ("ServiceAccount", sa)
                )
            )[0],
            f"{kn(job)}: ServiceAccount {sa} is a release resource, absent during pre-install",
        )


def check_invariants(case, docs):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    check_secrets(case, docs, by_kind)
    check_pods(case, docs)
    services = check_references(case, docs, by_kind)
    check_data_planes(case, docs, services)
    check_control_planes(case, docs)
    check_migration(case, docs, by_kind)
