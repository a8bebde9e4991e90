#!/usr/bin/env python3
"""Where the lifecycle time goes: the wall time of each subcommand of the
create form (`create`, `start` until the container's init is reaped, and
`delete`) of buildcell, runc and crun, interleaved per repetition, medians;
then buildcell's own `--debug` timeline of one `create` (milliseconds since
start, per set-up step), and the number of system calls of each buildcell
subcommand's own process against crun's (`strace -c`, without -f: strace
following the children would stop buildcell's audit supervisor from
tracing the container's execs).

Usage: bench/phases.py [--reps N] [--mode root|rootless]
Run as root (private mount namespace for crun, see bench/common.py).
"""
import argparse, os, re, shutil, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--reps", type=int, default=30)
p.add_argument("--mode", default="root")
a = common.parse_args(__file__, p, modes=False, json_out=False)
reaper = common.Reaper()
PH = ["create", "start + exit", "delete", "total"]

work = common.tmpdir("buildcell-phases-")
try:
    bc = common.copy_buildcell(work, a.buildcell)
    rts = {"buildcell": bc, "runc": "/usr/sbin/runc", "crun": "/usr/bin/crun"}
    d, bundle, prefix = common.make_bundle(work, a.mode, a.user, ["/bin/true"])
    out = f"{d}/state/out"
    ms = {n: {ph: [] for ph in PH} for n in rts}

    def lifecycle(n, rt, cid):
        r = prefix + [rt, "--root", f"{d}/state/{n}"]
        t0 = time.monotonic()
        if reaper.call(r + ["create", "--bundle", bundle, "--pid-file", f"{d}/state/pid", cid], out=out) != 0:
            sys.exit(f"bench: {n} create failed: {open(out).read()[:300]}")
        init = int(open(f"{d}/state/pid").read())
        t1 = time.monotonic()
        reaper.call(r + ["start", cid], out=out)
        reaper.wait(init, t0, 30)
        t2 = time.monotonic()
        for _ in range(200):
            if reaper.call(r + ["delete", cid], out=out) == 0:
                break
            time.sleep(0.002)
        t3 = time.monotonic()
        return t1 - t0, t2 - t1, t3 - t2, t3 - t0

    for rep in range(a.reps + 2):
        for n, rt in rts.items():
            got = lifecycle(n, rt, f"ph{rep}")
            if rep >= 2:  # two warm-ups
                for ph, v in zip(PH, got):
                    ms[n][ph].append(v * 1000)

    print(f"\nLifecycle of /bin/true by phase ({a.mode}): median ms over {a.reps} interleaved repetitions "
          "(this driver is the subreaper that reaps the init; `start + exit` ends when it is reaped)")
    print("| runtime | " + " | ".join(PH) + " |")
    print("|---|" + "---:|" * len(PH))
    for n in rts:
        print(f"| {n} | " + " | ".join(f"{statistics.median(ms[n][ph]):.1f}" for ph in PH) + " |")
    print("| buildcell / crun | " + " | ".join(
        f"{statistics.median(ms['buildcell'][ph]) / statistics.median(ms['crun'][ph]):.2f}" for ph in PH) + " |")

    # buildcell's own timeline of a create: each step's time since the one
    # before it, median over --reps `--debug create`s (the last one shown
    # whole). The parent and the container's init log to the same stderr.
    r = prefix + [bc, "--debug", "--root", f"{d}/state/buildcell"]
    steps, lines = {}, []
    for i in range(a.reps):
        # output to a file: the created init keeps the runtime's stdio open
        reaper.call(r + ["create", "--bundle", bundle, f"dbg{i}"], out=f"{d}/state/debug")
        reaper.call(prefix + [bc, "--root", f"{d}/state/buildcell", "delete", "--force", f"dbg{i}"])
        lines = [l.replace("buildcell: ", "") for l in open(f"{d}/state/debug").read().splitlines() if "ms]" in l]
        prev = 0.0
        for l in lines:
            m = re.match(r"\[\s*([\d.]+) ms\] (.*)", l)
            if not m:
                continue
            what = re.sub(r"host pid \d+|\d{6,}|added: .*", "", m.group(2)).strip()
            steps.setdefault(what, []).append(float(m.group(1)) - prev)
            prev = float(m.group(1))
    print(f"\n`buildcell --debug create`: each step's time since the step before (median of {a.reps} creates, ms)")
    print("| step (as logged) | median ms | max ms |")
    print("|---|---:|---:|")
    for what, v in steps.items():
        print(f"| {what} | {statistics.median(v):.2f} | {max(v):.2f} |")
    print("\nThe last of them, whole (milliseconds since its create began):\n```")
    print("\n".join(lines))
    print("```")

    # system calls of each subcommand's own process
    def count(n, rt, sub, cid):
        f = f"{d}/state/strace-{n}-{sub}"
        args = {"create": ["create", "--bundle", bundle, "--pid-file", f"{d}/state/pid", cid],
                "start": ["start", cid], "delete": ["delete", cid]}[sub]
        rc = reaper.call(prefix + ["strace", "-c", "-o", f, rt, "--root", f"{d}/state/{n}"] + args, out=out)
        m = re.search(r"^\s*100\.00\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*total", open(f).read(), re.M)
        return (int(m.group(1)) if m else None), rc

    print("\nSystem calls made by the subcommand's own process (strace -c, no -f):")
    print("| runtime | create | start | delete |")
    print("|---|---:|---:|---:|")
    for n, rt in rts.items():
        t0 = time.monotonic()
        c, _ = count(n, rt, "create", "sc")
        init = int(open(f"{d}/state/pid").read())
        s, _ = count(n, rt, "start", "sc")
        reaper.wait(init, t0, 30)
        for _ in range(200):
            dl, rc = count(n, rt, "delete", "sc")
            if rc == 0:
                break
        print(f"| {n} | {c} | {s} | {dl} |")
finally:
    shutil.rmtree(work, ignore_errors=True)
