"""Whatever bytes a znode holds, every decoder returns a record or raises RecordError naming
the znode: never another exception (a RecursionError once killed every daemon and watcher)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agrajag.record import MAX_RECORD_BYTES, MasterRecord, NodeRecord, RecordError, WatcherAck
from tests.factories import master_record, node_record

SOURCE = "/agrajag/main/master"
DECODERS: list[Callable[[bytes, str], object]] = [
    MasterRecord.from_json,
    NodeRecord.from_json,
    WatcherAck.from_json,
]
VALID = [
    master_record(1, 3).to_json(),
    node_record("node1").to_json(),
    WatcherAck("app1", 3, "2026-11-22T00:00:00.000Z", {"haproxy": "ok"}).to_json(),
]

JUNK = {
    "deep_list": b"[" * 4096,
    "deep_object": b'{"a":' * 4096,
    "deep_valid": b"[" * 50_000 + b"]" * 50_000,
    "huge_int": b'{"schema": 1, "epoch": ' + b"9" * 5000 + b"}",
    "big_int": b'{"schema": 1, "epoch": 9223372036854775808}',
    "nan": b'{"schema": NaN}',
    "infinity": b'{"schema": 1, "epoch": Infinity}',
    "not_utf8": b'{"schema": 1, "node": "\xff\xfe"}',
    "oversized": b'{"schema": 1, "pad": "' + b"x" * MAX_RECORD_BYTES + b'"}',
    "empty": b"",
    "array": b"[1, 2]",
    "schema_2": b'{"schema": 2}',
    "lone_surrogate": b'{"schema": 1, "node": "\\ud800"}',
}


def decode(decoder: Callable[[bytes, str], object], data: bytes) -> object:
    """The decoder's answer, or its RecordError; any other exception fails the test."""
    try:
        return decoder(data, SOURCE)
    except RecordError as exc:
        assert exc.source == SOURCE and str(exc).startswith(f"{SOURCE}: ")
        assert len(str(exc)) < 400  # the message quotes the junk, cut short
        return exc


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", sorted(JUNK))
def test_each_kind_of_junk_is_an_invalid_record(
    decoder: Callable[[bytes, str], object], name: str
) -> None:
    assert isinstance(decode(decoder, JUNK[name]), RecordError)


def test_a_master_record_with_out_of_range_numbers_is_invalid() -> None:
    doc = json.loads(master_record(1, 3).to_json())
    for key, value in [("epoch", 2**63), ("node_id", -(2**64)), ("port", 10**19)]:
        err = decode(MasterRecord.from_json, json.dumps({**doc, key: value}).encode())
        assert isinstance(err, RecordError) and repr(key) in str(err)


def test_watcher_sinks_must_be_strings() -> None:
    data = b'{"schema": 1, "agent": "a", "applied_epoch": 1, "applied_at": "t", "sinks": {"x": []}}'
    assert "'sinks' must map names to strings" in str(decode(WatcherAck.from_json, data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(DECODERS))
def test_any_bytes_decode_or_are_refused(data: bytes, decoder: Any) -> None:
    decode(decoder, data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from(range(len(DECODERS))))
def test_valid_records_with_any_field_changed_decode_or_are_refused(
    data: st.DataObject, index: int
) -> None:
    doc = json.loads(VALID[index])
    key = data.draw(st.sampled_from(sorted(doc)))
    doc[key] = data.draw(JSON_VALUES)
    decode(DECODERS[index], json.dumps(doc).encode())


@pytest.mark.parametrize("index", range(len(DECODERS)))
def test_valid_records_decode(index: int) -> None:
    assert not isinstance(decode(DECODERS[index], VALID[index]), RecordError)


def test_a_record_written_before_withdrawals_existed_parses_as_published() -> None:
    doc = json.loads(master_record(1, 3).to_json())
    del doc["withdrawn"]
    record = MasterRecord.from_json(json.dumps(doc).encode(), SOURCE)
    assert record == master_record(1, 3) and record.routes


def test_a_withdrawn_record_round_trips_and_never_counts_as_the_same_master() -> None:
    gone = master_record(1, 4, withdrawn="node1 is a former primary")
    assert MasterRecord.from_json(gone.to_json(), SOURCE) == gone and not gone.routes
    assert not master_record(1, 5).same_master(gone) and gone.same_master(gone)


@pytest.mark.parametrize("value", ["", "  ", "two\nlines", 7, ["a"]])
def test_withdrawn_must_be_null_or_a_line_of_text(value: object) -> None:
    doc = {**json.loads(master_record(1, 3).to_json()), "withdrawn": value}
    with pytest.raises(RecordError, match="key 'withdrawn'"):
        MasterRecord.from_json(json.dumps(doc).encode(), SOURCE)
