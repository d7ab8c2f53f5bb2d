"""The CLI's human output cannot be driven by text from keeptimed or a record;
its JSON output is exact."""
import contextlib
import io
import json

from keeptime.output import message_to_dict, print_json, print_list, print_record, print_restores
from keeptime.printable import printable
from keeptime.v1 import keeptime_pb2 as pb

HOSTILE = "web\x1b]0;you have been owned\x07\r\nkeeptime: restored nothing\x1b[2J\x9b1m\u202e\u2028"


def test_printable_escapes_controls_and_invisible_reordering_but_keeps_text():
    assert printable("node-a (böot) 日本") == "node-a (böot) 日本"
    assert printable(HOSTILE) == ("web\\x1b]0;you have been owned\\x07\\x0d\\x0akeeptime: restored nothing"
                                  "\\x1b[2J\\x9b1m\\u202e\\u2028")


def _human(print_function, value) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_function(value)
    return out.getvalue()


def _record() -> pb.Record:
    record = pb.Record(id="a" * 32, hostname=HOSTILE, boot_id=HOSTILE, source=HOSTILE)
    record.labels[HOSTILE] = HOSTILE
    record.processes.add(pid=1, comm=HOSTILE)
    return record


def test_records_summaries_and_verdicts_print_without_control_characters():
    outputs = [
        _human(print_record, _record()),
        _human(print_list, [pb.RecordSummary(id="a" * 32, hostname=HOSTILE, error=""),
                            pb.RecordSummary(id="b" * 32, error=HOSTILE)]),
        _human(print_restores, [pb.RestoreEvent(id=1, record_id="a" * 32, stage=HOSTILE, message=HOSTILE)]),
    ]
    for text in outputs:
        lines = text.splitlines()
        assert all(line.isprintable() for line in lines), text
        assert not any(line.startswith("keeptime: restored") for line in lines)


def test_json_output_carries_the_text_exactly():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_json(message_to_dict(_record()))
    assert json.loads(out.getvalue())["hostname"] == HOSTILE
