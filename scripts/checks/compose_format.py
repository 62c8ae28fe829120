"""How Docker Compose reads its inputs: .env files, ${VAR} interpolation, durations, and the
address and URL forms the services' environment uses. Pure functions; findings go to a Report."""

import re

import yaml

VAR_RE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def load_yaml(path, report):
    """The document in path, or None (reported) when it cannot be read or parsed."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        report.fail(f"{report.rel(path)}: {e}")
        return None


def parse_env_file(path, report):
    """KEY=VALUE lines (comments and blank lines skipped), as compose reads a .env file."""
    values = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            report.fail(f"{report.rel(path)}:{n}: not KEY=VALUE: {line!r}")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def used_variables(text):
    """{name: {operators it is used with}} for every ${VAR} / $VAR in a compose file's text
    (operator None for a plain reference)."""
    used = {}
    for m in VAR_RE.finditer(text):
        name = m.group("braced") or m.group("bare")
        if name:
            used.setdefault(name, set()).add(m.group("op"))
    return used


def interpolate(value, env, where, report):
    """Compose-style ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, ${VAR:+r}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}", report) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]", report) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group("dollar"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        val = env.get(name)
        if op in (":-", "-"):
            return arg if (val is None or (op == ":-" and val == "")) else val
        if op == ":+":
            return arg if val else ""
        if op == "+":
            return arg if val is not None else ""
        if op in (":?", "?") and (val is None or (op == ":?" and val == "")):
            report.fail(f"compose.yaml {where}: required variable {name} unset ({arg})")
            return ""
        if val is None:
            report.fail(f"compose.yaml {where}: variable {name} is not set and has no default")
            return ""
        return val

    return VAR_RE.sub(sub, value)


def parse_addr_port(addr):
    m = re.search(r":(\d+)$", str(addr))
    return int(m.group(1)) if m else None


def parse_url(url):
    """(host, port or None) of a URL or host[:port], or (None, None)."""
    m = re.fullmatch(r"(?:[a-z][a-z0-9+.-]*://)?(?:[^@/]*@)?([^:/]+)(?::(\d+))?(?:/.*)?", str(url))
    if not m:
        return None, None
    return m.group(1), int(m.group(2)) if m.group(2) else None


def duration_secs(value):
    """Compose durations: 45s, 1m30s, 1h, 500ms, or a bare number of seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    total, rest = 0.0, str(value).strip()
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", rest):
        total += float(num) * units[unit]
    if not re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|us|h|m|s))+", rest):
        return None
    return total


def env_dict(service):
    """A service's `environment`, mapping or KEY=VALUE list, as {name: string value}."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def mounted_sources(service):
    """{container path: source} of a service's volumes, short or long syntax."""
    mounts = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            src, _, dst = vol.partition(":")
        else:
            src, dst = vol.get("source"), vol.get("target")
        mounts[str(dst).split(":")[0].rstrip("/")] = src
    return mounts


def mounts_file(service, name):
    """Whether a service bind-mounts ./name (short syntax), as the LB and collector do."""
    return any(
        str(v).split(":")[0] in (f"./{name}", name)
        for v in (service.get("volumes") or [])
        if isinstance(v, str)
    )
