"""Validates the chart's rendered manifests against Kubernetes schemas (strict: unknown fields
fail) and checks the chart's invariants (chart_invariants.py). Run by scripts/check-chart,
which renders the value sets and provides kubernetes-validate. Exit status 1 on any failure.

Usage: check_chart.py "KUBE_VERSION ..." CASE=RENDERED.yaml ...
"""

import functools
import sys

import yaml
from kubernetes_validate import utils as kv

from chart_invariants import Case, check_invariants, kn

# Schemas are read from disk on every validate() call; read each file once.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)

# CRD kinds the schema set cannot know; checked structurally instead.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


class UniqueKeyLoader(yaml.SafeLoader):
    """Rejects duplicate mapping keys, which the API server refuses and PyYAML would hide."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def validate_schemas(case, docs, versions):
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            spec = doc.get("spec") or {}
            case.check(
                spec.get("selector", {}).get("matchLabels") and spec.get("endpoints"),
                f"{kn(doc)}: needs spec.selector.matchLabels and spec.endpoints",
            )
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                case.check(
                    False, f"{kn(doc)} invalid for Kubernetes {version}: {path}: {e.message}"
                )
            except kv.SchemaNotFoundError as e:
                case.check(False, f"{kn(doc)}: {e.message}")


def kinds_summary(docs):
    kinds = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(kinds.items()))


def check_rendering(case, path, versions):
    """Schemas, then (only if they pass: the invariants assume valid manifests) invariants."""
    try:
        with open(path) as f:
            docs = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d]
    except yaml.YAMLError as e:
        case.check(False, f"rendered YAML does not parse: {e}")
        print(f"FAIL [{case.name}] rendered YAML does not parse")
        return
    before = len(case.failures)
    validate_schemas(case, docs, versions)
    status = "ok  " if len(case.failures) == before else "FAIL"
    print(
        f"{status} [{case.name}] schemas ({' '.join(versions)}, strict) of {len(docs)} manifests: "
        + kinds_summary(docs)
    )
    if len(case.failures) > before:
        print(f"skip [{case.name}] invariants (they assume schema-valid manifests)")
        return
    start = case.checks_run
    try:
        check_invariants(case, docs)
    except Exception as e:  # a malformed manifest the schema let through
        case.check(False, f"invariant check crashed: {type(e).__name__}: {e}")
    status = "ok  " if len(case.failures) == before else "FAIL"
    print(f"{status} [{case.name}] invariants: {case.checks_run - start} checks")


def main(argv):
    versions = argv[1].split()
    failures = []
    for arg in argv[2:]:
        name, path = arg.split("=", 1)
        check_rendering(Case(name, failures), path, versions)
    for f in failures:
        print(f"  FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
