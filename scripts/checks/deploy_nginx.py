"""deploy/nginx.conf, the load balancer in front of the data planes: its upstreams are the data
planes' listen ports, its settings keep SSE streams flowing, and `nginx -t` accepts it."""

import os
import re
import subprocess
import tempfile
from pathlib import Path

from compose_format import mounts_file, parse_addr_port

SSE_DIRECTIVES = (
    ("proxy_http_version 1.1", r"proxy_http_version\s+1\.1\s*;"),
    ("proxy_buffering off", r"proxy_buffering\s+off\s*;"),
    ("proxy_request_buffering off", r"proxy_request_buffering\s+off\s*;"),
)


def upstreams_of(conf):
    """{upstream name: [(host, port)]} of a comment-free nginx.conf."""
    upstreams = {}
    for m in re.finditer(r"\bupstream\s+(\S+)\s*\{(.*?)\}", conf, re.S):
        servers = re.findall(r"^\s*server\s+([^\s:;]+):(\d+)", m.group(2), re.M)
        upstreams[m.group(1)] = [(h, int(p)) for h, p in servers]
    return upstreams


def check_routes(report, fleet, lb, bare, upstreams):
    """Upstreams = the data planes' LISTEN_ADDR, each used; published port = a listen port."""
    want = {
        (dp, parse_addr_port(fleet.env.get(dp, {}).get("LISTEN_ADDR"))) for dp in fleet.data_planes
    }
    for up, servers in upstreams.items():
        if set(servers) != want:
            report.fail(
                f"upstream {up} servers {sorted(servers)} != data planes' LISTEN_ADDR {sorted(want)}"
            )
    if not upstreams:
        report.fail("nginx.conf defines no upstream")
    for up in upstreams:
        if not re.search(rf"proxy_pass\s+https?://{re.escape(up)}\s*;", bare):
            report.fail(f"upstream {up} is not used by a proxy_pass")
    listens = {int(p) for p in re.findall(r"^\s*listen\s+(?:[\d.]+:)?(\d+)", bare, re.M)}
    for n in lb:
        for p in fleet.services[n].get("ports") or []:
            # Long syntax names the container port; short syntax ends with it.
            target = (
                p.get("target")
                if isinstance(p, dict)
                else int(str(p).rsplit(":", 1)[-1].split("/")[0])
            )
            if target not in listens:
                report.fail(
                    f"{n}: publishes container port {target}, nginx listens on {sorted(listens)}"
                )
    return want, listens


def check_streaming(report, fleet, bare):
    """No buffering, HTTP/1.1 upstream, long read timeout, and bodies as large as the planes'."""
    for directive, rx in SSE_DIRECTIVES:
        if not re.search(rx, bare):
            report.fail(f"nginx.conf lacks `{directive}` (SSE streams)")
    m = re.search(r"proxy_read_timeout\s+(\d+)(s|m|h)?\s*;", bare)
    if not m or int(m.group(1)) * {"s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)] < 600:
        report.fail("nginx.conf: proxy_read_timeout must be >= 600s (long reasoning streams)")
    m = re.search(r"client_max_body_size\s+(\d+)([kKmMgG]?)\s*;", bare)
    dps = fleet.data_planes
    max_body = (
        min(int(fleet.env.get(dp, {}).get("MAX_BODY_BYTES", 32 * 1024 * 1024)) for dp in dps)
        if dps
        else 0
    )
    scale = {"": 1, "k": 1024, "m": 1 << 20, "g": 1 << 30}
    if not m or int(m.group(1)) * scale[m.group(2).lower()] < max_body:
        report.fail(
            f"nginx.conf: client_max_body_size must be >= the data planes' MAX_BODY_BYTES ({max_body})"
        )


def testable_conf(conf, upstreams, version, tmp):
    """conf as `nginx -t` can check it here: upstream host names (which it resolves) mapped to
    127.0.0.1, the upstream `resolve` parameter dropped for an nginx older than 1.27.3, and
    temp files and the pid kept in tmp."""
    test = conf
    for host, _ in {s for servers in upstreams.values() for s in servers}:
        test = re.sub(rf"(^\s*server\s+){re.escape(host)}:", r"\g<1>127.0.0.1:", test, flags=re.M)
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    if m and tuple(map(int, m.groups())) < (1, 27, 3):
        test = re.sub(r"(^\s*server\s+[^;]*?)\s+resolve\b", r"\1", test, flags=re.M)
    temp_dirs = "".join(
        f"    {d}_temp_path {tmp}/{d};\n"
        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    test = re.sub(r"^http\s*\{\n", lambda _: "http {\n" + temp_dirs, test, count=1, flags=re.M)
    return f"pid {tmp}/nginx.pid;\n" + test


def nginx_t(report, nginx_bin, conf, upstreams):
    version = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True).stderr.strip()
    with tempfile.TemporaryDirectory(prefix="check-deploy-nginx.") as tmp:
        Path(tmp, "nginx.conf").write_text(testable_conf(conf, upstreams, version, tmp))
        r = subprocess.run(
            [nginx_bin, "-t", "-q", "-e", "stderr", "-p", tmp, "-c", f"{tmp}/nginx.conf"],
            capture_output=True,
            text=True,
        )
    if r.returncode != 0:
        report.fail(f"nginx -t ({version}):\n{(r.stdout + r.stderr).strip()}")
    else:
        report.ok(f"nginx -t ({version}; upstream hosts mapped to 127.0.0.1)")


def check_nginx(report, fleet, path):
    """nginx_bin comes from NGINX_BIN (set by scripts/check-deploy; empty: not available)."""
    report.section("nginx.conf")
    mark = report.mark()
    lb = [n for n, s in fleet.services.items() if mounts_file(s, "nginx.conf")]
    conf = path.read_text() if path.is_file() else ""
    if not conf:
        report.fail("deploy/nginx.conf missing")
    if not lb:
        report.fail("no service mounts ./nginx.conf")
    bare = re.sub(r"#[^\n]*", "", conf)
    upstreams = upstreams_of(bare)
    want, listens = check_routes(report, fleet, lb, bare, upstreams)
    check_streaming(report, fleet, bare)
    if report.clean_since(mark):
        report.ok(
            f"upstreams {sorted(upstreams)} = {sorted(f'{h}:{p}' for h, p in want)}; "
            f"listen {sorted(listens)}; SSE settings"
        )
    nginx_bin = os.environ.get("NGINX_BIN")
    if not nginx_bin:
        report.note("nginx not available (not on PATH, no apt-get): nginx -t skipped")
    elif conf:
        nginx_t(report, nginx_bin, conf, upstreams)
