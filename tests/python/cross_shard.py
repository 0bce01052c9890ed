"""Issue 19: statements on every shard through the pooler, from psycopg 3 and asyncpg.

Run by tests/cross_shard.rs as `python cross_shard.py` with PGCAT_DSN (the pooler, a pool
with default_shard = "all") and ORACLE_DSN (one database holding every row). Each statement's
answer through the pooler must equal the oracle's (sorted where the statement fixes no
order). Prints `CHECK <name> ok` per check and exits 0 only if all held.
"""

import asyncio
import os
import sys

import asyncpg
import psycopg

POOLER = os.environ["PGCAT_DSN"]
ORACLE = os.environ["ORACLE_DSN"]

UNORDERED = [
    ("SELECT * FROM items", ()),
    ("SELECT id, value FROM items WHERE grp = %s", (3,)),
    ("SELECT id, amount FROM items WHERE amount > %s AND value IS NOT NULL", (400,)),
]
ORDERED = [
    ("SELECT id, amount FROM items ORDER BY amount DESC LIMIT 12", ()),
    ("SELECT id, grp FROM items WHERE grp <> %s ORDER BY grp, id DESC", (2,)),
    ("SELECT count(*), sum(amount), min(id), max(amount) FROM items WHERE id > %s", (20,)),
    ("SELECT grp, count(*), avg(amount) FROM items GROUP BY grp HAVING count(*) > %s ORDER BY grp", (3,)),
    ("SELECT DISTINCT ON (grp) grp, id FROM items ORDER BY grp, id DESC", ()),
    ("SELECT grp FROM items GROUP BY grp HAVING sum(amount) > %s ORDER BY count(*) DESC, grp", (100,)),
    ("SELECT id, d, tz, iv, u FROM kinds WHERE d IS NULL OR d > '1900-01-01' ORDER BY d NULLS FIRST, id LIMIT %s OFFSET %s", (20, 5)),
]

failures = []


def check(name, ok, detail=""):
    if ok:
        print(f"CHECK {name} ok")
    else:
        failures.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}")


def same_answers(through, oracle, label):
    """Every statement of UNORDERED and ORDERED, through psycopg, as the oracle answers."""
    for sql, params in UNORDERED + ORDERED:
        want = oracle.execute(sql, params).fetchall()
        got = through.execute(sql, params).fetchall()
        if (sql, params) in UNORDERED:
            want, got = sorted(want, key=repr), sorted(got, key=repr)
        check(f"{label} {sql}", got == want, f"{got[:3]}... vs {want[:3]}...")


def several(conn):
    """The results of one query string of several statements (psycopg sends it as one
    simple Query), each statement's rows."""
    cur = conn.execute(
        "SELECT count(*), sum(amount) FROM items; SELECT id FROM items ORDER BY id DESC LIMIT 2; SELECT 1"
    )
    results = [cur.fetchall()]
    while cur.nextset():
        results.append(cur.fetchall())
    return results


def run_psycopg():
    with psycopg.connect(POOLER, autocommit=True) as through, psycopg.connect(ORACLE) as oracle:
        same_answers(through, oracle, "psycopg")
        # The same statement prepared (psycopg prepares after 5 runs) stays right.
        sql, params = UNORDERED[1]
        want = sorted(oracle.execute(sql, params).fetchall())
        same = all(
            sorted(through.execute(sql, params, prepare=True).fetchall()) == want
            for _ in range(3)
        )
        check("psycopg prepared", same)
        try:
            through.execute("SELECT DISTINCT ON (grp) grp FROM items")
            check("psycopg refusal", False, "DISTINCT ON answered")
        except psycopg.errors.FeatureNotSupported as e:
            check("psycopg refusal", "DISTINCT" in str(e), str(e))
        check("psycopg after refusal", through.execute("SELECT 1").fetchone() == (1,))
        # COPY out: every shard's rows under one CopyOutResponse.
        sql = "COPY (SELECT id, value FROM items WHERE grp = 1) TO STDOUT (FORMAT csv)"
        copied = []
        for through_or_oracle in (through, oracle):
            with through_or_oracle.cursor().copy(sql) as copy:
                copied.append(sorted(bytes(b"".join(bytes(c) for c in copy)).splitlines()))
        check("psycopg COPY TO STDOUT", copied[0] == copied[1] and copied[0], f"{copied[0][:3]}")
        got, want = several(through), several(oracle)
        check("psycopg several statements", got == want and len(got) == 3, f"{got} vs {want}")
    # psycopg's default: a transaction opened before the first statement, held on every
    # shard it touches until commit.
    with psycopg.connect(POOLER) as through, psycopg.connect(ORACLE) as oracle:
        same_answers(through, oracle, "psycopg in a transaction")
        got, want = several(through), several(oracle)
        check("psycopg several statements in a transaction", got == want, f"{got} vs {want}")
        through.commit()
        # COPY FROM in the transaction: its rows are the transaction's until it ends.
        count = "SELECT count(*) FROM items"
        before = through.execute(count).fetchone()[0]
        with through.cursor().copy("COPY items (id, grp, value, amount) FROM STDIN") as copy:
            for i in range(1001, 1011):
                copy.write_row((i, 1, f"c{i}", i))
        during = through.execute(count).fetchone()[0]
        through.rollback()
        after = through.execute(count).fetchone()[0]
        through.commit()
        check(
            "psycopg COPY FROM in a transaction",
            (during, after) == (before + 10, before),
            f"{before} {during} {after}",
        )


def run_pipeline():
    """Several statements before one Sync run on the server the first one took: one whose
    key is on another shard is refused, never answered from the wrong shard."""
    with psycopg.connect(POOLER, autocommit=True) as through:
        cursors = []
        try:
            with through.pipeline():
                for i in range(1, 7):
                    cursors.append((i, through.execute("SELECT id FROM items WHERE id = %s", (i,))))
            got = [(i, c.fetchall()) for i, c in cursors]
            check("pipeline rows", all(rows == [(i,)] for i, rows in got), str(got))
        except psycopg.errors.FeatureNotSupported as e:
            check("pipeline refused", "shard" in str(e), str(e))
        check("pipeline after", through.execute("SELECT 1").fetchone() == (1,))


def keywords(conninfo):
    """asyncpg's connect() arguments of a `key=value ...` conninfo."""
    pairs = dict(part.split("=", 1) for part in conninfo.split())
    pairs["port"] = int(pairs["port"])
    pairs["database"] = pairs.pop("dbname")
    return pairs


async def run_asyncpg():
    through = await asyncpg.connect(**keywords(POOLER))
    oracle = await asyncpg.connect(**keywords(ORACLE))
    try:
        for sql, params in UNORDERED + ORDERED:
            sorted_rows = (sql, params) in UNORDERED
            n = iter(range(1, 10))
            sql = "".join(f"${next(n)}" if part == "%s" else part for part in sql.replace("%s", "\0%s\0").split("\0"))
            want = list(map(tuple, await oracle.fetch(sql, *params)))
            got = list(map(tuple, await through.fetch(sql, *params)))
            if sorted_rows:
                want, got = sorted(want, key=repr), sorted(got, key=repr)
            check(f"asyncpg {sql}", got == want, f"{got[:3]}... vs {want[:3]}...")
        async with through.transaction():
            for sql, params in UNORDERED:
                sql = sql.replace("%s", "$1")
                want = sorted(map(tuple, await oracle.fetch(sql, *params)), key=repr)
                got = sorted(map(tuple, await through.fetch(sql, *params)), key=repr)
                check(f"asyncpg in a transaction {sql}", got == want, f"{got[:3]}...")
    finally:
        await through.close()
        await oracle.close()


run_psycopg()
run_pipeline()
asyncio.run(run_asyncpg())
sys.exit(1 if failures else 0)
