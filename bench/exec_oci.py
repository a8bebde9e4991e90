#!/usr/bin/env python3
"""Exec-heavy container step: N fork+exec of /bin/true from a busybox shell
loop, as the process of a container (`RT --root S run --bundle B ID`):
buildcell with its audit (every exec recorded by the supervisor, `build`
profile: seccomp, Landlock, cgroup limits) against crun and runc with their
defaults, crun under `strace --seccomp-bpf -f -e trace=execve` (the
ptrace-based way to see every exec), and the same loop in a plain chroot of
the rootfs (root only: the host without any container).

Each round runs hyperfine once over every command (interleaved, so machine
noise hits all alike); the table gives per command the median over rounds
of its mean wall time, the median of the per-round ratios to crun, and the
time added per exec against crun: (mean - crun mean) / N.

Usage: bench/exec_oci.py [--rounds N] [--runs N] [--execs N] [--modes root,rootless] [--json FILE]
                         [--pin] [--also PATH]...
--pin runs every command under `taskset -c 0` (one CPU: the cost in CPU
time instead of latency). --also PATH measures another buildcell binary
in the same rounds (an A/B of a change: `--buildcell NEW --also OLD`).
Run as root (re-executes itself in a private mount namespace without
/sys/fs/cgroup/unified, for crun; see bench/common.py).
"""
import argparse, json, os, shutil, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--runs", type=int, default=3)
p.add_argument("--execs", type=int, default=2000)
p.add_argument("--pin", action="store_true", help="every command under taskset -c 0")
p.add_argument("--also", action="append", default=[], help="another buildcell binary, same rounds")
a = common.parse_args(__file__, p)

work = common.tmpdir("buildcell-execbench-")
try:
    bc = common.copy_buildcell(work, a.buildcell)
    also = []
    for i, path in enumerate(a.also):
        os.makedirs(os.path.join(work, f"also{i}"))
        also.append((path, common.copy_buildcell(os.path.join(work, f"also{i}"), path)))
    pin = "taskset -c 0 " if a.pin else ""
    loop = f"i=0; while [ $i -lt {a.execs} ]; do /bin/true; i=$((i+1)); done"
    results = []
    for mode in a.modes.split(","):
        d, bundle, prefix = common.make_bundle(work, mode, a.user, ["/bin/sh", "-c", loop])
        st = f"{d}/state"
        cmds = {}
        if mode == "root":
            cmds["chroot (no container)"] = f"chroot {bundle}/rootfs /bin/sh -c '{loop}'"
        cmds["crun"] = f"ID=x$$; crun --root {st}/crun run --bundle {bundle} $ID"
        cmds["crun + strace --seccomp-bpf -f -e trace=execve"] = (
            f"ID=x$$; strace -qq -o /dev/null --seccomp-bpf -f -e trace=execve crun --root {st}/crun run --bundle {bundle} $ID")
        cmds["runc"] = f"ID=x$$; runc --root {st}/runc run --bundle {bundle} $ID"
        cmds["buildcell (audit)"] = f"ID=x$$; {bc} --root {st}/buildcell run --bundle {bundle} $ID"
        for path, copy in also:
            cmds[f"buildcell {path}"] = f"ID=x$$; {copy} --root {st}/buildcell run --bundle {bundle} $ID"
        # The pin goes inside `sh -c` after ID=...: taskset then runs the
        # runtime (and strace) with everything they start on CPU 0.
        cmds = {n: c.replace("; ", "; " + pin, 1) if c.startswith("ID=") else pin + c for n, c in cmds.items()}
        names = list(cmds)
        for n, c in cmds.items():  # one probe each: it must succeed
            r = subprocess.run(prefix + ["sh", "-c", c], cwd=d, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"bench: {n} ({mode}) failed: {r.stderr.strip()[:300]}")
        means = {n: [] for n in names}
        ratios = {n: [] for n in names}
        for rnd in range(a.rounds):
            out = os.path.join(d, "r.json")
            subprocess.run(prefix + ["hyperfine", "--warmup", "1", "--runs", str(a.runs), "--export-json", out,
                                     "--style", "none"] + list(cmds.values()),
                           check=True, cwd=d, stdout=subprocess.DEVNULL)
            res = json.load(open(out))["results"]
            base = res[names.index("crun")]["mean"]
            for n, rr in zip(names, res):
                means[n].append(rr["mean"])
                ratios[n].append(rr["mean"] / base)
        results.append({"mode": mode, "names": names,
                        "mean": {n: statistics.median(v) for n, v in means.items()},
                        "ratio": {n: statistics.median(v) for n, v in ratios.items()},
                        "added_us": {n: statistics.median([(m - c) / a.execs * 1e6 for m, c in zip(means[n], means["crun"])])
                                     for n in names}})

    print(f"\n{a.execs} fork+exec of /bin/true in a busybox shell loop as the container's process; "
          f"{a.rounds} rounds x {a.runs} runs (hyperfine, interleaved)" + (", all on CPU 0 (taskset -c 0)" if a.pin else ""))
    print("| mode | command | median wall (ms) | ratio to crun | added per exec vs crun (us) |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        for n in r["names"]:
            print(f"| {r['mode']} | {n} | {r['mean'][n] * 1000:.0f} | {r['ratio'][n]:.2f} | {r['added_us'][n]:+.0f} |")
    if a.json:
        json.dump({"execs": a.execs, "rounds": a.rounds, "runs": a.runs, "results": results}, open(a.json, "w"))
finally:
    shutil.rmtree(work, ignore_errors=True)
