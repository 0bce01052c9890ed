"""Compares psycopg suite runs (JUnit XML): direct, session mode, transaction mode.

    compare.py DIRECT.xml SESSION.xml TRANSACTION.xml TRANSACTION-XFAIL.txt \
        [--rerun MODE=RERUN.xml ...]

Session mode must pass every test that passes directly; transaction mode every one but the
test ids listed in TRANSACTION-XFAIL.txt (one per line, `id  # reason`; an id ending in `*`
covers every parametrisation). Prints each mode's figures and the tests that fail, and exits
1 when a test that passes directly fails through the pooler and is not allowed to.

A few of psycopg's tests race against the clock (test_wait_remote_closed kills its proxy while
a reply may already be on its way), so an unexpected failure is run once more (tests/peer.rs
does it, `--rerun` passes its report): a test that passes then is printed as flaky and does not
fail the comparison; one that fails twice does.
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


def reruns(args):
    """mode -> results of its rerun, from `--rerun MODE=FILE` pairs."""
    out = {}
    for flag, value in zip(args[::2], args[1::2]):
        if flag != "--rerun" or "=" not in value:
            sys.exit(f"unexpected arguments: {flag} {value}")
        mode, path = value.split("=", 1)
        out[mode] = results(path)
    return out


def main():
    direct, session, transaction = (results(p) for p in sys.argv[1:4])
    xfail = allowed_list(sys.argv[4])
    again = reruns(sys.argv[5:])
    passing = {t for t, s in direct.items() if s == "passed"}
    print(f"direct: {len(passing)} passed, {sum(s == 'failed' for s in direct.values())} failed")
    bad = False
    for mode, run, entries in (("session", session, []), ("transaction", transaction, xfail)):
        failed = sorted(t for t in passing if run.get(t) != "passed")
        unexpected = [t for t in failed if not allowed(t, entries)]
        listed = len(failed) - len(unexpected)
        rerun = again.get(mode, {})
        flaky = [t for t in unexpected if rerun.get(t) == "passed"]
        unexpected = [t for t in unexpected if t not in flaky]
        kept = len(passing) - len(failed)
        print(
            f"{mode}: {kept} of the {len(passing)} tests that pass directly pass "
            f"({100.0 * kept / max(len(passing), 1):.2f} %); {listed} "
            f"listed as expected failures, {len(flaky)} flaky"
        )
        for t in flaky:
            print(f"  flaky in {mode} mode (failed, then passed when run again): {t}")
        for t in unexpected:
            print(f"  UNEXPECTED {mode} failure: {t} ({run.get(t, 'not run')})")
        stale = [e for e in entries if not any(allowed(t, [e]) for t in failed)]
        for e in stale:
            print(f"  listed but passing now (remove it from the list): {e}")
        bad = bad or bool(unexpected)
    sys.exit(1 if bad else 0)


main()
