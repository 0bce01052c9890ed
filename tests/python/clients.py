"""Issue 3, Must show 3: psycopg 3 and asyncpg through the pooler in transaction mode.

Run by tests/prepared.rs as `python clients.py psycopg|asyncpg` with PGCAT_HOST, PGCAT_PORT,
PGCAT_USER, PGCAT_PASSWORD, PGCAT_DB, PGCAT_TABLE in the environment. Several connections share
a small pool; each does reads, writes to the table and transactions, and checks every result.
Prints `CHECK <name> ok` for each check that held on every worker, `FAIL ...` otherwise, and
exits 0 only if nothing failed.
"""

import asyncio
import os
import random
import sys
import threading
import traceback

HOST = os.environ["PGCAT_HOST"]
PORT = int(os.environ["PGCAT_PORT"])
USER = os.environ["PGCAT_USER"]
PASSWORD = os.environ["PGCAT_PASSWORD"]
DB = os.environ["PGCAT_DB"]
TABLE = os.environ["PGCAT_TABLE"]

WORKERS = 8
ITERATIONS = 150

_lock = threading.Lock()
_passed = {}  # check name -> number of workers it held on
_failures = []


def ok(name):
    with _lock:
        _passed[name] = _passed.get(name, 0) + 1


def fail(msg):
    with _lock:
        _failures.append(msg)


def expect(name, got, want, where):
    if got != want:
        raise AssertionError(f"{name} ({where}): got {got!r}, want {want!r}")


def finish(expected_per_check):
    for name, count in sorted(_passed.items()):
        want = expected_per_check.get(name, 1)
        if count >= want:
            print(f"CHECK {name} ok", flush=True)
        else:
            print(f"FAIL {name}: held on {count} of {want} workers", flush=True)
            _failures.append(name)
    for f in _failures:
        print(f"FAIL {f}", flush=True)
    sys.exit(1 if _failures else 0)


# ------------------------------------------------------------------------------------------
# psycopg 3
# ------------------------------------------------------------------------------------------


def run_psycopg():
    import psycopg

    conninfo = f"host={HOST} port={PORT} user={USER} password={PASSWORD} dbname={DB} connect_timeout=30"
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {TABLE}")
        c.execute(f"CREATE TABLE {TABLE} (worker int, i int, v bigint, PRIMARY KEY (worker, i))")

    def worker(w):
        rng = random.Random(w)
        # Odd workers use psycopg's default (implicit transactions, explicit commit).
        autocommit = w % 2 == 0
        try:
            with psycopg.connect(conninfo, prepare_threshold=0, autocommit=autocommit) as conn:
                expected_count, expected_sum = 0, 0

                def commit():
                    if not autocommit:
                        conn.commit()

                for i in range(ITERATIONS):
                    a, b = rng.randint(-10**12, 10**12), rng.randint(-10**12, 10**12)
                    row = conn.execute(
                        "SELECT %s::int8 + %s::int8, %s::text || 'y'", (a, b, f"w{w}-{i}")
                    ).fetchone()
                    expect("read", row, (a + b, f"w{w}-{i}y"), f"worker {w} iter {i}")
                    if i % 3 == 0:
                        v = rng.randint(1, 1000)
                        conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", (w, i, v))
                        commit()
                        expected_count += 1
                        expected_sum += v
                    if i % 10 == 0:
                        v1, v2 = rng.randint(1, 1000), rng.randint(1, 1000)
                        with conn.transaction():
                            conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", (w, 100000 + i, v1))
                            conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", (w, 200000 + i, v2))
                            inside = conn.execute(
                                f"SELECT count(*), coalesce(sum(v), 0) FROM {TABLE} WHERE worker = %s", (w,)
                            ).fetchone()
                            expect(
                                "in-transaction sum",
                                tuple(inside),
                                (expected_count + 2, expected_sum + v1 + v2),
                                f"worker {w} iter {i}",
                            )
                        commit()
                        expected_count += 2
                        expected_sum += v1 + v2
                    if i % 25 == 0:
                        with conn.transaction():
                            conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", (w, 300000 + i, 999))
                            raise psycopg.Rollback()
                        commit()
                        gone = conn.execute(
                            f"SELECT count(*) FROM {TABLE} WHERE worker = %s AND i = %s", (w, 300000 + i)
                        ).fetchone()[0]
                        commit()
                        expect("rolled back row", gone, 0, f"worker {w} iter {i}")
                commit()
                ok("psycopg.prepared_reads")
                ok("psycopg.writes")
                ok("psycopg.transactions")
                ok("psycopg.rollback")

                # Pipeline mode: many statements before one Sync.
                with conn.pipeline():
                    curs = [(k, conn.execute("SELECT %s::int4 * 2, %s::text", (k, f"p{k}"))) for k in range(60)]
                for k, cur in curs:
                    expect("pipeline read", cur.fetchone(), (2 * k, f"p{k}"), f"worker {w} k {k}")
                ok("psycopg.pipeline_reads")

                with conn.pipeline():
                    for k in range(40):
                        conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", (w, 400000 + k, k))
                    commit()
                expected_count += 40
                expected_sum += sum(range(40))
                with conn.pipeline():
                    cur = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE worker = %s AND i >= 400000", (w,))
                    got = cur.fetchone()[0]
                commit()
                expect("pipeline writes", got, 40, f"worker {w}")
                ok("psycopg.pipeline_writes")

                with conn.pipeline():
                    with conn.transaction():
                        for k in range(10):
                            conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", (w, 500000 + k, 2 * k))
                        cur = conn.execute(
                            f"SELECT coalesce(sum(v), 0) FROM {TABLE} WHERE worker = %s AND i >= 500000", (w,)
                        )
                    commit()
                expect("pipeline transaction", cur.fetchone()[0], sum(2 * k for k in range(10)), f"worker {w}")
                expected_count += 10
                expected_sum += sum(2 * k for k in range(10))
                ok("psycopg.pipeline_transaction")

                # An error in the middle of a pipeline, then the connection is used again.
                raised = False
                try:
                    with conn.pipeline():
                        first = conn.execute("SELECT %s::int4 + 1", (1,))
                        conn.execute("SELECT 10 / %s::int4", (0,))
                        conn.execute("SELECT %s::int4 + 2", (1,))
                except psycopg.errors.DivisionByZero:
                    raised = True
                if not autocommit:
                    conn.rollback()
                expect("pipeline error raised", raised, True, f"worker {w}")
                expect("pipeline result before the error", first.fetchone(), (2,), f"worker {w}")
                after = conn.execute("SELECT %s::int4 * 3", (7,)).fetchone()
                expect("after pipeline error", after, (21,), f"worker {w}")
                with conn.pipeline():
                    again = [conn.execute("SELECT %s::int4 - 1", (k,)) for k in range(5)]
                expect("pipeline after error", [c.fetchone()[0] for c in again], [k - 1 for k in range(5)], f"worker {w}")
                commit()
                ok("psycopg.pipeline_error_recovers")

                # The statements really were prepared (the pooler's names on the server).
                n = conn.execute(
                    "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE %s", ("pgcat%",)
                ).fetchone()[0]
                commit()
                expect("pooler-named statements on the server", n > 0, True, f"worker {w}")
                ok("psycopg.prepared_on_server")

                final = conn.execute(
                    f"SELECT count(*), coalesce(sum(v), 0) FROM {TABLE} WHERE worker = %s", (w,)
                ).fetchone()
                commit()
                expect("final", tuple(final), (expected_count, expected_sum), f"worker {w}")
                ok("psycopg.final_sums")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            fail(f"psycopg worker {w}: {type(e).__name__}: {e}\n{traceback.format_exc()}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [
        "psycopg.prepared_reads", "psycopg.writes", "psycopg.transactions", "psycopg.rollback",
        "psycopg.pipeline_reads", "psycopg.pipeline_writes", "psycopg.pipeline_transaction",
        "psycopg.pipeline_error_recovers", "psycopg.prepared_on_server", "psycopg.final_sums",
    ]
    for n in names:
        _passed.setdefault(n, 0)
    finish({n: WORKERS for n in names})


# ------------------------------------------------------------------------------------------
# asyncpg
# ------------------------------------------------------------------------------------------


def run_asyncpg():
    import asyncpg

    async def connect():
        return await asyncpg.connect(
            host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, timeout=30
        )

    class Boom(Exception):
        pass

    async def worker(w):
        rng = random.Random(1000 + w)
        conn = await connect()
        try:
            expected_count, expected_sum = 0, 0
            for i in range(ITERATIONS):
                a, b = rng.randint(-10**12, 10**12), rng.randint(-10**12, 10**12)
                row = await conn.fetchrow("SELECT $1::int8 + $2::int8 AS s, $3::text || 'z' AS t", a, b, f"w{w}-{i}")
                expect("read", (row["s"], row["t"]), (a + b, f"w{w}-{i}z"), f"worker {w} iter {i}")
                if i % 3 == 0:
                    v = rng.randint(1, 1000)
                    await conn.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", w, i, v)
                    expected_count += 1
                    expected_sum += v
                if i % 10 == 0:
                    v1, v2 = rng.randint(1, 1000), rng.randint(1, 1000)
                    async with conn.transaction():
                        await conn.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", w, 100000 + i, v1)
                        await conn.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", w, 200000 + i, v2)
                        inside = await conn.fetchrow(
                            f"SELECT count(*) AS n, coalesce(sum(v), 0) AS s FROM {TABLE} WHERE worker = $1", w
                        )
                        expect(
                            "in-transaction sum",
                            (inside["n"], inside["s"]),
                            (expected_count + 2, expected_sum + v1 + v2),
                            f"worker {w} iter {i}",
                        )
                    expected_count += 2
                    expected_sum += v1 + v2
                if i % 25 == 0:
                    try:
                        async with conn.transaction():
                            await conn.execute(f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", w, 300000 + i, 999)
                            raise Boom()
                    except Boom:
                        pass
                    gone = await conn.fetchval(
                        f"SELECT count(*) FROM {TABLE} WHERE worker = $1 AND i = $2", w, 300000 + i
                    )
                    expect("rolled back row", gone, 0, f"worker {w} iter {i}")
            ok("asyncpg.prepared_reads")
            ok("asyncpg.writes")
            ok("asyncpg.transactions")
            ok("asyncpg.rollback")

            await conn.executemany(
                f"INSERT INTO {TABLE} VALUES ($1, $2, $3)", [(w, 400000 + k, k) for k in range(50)]
            )
            expected_count += 50
            expected_sum += sum(range(50))
            got = await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE worker = $1 AND i >= 400000", w)
            expect("executemany", got, 50, f"worker {w}")
            ok("asyncpg.executemany")

            stmt = await conn.prepare("SELECT $1::int4 * 3")
            for k in range(60):
                expect("explicit prepare", await stmt.fetchval(k), 3 * k, f"worker {w} k {k}")
            ok("asyncpg.explicit_prepare")

            # A cursor: Execute with a row limit, PortalSuspended, Flush between fetches.
            total = 0
            async with conn.transaction():
                async for r in conn.cursor("SELECT g FROM generate_series(1, $1::int4) g", 500, prefetch=37):
                    total += r["g"]
            expect("cursor sum", total, 500 * 501 // 2, f"worker {w}")
            ok("asyncpg.cursor")

            raised = False
            try:
                await conn.fetchval("SELECT 10 / $1::int4", 0)
            except asyncpg.exceptions.DivisionByZeroError:
                raised = True
            expect("error raised", raised, True, f"worker {w}")
            expect("after error", await conn.fetchval("SELECT $1::int4 + 5", 5), 10, f"worker {w}")
            expect("prepared after error", await stmt.fetchval(9), 27, f"worker {w}")
            ok("asyncpg.error_recovers")

            final = await conn.fetchrow(
                f"SELECT count(*) AS n, coalesce(sum(v), 0) AS s FROM {TABLE} WHERE worker = $1", w
            )
            expect("final", (final["n"], final["s"]), (expected_count, expected_sum), f"worker {w}")
            ok("asyncpg.final_sums")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            fail(f"asyncpg worker {w}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
        finally:
            await conn.close()

    async def main():
        setup = await connect()
        await setup.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await setup.execute(f"CREATE TABLE {TABLE} (worker int, i int, v bigint, PRIMARY KEY (worker, i))")
        await setup.close()
        await asyncio.gather(*(worker(w) for w in range(WORKERS)))

    asyncio.run(main())
    names = [
        "asyncpg.prepared_reads", "asyncpg.writes", "asyncpg.transactions", "asyncpg.rollback",
        "asyncpg.executemany", "asyncpg.explicit_prepare", "asyncpg.cursor",
        "asyncpg.error_recovers", "asyncpg.final_sums",
    ]
    for n in names:
        _passed.setdefault(n, 0)
    finish({n: WORKERS for n in names})


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which == "psycopg":
        run_psycopg()
    elif which == "asyncpg":
        run_asyncpg()
    else:
        print("usage: clients.py psycopg|asyncpg", file=sys.stderr)
        sys.exit(2)
