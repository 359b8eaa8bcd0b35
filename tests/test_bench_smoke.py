"""CI smoke run of the benchmark harness (bench/, issue #3): tiny sizes, seconds, not the targets.

* the load generator's fast reply path and env parsing give exactly what
  agi.demo.asterisk_commands.answer() and agi.fastagi.protocol.parse_env() give (so its bytes are
  Asterisk's), on the recorded transcripts and on generated lines;
* bench/run_all.py at 2k contacts / 600 accounts / 2k leads, 20 lookups, a 3-second load at
  20 calls/s: it completes, its report has every field, and the load had zero errors.
"""
import json
import os
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ASTERISK, REPO

sys.path.insert(0, str(REPO / "bench"))

import agi_dialogue  # noqa: E402  (bench/agi_dialogue.py)
from agi.demo.asterisk_commands import Channel, answer  # noqa: E402
from agi.fastagi.protocol import parse_env  # noqa: E402
from agi.demo.simulator import env_block  # noqa: E402


def _channel(dead=False):
    chan = Channel("PJSIP/trunk-00000001", callerid="+4930111111", calleridname="Anna",
                   linkedid="1795699120.1", variables={"CRM_DIRECTION": "Inbound", "CRM_CALL": "v1|a|b",
                                                       "DIALSTATUS": "ANSWER", "EMPTY": ""})
    chan.env = parse_env(env_block("incoming", channel=chan.name, uniqueid="1795699120.1",
                                   callerid="+4930111111", context="crmagi-inbound", extension="s"))[0]
    chan.dead = dead
    return chan


def _state(chan):
    return (chan.vars, chan.functions, chan.callerid_num, chan.callerid_name, chan.soft_hangup, chan.state)


def _same(line, dead=False):
    a, b = _channel(dead), _channel(dead)
    got_a, got_b = {}, {}
    reply_a = answer(a, line, {}, got_a)
    reply_b = agi_dialogue.fast_answer(b, line, {}, got_b)
    assert reply_b == reply_a, line
    assert got_b == got_a and _state(b) == _state(a), line


def test_fast_answer_is_answer_on_the_recorded_commands():
    lines = []
    for path in sorted(ASTERISK.glob("*.agi.txt")):
        for raw in path.read_bytes().split(b"\n"):
            if raw.startswith(b"S> "):
                lines.append(raw[3:] + b"\n")
    lines += [b'SET VARIABLE CRM_CALL "v1|abc|%7C x"\n', b'SET VARIABLE CALLERID(name) "Anna \\"A\\" O\'Neil"\n',
              b"GET VARIABLE CRM_CALL\n", b"GET VARIABLE HANGUPCAUSE\n", b"GET VARIABLE EMPTY\n",
              b"GET VARIABLE UNSET\n", b'SET VARIABLE X ""\n', b"SET VARIABLE A B C\n", b"GET VARIABLE\n",
              b'SET VARIABLE X "two words"\n', b"SET VARIABLE X\ttab\n", b'SET VARIABLE X a"b"\n',
              b"set variable X y\n", b"GET VARIABLE CHANNEL(linkedid)\n", b"GET VARIABLE EXTEN\n",
              b'SET VARIABLE ARRAY(CRM_STATUS,CRM_MODULE,CALLERID(name)) "found,Contacts,Anna"\n',
              b'SET VARIABLE array(A,B) "x\\\\,y,(z,w)"\n', b"SET VARIABLE ARRAY(A,B) x\n"]
    assert len(lines) > 50
    for line in lines:
        _same(line)
        _same(line, dead=True)


_TEXT = st.text(alphabet=st.sampled_from(list('ab Z09 \t"\\()$_{}-.|\'') + ["ä", "д", "\r"]), max_size=24)


@settings(max_examples=400, deadline=None)
@given(verb=st.sampled_from([b"SET VARIABLE ", b"GET VARIABLE ", b"SET VARIABLE ARRAY(A,B) "]), rest=_TEXT,
       dead=st.booleans())
def test_fast_answer_is_answer_on_generated_lines(verb, rest, dead):
    _same(verb + rest.encode("utf-8") + b"\n", dead)


@settings(max_examples=100, deadline=None)
@given(callerid=st.text(max_size=20).filter(lambda s: "\n" not in s and "\r" not in s),
       name=st.text(max_size=20).filter(lambda s: "\n" not in s and "\r" not in s),
       args=st.lists(st.text(max_size=8).filter(lambda s: "\n" not in s and "\r" not in s), max_size=3))
def test_env_of_is_parse_env(callerid, name, args):
    env = env_block("hangup", channel="PJSIP/trunk-00000002", uniqueid="1.2", callerid=callerid,
                    calleridname=name, context="crmagi-hangup", extension="s", args=args)
    assert agi_dialogue.env_of(env) == parse_env(env)[0]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_harness_smoke_run(tmp_path):
    out = tmp_path / "report.json"
    cmd = [sys.executable, str(REPO / "bench" / "run_all.py"), "--contacts", "2000", "--accounts", "600",
           "--leads", "2000", "--iterations", "20", "--scan-iterations", "2", "--crmagi-scan-iterations", "3",
           "--rates", "20", "--duration", "3", "--no-max", "--workers", "1", "--port", str(_free_port()),
           "--json", str(out)]
    run = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    report = json.loads(out.read_text())
    print(report["table"])

    gen = report["generate"]
    assert gen["rows"]["contacts"] == 2000 and gen["rows"]["accounts"] == 600 and gen["rows"]["leads"] == 2000
    assert gen["rows"]["accounts_contacts"] > 0 and gen["duplicate_numbers"] > 0 and gen["rows_per_second"] > 0
    assert gen["load_warnings"] == 0

    # The index is either in use, or the report says in so many words that it is not.
    index = report["index"]
    assert index["note"]
    methods = {row["method"]: row for row in report["lookup"]}
    if index.get("rebuild_exit") == 0:
        assert "crmagi (index)" in methods
    else:
        assert "index not available" in index["note"] or "failed" in index["note"], index
        assert "crmagi (scan)" in methods
    assert {"yaai", "oca", "superfecta"} <= set(methods)
    crmagi = report["lookup"][0]
    assert crmagi["method"].startswith("crmagi") and crmagi["n"] == 20
    for row in report["lookup"]:
        for key in ("p50_ms", "p99_ms", "max_ms", "ratio_p50", "right", "wrong", "missed", "false+", "errors"):
            assert row[key] is not None, (row["method"], key)
        assert row["errors"] == 0, (row["method"], row["error_example"])
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert crmagi["right"] > 0 and crmagi["false+"] == 0

    (load_run,) = report["load"]
    assert load_run["target_rate"] == 20 and load_run["calls_started"] == 60
    assert load_run["error_count"] == 0, load_run["errors"]
    assert load_run["calls_completed"] == 60
    assert load_run["calls_per_min"] > 0
    for phase in ("incoming", "hangup"):
        stats = load_run[phase]
        assert stats["n"] == 60 and 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert set(load_run["crm_status"]) <= {"found", "unknown", "anonymous"}
    assert load_run["server_cpu_s"] > 0 and load_run["server_rss_mb"] > 0 and load_run["generator_cpu_s"] > 0
    assert load_run["calls_written"]["finished"] == 60
    # The AMI feed (on by default) answers and records every call: all of it reached the CRM,
    # and nothing was left in the spools at the stop.
    assert (load_run["calls_written"]["answered"], load_run["calls_written"]["recorded"]) == (60, 60)
    assert load_run["spool_left"] == {"pending": 0, "dead": 0, "kinds": {}}
    assert load_run["server_log_errors"] == 0, load_run["server_log_examples"]
    assert "lookup" in report["table"] and "load" in report["table"]


def test_ami_path_smoke_run():
    """bench/ami_path.py: every stage runs, and the effects of an answered, recorded call are one
    live op carrying its two updates (answer and recording: one transaction)."""
    import ami_path

    streams = ami_path.calls(str(ASTERISK / "01-inbound-answered.ami.txt"), 5)
    assert len(set(streams)) == 5
    for stage in ami_path.STAGES:
        seconds, writer = ami_path.run(stage, streams)
        assert seconds >= 0
    assert (writer.ops, writer.updates) == (5, 10)



def test_spool_replay_smoke_run():
    """bench/spool_replay.py (monkey-patched like crmagi serve, so in a process of its own):
    every op replays, and both the AGI writes' waits and the loop's lateness are sampled."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / "spool_replay.py"), "--ops", "400"],
                         cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["applied"] == 400
    assert report["agi_spool_ms"]["n"] > 0 and report["loop_lag_ms"]["n"] > 0
    assert "over_2_ms" in report["loop_lag_ms"]


def test_agi_session_smoke_run():
    """bench/agi_session.py: both servers get through every session (the client would hang on
    a command left unanswered; the timeout fails the test then)."""
    run = subprocess.run([sys.executable, str(REPO / "bench" / "agi_session.py"), "--sessions", "20"],
                         cwd=str(REPO), capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["crmagi", "bare"]
    assert all("20 sessions of 10 commands" in line for line in lines)


def test_agi_session_one_server_only():
    run = subprocess.run([sys.executable, str(REPO / "bench" / "agi_session.py"), "--sessions", "5", "--only", "bare"],
                         cwd=str(REPO), capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr[-3000:]
    assert [line.split()[0] for line in run.stdout.splitlines()] == ["bare"]


def test_instructions_smoke_run(tmp_path):
    """bench/instructions.py under the real callgrind: a positive count per AGI session."""
    out = tmp_path / "ins.json"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "instructions.py"), "--parts", "agi", "--small", "2",
                          "--large", "6", "--json", str(out)], cwd=str(REPO), capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(out.read_text())["agi"] > 10000, run.stdout


def test_call_steps_smoke_run(crm_url, tmp_path):
    """bench/call_steps.py on the sample SuiteCRM database: every call is looked up, started and
    finished (its Call row Held)."""
    import call_steps
    from sqlalchemy import create_engine, text

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"present": [{"caller": "+4930111111"}, {"caller": "+4930999999"}] * 2}))
    report = call_steps.run(crm_url.rsplit("/", 1)[1], str(samples), 4)
    assert (report["calls"], report["finished"]) == (4, 4)
    assert all(report[key] > 0 for key in ("lookup_us", "start_us", "finish_us"))
    engine = create_engine(crm_url)
    with engine.connect() as conn:
        held = conn.execute(text("SELECT COUNT(*) FROM calls WHERE status = 'Held' AND name LIKE '%+4930%'")).scalar()
    engine.dispose()
    assert held == 4
    assert set(call_steps.run(crm_url.rsplit("/", 1)[1], str(samples), 2, steps="start")) == {
        "calls", "lookup_us", "start_us"}


def test_call_session_runs_whole_calls_and_leaves_nothing_spooled(crm_url, tmp_path):
    """bench/call_session.py (what ``instructions.py --parts call`` counts) on the e2e database:
    every call goes through both requests and both writes."""
    from test_end_to_end import SEED, rows, seeded
    engine = seeded(crm_url, SEED)
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"present": [{"caller": "+4930111111"}, {"caller": "+4930222222"}] * 3}))
    run = subprocess.run([sys.executable, str(REPO / "bench" / "call_session.py"), "--database",
                          crm_url.rsplit("/", 1)[1], "--samples", str(samples), "--calls", "6"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("6 calls one after another") and "0 ops left in the spool" in run.stdout, run.stdout
    assert rows(engine, "SELECT COUNT(*) AS n FROM crmagi_calls WHERE ended_at IS NOT NULL "
                        "AND answered_extension = '101'")[0]["n"] == 6
    engine.dispose()


def test_write_batches_writes_every_start_in_shared_transactions(crm_url, tmp_path):
    """bench/write_batches.py (the README's starts-per-transaction figures): each start's rows,
    three starts per transaction."""
    from test_end_to_end import SEED, rows, seeded
    engine = seeded(crm_url, SEED)
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"present": [{"caller": "+4930111111"}, {"caller": "+4930222222"}] * 3}))
    run = subprocess.run([sys.executable, str(REPO / "bench" / "write_batches.py"), "--database",
                          crm_url.rsplit("/", 1)[1], "--samples", str(samples), "--starts", "6", "--per", "3"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("6 starts, 3 per transaction: MariaDB "), run.stdout
    assert rows(engine, "SELECT COUNT(*) AS n FROM crmagi_calls m JOIN calls c ON c.id = m.call_id "
                        "WHERE m.did = '4930123400' AND c.status = 'Planned'")[0]["n"] == 6
    engine.dispose()


def test_floor_and_ablated_crmagi_take_the_same_calls(tiny_bench_db, tmp_path):
    """bench/floor.py (the bare gevent + PyMySQL server) and ``load.py --ablate`` (crmagi with
    parts of a call's work taken out): the figures README compares come from runs where every
    call completed and was written."""
    import pymysql

    database, samples = tiny_bench_db
    port = _free_port()
    floor = subprocess.Popen([sys.executable, str(REPO / "bench" / "floor.py"), "--database", database,
                              "--port", str(port)], cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    try:
        assert floor.stdout.readline().startswith("floor FastAGI server on")
        floor_run = _load(tmp_path, "floor", ["--address", "127.0.0.1:%d" % port, "--server-pid", str(floor.pid),
                                              "--samples", str(samples)])
    finally:
        floor.terminate()
        floor.wait(10)
    db = pymysql.connect(host="127.0.0.1", user="root", database=database)
    with db.cursor() as cursor:
        cursor.execute("SELECT COUNT(*), COUNT(ended) FROM crmagi_floor_calls")
        assert cursor.fetchone() == (40, 40)
    db.close()
    ablated = _load(tmp_path, "ablated", ["--database", database, "--samples", str(samples), "--no-ami",
                                          "--ablate", "spool,parse,metrics", "--port", str(_free_port())])
    for run in (floor_run, ablated):
        assert (run["calls_completed"], run["error_count"]) == (40, 0), run["errors"]
        assert run["crm_status"].get("found", 0) > 0
    assert ablated["calls_written"]["finished"] == 40


def _load(tmp_path, name, args):
    out = tmp_path / ("%s.json" % name)
    run = subprocess.run([sys.executable, str(REPO / "bench" / "load.py"), "--rate", "20", "--duration", "2",
                          "--json", str(out), *args], cwd=str(REPO), capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def test_memprobe_writes_rss_and_a_snapshot_on_sigusr2(tmp_path):
    """bench/memprobe: a process whose command line says ``serve`` writes its RSS by mapping kind,
    sqlite's and malloc's own counts and, with CRMAGI_TRACEMALLOC_FRAMES, a tracemalloc snapshot on
    each SIGUSR2; others are left alone."""
    import signal
    import time
    import tracemalloc

    env = dict(os.environ, CRMAGI_MEMPROBE=str(tmp_path), CRMAGI_TRACEMALLOC_FRAMES="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "bench" / "memprobe"), str(REPO)]))
    wait = ("import sqlite3, time; db = sqlite3.connect(':memory:'); db.execute('CREATE TABLE t (x)');"
            "print('up', flush=True); time.sleep(30)")
    serve = subprocess.Popen([sys.executable, "-c", wait, "serve"], env=env, stdout=subprocess.PIPE)
    other = subprocess.Popen([sys.executable, "-c", wait, "check"], env=env, stdout=subprocess.PIPE)
    try:
        for proc in (serve, other):
            assert proc.stdout.readline() == b"up\n"
        os.kill(serve.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not (tmp_path / ("snap-%d-01" % serve.pid)).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = (tmp_path / ("mem-%d.txt" % serve.pid)).read_text()
        assert line.startswith("1 rss_kb=") and int(line.split()[1][7:]) > 1000 and "objects=" in line
        fields = dict(word.split("=") for word in line.split()[1:5])
        assert int(fields["sqlite"]) > 0                     # the open connection's schema and cache
        in_use, free, mapped = map(int, fields["malloc"].split("/"))
        assert in_use > 100 and free >= 0 and mapped >= 0
        assert tracemalloc.Snapshot.load(str(tmp_path / ("snap-%d-01" % serve.pid))).statistics("filename")
        os.kill(other.pid, signal.SIGUSR2)          # no handler there: the default action ends it
        assert other.wait(timeout=10) == -signal.SIGUSR2
        assert not any(str(other.pid) in p.name for p in tmp_path.iterdir())
    finally:
        for proc in (serve, other):
            proc.kill()
            proc.wait()


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _command_line(pid):
    """b"" for a process that is gone (it may end between listing and reading)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def test_a_terminated_load_run_leaves_no_generator_or_server_behind(tiny_bench_db):
    """``kill`` of bench/load.py (SIGTERM) stops what it started.  Before, its generator process
    went on placing calls for the rest of ``--duration`` at the port the next run's servers took
    (most likely what spoiled a 10-minute run at 200 calls/s in the thirteenth session)."""
    import signal
    import time
    from common import children

    database, samples = tiny_bench_db
    run = subprocess.Popen([sys.executable, str(REPO / "bench" / "load.py"), "--database", database, "--samples",
                            str(samples), "--rate", "20", "--duration", "120", "--port", str(_free_port())],
                           cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, started = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            started = children(run.pid)
            commands = [_command_line(p) for p in started if _alive(p)]
            if any(b"load_worker.py" in c for c in commands) and any(b"serve" in c for c in commands):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("load.py did not start its server and generator: %s" % started)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in started if _alive(p)], "left running after load.py ended"
    finally:
        run.kill()
        for pid in children(run.pid) + [p for p in started if _alive(p)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_lookup_compare_passes_look_the_same_numbers_up_again(tiny_bench_db, tmp_path):
    """``lookup_compare.py --passes 2 [--clear-parse-cache]``: a row per pass over the same numbers,
    with the same answers (README: "Where the rest of the tail goes")."""
    database, samples = tiny_bench_db
    for extra in ([], ["--clear-parse-cache"]):
        out = tmp_path / "lookups.json"
        subprocess.run([sys.executable, str(REPO / "bench" / "lookup_compare.py"), "--database", database,
                        "--samples", str(samples), "--methods", "crmagi", "--iterations", "40", "--passes", "2",
                        "--json", str(out), *extra], cwd=str(REPO), check=True, capture_output=True, timeout=120)
        rows = json.loads(out.read_text())["results"]
        assert [r["method"] for r in rows] == ["crmagi (index)", "crmagi pass 2"]
        assert rows[0]["n"] == rows[1]["n"] == 40 and rows[0]["errors"] == 0
        assert [rows[0][k] for k in ("right", "wrong", "missed")] == [rows[1][k] for k in ("right", "wrong", "missed")]
        assert rows[0]["right"] > 20


@pytest.fixture(scope="module")
def tiny_bench_db(tmp_path_factory):
    """A 200/40/200 generate.py database with its phone index rebuilt: (name, samples file).
    Shared by this module's tests: the floor and load runs add their calls to it."""""
    from common import drop_database

    folder = tmp_path_factory.mktemp("tiny")
    samples, report = folder / "samples.json", folder / "gen.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "generate.py"), "--contacts", "200", "--accounts", "40",
                    "--leads", "200", "--samples", str(samples), "--json", str(report)],
                   cwd=str(REPO), check=True, capture_output=True, timeout=120)
    database = json.loads(report.read_text())["database"]
    try:
        ini = folder / "crmagi.ini"
        ini.write_text("[crm]\nurl = mysql+pymysql://root@127.0.0.1:3306/%s\n"
                       "[lookup]\ndefault_region = DE\n" % database)
        for verb in ("install", "rebuild"):
            subprocess.run([sys.executable, "-m", "agi.cli", "index", verb, "-c", str(ini)], cwd=str(REPO),
                           check=True, capture_output=True, timeout=120)
        yield database, samples
    finally:
        drop_database(database)


def test_the_statement_count_sees_inside_a_compound_statement():
    """bench/load_probes.py counts statements per call from MariaDB's general log, where a
    transaction of crmagi's hot path is one ``BEGIN NOT ATOMIC ... END`` block."""
    from load_probes import split_statements

    block = "BEGIN NOT ATOMIC INSERT INTO `t` VALUES ('a;b', 'END');\nUPDATE `u` SET `v` = 1;\nCOMMIT;\nEND"
    assert split_statements(block) == ["INSERT INTO `t` VALUES ('a;b', 'END')", "UPDATE `u` SET `v` = 1", "COMMIT"]
    assert split_statements("INSERT INTO `t` VALUES (';');\nCOMMIT") == ["INSERT INTO `t` VALUES (';')", "COMMIT"]
