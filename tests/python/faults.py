"""Issue 16: one error per FATAL, as psycopg 3 sees it.

Run by tests/faults.rs with PGCAT_PORT (the pooler: pools `tx`, transaction mode, and `sess`,
session mode), DIRECT_PORT (the PostgreSQL primary), PGCAT_USER, PGCAT_PASSWORD and SHARD_DB
(the database both pools use). For each case a query's backend is terminated from a direct
connection while psycopg waits for it; prints `CHECK <case> ok` when psycopg reported exactly
what it reports against PostgreSQL itself (or, in transaction mode between transactions, one
AdminShutdown for that statement and a usable connection), and exits 1 on anything else.
"""

import os
import sys
import threading
import time

import psycopg

PORT = os.environ["PGCAT_PORT"]
DIRECT = os.environ["DIRECT_PORT"]
USER = os.environ["PGCAT_USER"]
PASSWORD = os.environ["PGCAT_PASSWORD"]
DB = os.environ["SHARD_DB"]

failures = []


def killer(marker):
    """Terminates the backend running the query tagged `marker`, once it runs."""
    with psycopg.connect(
        f"host=127.0.0.1 port={DIRECT} user=postgres password=postgres dbname=postgres",
        autocommit=True,
    ) as admin:
        deadline = time.time() + 10
        while time.time() < deadline:
            n = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE %s AND state = 'active' AND pid <> pg_backend_pid()",
                (f"%{marker}%",),
            ).fetchone()[0]
            if n:
                return
            time.sleep(0.02)
    failures.append(f"{marker}: the query never ran")


def killed(conn, marker):
    """Runs a long query on `conn` while its backend is terminated: the exception raised."""
    t = threading.Thread(target=killer, args=(marker,))
    t.start()
    try:
        conn.execute(f"SELECT pg_sleep(30) /* {marker} */")
    except Exception as e:  # noqa: BLE001 - the class is what is checked
        return e
    finally:
        t.join()
    return None


def describe(e):
    severity = getattr(getattr(e, "diag", None), "severity_nonlocalized", None)
    return f"{type(e).__name__}: {str(e).strip()!r} sqlstate={getattr(e, 'sqlstate', None)} severity={severity}"


def after(conn):
    """What the connection does next: 'closed', or the value of SELECT 1, or the error."""
    if conn.closed:
        return "closed"
    try:
        return conn.execute("SELECT 1").fetchone()[0]
    except Exception as e:  # noqa: BLE001
        return f"then {describe(e)}"


def case(name, dsn, autocommit, setup, expect):
    conn = psycopg.connect(dsn, autocommit=autocommit)
    if setup:
        conn.execute(setup)
    e = killed(conn, f"{name}-{time.time()}")
    got = (describe(e) if e else None, after(conn))
    conn.close()
    if expect is not None and got != expect:
        failures.append(f"{name}: {got} but expected {expect}")
        print(f"FAIL {name}: {got}\n  expected {expect}", flush=True)
        return got
    print(f"CHECK {name} ok: {got}", flush=True)
    return got


pooled = f"host=127.0.0.1 port={PORT} user={USER} password={PASSWORD}"
direct = f"host=127.0.0.1 port={DIRECT} user=postgres password=postgres dbname={DB}"

# PostgreSQL itself is the oracle for a session that dies.
oracle = case("direct-in-transaction", direct, False, None, None)
case("session", pooled + " dbname=sess", False, None, oracle)
case("transaction-in-transaction", pooled + " dbname=tx", False, None, oracle)
# Between transactions in transaction mode: that statement fails, once; the client goes on.
case(
    "transaction-autocommit",
    pooled + " dbname=tx",
    True,
    None,
    (
        "AdminShutdown: 'terminating connection due to administrator command' sqlstate=57P01"
        " severity=ERROR",
        1,
    ),
)

if failures:
    sys.exit(1)
