#!/usr/bin/env python3
"""Cost of exec auditing: 2,000 fork+exec of /bin/true from a busybox shell
loop inside `buildcell step` (every exec recorded) against the same loop in
bwrap (no audit) and in bwrap under strace (the ptrace-based alternatives),
on both CPUs and pinned to one (taskset -c 0: CPU cost instead of latency).
Per round, each command's added time per exec is (mean - bwrap mean) / N;
the table gives the median over rounds.

Usage: bench/exec.py [--rounds N] [--runs N] [--execs N]
"""
import argparse, json, os, shutil, statistics, subprocess, tempfile

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--runs", type=int, default=3)
p.add_argument("--execs", type=int, default=2000)
p.add_argument("--buildcell", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "buildcell"))
a = p.parse_args()

work = tempfile.mkdtemp(prefix="buildcell-bench-", dir="/var/tmp")
bc = os.path.abspath(a.buildcell)
# The log must lie outside the step's working directory (buildcell refuses
# a log the step could write).
logdir = tempfile.mkdtemp(prefix="buildcell-bench-logs-", dir="/var/tmp")
script = os.path.join(work, "loop.sh")
with open(script, "w") as f:
    f.write(f"i=0; while [ $i -lt {a.execs} ]; do /bin/true; i=$((i+1)); done\n")
os.chmod(work, 0o755)
os.chmod(script, 0o644)
sh = f"/bin/busybox sh {script}"
bwrap = "bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev"
cmds = {
    "bwrap (no audit)": f"{bwrap} {sh}",
    "buildcell step (audit)": f"{bc} step --audit-log {logdir}/l -- {sh}",
    "strace -f -e trace=execve": f"strace -qq -o /dev/null -f -e trace=execve {bwrap} {sh}",
    "strace --seccomp-bpf -f": f"strace -qq -o /dev/null --seccomp-bpf -f -e trace=execve {bwrap} {sh}",
}

def measure(prefix):
    added = {n: [] for n in cmds}
    for r in range(a.rounds):
        out = os.path.join(work, "r.json")
        subprocess.run(["hyperfine", "-N", "--warmup", "1", "--runs", str(a.runs), "--prepare", f"rm -f {logdir}/l",
                        "--export-json", out, "--style", "none"]
                       + [prefix + c for c in cmds.values()], check=True, cwd=work, stdout=subprocess.DEVNULL)
        res = json.load(open(out))["results"]
        base = res[0]["mean"]
        for (n, _), rr in zip(cmds.items(), res):
            added[n].append((rr["mean"] - base) / a.execs * 1e6)
    return {n: statistics.median(v) for n, v in added.items()}

two = measure("")
one = measure("taskset -c 0 ")
print(f"\n{a.execs} fork+exec of /bin/true, {a.rounds} rounds x {a.runs} runs; microseconds added per exec vs bwrap without audit")
print("| command | 2 CPUs: latency (us/exec) | pinned to 1 CPU: CPU (us/exec) |")
print("|---|---:|---:|")
for n in cmds:
    print(f"| {n} | {two[n]:+.0f} | {one[n]:+.0f} |")
shutil.rmtree(work, ignore_errors=True)
shutil.rmtree(logdir, ignore_errors=True)
