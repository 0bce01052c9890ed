"""Compares psycopg suite runs (JUnit XML): direct, session mode, transaction mode.

    compare.py DIRECT.xml SESSION.xml TRANSACTION.xml TRANSACTION-XFAIL.txt

Session mode must pass every test that passes directly; transaction mode every one but the
test ids listed in TRANSACTION-XFAIL.txt (one per line, `id  # reason`; an id ending in `*`
covers every parametrisation). Prints each mode's figures and the tests that fail, and exits
1 when a test that passes directly fails through the pooler and is not allowed to.
"""

import sys
import xml.etree.ElementTree as ET


def results(path):
    """test id -> 'passed' | 'failed' | 'skipped'."""
    out = {}
    for case in ET.parse(path).iter("testcase"):
        cls = case.get("classname", "")
        test_id = cls.replace(".", "/") + ".py::" + case.get("name", "")
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                state = "failed"
            elif child.tag == "skipped" and state != "failed":
                state = "skipped"
        out[test_id] = state
    return out


def allowed_list(path):
    entries = []
    for line in open(path, encoding="utf-8"):
        test_id = line.split("#", 1)[0].strip()
        if test_id:
            entries.append(test_id)
    return entries


def allowed(test_id, entries):
    return any(test_id == e or (e.endswith("*") and test_id.startswith(e[:-1])) for e in entries)


def main():
    direct, session, transaction = (results(p) for p in sys.argv[1:4])
    xfail = allowed_list(sys.argv[4])
    passing = {t for t, s in direct.items() if s == "passed"}
    print(f"direct: {len(passing)} passed, {sum(s == 'failed' for s in direct.values())} failed")
    bad = False
    for mode, run, entries in (("session", session, []), ("transaction", transaction, xfail)):
        failed = sorted(t for t in passing if run.get(t) != "passed")
        unexpected = [t for t in failed if not allowed(t, entries)]
        kept = len(passing) - len(failed)
        print(
            f"{mode}: {kept} of the {len(passing)} tests that pass directly pass "
            f"({100.0 * kept / max(len(passing), 1):.2f} %); {len(failed) - len(unexpected)} "
            f"listed as expected failures"
        )
        for t in unexpected:
            print(f"  UNEXPECTED {mode} failure: {t} ({run.get(t, 'not run')})")
        stale = [e for e in entries if not any(allowed(t, [e]) for t in failed)]
        for e in stale:
            print(f"  listed but passing now (remove it from the list): {e}")
        bad = bad or bool(unexpected)
    sys.exit(1 if bad else 0)


main()
