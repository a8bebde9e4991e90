#!/usr/bin/env python3
"""Load: many build steps at once and a long create/start/delete loop,
buildcell (full: audit, `build` profile) against runc and crun under the
same concurrency, as root.

Per runtime, in turn (buildcell, runc, crun; --rounds repeats the sequence):
- steps: --steps containers of a build-like step (a busybox shell running
  --step-execs fork+exec of /bin/true) started all at once with `RT run`;
  throughput = steps / wall time from the first start to the last exit;
- cycles: --cycles lifecycles (`create --pid-file`, `start`, wait until the
  container's init is reaped by this driver, the subreaper, `delete`) of
  /bin/true, --workers at a time, each with a fresh id; throughput = cycles /
  wall time, and the p50/p99 of one lifecycle's time.
Every command must exit 0 (a failure is counted and its first error line
printed; the run then exits 1). After each runtime's part, nothing may be
left: its state directory empty, no cgroup directory named after this run's
ids in any hierarchy, the same mount points as before, no new entry in
/run/buildcell/ranges, no process of the runtime's --root. While buildcell's
steps run, the open fds of each foreground `run` (the audit supervisor of
its container) are sampled every 20 ms: the number may not grow with the
execs (the table gives the largest count seen and the largest growth of one
supervisor between its first and last sample). MemAvailable is read before
and after the whole run (after a sync and drop_caches=3).

Usage: bench/load.py [--full] [--steps N] [--step-execs N] [--cycles N] [--workers N] [--rounds N] [--json FILE]
  default (quick): 10 steps at once, 200 cycles by 10 workers;
  --full: 50 steps at once, 2,000 cycles by 50 workers.
"""
import argparse, json, os, shutil, statistics, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--full", action="store_true")
p.add_argument("--steps", type=int)
p.add_argument("--step-execs", type=int, default=100)
p.add_argument("--cycles", type=int)
p.add_argument("--workers", type=int)
p.add_argument("--rounds", type=int, default=1)
p.add_argument("--runtimes", default="buildcell,runc,crun")
p.add_argument("--buildcell")
p.add_argument("--json")
a = p.parse_args()
a.steps = a.steps or (50 if a.full else 10)
a.cycles = a.cycles or (2000 if a.full else 200)
a.workers = a.workers or (50 if a.full else 10)
if os.geteuid() != 0:
    sys.exit("bench/load.py: run as root")
common.private_cgroup_view(__file__, sys.argv[1:])

reaper = common.Reaper()
RANGES = "/run/buildcell/ranges"
tag = f"ld{os.getpid()}"
failures = []
flock = threading.Lock()


def fail(what, outfile):
    try:
        line = next((l for l in open(outfile).read().splitlines() if l.strip()), "")
    except OSError:
        line = ""
    with flock:
        failures.append(f"{what}: {line[:200]}")


def ranges():
    """The id ranges held for a state directory of this run (other users of
    buildcell on the host hold theirs in the same directory)."""
    held = set()
    try:
        names = os.listdir(RANGES)
    except OSError:
        return held
    for n in names:
        try:
            if work in open(os.path.join(RANGES, n)).read():
                held.add(n)
        except OSError:
            pass
    return held


def leftovers(name, root, mounts0, ranges0):
    """What a runtime left behind after its part."""
    left = []
    try:
        ents = os.listdir(root)
    except OSError:
        ents = []
    if ents:
        left.append(f"state entries: {sorted(ents)[:5]}")
    cg = common.cgroup_dirs_matching(tag)
    if cg:
        left.append(f"cgroups: {cg[:5]} ({len(cg)})")
    m = common.mount_points()
    if m != mounts0:
        left.append(f"mounts changed: +{sorted(set(m) - set(mounts0))[:5]} -{sorted(set(mounts0) - set(m))[:5]}")
    r = ranges() - ranges0
    if r:
        left.append(f"/run/buildcell/ranges: {sorted(r)[:5]}")
    procs = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                if root in open(f"/proc/{e}/cmdline").read():
                    procs.append(e)
            except OSError:
                pass
    if procs:
        left.append(f"processes: {procs[:5]}")
    return left


def steps_part(name, rt, d, bundle):
    root = f"{d}/state/{name}"
    pids = []
    fd_samples = {}
    t0 = time.monotonic()
    for i in range(a.steps):
        pids.append(reaper.spawn([rt, "--root", root, "run", "--bundle", bundle, f"{tag}-s{i}"], out=f"{d}/out/s{i}"))
    done = {}
    while len(done) < len(pids):
        for i, pid in enumerate(pids):
            if i in done:
                continue
            rc = reaper.wait(pid, t0, 0)
            if rc is not None:
                done[i] = (rc, time.monotonic() - t0)
                continue
            if name == "buildcell":
                try:
                    fd_samples.setdefault(pid, []).append(len(os.listdir(f"/proc/{pid}/fd")))
                except OSError:
                    pass
        time.sleep(0.02)
    wall = time.monotonic() - t0
    for i, (rc, _) in done.items():
        if rc != 0:
            fail(f"{name} run step {i} exit {rc}", f"{d}/out/s{i}")
    lat = [t for _, t in done.values()]
    # growth from a third into its life (set-up done) to its last sample
    growth = max((v[-1] - v[len(v) // 3] for v in fd_samples.values() if v), default=None)
    maxfd = max((max(v) for v in fd_samples.values() if v), default=None)
    return {"wall": wall, "per_s": a.steps / wall, "p50": common.percentile(lat, 0.5),
            "p99": common.percentile(lat, 0.99), "fd_max": maxfd, "fd_growth": growth,
            "failed": sum(1 for rc, _ in done.values() if rc != 0)}


def cycles_part(name, rt, d, bundle):
    root = f"{d}/state/{name}"
    lat = []
    nfail = [0]
    next_i = [0]
    lock = threading.Lock()

    def one(i):
        cid = f"{tag}-c{i}"
        out = f"{d}/out/c{i}"
        pidf = f"{d}/out/c{i}.pid"
        r = [rt, "--root", root]
        t = time.monotonic()
        if reaper.call(r + ["create", "--bundle", bundle, "--pid-file", pidf, cid], out=out) != 0:
            fail(f"{name} create {cid}", out)
            reaper.call(r + ["delete", "--force", cid])
            return False
        init = int(open(pidf).read())
        if reaper.call(r + ["start", cid], out=out) != 0:
            fail(f"{name} start {cid}", out)
            reaper.call(r + ["delete", "--force", cid])
            return False
        if reaper.wait(init, t, 60) is None:
            fail(f"{name} {cid}: init {init} not reaped in 60 s", out)
        # runc and crun may not yet see the reaped init as stopped: retry
        # briefly (bench/lifecycle.py saw ~1% of such refusals).
        for n in range(200):
            if reaper.call(r + ["delete", cid], out=out) == 0:
                break
            time.sleep(0.005)
        else:
            fail(f"{name} delete {cid}", out)
            reaper.call(r + ["delete", "--force", cid])
            return False
        with lock:
            lat.append(time.monotonic() - t)
        return True

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= a.cycles:
                return
            if not one(i):
                with lock:
                    nfail[0] += 1

    t0 = time.monotonic()
    ths = [threading.Thread(target=worker) for _ in range(a.workers)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.monotonic() - t0
    return {"wall": wall, "per_s": a.cycles / wall, "p50": common.percentile(lat, 0.5),
            "p99": common.percentile(lat, 0.99), "failed": nfail[0]}


work = common.tmpdir("buildcell-load-")
try:
    bc = common.copy_buildcell(work, a.buildcell)
    all_rts = {"buildcell": bc, "runc": "/usr/sbin/runc", "crun": "/usr/bin/crun"}
    runtimes = {n: all_rts[n] for n in a.runtimes.split(",")}
    d, bundle, _ = common.make_bundle(work, "root", None, ["/bin/true"])
    os.makedirs(f"{d}/out")
    step_bundle = f"{d}/step"
    os.makedirs(step_bundle)
    cfg = json.load(open(f"{bundle}/config.json"))
    cfg["root"]["path"] = f"{bundle}/rootfs"
    cfg["process"]["args"] = ["/bin/sh", "-c", f"i=0; while [ $i -lt {a.step_execs} ]; do /bin/true; i=$((i+1)); done"]
    json.dump(cfg, open(f"{step_bundle}/config.json", "w"))

    os.sync()
    open("/proc/sys/vm/drop_caches", "w").write("3")
    mem0 = common.mem_available_kib()
    results = {n: {"steps": [], "cycles": []} for n in runtimes}
    leaks = {n: [] for n in runtimes}
    for rnd in range(a.rounds):
        for name, rt in runtimes.items():
            mounts0, ranges0 = common.mount_points(), ranges()
            results[name]["steps"].append(steps_part(name, rt, d, step_bundle))
            results[name]["cycles"].append(cycles_part(name, rt, d, bundle))
            time.sleep(0.5)  # let the last detached supervisors exit
            leaks[name] += leftovers(name, f"{d}/state/{name}", mounts0, ranges0)
            print(f"load: round {rnd} {name} done", file=sys.stderr)
    os.sync()
    open("/proc/sys/vm/drop_caches", "w").write("3")
    time.sleep(1)
    mem1 = common.mem_available_kib()

    def med(name, part, key):
        vs = [r[key] for r in results[name][part] if r[key] is not None]
        return statistics.median(vs) if vs else None

    print(f"\nLoad, as root: {a.steps} steps ({a.step_execs} execs of /bin/true each) started at once with `run`; "
          f"{a.cycles} create/start/wait/delete cycles of /bin/true by {a.workers} workers; "
          f"{a.rounds} round(s), runtimes one after another")
    print("| runtime | steps/s | step p50 (ms) | step p99 (ms) | cycles/s | cycle p50 (ms) | cycle p99 (ms) | failed | left behind |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in runtimes:
        nf = sum(r["failed"] for part in ("steps", "cycles") for r in results[n][part])
        print(f"| {n} | {med(n, 'steps', 'per_s'):.1f} | {med(n, 'steps', 'p50') * 1000:.0f} | {med(n, 'steps', 'p99') * 1000:.0f} "
              f"| {med(n, 'cycles', 'per_s'):.1f} | {med(n, 'cycles', 'p50') * 1000:.0f} | {med(n, 'cycles', 'p99') * 1000:.0f} "
              f"| {nf} | {'; '.join(leaks[n]) or 'nothing'} |")
    if "buildcell" in runtimes:
        fm = max(r["fd_max"] or 0 for r in results["buildcell"]["steps"])
        fg = max(r["fd_growth"] or 0 for r in results["buildcell"]["steps"])
        print(f"\nbuildcell's foreground `run` supervisors during the steps: at most {fm} open fds; "
              f"largest growth of one supervisor from a third into its life (set-up done) to its last sample: {fg:+d}")
    print(f"\nMemAvailable before {mem0} KiB, after {mem1} KiB (difference {mem1 - mem0:+d} KiB, "
          f"{(mem1 - mem0) / max(mem0, 1) * 100:+.2f}%; page cache dropped before each reading; "
          "other engineers' work on this host moves it too)")
    if failures:
        print("\nfailures (first 10):")
        for f in failures[:10]:
            print(f"- {f}")
    if a.json:
        json.dump({"args": vars(a), "results": results, "leaks": leaks, "failures": failures,
                   "mem_available_kib": [mem0, mem1]}, open(a.json, "w"))
    bad = failures or any(leaks.values())
finally:
    shutil.rmtree(work, ignore_errors=True)
sys.exit(1 if bad else 0)
