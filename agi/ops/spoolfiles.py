"""The spool files of a config, and what `crmagi check` says about them.

With ``[agi] workers`` > 1 each worker keeps its own file (agi/ops/workers.py); an
operator asks about all of them at once.  Reading never creates a file that is
not there: a missing spool simply holds nothing.
"""
import os
import time
from typing import List

from crmsync.spool import Spool

from agi.ops.workers import worker_spool

VOLATILE_FS = {"tmpfs", "ramfs"}
VOLATILE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")


def spool_paths(config) -> List[str]:
    path = config.agi.spool
    if config.agi.workers > 1:
        return [worker_spool(path, index) for index in range(config.agi.workers)]
    return [path]


def open_existing(config):
    """(path, Spool) for every spool file that exists."""
    for path in spool_paths(config):
        if os.path.exists(path):
            yield path, Spool(path, max_bytes=int(config.agi.spool_max_mb * 1e6))


def _mount_type(path, mounts="/proc/mounts"):
    """File system type of the mount holding ``path`` ('' when unknown)."""
    real, best, kind = os.path.realpath(path), "", ""
    try:
        with open(mounts, encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return ""
    return kind


def volatile_reason(path, mounts="/proc/mounts"):
    """Why a spool at ``path`` may not survive a reboot, or None."""
    folder = os.path.dirname(os.path.abspath(path))
    real = os.path.realpath(folder)
    for volatile in VOLATILE_DIRS:
        if real == volatile or real.startswith(volatile + "/"):
            return "%s is under %s, which many systems empty at boot" % (path, volatile)
    kind = _mount_type(real if os.path.exists(real) else os.path.dirname(real), mounts)
    if kind in VOLATILE_FS:
        return "%s is on a %s file system, lost at reboot" % (path, kind)
    return None


def _age(seconds):
    if seconds is None:
        return "-"
    if seconds < 120:
        return "%.0f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)


def report(config, echo) -> List[str]:
    """Echo depth, oldest age and dead letters of every spool; problems: dead letters."""
    problems = []
    for path in spool_paths(config):
        reason = volatile_reason(path)
        if reason:
            echo("WARNING [agi] spool: %s; calls waiting there at a reboot would be lost "
                 "(set [agi] spool, or use systemd's StateDirectory)" % reason)
    found = False
    for path, spool in open_existing(config):
        found = True
        try:
            stats = spool.stats()
        finally:
            spool.close()
        echo("spool %s: %d pending, oldest %s, %d dead letter(s), %.1f MB%s" % (
            path, stats.pending, _age(stats.oldest_age), stats.dead, stats.size_bytes / 1e6,
            " (past [agi] spool_max_mb)" if stats.full else ""))
        if stats.dead:
            problems.append("[agi] spool: %d write(s) in %s could not be applied and wait in the dead letters; "
                            "see `crmagi spool list`, then `crmagi spool retry --all` once fixed"
                            % (stats.dead, path))
        if stats.full:
            problems.append("[agi] spool_max_mb: %s holds %.1f MB" % (path, stats.size_bytes / 1e6))
    if not found:
        echo("spool %s: empty (no file yet)" % ", ".join(spool_paths(config)))
    return problems


def when(timestamp):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp)) + "Z"
