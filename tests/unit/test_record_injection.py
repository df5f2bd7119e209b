"""Config-line injection through a master record, against every shipped template.

Each payload is first rendered WITHOUT validation, to prove it is a real attack (the file
gains a line or a word, and for the issue's own payload `haproxy -c` calls the result valid);
then the record is refused, naming the key. Property tests check the other way round: any
value the validation accepts renders exactly the lines and words a clean record renders.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agrajag.record import MasterRecord, RecordError, is_plain_host, is_plain_name
from tools.harness.injection import CLEAN, OTHER_PAYLOADS, PAYLOADS, TEMPLATES, render_raw


def shape(text: str) -> list[int]:
    """Lines and words per line, as any line-based config parser would split them."""
    return [len(line.split()) for line in text.splitlines()]


def record_json(**change: object) -> bytes:
    doc = {**CLEAN, "schema": 1, "published_by": "node3", "published_at": "t", "evidence": {}}
    return json.dumps({**doc, **change}).encode()


@pytest.mark.parametrize(
    ("what", "key", "value"),
    PAYLOADS + OTHER_PAYLOADS,
    ids=[p[0] for p in PAYLOADS + OTHER_PAYLOADS],
)
def test_a_payload_is_refused_naming_the_key(what: str, key: str, value: str) -> None:
    with pytest.raises(RecordError, match=f"key '{key}' must be"):
        MasterRecord.from_json(record_json(**{key: value}), source="/agrajag/main/master")


@pytest.mark.parametrize(("what", "key", "value"), PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_each_payload_is_a_real_attack_on_some_shipped_template(
    what: str, key: str, value: str
) -> None:
    """Without validation the payload changes the shape of at least one shipped file, so the
    refusal above is what keeps it out."""
    changed = [
        name
        for name in TEMPLATES
        if shape(render_raw(name, {**CLEAN, key: value})) != shape(render_raw(name, CLEAN))
    ]
    assert changed, f"{what} changes no shipped file: not an attack"


def test_the_issues_payload_passes_haproxy_c_when_not_refused(tmp_path: Path) -> None:
    """The attack the issue reported: `haproxy -c` accepts the injected file, which disables
    `server primary` and adds `server evil`. Only the record's validation stops it."""
    host = PAYLOADS[0][2]
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_raw("haproxy.cfg.j2", {**CLEAN, "host": host}))
    done = subprocess.run(
        ["/usr/sbin/haproxy", "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "server evil 192.0.2.66:5432" in config.read_text()
    assert not is_plain_host(host)


_DANGEROUS = list(" \t\n\r\x0b\x0c\x00\x85\u2028\u2029#;=:%'\"$`\\[]{}/")
_HOSTISH = st.text(alphabet=st.sampled_from([*"0123456789abcdefxyzAF.-", *_DANGEROUS]))


@given(
    st.one_of(
        _HOSTISH,
        st.text(),
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda a: f"{a}%eth0"),
        st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{1,5}){0,3}", fullmatch=True),
    )
)
@example("::1%x:1 init-addr none disabled\n    server evil 192.0.2.66:5432\n#")
@example("10.0.0.1\n")
def test_an_accepted_host_renders_exactly_the_clean_shape(host: str) -> None:
    if not is_plain_host(host):
        return
    for name in TEMPLATES:
        assert shape(render_raw(name, {**CLEAN, "host": host})) == shape(render_raw(name, CLEAN)), (
            name
        )


@given(st.one_of(_HOSTISH, st.text(), st.from_regex(r"[a-z0-9][a-z0-9_.@-]{0,20}", fullmatch=True)))
@example("node2\n")
def test_an_accepted_name_renders_exactly_the_clean_shape(node: str) -> None:
    if not is_plain_name(node):
        return
    for name in TEMPLATES:
        assert shape(render_raw(name, {**CLEAN, "node": node})) == shape(render_raw(name, CLEAN)), (
            name
        )


@pytest.mark.parametrize(
    "host",
    ["10.0.0.2", "::1", "2001:db8::7", "fe80::1%eth0", "::ffff:10.0.0.2", "db-2", "db2.example."],
)
def test_plain_hosts_are_accepted(host: str) -> None:
    assert MasterRecord.from_json(record_json(host=host), source="m").host == host


@pytest.mark.parametrize(
    "host", ["10.0.0.256", "010.0.0.2", "1.2.3", "fe80::1%eth-0", "fe80::1%", "db_2", "a..b"]
)
def test_near_misses_are_refused(host: str) -> None:
    assert not is_plain_host(host)
