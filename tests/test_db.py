"""crmsync.db engines against real MariaDB: stale pooled connections and the read-only pool."""
from sqlalchemy import text

from crmsync import db


def test_idle_connection_killed_by_the_server_is_replaced_on_checkout(crm_url_module, monkeypatch):
    engine = db.make_engine(crm_url_module, pool_size=1)
    with engine.connect() as conn:
        first = conn.execute(text("SELECT CONNECTION_ID()")).scalar()
    killer = db.make_engine(crm_url_module, pool_size=1)
    with killer.connect() as conn:
        conn.execute(text("KILL %d" % first))
    monkeypatch.setattr(db, "IDLE_PING", 0.0)        # the pooled connection counts as idle
    with engine.connect() as conn:                    # would raise "server has gone away" unpinged
        second = conn.execute(text("SELECT CONNECTION_ID()")).scalar()
    assert second != first
    engine.dispose()
    killer.dispose()


def test_busy_connections_are_not_pinged(crm_url_module):
    engine = db.make_engine(crm_url_module, pool_size=1)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with engine.connect() as conn:
        before = conn.execute(text("SHOW SESSION STATUS LIKE 'Com_admin_commands'")).all()
    with engine.connect() as conn:
        after = conn.execute(text("SHOW SESSION STATUS LIKE 'Com_admin_commands'")).all()
    assert before == after                           # COM_PING counts as an admin command
    engine.dispose()


def test_read_only_engine_autocommits_and_skips_the_rollback(crm_url_module):
    engine = db.make_engine(crm_url_module, pool_size=1, read_only=True)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with engine.connect() as conn:
        rollbacks = conn.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'")).all()[0][1]
        autocommit = conn.execute(text("SELECT @@autocommit")).scalar()
    assert autocommit == 1 and rollbacks == "0"
    engine.dispose()


def test_connections_do_not_build_a_tls_context_unless_the_url_asks(crm_url_module, monkeypatch):
    """PyMySQL >= 1.2 builds an ssl.SSLContext (~30 ms of CPU, blocking gevent) on every
    connect unless TLS is disabled; crmagi reconnects a lot while the CRM is down."""
    import ssl

    built = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: built.append(1) or real(*a, **k))
    engine = db.make_engine(crm_url_module, pool_size=1)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    assert built == []
