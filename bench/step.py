#!/usr/bin/env python3
"""Benchmark `buildcell step -- /bin/true` against bwrap and unshare, side by side.

Each round runs hyperfine once over all commands (interleaving rounds keeps
machine noise out of the ratios); the table gives, per command, the median
over rounds of its mean wall time divided by the reference's (bwrap) in the
same round, and the peak RSS from GNU time.

Usage: bench/step.py [--rounds N] [--runs N] [--user NAME] [--buildcell PATH]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=10)
p.add_argument("--runs", type=int, default=20, help="runs per command per round")
p.add_argument("--user", help="run everything as this user (runuser), for the rootless case")
p.add_argument("--buildcell", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "buildcell"))
a = p.parse_args()

true = "/bin/busybox" if os.path.exists("/bin/busybox") else "/bin/true"
true_cmd = f"{true} true" if true.endswith("busybox") else true
work = tempfile.mkdtemp(prefix="buildcell-bench-", dir="/var/tmp")
os.chmod(work, 0o755)
bc = os.path.join(work, "buildcell")
shutil.copy(os.path.abspath(a.buildcell), bc)
os.chmod(bc, 0o755)
if a.user:
    shutil.chown(work, a.user)

cmds = {
    "buildcell step": f"{bc} step -- {true_cmd}",
    "bwrap": f"bwrap --unshare-all --ro-bind / / --proc /proc --dev /dev {true_cmd}",
    "unshare -Urimnpuf": f"unshare -Urimnpuf --mount-proc {true_cmd}",
}
for name, c in cmds.items():
    if not shutil.which(c.split()[0]):
        sys.exit(f"bench: {c.split()[0]} not found (apt-get install bubblewrap util-linux hyperfine time busybox-static)")

def wrap(c):
    return f"runuser -u {a.user} -- {c}" if a.user else c

ratios = {n: [] for n in cmds}
means = {n: [] for n in cmds}
for r in range(a.rounds):
    out = os.path.join(work, f"round{r}.json")
    subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(a.runs), "--export-json", out, "--style", "none"]
                   + [wrap(c) for c in cmds.values()], check=True, cwd=work, stdout=subprocess.DEVNULL)
    res = json.load(open(out))["results"]
    ref = res[1]["mean"]
    for (name, _), rr in zip(cmds.items(), res):
        ratios[name].append(rr["mean"] / ref)
        means[name].append(rr["mean"])

def peak_rss(c):
    rs = []
    for _ in range(5):
        r = subprocess.run(["/usr/bin/time", "-f", "%M"] + wrap(c).split(), cwd=work, capture_output=True, text=True)
        rs.append(int(r.stderr.strip().splitlines()[-1]))
    return statistics.median(rs)

mode = f"rootless ({a.user})" if a.user else ("root" if os.geteuid() == 0 else "rootless")
print(f"\n{mode}: {a.rounds} rounds x {a.runs} runs, median of per-round ratios to bwrap; {true_cmd}")
print("| command | median wall (ms) | ratio to bwrap | peak RSS (KiB) |")
print("|---|---:|---:|---:|")
for name, c in cmds.items():
    print(f"| {name} | {statistics.median(means[name]) * 1000:.2f} | {statistics.median(ratios[name]):.2f} | {peak_rss(c):.0f} |")
shutil.rmtree(work, ignore_errors=True)
