"""Our images: each service built here runs a binary its target copies from the builder, the
builder builds and copies out every such binary, and the build context keeps the workspace.

Whether the environment compose gives these images names real flags is checked from clap
itself by tests/tests/env_parity/; here the environment is only resolved (the binary's
defaults, then the image's ENV, then compose's) for the wiring checks."""

import json
import re

from compose_format import env_dict
from docker_build import dockerignore_excludes, workspace


def load_flag_defaults(path):
    """{binary: {ENV_NAME: default}}: the defaults of the flags the wiring checks read when
    compose leaves them unset. The env_parity test proves each equals clap's."""
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("//")}


def check_entrypoints(report, services, builds, dockerfiles, bins, defaults):
    """Each image runs one of the binaries it copies from /out/bin/, built by a workspace
    member. Returns {service: effective environment} of the services built here."""
    service_env = {}
    for name, build in builds.items():
        stage = dockerfiles[build.dockerfile][build.target]
        if not stage["bins"]:
            report.fail(f"{name}: target {build.target} copies no binary from /out/bin/")
            continue
        entrypoint = stage.get("entrypoint")
        if entrypoint not in stage["bins"]:
            report.fail(
                f"{name}: target {build.target} ENTRYPOINT {entrypoint} is not one of its "
                f"binaries {stage['bins']}"
            )
            continue
        for b in stage["bins"]:
            if b not in bins:
                report.fail(f"{name}: binary {b} is not built by any workspace member")
        service_env[name] = {
            **defaults.get(entrypoint, {}),
            **stage["env"],
            **env_dict(services[name]),
        }
    return service_env


def check_builder(report, root, builds, dockerfiles, members, bins):
    """Every binary a runtime stage copies is built (-p) with the profile it is copied from."""
    for df, stages in dockerfiles.items():
        copied = {b for st in stages.values() for b in st["bins"]}
        builder_text = "".join(st["text"] for st in stages.values())
        m = re.search(r"--profile\s+(\S+)", builder_text)
        profile = m.group(1) if m else ("release" if "--release" in builder_text else "debug")
        for b in sorted(copied):
            pkg = members.get(bins.get(b, ""), b)
            built = re.search(rf"-p\s+{re.escape(pkg)}\b", builder_text)
            if not built or f"target/{profile}/{b}" not in builder_text:
                report.fail(
                    f"{report.rel(df)}: {b} is copied from /out/bin but not built (-p {pkg}) "
                    "and copied out"
                )
        check_context_filter(report, root, df, builds, members)


def check_context_filter(report, root, df, builds, members):
    """The build context filter keeps the manifests, the lock file and every member."""
    ignore = df.parent / (df.name + ".dockerignore")
    if not ignore.is_file():
        context = next((b.context for b in builds.values() if b.dockerfile == df), root)
        ignore = context / ".dockerignore"
    if not ignore.is_file():
        report.note(
            f"no {df.name}.dockerignore or .dockerignore: target/ and .git go into the build context"
        )
        return
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    needed = ["Cargo.toml", "Cargo.lock"]
    needed += [f"{m}/Cargo.toml" for m in members] + [f"{m}/src" for m in members]
    dropped = [p for p in needed if dockerignore_excludes(patterns, p)]
    if dropped:
        report.fail(f"{report.rel(ignore)} excludes what the build needs: {', '.join(dropped)}")
    else:
        report.ok(
            f"{report.rel(ignore)} keeps Cargo.toml, Cargo.lock and all {len(members)} "
            "workspace members"
        )


def check_images(report, root, services, builds, dockerfiles, defaults):
    """Returns {service: effective environment} of the services built from this repository."""
    members, bins = workspace(root, report)
    if not builds:
        report.fail("no service is built from a Dockerfile in the repository")
    mark = report.mark()
    service_env = check_entrypoints(report, services, builds, dockerfiles, bins, defaults)
    if report.clean_since(mark):
        report.ok(
            f"{', '.join(sorted(builds))} run a binary their target copies from the builder "
            "(their environment: tests/tests/env_parity/)"
        )
    check_builder(report, root, builds, dockerfiles, members, bins)
    return service_env
