"""`flanneld status`: what a running node holds — its lease, its peers, its counters.

Reads the daemon's /status (JSON, on the -healthz-ip/-healthz-port listener) and prints it
for people as tables, or passes the JSON through with -json (for programs).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from flanneld.tables import format_table


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "never (reservation)"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _amount(key: str, value: Any) -> str:
    if key.endswith("_bytes") and isinstance(value, int):
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if value < 1024 or unit == "TiB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
    return str(value)


def format_status(doc: Mapping[str, Any]) -> str:
    """The /status document as text for people."""
    lease = doc.get("lease", {})
    parts = [format_table(["subnet", "public IP", "backend", "lease expires in"], [[
        str(lease.get("subnet", "?")), str(lease.get("public_ip", "?")),
        str(lease.get("backend", "?")), _duration(lease.get("expires_in_s"))]])]
    peers = doc.get("peers", [])
    rows = [[str(peer.get("subnet")), str(peer.get("public_ip")),
             str(peer.get("backend_type") or "udp")]
            for peer in sorted(peers, key=lambda peer: str(peer.get("subnet")))]
    listing = format_table(["subnet", "public IP", "type"], rows) if rows else ""
    parts.append(f"{len(peers)} peers" + (":\n" + listing if rows else ""))
    counters = {k: v for k, v in doc.get("counters", {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool) and v}
    if counters:
        rows = [[key, _amount(key, value)] for key, value in sorted(counters.items())]
        parts.append(format_table(["counter", "value"], rows))
    return "\n\n".join(parts)


def main(argv: Sequence[str]) -> int:
    host = os.environ.get("FLANNELD_HEALTHZ_IP", "127.0.0.1")
    port = os.environ.get("FLANNELD_HEALTHZ_PORT", "")
    as_json = False
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, _, value = arg.lstrip("-").partition("=")
        if name in ("json",):
            as_json = True
        elif name in ("healthz-ip", "healthz-port") and (value or args):
            value = value or args.pop(0)
            host, port = (value, port) if name == "healthz-ip" else (host, value)
        else:
            print(f"flanneld status: unknown argument {arg!r} "
                  "(usage: flanneld status -healthz-port N [-healthz-ip IP] [-json])",
                  file=sys.stderr)
            return 2
    if not port.isdigit() or int(port) == 0:
        print("flanneld status: needs -healthz-port (the daemon's -healthz-port)",
              file=sys.stderr)
        return 2
    if host == "0.0.0.0":
        host = "127.0.0.1"
    url = f"http://{host}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            doc = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"flanneld status: no flanneld answers at {url}: {reason}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2, sort_keys=True) if as_json else format_status(doc))
    return 0
