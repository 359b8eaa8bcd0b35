"""Tier a: the call state carried on the channel between the start and hangup requests."""
from datetime import datetime, timezone

import pytest

from agi.fastagi import callstate, protocol
from crmsync.models import CallRecord


def record(**changes):
    base = dict(call_id="5f0c-1", linkedid="1795699120.0", uniqueid="1795699120.1", direction="Inbound",
                number="+4930111111", started_at=datetime(2026, 11, 26, 13, 18, 40, 250000, timezone.utc),
                did="4930123400", parent_module="Contacts", parent_id="c-1", parent_name="Anna O'Neil",
                link_table="calls_contacts", link_column="contact_id", assigned_user_id="seed_sally_id",
                lookup_status="found")
    base.update(changes)
    return CallRecord(**base)


@pytest.mark.parametrize("name", ["Anna O'Neil", 'Robert"); DROP TABLE calls;--|x%41', "Жанна Иванова\nX"])
def test_pack_roundtrip(name):
    rec = record(parent_name=name)
    back = callstate.unpack(callstate.pack(rec))
    assert back.parent_name == name[:100]
    assert (back.call_id, back.number, back.did, back.started_at) == (rec.call_id, rec.number, rec.did,
                                                                       rec.started_at)


def test_long_cyrillic_name_stays_within_asterisk_line_limit():
    rec = record(parent_name="Ж" * 255 + " " + "Щ" * 255, assigned_user_id="u" * 36)
    line = protocol.set_variable("CRM_CALL", callstate.pack(rec))
    assert len(line) < 2047
    assert callstate.unpack(callstate.pack(rec)).parent_name == ("Ж" * 255)[:100]


@pytest.mark.parametrize("text", [None, "", "v0|x", "v1|too|few", "v1" + "|x" * 15])
def test_unpack_rejects_what_is_not_ours(text):
    assert callstate.unpack(text) is None


@pytest.mark.parametrize("peer, ext", [
    ("101@phones/n", "101"), ("PJSIP/101", "101"), ("Local/101@from-queue/n", "101"),
    ("PJSIP/101-0000001a", "101"), ("SIP/2001&SIP/2002", "2001"), ("PJSIP/00491712222222@trunk",
                                                                    "00491712222222"),
    ("", None), (None, None), ("PJSIP/reception", None)])
def test_extension_from_peer(peer, ext):
    assert callstate.extension_from_peer(peer) == ext


@pytest.mark.parametrize("value, clean", [("unknown", ""), ("<unknown>", ""), (" +4930 ", "+4930"),
                                          ("Unknown", "Unknown"), ("anonymous", "anonymous")])
def test_clean_only_drops_asterisk_placeholders(value, clean):
    assert callstate.clean(value) == clean


@pytest.mark.parametrize("started_at", ["1e30", "-1e30", "inf", "nan", "99999999999999999999"])
def test_a_start_time_out_of_range_is_not_ours(started_at):
    """Found by bench/fuzz.py: OverflowError ("timestamp out of range for platform time_t") escaped."""
    text = "|".join(["v1", "c-1", "", "", "Inbound"] + [""] * 10 + [started_at])
    assert callstate.unpack(text) is None
