"""Master-record values that try to add lines or words to a rendered config file.

Shared by the unit tests (every shipped template, `haproxy -c`) and the integration test
(a real watcher with real HAProxy and PgBouncer sinks).
"""

from __future__ import annotations

from agrajag.sinks.base import render
from tools.harness.shipped import CONF_D

#: (what, key, value): each would add a line or a word to some shipped file.
PAYLOADS = [
    (
        "the issue's IPv6 zone id",
        "host",
        "::1%x:1 init-addr none disabled\n    server evil 192.0.2.66:5432\n#",
    ),
    ("a zone id with a space", "host", "fe80::1%eth0 backup"),
    ("a zone id with a newline", "host", "fe80::1%eth0\nserver evil 192.0.2.66:5432"),
    ("a trailing newline", "host", "10.0.0.2\n"),
    ("a newline and a server", "host", "10.0.0.2\nserver evil 192.0.2.66:5432"),
    ("CR LF and a database", "host", "db2\r\nevil = host=192.0.2.66 dbname=app"),
    ("a Unicode line separator", "host", "db2\u2028evil = host=192.0.2.66"),
    ("NEL", "host", "db2\x85evil=1"),
    ("a vertical tab", "host", "db2\x0bevil=1"),
    ("a form feed", "host", "db2\x0cevil=1"),
    ("a space and a keyword", "host", "10.0.0.2 backup"),
    ("a tab and a keyword", "host", "10.0.0.2\tdisabled"),
    ("a PgBouncer parameter", "host", "db2 user=postgres"),
    ("a node name with a newline", "node", "node2\nserver evil 192.0.2.66:5432"),
    ("a node name with a trailing newline", "node", "node2\n"),
]
#: Refused too, though they add no line or word: they change what a word means.
OTHER_PAYLOADS = [
    ("a comment cutting `check`", "host", "db2#"),
    ("a shell expansion in an env file", "host", "$(reboot)"),
    ("a publisher with a newline (in no template)", "published_by", "node2\nevil"),
]

#: Each shipped template with the params it needs, and the fields of a clean master.
TEMPLATES = {
    "haproxy.cfg.j2": {
        "stats_socket": "/run/haproxy/admin.sock",
        "server_state_file": "/var/lib/haproxy/server-state",
        "bind": "127.0.0.1",
        "ports": {"main": 5000},
    },
    "pgbouncer-databases.ini.j2": {"databases": {"main": ["app", "reports"]}},
    "primary.env.j2": {},
}
CLEAN = {"cluster": "main", "epoch": 2, "node": "node2", "node_id": 2}
CLEAN |= {"host": "10.0.0.2", "port": 5432, "timeline": 1}


def render_raw(template: str, fields: dict[str, object]) -> str:
    """Render a shipped template with the clean master's fields, `fields` over them, as a
    plain dict: no validation at all."""
    context = {"clusters": {"main": {**CLEAN, **fields}}, "params": TEMPLATES[template]}
    return render(CONF_D / template, context)
