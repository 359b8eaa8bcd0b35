"""Shared fixtures.  gevent's monkey-patching comes first, before anything imports socket."""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRMAGI_SHARED", REPO.parent / "shared"))
SUITECRM = SHARED / "fixtures" / "suitecrm"
ASTERISK = SHARED / "fixtures" / "asterisk"
MARIADB_HOST = os.environ.get("CRMAGI_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("CRMAGI_TEST_MARIADB_PORT", "3306"))


# Under CI (CI=true, as .ci/run runs) a missing browser, peer or service fails its tests;
# on a developer's machine it skips them with the reason.
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason):
    """Skip, or under CI fail, a test that cannot run here."""
    if UNDER_CI:
        pytest.fail("%s (CI installs and starts what the tests need: see .ci/run)" % reason)
    pytest.skip(reason)


def _mariadb(*args, stdin=None, database=None):
    cmd = ["mariadb", "-h", MARIADB_HOST, "-P", str(MARIADB_PORT), "-uroot"]
    if database:
        cmd.append(database)
    cmd.extend(args)
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as handle:
        subprocess.run(cmd, stdin=handle, check=True, capture_output=True)


def mariadb_url(database):
    return "mysql+pymysql://root@%s:%d/%s" % (MARIADB_HOST, MARIADB_PORT, database)


def create_suitecrm_database(sample=True):
    """A fresh database with the real SuiteCRM 7.14.6 schema (and its sample rows)."""
    name = "crmagi_test_" + uuid.uuid4().hex[:12]
    _mariadb("-e", "CREATE DATABASE %s CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci" % name)
    _mariadb(stdin=SUITECRM / "schema.sql", database=name)
    if sample:
        _mariadb(stdin=SUITECRM / "sample-data.sql", database=name)
    return name


def drop_database(name):
    _mariadb("-e", "DROP DATABASE IF EXISTS %s" % name)


@pytest.fixture
def crm_url():
    """URL of a fresh SuiteCRM database with sample data, dropped after the test."""
    name = create_suitecrm_database()
    yield mariadb_url(name)
    drop_database(name)


@pytest.fixture(scope="module")
def crm_url_module():
    """Like crm_url, shared by the tests of one module (they must not depend on each other's rows)."""
    name = create_suitecrm_database()
    yield mariadb_url(name)
    drop_database(name)
