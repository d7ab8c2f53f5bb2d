"""keeptimed's log lines are bounded and, in text, printable whatever a caller sends."""
import json
import logging

from keeptimed.logs import MAX_FIELD_CHARS, JsonFormatter, TextFormatter


def _record(fields: dict, msg: str = "GetRecord INVALID_ARGUMENT") -> logging.LogRecord:
    record = logging.LogRecord("keeptimed.rpc", logging.INFO, __file__, 1, msg, None, None)
    record.fields = fields
    return record


def test_an_8_mb_field_makes_a_short_line_in_both_formats():
    huge = "a" * (8 << 20)
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(_record({"record": huge, "pid": 7}))
        assert len(line) < 2 * MAX_FIELD_CHARS + 200, type(formatter)
        assert f"[{len(huge) - MAX_FIELD_CHARS} more characters]" in line
    assert json.loads(JsonFormatter().format(_record({"record": huge})))["record"].startswith("a" * MAX_FIELD_CHARS)


def test_text_lines_escape_what_a_terminal_would_act_on_and_json_stays_exact():
    hostile = "x\x1b]0;owned\x07\nFAKE LINE\x9b2J\u202e"
    text = TextFormatter().format(_record({"caller": hostile}, msg=f"hello {hostile}"))
    assert "\n" not in text and "\x1b" not in text and "\x9b" not in text and "\u202e" not in text
    assert "\\x1b]0;owned\\x07" in text
    assert json.loads(JsonFormatter().format(_record({"caller": hostile})))["caller"] == hostile
