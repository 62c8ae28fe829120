"""Offline checks of deploy/ (compose.yaml, the Dockerfile's targets, nginx.conf,
otel-collector.yaml). Run by scripts/check-deploy, which provides the tools; see its header for
the list of invariants. Exit status 1 on any failure.

Usage: check_deploy.py REPO_ROOT        (NGINX_BIN: an nginx for `nginx -t`, or empty)
"""

import sys
from pathlib import Path

from compose_format import load_yaml
from deploy_compose import (
    check_paths,
    check_schema,
    check_variables,
    interpolated,
    load_env_example,
)
from deploy_images import check_images, load_flag_defaults
from deploy_nginx import check_nginx
from deploy_otel import check_otel
from deploy_wiring import check_wiring, fleet
from report import Report

FLAG_DEFAULTS = Path(__file__).with_name("flag_defaults.json")


def main(root):
    deploy = root / "deploy"
    compose = deploy / "compose.yaml"
    report = Report(root)

    report.section("compose.yaml")
    raw = load_yaml(compose, report)
    env_example = load_env_example(report, deploy / ".env.example")
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        report.fail("compose.yaml has no services mapping")
        return 1
    used = check_variables(report, compose, env_example)
    doc = interpolated(report, raw, env_example, used)
    check_schema(report, raw, doc)
    services = doc["services"]
    builds, dockerfiles = check_paths(report, doc, compose.parent)
    service_env = check_images(
        report, root, services, builds, dockerfiles, load_flag_defaults(FLAG_DEFAULTS)
    )
    planes = fleet(services, builds, service_env)
    check_wiring(report, planes)
    check_nginx(report, planes, deploy / "nginx.conf")
    check_otel(report, planes, deploy / "otel-collector.yaml")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
