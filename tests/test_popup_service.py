"""Who gets a popup: the AGI-only and AMI-driven paths of webpush/service.py, without sockets."""
from datetime import datetime, timezone

import gevent
import pytest

from crmsync.models import CallRecord, Caller, LookupResult, User
from webpush.bus import LocalBus
from webpush.hub import Hub, Tab, user_room
from webpush.popups import PopupBook
from webpush.service import PopupService
from test_popups import Screen
from test_push_server import USERS, Content, Directory

RECEPTION = User("u-rec", "rec", "Reception", "104")
USERS_AND_RECEPTION = dict(USERS, **{"u-rec": RECEPTION})


class Staff(Directory):
    def user(self, user_id):
        return USERS_AND_RECEPTION.get(user_id)

    def user_by_extension(self, ext):
        return next((u for u in USERS_AND_RECEPTION.values() if u.extension == ext), None)


def make(ami_driven):
    hub = Hub()
    service = PopupService(PopupBook(hub, None), Staff(), LocalBus(), Content(), lambda s, linkedid: "call-" + linkedid,
                           ami_driven=ami_driven, fallback_extensions=("104",)).start()
    screens = {}
    for user_id in USERS_AND_RECEPTION:
        screens[user_id] = Screen()
        tab = Tab(screens[user_id], user_id, focused=True)
        tab.send = screens[user_id].send
        hub.join(tab, user_room(user_id))
    return service, screens


def record(linkedid="L1"):
    return CallRecord(call_id="call-" + linkedid, linkedid=linkedid, uniqueid=linkedid, direction="Inbound",
                      number="+4930111111", started_at=datetime.now(timezone.utc), did="4930123400")


def found(owner):
    caller = Caller("Contacts", "c1", "Anna", None, owner, "phone_work", "+49 30 111111", "e164")
    return LookupResult("found", "+4930111111", "+4930111111", caller)


def settle():
    gevent.sleep(0.05)


@pytest.mark.parametrize("result, who", [
    (found(USERS["u-ann"]), "u-ann"),                 # the responsible user, whom the dialplan rings
    (LookupResult("unknown", "+4930999999"), "u-rec"),  # nobody responsible: the reception
    (None, "u-rec"),                                   # the CRM did not answer in time
])
def test_without_ami_the_popup_goes_to_the_owner_or_the_reception(result, who):
    service, screens = make(ami_driven=False)
    service.on_agi("ringing", record(), result)
    settle()
    assert {user for user, screen in screens.items() if screen.shown()} == {who}
    service.on_agi("ended", record(), None)
    settle()
    assert screens[who].states("call-L1") == ["ended"] and service.infos == {}
    service.stop()


def test_with_ami_the_agi_only_brings_the_lookup_and_the_ringing_phone_gets_it():
    service, screens = make(ami_driven=True)
    service.on_agi("ringing", record(), found(USERS["u-ann"]))
    settle()
    assert not any(screen.sent for screen in screens.values())      # Ann's phone may not even ring
    service.post_event({"e": "ring", "call": "call-L1", "linkedid": "L1", "ext": "102", "leg": "x"})
    settle()
    assert [user for user, screen in screens.items() if screen.shown()] == ["u-bob"]
    assert "L1" in service.infos
    service.post_event({"e": "ended", "call": "call-L1", "linkedid": "L1"})
    settle()
    assert service.infos == {}
    service.stop()


def test_unknown_events_and_unmapped_extensions_are_ignored():
    service, screens = make(ami_driven=True)
    service.post_event({"e": "nonsense"})
    service.post_event({"e": "ring", "call": "c", "linkedid": "L", "ext": "999", "leg": "x"})
    settle()
    assert not any(screen.sent for screen in screens.values())
    service.stop()
