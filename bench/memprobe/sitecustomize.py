"""Memory probe for `crmagi serve` under bench/load.py (issue #12: what grows, and where it stops).

Put this folder first on PYTHONPATH and name an output folder; every process whose command
line says ``serve`` then writes, on each SIGUSR2, one line of its RSS by mapping kind
(/proc/self/smaps: [anon], [heap], shared objects ...), its count of live objects, what
sqlite says it holds (``sqlite=``: every spool connection's page cache and statements) and what
glibc's malloc holds (``malloc=`` in use / free / mmapped, kB, summed over its arenas: bytes freed
but kept by malloc are "free"), and with CRMAGI_TRACEMALLOC_FRAMES=N (N >= 1) a tracemalloc
snapshot to compare later (tracemalloc costs about twice the CPU: run it at a rate the box keeps):

    CRMAGI_MEMPROBE=/tmp/mem PYTHONPATH=bench/memprobe:. python bench/load.py ... &
    while sleep 60; do pkill -USR2 -f 'agi.cli serve'; done

    python -c "import tracemalloc as t; a, b = (t.Snapshot.load(f) for f in ('A', 'B'));
               [print(s) for s in b.compare_to(a, 'lineno')[:20]]"

A signal, not a thread: a thread started this early, before gevent patches threading,
broke the import lock of `python -m agi.cli`.
"""
import ctypes
import ctypes.util
import os
import sys

OUT = os.environ.get("CRMAGI_MEMPROBE")


def _rss_by_kind():
    kinds, name = {}, None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:
                path = parts[5] if len(parts) > 5 else "[anon]"
                name = path if path.startswith("[") else (".so" if ".so" in path else "file")
            elif parts and parts[0] == "Rss:":
                kinds[name] = kinds.get(name, 0) + int(parts[1])
    return kinds


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _libraries():
    """sqlite and libc, found at start: find_library runs ldconfig in a subprocess, not a thing
    for a signal handler in a gevent-patched process (found there, the workers died at the
    first signal)."""
    sqlite = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    return sqlite, libc


def _c_heap():
    """sqlite's own count of its memory, and malloc's in use / free / mmapped, in kB."""
    sqlite, libc = _c_heap.libraries
    info = libc.mallinfo2()
    return "sqlite=%d malloc=%d/%d/%d" % (sqlite.sqlite3_memory_used() // 1024, info.uordblks // 1024,
                                          info.fordblks // 1024, info.hblkhd // 1024)


def _dump(signum, frame):
    import gc
    import tracemalloc

    _dump.count += 1
    kinds = _rss_by_kind()
    top = ", ".join("%s %d" % kv for kv in sorted(kinds.items(), key=lambda kv: -kv[1])[:5])
    with open(os.path.join(OUT, "mem-%d.txt" % os.getpid()), "a") as out:
        out.write("%d rss_kb=%d objects=%d %s (%s)\n" % (_dump.count, sum(kinds.values()), len(gc.get_objects()),
                                                       _c_heap(), top))
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(os.path.join(OUT, "snap-%d-%02d" % (os.getpid(), _dump.count)))


_dump.count = 0

if OUT and "serve" in sys.argv:
    import signal
    import tracemalloc

    frames = int(os.environ.get("CRMAGI_TRACEMALLOC_FRAMES", "0"))
    if frames > 0:
        tracemalloc.start(frames)
    _c_heap.libraries = _libraries()
    signal.signal(signal.SIGUSR2, _dump)
