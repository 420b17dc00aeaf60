"""``shared.logformat``: the one log line format of the controller and the agent."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from shared.logformat import (
    LINE_KEYS,
    JsonLineFormatter,
    TextLineFormatter,
    line_formatter,
    timestamp,
)


def _record(msg: str = "task placed: %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "cloud.events", "levelno": 20, "levelname": "INFO", "msg": msg, "args": args}
    )
    record.__dict__.update(extra)
    record.created = 1_764_666_711.342_9
    return record


def test_timestamp_is_utc_rfc3339_with_milliseconds() -> None:
    assert timestamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert timestamp(1_764_666_711.342_9) == "2025-12-02T09:11:51.342Z"


def test_json_line_has_the_fixed_keys_then_the_fields() -> None:
    record = _record("task placed: %s", "e", fields={"task_id": "e", "epoch": 2, "at": Path("/x")})
    line = json.loads(JsonLineFormatter().format(record))
    assert line == {
        "ts": "2025-12-02T09:11:51.342Z",
        "level": "info",
        "logger": "cloud.events",
        "msg": "task placed: e",
        "task_id": "e",
        "epoch": 2,
        "at": "/x",  # not JSON: written as its str()
    }


def test_a_field_named_like_a_line_key_gets_a_prefix() -> None:
    record = _record("x", fields={"level": "eventual", "msg": "m", "node_id": "n1"})
    line = json.loads(JsonLineFormatter().format(record))
    assert (line["level"], line["msg"]) == ("info", "x")
    assert (line["data_level"], line["data_msg"], line["node_id"]) == ("eventual", "m", "n1")


def test_only_the_fields_mapping_is_written() -> None:
    line = json.loads(JsonLineFormatter().format(_record("x", api_port=1, fields="nope")))
    assert set(line) == {"ts", "level", "logger", "msg"}


def test_a_traceback_goes_to_exc() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed", exc_info=sys.exc_info())
    line = json.loads(JsonLineFormatter().format(record))
    assert "ValueError: boom" in line["exc"]
    text = TextLineFormatter().format(record)
    assert text.startswith("2025-12-02T09:11:51.342Z INFO cloud.events: failed\nTraceback")


def test_text_line_for_a_terminal() -> None:
    record = _record("agent running", fields={"node": "n1", "pid": 7})
    assert (
        TextLineFormatter().format(record)
        == "2025-12-02T09:11:51.342Z INFO cloud.events: agent running node=n1 pid=7"
    )
    assert isinstance(line_formatter(json_lines=False), TextLineFormatter)
    assert isinstance(line_formatter(json_lines=True), JsonLineFormatter)


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10))


@given(
    st.dictionaries(st.text("xyz", max_size=8) | st.sampled_from(sorted(LINE_KEYS)), _values),
    st.floats(min_value=0, max_value=4e9),
)
def test_every_record_is_one_json_line_keeping_its_own_keys(
    fields: dict[str, object], created: float
) -> None:
    record = _record("m", fields=fields)
    record.created = created
    text = JsonLineFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert (line["level"], line["logger"], line["msg"]) == ("info", "cloud.events", "m")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    for key, value in fields.items():
        assert line[f"data_{key}" if key in LINE_KEYS else key] == value
