#!/usr/bin/env python3
"""Parse the logs of the integration recipes and judge them against the
expected-failure lists. Called by integration/run.sh; usable alone:

  checks.py report  --results DIR --recipes "a b" [--baseline-results DIR] [--expected DIR]
  checks.py write-expected --results DIR --recipes "a b" --expected DIR [--reason TEXT]
  checks.py names   LOG        (print the check keys of one recipe log)

A results DIR holds, per recipe R: R.log (the recipe's stdout+stderr),
R.rc (its exit status) and R.secs (its wall time).

Check keys. The recipes print `PASS|FAIL|SKIP <name> <time or (note)>`, and a
name alone is not unique (buildah runs the same checks as root and rootless,
"...runtime invoked" follows many checks). So the key of a check is
`<section> :: <name>`, where section is the recipe's last `== ...` header
line; a sub-check (a name starting with "...") is keyed under the check it
follows: `<section> :: <parent> :: ...<name>`. A key still seen twice gets
` #2`, ` #3`. These keys are what integration/expected/<recipe>.txt lists,
one per line, a TAB, then why it is expected to fail; blank lines and lines
starting with # are ignored.

Verdict of a recipe (strict xfail):
  - a FAIL whose key is listed           -> expected failure, fine
  - a FAIL whose key is not listed       -> error (regression or new check)
  - a PASS whose key is listed           -> error (fixed: remove the line)
  - a listed key that did not run or was SKIPped -> error (stale line),
    except with RECORD=0, where the call-log checks are not run at all
  - no summary line ("N passed, N failed, N skipped") -> error (crashed or
    timed out), whatever the lists say
"""
import argparse, os, re, sys

# common.sh prints `printf '%s %-52s %6ss...'` or `'%s %-52s (note)'`: a name of
# up to 52 characters sits in a fixed field; a longer one is followed by the
# time or note after one space (the regex, where the note may not nest parens).
LINE = re.compile(r"^(PASS|FAIL|SKIP) (.+?) +(\d+\.\d+s(?: .*)?|\([^()]*\))$")
TRAILER = re.compile(r"^ *(\d+\.\d+s(?: .*)?|\(.*\))$")


def split_check(ln):
    """-> (status, name, detail) or None."""
    if ln[:5] not in ("PASS ", "FAIL ", "SKIP "):
        return None
    rest = ln[5:]
    if len(rest) > 53 and rest[52] == " " and rest[:52].strip():
        t = TRAILER.match(rest[53:])
        if t:
            return ln[:4], rest[:52].strip(), t.group(1)
    m = LINE.match(ln)
    return (m.group(1), m.group(2).strip(), m.group(3)) if m else None
SECTION = re.compile(r"^\[\d\d:\d\d:\d\d\] == (.*)$")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed, (\d+) skipped$")


def parse_log(path):
    """-> (checks, summary). checks: list of dicts key/status/name/detail/output."""
    checks, seen = [], {}
    section, parent, summary = "-", None, None
    try:
        lines = open(path, errors="replace").read().splitlines()
    except FileNotFoundError:
        return [], None
    for ln in lines:
        m = SECTION.match(ln)
        if m:
            section, parent = m.group(1), None
            continue
        m = SUMMARY.match(ln)
        if m:
            summary = tuple(int(x) for x in m.groups())
            continue
        if ln.startswith("     | ") and checks:
            checks[-1]["output"].append(ln[7:])
            continue
        c = split_check(ln)
        if not c:
            continue
        status, name, detail = c
        if name.startswith("..."):
            key = f"{section} :: {parent or '-'} :: {name}"
        else:
            parent = name
            key = f"{section} :: {name}"
        n = seen.get(key, 0) + 1
        seen[key] = n
        if n > 1:
            key = f"{key} #{n}"
        checks.append(dict(key=key, status=status, name=name, detail=detail, output=[]))
    return checks, summary


def load_expected(path):
    exp = {}
    if not path or not os.path.exists(path):
        return exp
    for i, ln in enumerate(open(path).read().splitlines(), 1):
        if not ln.strip() or ln.startswith("#"):
            continue
        key, _, reason = ln.partition("\t")
        if key.rstrip() in exp:
            sys.exit(f"{path}:{i}: key listed twice: {key!r}")
        exp[key.rstrip()] = reason.strip()
    return exp


def read(path, default=""):
    try:
        return open(path).read().strip()
    except FileNotFoundError:
        return default


def judge(results, recipe, expected_dir):
    """-> dict with counts and a list of problems (strings)."""
    log = os.path.join(results, f"{recipe}.log")
    checks, summary = parse_log(log)
    exp = load_expected(os.path.join(expected_dir, f"{recipe}.txt")) if expected_dir else {}
    rc = read(os.path.join(results, f"{recipe}.rc"), "?")
    secs = read(os.path.join(results, f"{recipe}.secs"), "?")
    r = dict(recipe=recipe, checks=len(checks), passed=0, xfail=0, failed=0, skipped=0,
             xpass=0, stale=0, rc=rc, secs=secs, summary=summary, problems=[])
    status = {c["key"]: c["status"] for c in checks}
    for c in checks:
        if c["status"] == "PASS":
            r["passed"] += 1
            if c["key"] in exp:
                r["xpass"] += 1
                r["problems"].append(f"UNEXPECTED PASS {c['key']}  (listed as expected failure: {exp[c['key']]}; remove the line)")
        elif c["status"] == "SKIP":
            r["skipped"] += 1
        elif c["key"] in exp:
            r["xfail"] += 1
        else:
            r["failed"] += 1
            out = "".join(f"\n        | {o}" for o in c["output"])
            r["problems"].append(f"UNEXPECTED FAIL {c['key']}  {c['detail']}{out}")
    record0 = os.environ.get("RECORD", "1") == "0"
    for k, why in exp.items():
        if status.get(k) in (None, "SKIP") and summary is not None and not record0:
            r["stale"] += 1
            r["problems"].append(f"STALE ENTRY {k}  ({'skipped' if k in status else 'not run'}; listed as: {why})")
    if summary is None:
        r["problems"].insert(0, f"CRASHED: no summary line (exit status {rc}; killed by the timeout if 124/137); see {log}")
    elif summary != (r["passed"], r["xfail"] + r["failed"], r["skipped"]):
        r["problems"].insert(0, f"PARSE MISMATCH: recipe says {summary[0]} passed, {summary[1]} failed, {summary[2]} skipped; "
                                f"parsed {r['passed']}/{r['xfail'] + r['failed']}/{r['skipped']} (check-line format changed?)")
    return r


def report(a):
    recipes = a.recipes.split()
    rows = [judge(a.results, rc, a.expected) for rc in recipes]
    base = [judge(a.baseline_results, rc, None) for rc in recipes] if a.baseline_results else None
    label = a.label
    ok = all(not r["problems"] for r in rows)
    if base:
        print(f"\n{'':16} | {a.baseline_label + ' (every check must pass)':<34} | {label}")
        print(f"{'recipe':16} | {'checks':>6} {'pass':>5} {'fail':>5} {'skip':>5} {'secs':>7}  "
              f"| {'checks':>6} {'pass':>5} {'xfail':>5} {'FAIL':>5} {'skip':>5} {'secs':>7}  verdict")
    else:
        print(f"\n{label}")
        print(f"{'recipe':16} {'checks':>6} {'pass':>5} {'xfail':>5} {'FAIL':>5} {'skip':>5} {'secs':>7}  verdict")
    tot = dict(checks=0, passed=0, xfail=0, failed=0, skipped=0)
    btot = dict(checks=0, passed=0, failed=0, skipped=0)
    for i, r in enumerate(rows):
        v = verdict(r)
        for k in tot:
            tot[k] += r[k]
        cols = f"{r['checks']:>6} {r['passed']:>5} {r['xfail']:>5} {r['failed']:>5} {r['skipped']:>5} {r['secs']:>7}  {v}"
        if base:
            b = base[i]
            for k in btot:
                btot[k] += b[k]
            bfail = b["failed"] + b["xfail"]
            bcol = f"{b['checks']:>6} {b['passed']:>5} {bfail:>5} {b['skipped']:>5} {b['secs']:>7}" + ("" if not b["problems"] else " !")
            print(f"{r['recipe']:16} | {bcol}  | {cols}")
        else:
            print(f"{r['recipe']:16} {cols}")
    tcols = f"{tot['checks']:>6} {tot['passed']:>5} {tot['xfail']:>5} {tot['failed']:>5} {tot['skipped']:>5}"
    if base:
        print(f"{'total':16} | {btot['checks']:>6} {btot['passed']:>5} {btot['failed']:>5} {btot['skipped']:>5} {'':>7}  | {tcols}")
    else:
        print(f"{'total':16} {tcols}")
    if base:
        bad = [(b["recipe"], p) for b in base for p in b["problems"]]
        if bad:
            print(f"\nbaseline {a.baseline_label} is not green (the machine, not {label}, is at fault):")
            for rc, p in bad:
                print(f"  {rc}: {p}")
            ok = False
    for r in rows:
        for p in r["problems"]:
            print(f"  {r['recipe']}: {p}")
    print(f"\n{label}: {tot['passed']} passed, {tot['xfail']} failed as expected, {tot['failed']} failed unexpectedly, "
          f"{sum(r['xpass'] for r in rows)} passed unexpectedly, {tot['skipped']} skipped"
          f"{'' if ok else ' -> FAILED'}")
    return 0 if ok else 1


def verdict(r):
    if r["summary"] is None:
        return "CRASHED"
    bits = []
    if r["failed"]:
        bits.append(f"{r['failed']} unexpected fail")
    if r["xpass"]:
        bits.append(f"{r['xpass']} unexpected pass")
    if r["stale"]:
        bits.append(f"{r['stale']} stale")
    return "; ".join(bits) or "ok"


def write_expected(a):
    os.makedirs(a.expected, exist_ok=True)
    for recipe in a.recipes.split():
        checks, summary = parse_log(os.path.join(a.results, f"{recipe}.log"))
        path = os.path.join(a.expected, f"{recipe}.txt")
        old = load_expected(path)
        fails = [c for c in checks if c["status"] == "FAIL"]
        with open(path, "w") as f:
            f.write(f"# Checks of the {recipe} recipe expected to FAIL for buildcell: <check key><TAB><why>.\n"
                    "# Strict: a listed check that passes fails the run; delete its line. Keys: integration/checks.py.\n")
            for c in fails:
                why = old.get(c["key"]) or a.reason or f"TODO: {c['detail']}"
                f.write(f"{c['key']}\t{why}\n")
        note = "" if summary else "  (recipe CRASHED: list incomplete)"
        print(f"{path}: {len(fails)} expected failures{note}", file=sys.stderr)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--recipes", required=True)
    r.add_argument("--expected", default="")
    r.add_argument("--label", default="runtime under test")
    r.add_argument("--baseline-results")
    r.add_argument("--baseline-label", default="runc")
    w = sub.add_parser("write-expected")
    w.add_argument("--results", required=True)
    w.add_argument("--recipes", required=True)
    w.add_argument("--expected", required=True)
    w.add_argument("--reason", default="")
    n = sub.add_parser("names")
    n.add_argument("log")
    a = p.parse_args()
    if a.cmd == "report":
        return report(a)
    if a.cmd == "write-expected":
        return write_expected(a)
    checks, summary = parse_log(a.log)
    for c in checks:
        print(f"{c['status']} {c['key']}")
    print(f"summary: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
