"""`crmagi demo`: crmagi against a demo CRM it creates itself, with simulated Asterisk calls.

The calls are placed by ``agi.demo.simulator``, which speaks FastAGI byte for byte
as the recorded Asterisk 22 does, so what the demo shows is what a PBX gets.
"""
import os
import secrets
import time

from sqlalchemy import text

from crmsync.demo import create_demo_db

from agi.app import App
from agi.config import load
from agi.demo.web import DemoWeb
from agi.demo.simulator import SimulatedCall

CONFIG = """; crmagi demo configuration (written by `crmagi demo`)
[crm]
url = {url}
[agi]
listen = {listen}
spool = spool.sqlite
[lookup]
default_region = DE
[webpush]
listen = {ws}
secret = {secret}
allowed_origins = http://{web}
fallback_extensions = 104
[metrics]
listen = {metrics}
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


def run_demo(directory, listen, once, echo=print, web="127.0.0.1:8088"):
    """``web``: where the stand-in SuiteCRM pages are served; the popup websocket takes the next port."""
    os.makedirs(directory, exist_ok=True)
    url = create_demo_db(os.path.abspath(os.path.join(directory, "demo-crm.sqlite")))
    ini = os.path.join(directory, "crmagi.ini")
    host, port = web.rsplit(":", 1)
    ws = "%s:%d" % (host, int(port) + 1) if not once else "127.0.0.1:0"
    metrics = "127.0.0.1:9108" if not once else "127.0.0.1:0"
    with open(ini, "w", encoding="utf-8") as handle:
        handle.write(CONFIG.format(url=url, listen=listen, ws=ws, web=web, secret=secrets.token_hex(32),
                                    metrics=metrics))
    app = App(load(ini)).start()
    echo("crmagi demo: FastAGI on %s:%d, demo CRM %s" % (app.agi.address[0], app.agi.address[1], url))
    site = None
    if not once:
        site = DemoWeb(app, (host, int(port)), "ws://%s/ws" % ws).start()
    try:
        for title, script, number, callerid, dial in CALLS:
            _place(app, title, script, number, callerid, dial, echo)
        _show_calls(app, echo)
        if once:
            return 0
        echo("\nServing. Point Asterisk at agi://%s:%d/incoming (see `crmagi dialplan -c %s`),"
             % (app.agi.address[0], app.agi.address[1], ini))
        echo("or try `crmagi lookup -c %s +4930111111`." % ini)
        echo("Popups: open http://%s/ in a browser, open a user's CRM tab, press a Ring button. "
             "Ctrl-C stops." % web)
        app.serve_forever()
        return 0
    finally:
        if site is not None:
            site.stop()
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
