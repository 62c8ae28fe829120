"""deploy/compose.yaml as compose would read it: its ${VAR}s against .env.example, the Compose
Specification schema (as written and interpolated), and every file or volume it references."""

import json
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path

import check_jsonschema
import jsonschema

from compose_format import interpolate, parse_env_file, used_variables
from docker_build import dockerfile_stages


@dataclass
class Build:
    """A service built from a Dockerfile of the repository."""

    dockerfile: Path
    context: Path
    target: str


def compose_schema():
    """The Compose Specification schema check-jsonschema vendors, and its validator class."""
    path = (
        Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    )
    schema = json.loads(path.read_text())
    return schema, jsonschema.validators.validator_for(schema)


def check_variables(report, compose, env_example):
    """Variables compose needs: those without a default are declared in .env.example, and the
    required secrets (:? / ?) are empty there. Returns {name: operators used with}."""
    mark = report.mark()
    used = used_variables(compose.read_text())
    for name, ops in sorted(used.items()):
        has_default = ops & {":-", "-"}
        required = ops & {":?", "?"}
        if not has_default and name not in env_example:
            report.fail(f"${{{name}}} has no default and is not declared in .env.example")
        if required and env_example.get(name):
            report.fail(
                f".env.example gives required secret {name} a value; leave it empty (placeholder)"
            )
    if report.clean_since(mark):
        report.ok(
            f"{len(used)} variables; required ones declared in .env.example with empty placeholders"
        )
    gitignore = compose.parent / ".gitignore"
    if not (
        gitignore.is_file()
        and any(line.strip() in (".env", "/.env") for line in gitignore.read_text().splitlines())
    ):
        report.fail("deploy/.gitignore must ignore .env (the real secrets)")
    return used


def interpolated(report, raw, env_example, used):
    """The compose document interpolated with .env.example, each empty required secret given
    a stand-in value (as a filled-in deploy/.env would)."""
    env = dict(env_example)
    for name, ops in used.items():
        if ops & {":?", "?"} and not env.get(name):
            env[name] = f"check-deploy-{name.lower()}-placeholder"
    return interpolate(raw, env, "", report)


def check_schema(report, raw, doc):
    schema, validator = compose_schema()
    for label, candidate in (("as written", raw), ("interpolated", doc)):
        errs = sorted(validator(schema).iter_errors(candidate), key=lambda e: list(e.absolute_path))
        for e in errs:
            where = "/".join(map(str, e.absolute_path)) or "<root>"
            report.fail(f"schema ({label}) at {where}: {e.message}")
        if not errs:
            report.ok(
                f"Compose Specification schema, {label} (compose-spec.json from "
                f"check-jsonschema {dist_version('check-jsonschema')})"
            )


def check_build(report, name, build, compose_dir, dockerfiles):
    """The service's Build, or None (reported) when its context or Dockerfile is missing.
    Parses each Dockerfile once into dockerfiles {path: stages}."""
    if isinstance(build, str):
        build = {"context": build}
    ctx = (compose_dir / build.get("context", ".")).resolve()
    if not ctx.is_dir():
        report.fail(f"{name}: build.context {build.get('context')} -> {ctx} is not a directory")
        return None
    df = (ctx / build.get("dockerfile", "Dockerfile")).resolve()
    if not df.is_file():
        report.fail(f"{name}: build.dockerfile {build.get('dockerfile')} -> {df} missing")
        return None
    stages = dockerfiles.setdefault(df, dockerfile_stages(df))
    target = build.get("target")
    if target and target not in stages:
        report.fail(
            f"{name}: build.target {target} is not a stage of {report.rel(df)} "
            f"(stages: {', '.join(stages)})"
        )
    return Build(df, ctx, target or list(stages)[-1])


def check_references(report, name, svc, doc, compose_dir):
    """env_files, bind mount sources and named volumes of one service exist."""
    env_files = svc.get("env_file") or []
    for ef in [env_files] if isinstance(env_files, (str, dict)) else env_files:
        path, required = (
            (ef, True) if isinstance(ef, str) else (ef.get("path"), ef.get("required", True))
        )
        if required and not (compose_dir / path).is_file():
            report.fail(f"{name}: env_file {path} missing")
    for vol in svc.get("volumes") or []:
        if isinstance(vol, str):
            source = vol.split(":", 1)[0] if ":" in vol else None
            kind = "bind" if source and source[0] in "./~" else "volume"
        else:
            source, kind = vol.get("source"), vol.get("type")
        if kind == "bind" and source and not source.startswith(("/", "~")):
            if not (compose_dir / source).exists():
                report.fail(f"{name}: bind mount source {source} missing")
        elif kind == "volume" and source and source not in (doc.get("volumes") or {}):
            report.fail(f"{name}: named volume {source} is not declared under top-level volumes")


def check_paths(report, doc, compose_dir):
    """Every referenced path exists. Returns ({service: Build} of the services built here,
    {Dockerfile path: stages})."""
    mark = report.mark()
    builds, dockerfiles = {}, {}
    for name, svc in doc["services"].items():
        if svc.get("build") is not None:
            build = check_build(report, name, svc["build"], compose_dir, dockerfiles)
            if build is None:
                continue
            builds[name] = build
        check_references(report, name, svc, doc, compose_dir)
    for section in ("configs", "secrets"):
        for key, spec in (doc.get(section) or {}).items():
            if (
                isinstance(spec, dict)
                and spec.get("file")
                and not (compose_dir / spec["file"]).exists()
            ):
                report.fail(f"{section}.{key}: file {spec['file']} missing")
    if report.clean_since(mark):
        report.ok(
            "build contexts, Dockerfiles, targets, env_files, bind mounts and named volumes exist"
        )
    return builds, dockerfiles


def load_env_example(report, path):
    if not path.is_file():
        report.fail(f"{report.rel(path)} missing")
        return {}
    return parse_env_file(path, report)
