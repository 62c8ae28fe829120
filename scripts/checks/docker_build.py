"""What an image build sees: the Dockerfile's stages, the build context filter, and the Cargo
workspace the builder stage compiles."""

import os
import re
import tomllib


def dockerfile_stages(path):
    """{stage name: {"image": base, "bins": [binaries copied from /out/bin/], "env": {name:
    value} set by ENV, "entrypoint": binary name, "text": the stage's instructions}}"""
    stages, current = {}, None
    # Join continuation lines so each instruction is one line.
    joined = re.sub(r"\\\n", " ", path.read_text())
    for line in joined.splitlines():
        s = line.strip()
        m = re.match(r"(?i)FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", s)
        if m:
            current = m.group(2) or f"#{len(stages)}"
            stages[current] = {"image": m.group(1), "bins": [], "env": {}, "text": ""}
            continue
        if current is None:
            continue
        stage = stages[current]
        stage["text"] += s + "\n"
        if re.match(r"(?i)COPY\s", s) and "--from=" in s:
            stage["bins"] += re.findall(r"/out/bin/([A-Za-z0-9_.-]+)", s)
        m = re.match(r"(?i)ENV\s+(.*)", s)
        if m:
            stage["env"].update(env_instruction(m.group(1)))
        m = re.match(r'(?i)ENTRYPOINT\s+\[\s*"([^"]+)"', s) or re.match(
            r"(?i)ENTRYPOINT\s+(\S+)", s
        )
        if m:
            stage["entrypoint"] = os.path.basename(m.group(1))
    return stages


def env_instruction(args):
    """{name: value} of an ENV instruction: `K=V K2="V 2"`, or the legacy `K V`."""
    pairs = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)', args)
    if pairs:
        return {k: v[1:-1] if v.startswith('"') else v for k, v in pairs}
    key, _, value = args.strip().partition(" ")
    return {key: value.strip()}


def dockerignore_excludes(patterns, path):
    """Whether Docker's ignore matching (last match wins, parents count) excludes path."""

    def to_re(pat):
        out, i = "", 0
        while i < len(pat):
            c = pat[i]
            if pat.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
                continue
            if pat.startswith("**", i):
                out += ".*"
                i += 2
                continue
            out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
            i += 1
        return re.compile(out + r"\Z")

    compiled = []
    for p in patterns:
        neg = p.startswith("!")
        p = os.path.normpath(p[1:] if neg else p).lstrip("/")
        compiled.append((neg, to_re(p)))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for neg, rx in compiled:
        if any(rx.match(p) for p in prefixes):
            excluded = not neg
    return excluded


def workspace(root, report):
    """(members: {dir: package name}, bins: {binary name: member dir}) of the Cargo workspace."""
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    members, bins = {}, {}
    for member in cargo.get("workspace", {}).get("members", []):
        manifest = root / member / "Cargo.toml"
        if not manifest.is_file():
            report.fail(f"workspace member {member}: {report.rel(manifest)} missing")
            continue
        pkg = tomllib.loads(manifest.read_text())
        name = pkg.get("package", {}).get("name", member)
        members[member] = name
        for b in pkg.get("bin", []):
            bins[b.get("name", name)] = member
        if (root / member / "src" / "main.rs").is_file():
            bins.setdefault(name, member)
    return members, bins
