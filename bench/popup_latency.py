"""AGI `incoming` -> popup in the DOM of a real Chromium tab, with N other tabs connected.

Starts `crmagi serve` with popups on (a SuiteCRM database in the local MariaDB),
connects ``--sockets`` idle websockets of other users (bench/ws_swarm.py, its own
process), opens the responsible user's page in headless Chromium with popup.js,
then places ``--calls`` calls one after another.  Latency is from just before the
AGI request to the moment popup.js put the popup in the DOM (the browser's
``Date.now()``, same machine clock).  The server's RSS is read from /proc.

    python bench/popup_latency.py --sockets 1000 --calls 300
    python bench/popup_latency.py --sockets 10000 --calls 300
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from agi.demo.simulator import SimulatedCall  # noqa: E402
from common import REPO, create_database, drop_database, percentile, rss_mb, sql, start_server  # noqa: E402
from webpush import snippet  # noqa: E402

SECRET = "bench-popup-secret-0123456789abcdef"
STATIC = REPO / "webpush" / "static"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run")


def seed(database, swarm_users):
    # The swarm's tabs log in as real, active CRM users: the push server admits no one else.
    if swarm_users:
        sql(database, "INSERT INTO users (id, user_name, last_name, status, deleted) SELECT CONCAT('swarm-', seq - 1),"
                      " CONCAT('swarm', seq - 1), 'Swarm', 'Active', 0 FROM seq_1_to_%d" % swarm_users)
    for n, user in enumerate(("sally", "max", "chris", "will", "sarah", "jim"), start=101):
        sql(database, "UPDATE users SET phone_work='%d' WHERE id='seed_%s_id'" % (n, user))
    sql(database, "INSERT INTO contacts (id, first_name, last_name, phone_work, assigned_user_id, deleted)"
                  " VALUES ('bench-contact-1', 'Anna', 'ONeil', '+49 (30) 111-111', 'seed_sally_id', 0)")


def page(ws_url, user_id):
    """A page carrying what the SuiteCRM hook prints for one user (webpush.snippet: same bytes)."""
    hook = snippet.render(SECRET, ws_url, 3600, "bench", user_id, user_id, time.time())
    return "<!doctype html><html><head><title>SuiteCRM</title></head><body><h1>Contacts</h1>%s</body></html>" % hook


def static_site(port, ws_url):
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/page.html":
            body, kind = page(ws_url, "seed_sally_id").encode(), "text/html"
        elif path.startswith("/custom/include/Crmagi/") and Path(path).name in ("popup.js", "popup.css"):
            body = (STATIC / Path(path).name).read_bytes()
            kind = "text/javascript" if path.endswith(".js") else "text/css"
        else:
            start_response("404 Not Found", [])
            return [b""]
        start_response("200 OK", [("Content-Type", kind)])
        return [body]
    site = WSGIServer(("127.0.0.1", port), app, log=None)
    site.start()
    return site


def browser(url):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS + ("--user-data-dir=%s" % tempfile.mkdtemp(prefix="crmagi-chrome-"),):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.get(url)
    wait(lambda: driver.execute_script("return window.__crmagiPopup && window.__crmagiPopup.state") == "open",
         "popup.js never logged in")
    return driver


def wait(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise RuntimeError(what)


def swarm(ws_url, origin, count):
    if not count:
        return None
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "ws_swarm.py"), "--url", ws_url, "--origin", origin,
                             "--secret", SECRET, "--count", str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    line = proc.stdout.readline().strip()
    if not line.startswith("ready"):
        raise RuntimeError("swarm did not connect: %r" % line)
    print("swarm:", line)
    return proc


SHOWN = "return (window.__crmagiPopup.shown || {})[arguments[0]] || 0"
# Remove the shown popup from the page only (the hangup ends it on the server): a dismiss message
# per call at this pace would be a flood of 15 messages a second, which the server refuses.
DISMISS = ("var n = document.querySelector('[data-crmagi-call=\"' + arguments[0] + '\"]');"
           "if (n) { n.parentNode.removeChild(n); }")


def measure(driver, agi_port, calls, pause):
    popup_ms, agi_ms = [], []
    for n in range(calls):
        call = SimulatedCall(("127.0.0.1", agi_port), "incoming", number="4930123400", callerid="+4930111111",
                             uniqueid="%d.%d" % (1795800000, n))
        started = time.time() * 1000
        first = call.start()
        agi_ms.append(first.elapsed * 1000)
        call_id = first.variables["CRM_CALL_ID"]
        shown = wait(lambda: driver.execute_script(SHOWN, call_id), "no popup for call %d" % n, timeout=10)
        popup_ms.append(shown - started)
        driver.execute_script(DISMISS, call_id)
        call.finish({"DIALSTATUS": "ANSWER", "ANSWEREDTIME": "10", "DIALEDTIME": "12", "DIALEDPEERNUMBER": "101"})
        time.sleep(pause)
    return popup_ms, agi_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000, help="idle tabs of other users")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--agi-port", type=int, default=14583)
    parser.add_argument("--ws-port", type=int, default=18089)
    parser.add_argument("--http-port", type=int, default=18000)
    args = parser.parse_args()
    origin, ws_url = "http://127.0.0.1:%d" % args.http_port, "ws://127.0.0.1:%d/ws" % args.ws_port
    database, url = create_database()
    proc = crowd = driver = None
    try:
        seed(database, args.sockets)
        proc, _ = start_server(url, args.agi_port, extra="[webpush]\nlisten = 127.0.0.1:%d\nsecret = %s\n"
                               "allowed_origins = %s\n" % (args.ws_port, SECRET, origin))
        site = static_site(args.http_port, ws_url)
        driver = browser(origin + "/page.html")
        rss_idle = rss_mb(proc.pid)
        crowd = swarm(ws_url, origin, args.sockets)
        rss_crowd = rss_mb(proc.pid)
        popup_ms, agi_ms = measure(driver, args.agi_port, args.calls, args.pause)
        report(args, popup_ms, agi_ms, rss_idle, rss_crowd, rss_mb(proc.pid))
        site.stop()
    finally:
        if driver is not None:
            driver.quit()
        if crowd is not None:
            crowd.stdin.close()
            crowd.wait(10)
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        drop_database(database)


def report(args, popup_ms, agi_ms, rss_idle, rss_crowd, rss_end):
    print("%d calls, %d other tabs connected" % (args.calls, args.sockets))
    print("%-22s %8s %8s %8s %8s" % ("", "p50 ms", "p95 ms", "p99 ms", "max ms"))
    for name, values in (("AGI incoming answered", agi_ms), ("popup in the DOM", popup_ms)):
        print("%-22s %8.1f %8.1f %8.1f %8.1f" % (name, percentile(values, 50), percentile(values, 95),
                                                 percentile(values, 99), max(values)))
    print("server RSS: %.0f MB with 1 tab, %.0f MB with %d more, %.0f MB at the end"
          % (rss_idle, rss_crowd, args.sockets, rss_end))


if __name__ == "__main__":
    main()
