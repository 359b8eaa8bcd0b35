"""Reconciliation of a fault campaign: what each placed call should have left in SuiteCRM,
against what is there, and the table printed at the end.

Expectations are written from the plan, independently of crmagi's code (only the call id
is crmagi's definition: uuid5 of ``[agi] system_name``/linkedid):

* a known number (inbound caller or outbound dialled) -> parent = that record, plus its
  calls_contacts / calls_leads row for Contacts / Leads (Accounts: the parent alone);
* an anonymous or unknown inbound caller -> the virtual account ``[lookup] anonymous_account``;
* an unknown outbound number -> no parent;
* status Held when Dial answered with talk time, else Not Held; duration_hours/minutes =
  the talk time with partial minutes rounded up;
* exactly one ``calls`` row and one ``crmagi_calls`` row per linkedid, one link row.

Every call is checked, also those whose AGI requests found crmagi down: a call whose
first request was refused is rebuilt by its hangup request, and one whose hangup request
was refused or cut by kill -9 (crmagi never set CRM_HANGUP=done) is kept in AstDB by the
include for a later hangup request to collect (agi/fastagi/ended.py).
"""
import os
import time

from crmsync.calls import CallStore

LINKS = {"Contacts": ("calls_contacts", "contact_id"), "Leads": ("calls_leads", "lead_id")}


def expected(call, anonymous_account):
    dial = call["dial"]
    talk = int(dial.get("ANSWEREDTIME") or 0) if dial["DIALSTATUS"] == "ANSWER" else 0
    if call["module"]:
        parent = (call["module"], call["record"])
    elif call["direction"] == "in":
        parent = ("Accounts", anonymous_account)
    else:
        parent = (None, None)
    minutes = (talk + 59) // 60
    return {"parent": parent, "virtual": anonymous_account, "link": LINKS.get(call["module"]) if call["module"] else None,
            "status": "Held" if dial["DIALSTATUS"] == "ANSWER" and talk > 0 else "Not Held",
            "duration": (minutes // 60, minutes % 60)}


def _rows(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def count_calls(conn):
    return _rows(conn, "SELECT COUNT(*) FROM calls")[0][0]


def fetch(conn, epoch, calls_before):
    """Everything the campaign's calls wrote, keyed for the checks; ``calls_before``: the
    calls rows there were before (the sample data), so that rows no placed call explains
    (a second row for one call, under another id) are counted too."""
    like = "%d.%%" % epoch
    crmagi = {}
    for call_id, linkedid in _rows(conn, "SELECT call_id, linkedid FROM crmagi_calls WHERE linkedid LIKE %s",
                                   (like,)):
        crmagi.setdefault(linkedid, []).append(call_id)
    calls = {r[0]: r[1:] for r in _rows(
        conn, "SELECT id, parent_type, parent_id, status, duration_hours, duration_minutes, deleted FROM calls "
              "WHERE id IN (SELECT call_id FROM crmagi_calls WHERE linkedid LIKE %s)", (like,))}
    links = {}
    for table, column in LINKS.values():
        for call_id, target in _rows(conn, "SELECT call_id, %s FROM %s WHERE deleted=0 AND call_id IN "
                                           "(SELECT call_id FROM crmagi_calls WHERE linkedid LIKE %%s)"
                                     % (column, table), (like,)):
            links.setdefault(call_id, []).append((table, target))
    return crmagi, calls, links, count_calls(conn) - calls_before - len(calls)


def _overlaps(session, windows):
    start, end = session["t0"], session["t0"] + session["ms"] / 1000.0
    return any(start <= w_end and end >= w_start for w_start, w_end in windows)


RECOVERY = 5.0    # seconds after a fault ends that are still blamed on it


def _during(when, faults):
    """The latest fault going on (or just over) at wall time ``when``, else "no fault"."""
    kind = "no fault"
    for fault in sorted(faults, key=lambda f: f["start"]):
        if fault["start"] <= when <= fault["end"] + RECOVERY:
            kind = fault["kind"]
    return kind


def reconcile(plan, results, rows, system_name, anonymous_account, down_windows, limit_ms, faults=()):
    """The campaign's verdict as a dict (see print_table)."""
    crmagi, calls, links, unexplained = rows
    by_serial = {r["serial"]: r for r in results}
    out = {"placed": len(plan), "written": 0, "wrong": 0, "duplicated": 0, "missing": 0,
           "crmagi_down_in": 0, "crmagi_down_hangup": 0, "rebuilt_logged": 0, "ended_while_down": 0, "not_run": 0,
           "max_answer_ms": {"incoming": 0.0, "hangup": 0.0}, "over_timeout": 0, "over_examples": [],
           "over_during": {}, "wrong_during": {}, "missing_during": {},
           "reasons": {}, "examples": {}, "crm_status": {}, "unexplained_calls_rows": unexplained}
    for call in plan:
        result = by_serial.get(call["serial"])
        if result is None or "hangup" not in result:
            out["not_run"] += 1
            continue
        down = {}
        for name in ("in", "hangup"):
            session = result[name]
            down[name] = session["state"] == "refused" or _overlaps(session, down_windows)
            if down[name]:
                out["crmagi_down_in" if name == "in" else "crmagi_down_hangup"] += 1
            elif session["state"] != "ok" or session["ms"] > limit_ms:
                out["over_timeout"] += 1
                during = _during(session["t0"], faults)
                out["over_during"][during] = out["over_during"].get(during, 0) + 1
                if len(out["over_examples"]) < 5:
                    out["over_examples"].append((call["linkedid"], name, session["state"], round(session["ms"], 1)))
            if not down[name]:
                key = "incoming" if name == "in" else "hangup"
                out["max_answer_ms"][key] = max(out["max_answer_ms"][key], session["ms"])
        status = result["in"]["status"] or ("(crmagi down)" if down["in"] else "(none)")
        out["crm_status"][status] = out["crm_status"].get(status, 0) + 1
        call_ids = crmagi.get(call["linkedid"], [])
        call_id = CallStore.call_id_for(system_name, call["linkedid"])
        if len(call_ids) > 1 or len(links.get(call_id, [])) > 1:
            out["duplicated"] += 1
            _example(out, "duplicated", call, call_ids)
            continue
        row = calls.get(call_id)
        if row is None or call_ids != [call_id]:
            out["missing"] += 1
            during = _during(result["in"]["t0"], faults)
            out["missing_during"][during] = out["missing_during"].get(during, 0) + 1
            _example(out, "missing", call, call_ids)
            continue
        out["written"] += 1
        if down["in"]:
            out["rebuilt_logged"] += 1
        if down["hangup"]:
            out["ended_while_down"] += 1
        problems = _problems(call, expected(call, anonymous_account), row, links.get(call_id, []))
        if problems:
            out["wrong"] += 1
            during = _during(result["in"]["t0"], faults)
            out["wrong_during"][during] = out["wrong_during"].get(during, 0) + 1
            for problem in problems:
                out["reasons"][problem] = out["reasons"].get(problem, 0) + 1
                _example(out, problem, call, row)
    out["duplicated"] += max(0, unexplained)
    return out


def _problems(call, want, row, links):
    parent_type, parent_id, status, hours, minutes, deleted = row
    problems = []
    if (parent_type or None, parent_id or None) != want["parent"]:
        got = _describe(parent_type, parent_id, want["virtual"])
        if got == _describe(*want["parent"], want["virtual"]):
            got += " (another record)"
        problems.append("parent %s instead of %s (%s %s)" % (
            got, _describe(*want["parent"], want["virtual"]), call["direction"], call["kind"]))
    if want["link"] and links != [(want["link"][0], call["record"])]:
        problems.append("%s row missing (%s %s)" % (want["link"][0], call["direction"], call["kind"]))
    if not want["link"] and links:
        problems.append("unexpected link row (%s %s)" % (call["direction"], call["kind"]))
    if status != want["status"]:
        problems.append("status %s instead of %s" % (status, want["status"]))
    elif (hours, minutes) != want["duration"]:
        problems.append("duration %s:%s instead of %d:%d" % ((hours, minutes) + want["duration"]))
    if deleted:
        problems.append("deleted")
    return problems


def _describe(parent_type, parent_id, virtual):
    return "virtual account" if parent_id and parent_id == virtual else (parent_type or "none")


def _example(out, reason, call, detail):
    examples = out["examples"].setdefault(reason, [])
    if len(examples) < 3:
        examples.append("%s %s %s %s: %s" % (call["linkedid"], call["direction"], call["kind"],
                                            call["callerid"] if call["direction"] == "in" else call["number"], detail))


def _by(counts):
    """The breakdown by fault for the table, e.g. " (db-stop 3, no fault 1)", or an empty string."""
    if not counts:
        return ""
    return " (%s)" % ", ".join("%s %d" % kv for kv in sorted(counts.items(), key=lambda kv: -kv[1]))


def _cpu(cpu, placed):
    """Where the two cores went while the calls ran: crmagi (all processes, per call too),
    the harness (driver, AMI feed, faults), and everything else (MariaDB, other work)."""
    wall = max(cpu["wall"], 1e-9)
    harness = cpu["harness"] + cpu["driver"]
    return "crmagi %.2f cores (%.1f ms per call), harness %.2f, MariaDB and the rest %.2f, of %d" % (
        cpu["crmagi"] / wall, 1000.0 * cpu["crmagi"] / max(placed, 1), harness / wall,
        max(0.0, cpu["busy"] - cpu["crmagi"] - harness) / wall, os.cpu_count())


def print_table(report, stream):
    r, v = report, report["verdict"]
    print("fault campaign: %g calls/s for %gs, [agi] timeout %.2fs, workers %d, %s" % (
        r["rate"], r["duration"], r["timeout"], r["workers"], time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        file=stream)
    rows = [("placed", v["placed"]), ("written", v["written"]), ("wrong", "%d%s" % (v["wrong"], _by(v["wrong_during"]))),
            ("duplicated", "%d (calls rows of no placed call: %d)" % (v["duplicated"], v["unexplained_calls_rows"])),
            ("missing", "%d%s" % (v["missing"], _by(v["missing_during"]))),
            ("max answer time", "incoming %.1f ms, hangup %.1f ms" % (v["max_answer_ms"]["incoming"],
                                                                      v["max_answer_ms"]["hangup"])),
            ("answers over timeout+50ms", "%d%s" % (v["over_timeout"], _by(v["over_during"]))),
            ("faults injected", ", ".join("%s %d" % kv for kv in sorted(r["faults_by_kind"].items())) or "none"),
            ("crmagi down: AGI refused/cut", "incoming %d, hangup %d" % (v["crmagi_down_in"],
                                                                         v["crmagi_down_hangup"])),
            ("  of them written", "started while down %d (rebuilt by the hangup AGI), ended while down %d "
                                  "(collected from AstDB)" % (v["rebuilt_logged"], v["ended_while_down"])),
            ("CRM_STATUS answered", ", ".join("%s %d" % kv for kv in sorted(v["crm_status"].items()))),
            ("achieved rate", "%.1f calls/s (%d started late)" % (r["achieved_rate"], r["late"])),
            ("spool at the end", "%d pending, %d dead letters" % (r["spool_left"], r.get("spool_dead", 0))),
            ("AMI", "%(connections)d logins, %(drops)d drops, %(calls_streamed)d calls streamed, "
                    "%(calls_unseen)d while not logged in" % r["ami"]),
            ("crmagi log", "%(lines)d lines, %(errors)d errors" % r["server_log"]),
            ("CPU while calls ran", _cpu(r["cpu"], v["placed"]))]
    if v["not_run"]:
        rows.insert(5, ("not run (driver stopped)", v["not_run"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print("  %-*s  %s" % (width, key, value), file=stream)
    for reason, count in sorted(v["reasons"].items(), key=lambda kv: -kv[1]):
        print("  wrong: %d x %s" % (count, reason), file=stream)
    for reason, examples in v["examples"].items():
        for example in examples:
            print("    e.g. [%s] %s" % (reason, example), file=stream)
    for example in v["over_examples"]:
        print("    slow: linkedid %s %s session %s %.1f ms" % tuple(example), file=stream)
    for fault in r["faults"]:
        print("  fault %-12s at %6.1fs for %5.1fs%s" % (fault["kind"], fault["at"], fault["took"],
                                                        "  ERROR " + fault["error"] if fault.get("error") else ""),
              file=stream)
