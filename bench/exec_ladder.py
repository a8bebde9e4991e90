#!/usr/bin/env python3
"""Where the exec audit's cost comes from, rung by rung: 2,000 fork+exec of
/bin/true from a busybox shell loop under examples/exec_ladder.rs, whose
supervisor does only the work of its rung (no namespaces, no other filter):

  none    no filter (the baseline)
  notify  every exec notified, answered CONTINUE
  seize   + the task seized at the notification, released at its
          PTRACE_EVENT_EXEC stop (the second stop that makes the record
          race-free)
  links   + /proc/PID/cwd and /proc/PID/exe read at the exec stop
  ids     + parent pid and real ids (PIDFD_GET_INFO)
  memory  + path and argv read at the notification, the initial stack
          at the exec stop
  full    buildcell's own supervisor and hash-chained audit log

Each rung's cost per exec is (its mean - none's mean) / execs, per round,
median over rounds; on 2 CPUs (latency) and pinned to CPU 0 (CPU cost).
The rungs run in a new order each round (rotated).

Usage: bench/exec_ladder.py [--rounds N] [--runs N] [--execs N] [--pinned-only] [--example PATH]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
RUNGS = ["none", "notify", "seize", "links", "ids", "memory", "full"]

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--runs", type=int, default=3)
p.add_argument("--execs", type=int, default=2000)
p.add_argument("--pinned-only", action="store_true", help="skip the 2-CPU (latency) half")
p.add_argument("--example", default=os.path.join(REPO, "target", "release", "examples", "exec_ladder"))
a = p.parse_args()
a.example = os.path.abspath(a.example)

if not os.path.exists(a.example):
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "exec_ladder"], cwd=REPO, check=True)
work = tempfile.mkdtemp(prefix="buildcell-ladder-", dir="/var/tmp")
script = os.path.join(work, "loop.sh")
with open(script, "w") as f:
    f.write(f"i=0; while [ $i -lt {a.execs} ]; do /bin/true; i=$((i+1)); done\n")
log = os.path.join(work, "audit.log")
# A container's small environment (the record lists every variable's name),
# not the caller's.
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "xterm",
       "HOME": "/root", "LADDER_LOG": log}


def check_rungs():
    """Each rung must run the loop as it should before it is timed: exit 0
    and nothing on stderr (an exec refused with ENOSYS because the
    supervisor stopped serving would otherwise be timed as a fast rung),
    and the full rung's log must hold one exec record per exec (the shell
    and each /bin/true)."""
    for r in RUNGS:
        for f in (log, os.path.join(work, "index")):
            if os.path.exists(f):
                os.unlink(f)
        p = subprocess.run([a.example, r, "--", "/bin/busybox", "sh", script], env=ENV, cwd=work,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        err = p.stderr.strip().splitlines()
        if p.returncode != 0 or err:
            sys.exit(f"bench/exec_ladder.py: rung {r} exited {p.returncode}: {err[0] if err else 'no message'}")
        if r == "full":
            n = sum('"type":"exec"' in l for l in open(log))
            if n != a.execs + 1:
                sys.exit(f"bench/exec_ladder.py: rung full recorded {n} execs, not {a.execs + 1}")


def measure(prefix):
    added = {r: [] for r in RUNGS}
    for n in range(a.rounds):
        order = RUNGS[n % len(RUNGS):] + RUNGS[:n % len(RUNGS)]
        out = os.path.join(work, "r.json")
        subprocess.run(["hyperfine", "-N", "--warmup", "1", "--runs", str(a.runs),
                        "--prepare", f"rm -f {log} {work}/index", "--export-json", out, "--style", "none"]
                       + [f"{prefix}{a.example} {r} -- /bin/busybox sh {script}" for r in order],
                       check=True, cwd=work, stdout=subprocess.DEVNULL, env=ENV)
        means = dict(zip(order, (r["mean"] for r in json.load(open(out))["results"])))
        for r in RUNGS:
            added[r].append((means[r] - means["none"]) / a.execs * 1e6)
    return {r: statistics.median(v) for r, v in added.items()}


try:
    check_rungs()
    two = {r: float("nan") for r in RUNGS} if a.pinned_only else measure("")
    one = measure("taskset -c 0 ")
finally:
    shutil.rmtree(work, ignore_errors=True)
print(f"\n{a.execs} fork+exec of /bin/true, {a.rounds} rounds x {a.runs} runs; "
      "microseconds added per exec against no filter (median of rounds)")
print("| rung | 2 CPUs: latency | step | pinned: CPU | step |")
print("|---|---:|---:|---:|---:|")
prev = (0.0, 0.0)
for r in RUNGS:
    lat = "-" if a.pinned_only else f"{two[r]:+.0f} | {two[r] - prev[0]:+.0f}"
    lat = "- | -" if a.pinned_only else lat
    print(f"| {r} | {lat} | {one[r]:+.0f} | {one[r] - prev[1]:+.0f} |")
    prev = (two[r], one[r])
