#!/usr/bin/env python3
"""Container lifecycle of `/bin/true`: buildcell against runc and crun, side by side.

Per runtime RT and form, one hyperfine command (a shell line; hyperfine
subtracts the shell's own start-up) over a fresh container id ($$ of that shell):
  run:    RT --root S run --bundle B ID   (foreground, as BuildKit calls it;
          run removes the container when it returns, so there is nothing
          left to delete: `RT delete ID` would fail "container does not exist")
  create: RT --root S create --bundle B --pid-file P ID; RT --root S start ID;
          wait until that pid is gone; RT --root S delete ID
          (this driver is the child subreaper that reaps the container's
          init, as conmon or containerd's shim would)
The first lifecycle of each runtime is a probe that also checks no state is
left behind (`RT state ID` must fail afterwards).
as root (bundle config from `runc spec`) and rootless (as --user, default
bctest, via runuser; config from `runc spec --rootless` made as that user;
XDG_RUNTIME_DIR a private directory). The bundle is a busybox-static rootfs
(/bin/busybox + its applet links), args ["/bin/true"], terminal false.

Each round runs hyperfine once over all runtimes (interleaving rounds keeps
machine noise out of the ratios), each round starting with the next runtime
in turn (what one leaves the kernel to finish lands on the one after it); the table gives per runtime the median over
rounds of its mean wall time, the median of the per-round ratios to crun, and
the peak RSS of the runtime process from GNU `/usr/bin/time -f %M` (median of
5) of `run` (run rows) or `create` (create rows). It is the maximum over the process and the
children it waits for: for `run` that includes runc's `runc init` re-exec
(the container's pid 1 until it execs /bin/true) and crun's cloned child, so
it is the larger of the runtime and its init, not their sum; for `create`
the container's init is not waited for (it outlives `create`).

crun 1.8 refuses this hybrid cgroup host ("cgroups in hybrid mode not
supported") unless /sys/fs/cgroup/unified is gone. For a fair comparison the
whole benchmark (all three runtimes, root and rootless) re-executes itself in
a private mount namespace where that mount is unmounted: every runtime sees
the same cgroup v1 view and the namespace set-up is never timed. With
--host-cgroups it stays on the host view instead: crun then fails and is
reported as not available, ratios are to runc.

A runtime that fails its first lifecycle (buildcell before its runc CLI exists)
is reported as "not available (first error line)" and left out.

Usage: bench/lifecycle.py [--rounds N] [--runs N] [--user NAME] [--modes root,rootless]
                          [--forms run,create] [--buildcell PATH] [--host-cgroups]
Run as root.
"""
import argparse, atexit, ctypes, json, os, shutil, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

UNIFIED = "/sys/fs/cgroup/unified"
p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=10)
p.add_argument("--runs", type=int, default=20, help="runs per command per round")
p.add_argument("--user", default=os.environ.get("BUILDCELL_TEST_USER", "bctest"), help="user of the rootless mode")
p.add_argument("--modes", default="root,rootless")
p.add_argument("--forms", default="run,create")
p.add_argument("--buildcell", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "buildcell"))
p.add_argument("--runc", default="/usr/sbin/runc")
p.add_argument("--crun", default="/usr/bin/crun")
p.add_argument("--host-cgroups", action="store_true", help="do not unmount the cgroup2 part of the hybrid hierarchy")
p.add_argument("--pause", type=float, default=0,
               help="seconds idle before each run (hyperfine --prepare 'sleep S'): build steps come seconds apart, "
                    "and a runtime that writes another process's pid into a v1 cgroup.procs then waits for an RCU "
                    "grace period (bench/NOTES.md)")
p.add_argument("--json", help="also write every run's wall time (seconds) and the table's numbers to this JSON file (bench/plot.py)")
p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
a = p.parse_args()

if os.geteuid() != 0:
    sys.exit("bench/lifecycle.py: run as root (it builds bundles and switches to --user for the rootless mode)")
for tool in ("hyperfine", "runuser", "unshare", "/usr/bin/time", "/bin/busybox", a.runc):
    if not shutil.which(tool):
        sys.exit(f"bench: {tool} not found (apt-get install hyperfine util-linux time busybox-static runc crun)")

# Enter the private mount namespace once, for everything (see the docstring).
if not a.host_cgroups and not a.inner and os.path.ismount(UNIFIED):
    args = [sys.executable, os.path.abspath(__file__), "--inner"] + sys.argv[1:]
    os.execvp("unshare", ["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f'umount {UNIFIED} && exec "$@"', "sh"] + args)

modes = a.modes.split(",")
forms = a.forms.split(",")
work = tempfile.mkdtemp(prefix="buildcell-lifecycle-", dir="/var/tmp")
os.chmod(work, 0o755)
atexit.register(shutil.rmtree, work, True)  # also when a round fails


# After `create` returns, the container's init is an orphan. Under conmon or
# containerd's shim it is reparented to that monitor (a child subreaper),
# which reaps it at once; `delete` comes after. Here pid 1 may reap late
# (seconds), and crun's delete sometimes takes the zombie for a running
# container. So this driver is the subreaper, and reaps every child as soon
# as it exits while it waits for the command it ran.
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def run_reaping(argv, cwd=None, capture=False, marks=None):
    """Run argv, reaping orphans meanwhile; with marks, create marks/<pid> for
    every orphan reaped (the create form waits for its init's mark: /proc/PID
    is no exit signal, it can vanish for an instant while runc's multi-threaded
    init execs). -> (exit code, output if capture)."""
    if marks:
        shutil.rmtree(marks, ignore_errors=True)
        os.makedirs(marks)
        os.chmod(marks, 0o755)
    out = tempfile.TemporaryFile() if capture else subprocess.DEVNULL
    p = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT if capture else subprocess.DEVNULL)
    while True:
        pid, st = os.wait()
        if pid == p.pid:
            break
        if marks:
            open(os.path.join(marks, str(pid)), "w").close()
    p.returncode = os.waitstatus_to_exitcode(st)
    text = ""
    if capture:
        out.seek(0)
        text = out.read().decode(errors="replace")
    return p.returncode, text


# Runtimes: buildcell is copied next to the bundles so the rootless user can
# execute it wherever the repo lives.
runtimes = {"crun": a.crun, "runc": a.runc}
bc = os.path.join(work, "buildcell")
if os.path.exists(a.buildcell):
    shutil.copy(os.path.abspath(a.buildcell), bc)
    os.chmod(bc, 0o755)
runtimes["buildcell"] = bc
# Peak RSS depends on how each binary's pages came into the page cache:
# all read back from disk alike (common.read_back_from_disk).
common.read_back_from_disk(p for p in runtimes.values() if os.path.exists(p))


def lifecycle(rt, form, d, bundle, err=None):
    """One shell line: the whole lifecycle of one fresh container id; with
    `err`, the runtime's own error output is appended to that file (a run
    that fails is then named with its message, see the rounds below)."""
    root = f"{d}/state/{os.path.basename(rt)}"
    r = f"{rt} --root {root}"
    to = f" 2>>{err}" if err else ""
    if form == "run":
        # run removes the container itself when it returns (runc and crun
        # without --keep; BuildKit relies on it): a delete after it would
        # only fail with "container does not exist".
        return f"ID=lc$$; {r} run --bundle {bundle} $ID{to}"
    # Wait until this driver, the subreaper, has reaped the container's init
    # (run_reaping marks it in {d}/reaped). Shell builtins only.
    pidf = f"{d}/state/$$.pid"
    return (f"ID=lc$$; {r} create --bundle {bundle} --pid-file {pidf} $ID{to} && {r} start $ID{to} && read P <{pidf} && "
            f"while [ ! -e {d}/reaped/$P ]; do :; done; rm -f {pidf}; "
            # Rootless runc and crun refuse about 1% of these deletes ("not
            # stopped: running") although the init was reaped and `state`
            # right after says stopped: retry, bounded, then fail for real.
            f"n=0; until {r} delete $ID 2>/dev/null; do n=$((n+1)); [ $n -lt 200 ] || {{ {r} delete $ID; exit 1; }}; done")


def probe(rt, form, d, bundle, prefix):
    """None if one lifecycle works, else the first error line."""
    if not os.path.exists(rt):
        return f"{rt} not found"
    # afterwards no state may be left: `state` of the id must fail
    check = f" && ! {rt} --root {d}/state/{os.path.basename(rt)} state lc$$ >/dev/null 2>&1 && echo LIFECYCLE-OK"
    rc, out = run_reaping(prefix + ["timeout", "60", "sh", "-c", lifecycle(rt, form, d, bundle) + check], capture=True,
                          marks=f"{d}/reaped")
    if rc == 0 and "LIFECYCLE-OK" in out:
        return None
    lines = [l for l in out.splitlines() if l.strip()]
    return (lines[0] if lines else f"exit {rc}")[:160]


def peak_rss(rt, form, d, bundle, prefix):
    """Median peak RSS (KiB) of `RT run`, or of `RT create` for the create form."""
    root = f"{d}/state/{os.path.basename(rt)}"
    # time writes to a file, the rest goes to /dev/null: a created container's
    # init keeps the runtime's stdio open until it starts, so a pipe would
    # never reach EOF.
    tf = f"{d}/state/rss.txt"
    kib = []
    for i in range(5):
        cid = f"rss{os.getpid()}-{i}"
        argv = [rt, "--root", root, form, "--bundle", bundle, cid]
        run_reaping(prefix + ["/usr/bin/time", "-o", tf, "-f", "%M"] + argv)
        kib.append(int(open(tf).read().strip().splitlines()[-1]))
        if form == "create":
            run_reaping(prefix + [rt, "--root", root, "delete", "--force", cid])
    return statistics.median(kib)


results = []
dump = []
failed = []  # runs that exited non-zero, named
for mode in modes:
    # A busybox bundle from `runc spec` (rootless: `runc spec --rootless` as
    # the user, whose dir it all is) plus a network namespace of its own for
    # every runtime (buildcell's build profile refuses the host's network).
    d, bundle, prefix = common.make_bundle(work, mode, a.user, ["/bin/true"], runc=a.runc)
    for form in forms:
        avail, missing = {}, {}
        for name, rt in runtimes.items():
            err = probe(rt, form, d, bundle, prefix)
            (missing.__setitem__(name, err) if err else avail.__setitem__(name, rt))
        ref = "crun" if "crun" in avail else ("runc" if "runc" in avail else None)
        times = {n: [] for n in avail}
        means = {n: [] for n in avail}
        ratios = {n: [] for n in avail}
        names = list(avail)
        all_names = names
        for rnd in range(a.rounds if all_names else 0):
            # Each round starts with another runtime: what a runtime leaves
            # the kernel to finish after it (network namespaces torn down
            # by a workqueue, cgroups freed after an RCU grace period)
            # lands on whichever comes next, so no runtime may always
            # follow the same one.
            names = all_names[rnd % len(all_names):] + all_names[:rnd % len(all_names)]
            out = os.path.join(d, f"round-{form}-{rnd}.json")
            errs = {n: f"{d}/state/{n}.{form}.stderr" for n in names}
            cmds = [lifecycle(avail[n], form, d, bundle, errs[n]) for n in names]
            pause = ["--prepare", f"sleep {a.pause}"] if a.pause else []
            # -i: a failed run does not end the benchmark; it is counted and
            # named below from the exit codes hyperfine records.
            hf = ["hyperfine", "-i", "--warmup", "3", "--runs", str(a.runs), *pause, "--export-json", out,
                  "--style", "none"] + cmds
            rc, log = run_reaping(prefix + hf, cwd=d, capture=True, marks=f"{d}/reaped")
            if rc != 0:
                sys.exit(f"bench: hyperfine failed ({mode}, {form}, round {rnd}):\n{log[-2000:]}")
            res = json.load(open(out))["results"]
            for n, rr in zip(names, res):
                bad = [c for c in rr.get("exit_codes", []) if c != 0]
                if bad:
                    tail = open(errs[n], errors="replace").read().strip().splitlines()[-2:] \
                        if os.path.exists(errs[n]) else []
                    failed.append(f"{mode}, {form}, round {rnd}: {n}: {len(bad)} of {len(rr['exit_codes'])} runs "
                                  f"exited {sorted(set(bad))}; its last error lines: {' / '.join(tail) or '(none)'}")
            base = res[names.index(ref)]["mean"]
            for n, rr in zip(names, res):
                means[n].append(rr["mean"])
                times[n].extend(rr["times"])
                ratios[n].append(rr["mean"] / base)
        rss = {n: peak_rss(avail[n], form, d, bundle, prefix) for n in avail}
        results.append((mode, form, ref, all_names, means, ratios, rss, missing))
        dump.append({"mode": mode, "form": form, "ref": ref, "missing": missing, "rss_kib": rss,
                     "times": times, "median_mean": {n: statistics.median(v) for n, v in means.items() if v},
                     "ratio": {n: statistics.median(v) for n, v in ratios.items() if v}})

ns = "host cgroup view (cgroup2 'unified' mounted)" if a.host_cgroups else \
     "all runtimes in one private mount namespace without /sys/fs/cgroup/unified"
idle = f", {a.pause:g} s idle before each run" if a.pause else ""
print(f"\n/bin/true lifecycle, {a.rounds} rounds x {a.runs} runs, fresh id per run{idle}; {ns}")
print("| mode | form | runtime | median wall (ms) | ratio to crun (median of per-round ratios) | peak RSS of `run` / `create` (KiB) |")
print("|---|---|---|---:|---:|---:|")
for mode, form, ref, names, means, ratios, rss, missing in results:
    for n in ["buildcell", "runc", "crun"]:
        who = f"{mode} ({a.user})" if mode == "rootless" else mode
        if n in missing:
            print(f"| {who} | {form} | {n} | not available ({missing[n]}) | | |")
            continue
        rcol = f"{statistics.median(ratios[n]):.2f}" + ("" if ref == "crun" else f" (to {ref})")
        mem = f"{rss[n]:.0f}"
        print(f"| {who} | {form} | {n} | {statistics.median(means[n]) * 1000:.2f} | {rcol} | {mem} |")
if failed:
    print("\n**Runs that failed** (counted in the times above):")
    for f_ in failed:
        print(f"- {f_}")
if a.json:
    with open(a.json, "w") as f:
        json.dump({"rounds": a.rounds, "runs": a.runs, "results": dump, "failed": failed}, f)
if failed:
    sys.exit(f"bench: {len(failed)} round(s) had failed runs: " + "; ".join(failed))
