"""crmsync.outcome: pure rules, no database."""
from datetime import datetime, timezone

import pytest

from crmsync.models import CallRecord
from crmsync.outcome import (description, duration_parts, outcome, subject, utf8mb3_safe)


def _rec(**kw):
    base = dict(call_id="c1", linkedid="1700000000.1", uniqueid="1700000000.1",
                direction="Inbound", number="+4930111111",
                started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    base.update(kw)
    return CallRecord(**base)


@pytest.mark.parametrize("direction, dial_status, answered, expected", [
    ("Inbound", "ANSWER", "12", ("Held", "answered")),
    ("Outbound", "ANSWER", None, ("Held", "answered")),
    # Queue()/AgentRequest(): DIALSTATUS empty, ANSWEREDTIME tells.
    ("Inbound", "", "42", ("Held", "answered")),
    ("Inbound", None, 0, ("Held", "answered")),
    ("Inbound", "", "0", ("Held", "answered")),
    ("Inbound", "", "", ("Not Held", "missed")),
    ("Inbound", None, None, ("Not Held", "missed")),
    # Every inbound miss is "missed", whatever the reason.
    ("Inbound", "NOANSWER", None, ("Not Held", "missed")),
    ("Inbound", "BUSY", None, ("Not Held", "missed")),
    ("Inbound", "CANCEL", "", ("Not Held", "missed")),
    ("Inbound", "CHANUNAVAIL", None, ("Not Held", "missed")),
    ("Inbound", "CONGESTION", None, ("Not Held", "missed")),
    ("Outbound", "NOANSWER", None, ("Not Held", "noanswer")),
    ("Outbound", "BUSY", None, ("Not Held", "busy")),
    ("Outbound", "CANCEL", None, ("Not Held", "cancelled")),
    ("Outbound", "CHANUNAVAIL", None, ("Not Held", "failed")),
    ("Outbound", "CONGESTION", None, ("Not Held", "failed")),
    ("Outbound", "DONTCALL", None, ("Not Held", "failed")),
    ("Outbound", "", None, ("Not Held", "cancelled")),
    # An explicit failure with "0" answered time is not an answer (callers writing 0 for none)...
    ("Outbound", "NOANSWER", 0, ("Not Held", "noanswer")),
    # ...but a later Queue() answer after a failed Dial() is.
    ("Inbound", "NOANSWER", "30", ("Held", "answered")),
    ("inbound", " answer ", None, ("Held", "answered")),
])
def test_outcome(direction, dial_status, answered, expected):
    assert outcome(direction, dial_status, answered) == expected


@pytest.mark.parametrize("seconds, expected", [
    (0, (0, 0)), (None, (0, 0)), (1, (0, 1)), (5, (0, 1)), (59, (0, 1)), (60, (0, 1)),
    (61, (0, 2)), (3599, (1, 0)), (3600, (1, 0)), (3601, (1, 1)), (7322, (2, 3)), (-4, (0, 0)),
])
def test_duration_parts_rounds_up(seconds, expected):
    assert duration_parts(seconds) == expected


def test_subject_forms():
    assert subject(_rec(parent_name="Anna O'Neil", outcome="answered", status="Held")) == \
        "Inbound call from Anna O'Neil (+4930111111)"
    assert subject(_rec(outcome="missed", status="Not Held")) == "Missed call from +4930111111"
    assert subject(_rec(parent_name="Anna O'Neil", outcome="missed")) == \
        "Missed call from Anna O'Neil (+4930111111)"
    assert subject(_rec(direction="Outbound", number="+4930222", parent_name="Bob")) == \
        "Outbound call to Bob (+4930222)"
    assert subject(_rec(number="", parent_name=None)) == "Inbound call from unknown number"
    # Before the end is known (start), an inbound call is not yet "missed".
    assert subject(_rec()) == "Inbound call from +4930111111"


def test_subject_long_name_keeps_the_number():
    text = subject(_rec(parent_name="Maximiliane Alexandra von und zu Hohenzollern-Sigmaringen"))
    assert len(text) == 50
    assert text.endswith("\u2026 (+4930111111)")
    assert text.startswith("Inbound call from Maximiliane")


def test_subject_long_number_is_cut():
    text = subject(_rec(number="9" * 60, parent_name="Anna"))
    assert len(text) == 50 and text.endswith("\u2026")


def test_subject_is_utf8mb3_safe():
    text = subject(_rec(parent_name="Zo\u00eb \U0001F600 M\u00fcller\n\u5f20 \U00020000"))
    assert text == "Inbound call from Zo\u00eb M\u00fcller \u5f20 (+4930111111)"
    assert all(ord(ch) <= 0xFFFF for ch in text)
    text.encode("utf-8")


def test_utf8mb3_safe_drops_astral_and_surrogates():
    assert utf8mb3_safe("a\U0001F600b\ud800c\u20ac") == "abc\u20ac"
    assert utf8mb3_safe(None) is None


def test_description_has_the_exact_facts():
    rec = _rec(parent_name="Anna O'Neil", parent_module="Contacts", did="+4930999000",
               extension="201", answered_extension="202", dial_status="ANSWER",
               talk_seconds=65, ring_seconds=7, recording="/var/spool/asterisk/monitor/x.wav",
               hangup_cause="16", outcome="answered", status="Held")
    text = description(rec)
    for part in ("Inbound call, answered.", "Number: +4930111111",
                 "Caller: Anna O'Neil (Contacts)", "DID: +4930999000", "Extension: 201",
                 "Answered by extension: 202", "Dial status: ANSWER", "Talk time: 65 s",
                 "Ring time: 7 s", "Recording: /var/spool/asterisk/monitor/x.wav",
                 "Hangup cause: 16", "Linked id: 1700000000.1"):
        assert part in text.splitlines()


def test_description_skips_unknowns_and_is_safe():
    text = description(_rec(direction="Outbound", parent_name="\U0001F4DE Desk",
                            parent_module="Accounts", talk_seconds=0))
    assert text.splitlines()[0] == "Outbound call, in progress."
    assert "Callee: Desk (Accounts)" in text
    assert "Talk time: 0 s" in text
    assert "DID" not in text and "Recording" not in text
    assert all(ord(ch) <= 0xFFFF for ch in text)
