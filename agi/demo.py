"""`crmagi demo`: crmagi against a demo CRM it creates itself, with simulated Asterisk calls.

The calls are placed by ``agi.simulator``, which speaks FastAGI byte for byte
as the recorded Asterisk 22 does, so what the demo shows is what a PBX gets.
"""
import os
import time

from sqlalchemy import text

from crmsync.demo import create_demo_db

from .app import App
from .config import load
from .simulator import SimulatedCall

CONFIG = """; crmagi demo configuration (written by `crmagi demo`)
[crm]
url = {url}
[agi]
listen = {listen}
spool = spool.sqlite
[lookup]
default_region = DE
"""

ANSWERED = {"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "42", "DIALEDTIME": "50", "HANGUPCAUSE": "16"}
CALLS = [  # (title, script, number, caller id, dial results)
    ("Anna calls the hotline", "incoming", "4930123400", "+4930111111",
     dict(ANSWERED, DIALEDPEERNUMBER="101", MIXMONITOR_FILENAME="/var/spool/asterisk/monitor/demo-1.wav")),
    ("Spreewald Logistik calls, nobody answers", "incoming", "4930123400", "+4930555555",
     {"DIALSTATUS": "NOANSWER", "DIALEDTIME": "20", "HANGUPCAUSE": "16"}),
    ("A withheld number calls", "incoming", "4930123400", "",
     dict(ANSWERED, DIALEDPEERNUMBER="104")),
    ("Sally (ext 101) calls Bernd's mobile", "outgoing", "00491712222222", "101",
     dict(ANSWERED, DIALEDPEERNUMBER="PJSIP/00491712222222@trunk")),
]
SHOWN = ("CRM_STATUS", "CRM_MODULE", "CRM_RECORD_NAME", "CRM_OWNER_EXTEN", "CRM_CALL_ID")


def run_demo(directory, listen, once, echo=print):
    os.makedirs(directory, exist_ok=True)
    url = create_demo_db(os.path.abspath(os.path.join(directory, "demo-crm.sqlite")))
    ini = os.path.join(directory, "crmagi.ini")
    with open(ini, "w", encoding="utf-8") as handle:
        handle.write(CONFIG.format(url=url, listen=listen))
    app = App(load(ini)).start()
    echo("crmagi demo: FastAGI on %s:%d, demo CRM %s" % (app.agi.address[0], app.agi.address[1], url))
    try:
        for title, script, number, callerid, dial in CALLS:
            _place(app, title, script, number, callerid, dial, echo)
        _show_calls(app, echo)
        if once:
            return 0
        echo("\nServing. Point Asterisk at agi://%s:%d/incoming (see `crmagi dialplan -c %s`),"
             % (app.agi.address[0], app.agi.address[1], ini))
        echo("or try `crmagi lookup -c %s +4930111111`. Ctrl-C stops." % ini)
        app.serve_forever()
        return 0
    finally:
        if once:
            app.stop(timeout=2)


def _place(app, title, script, number, callerid, dial, echo):
    call = SimulatedCall(app.agi.address, script, number=number, callerid=callerid)
    first, _ = call.run(dial=dial)
    shown = ", ".join("%s=%s" % (name, first.variables.get(name, "")) for name in SHOWN[:4])
    echo("\n%s: %s %s -> %s" % (title, script, callerid or "(withheld)", number))
    echo("  dialplan got: %s  (answered in %.1f ms)" % (shown, first.elapsed * 1000))


def _show_calls(app, echo):
    deadline = time.monotonic() + 5
    while app.writer.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    echo("\nCall records in the demo CRM:")
    with app.engine.connect() as conn:
        rows = conn.execute(text("SELECT name, status, direction, parent_type, assigned_user_id,"
                                 " duration_minutes FROM calls ORDER BY date_entered, name")).all()
    for name, status, direction, parent, user, minutes in rows:
        echo("  %-8s %-9s %-40s parent=%-9s user=%s %s min" % (direction, status, name, parent, user, minutes))
