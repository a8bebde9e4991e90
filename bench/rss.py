#!/usr/bin/env python3
"""Peak RSS of the runtime per subcommand, and of buildcell's audit supervisor.

Runtime: GNU `/usr/bin/time -f %M` (the largest RSS of the process and of the
children it waited for) of each of `create`, `start`, `exec ID /bin/true`,
`delete` (after the container was killed and reaped) and `run` of
`/bin/true`, for buildcell, runc and crun on the same busybox bundle; median
of --reps. For `run` of runc this includes `runc init` (the re-exec that is
the container's pid 1 until it execs), for crun its cloned child; for
buildcell its init and forked children, which are the same binary.

Supervisor: buildcell's audit supervisor while it serves a busy container
(a shell loop of --execs fork+exec of /bin/true): the detached supervisor of
`create`+`start` (its pid from the state file) and the foreground `run`
process, which serves the audit itself. VmHWM and the fd count are sampled
from /proc/PID every 20 ms while it runs: the table gives the last VmHWM
seen (the peak) and the smallest and largest number of open fds. runc and
crun have no supervisor (an engine's conmon or shim would be; not measured).

Usage: bench/rss.py [--reps N] [--execs N] [--modes root,rootless] [--json FILE]
Run as root (private mount namespace for crun, see bench/common.py).
"""
import argparse, json, os, shutil, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--reps", type=int, default=5)
p.add_argument("--execs", type=int, default=3000)
a = common.parse_args(__file__, p)

reaper = common.Reaper()
SUBS = ["create", "start", "exec", "delete", "run"]


def status_kib(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def nfds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def timed(prefix, argv, tf):
    rc = reaper.call(prefix + ["/usr/bin/time", "-o", tf, "-f", "%M"] + argv, out=tf + ".out")
    if rc != 0:
        sys.exit(f"bench: {' '.join(argv)} failed ({rc}): {open(tf + '.out').read()[-400:]}")
    return int(open(tf).read().split()[-1])


def wait_stopped(pid, t0):
    reaper.wait(pid, t0, 30)


def sample(pid, stop_when):
    """Sample VmHWM and fd count of pid until it exits or stop_when()."""
    hwm, fds = None, []
    while not stop_when():
        h = status_kib(pid, "VmHWM")
        n = nfds(pid)
        if h is None or n is None:
            break
        hwm = h
        fds.append(n)
        time.sleep(0.02)
    return hwm, fds


work = common.tmpdir("buildcell-rssbench-")
try:
    bc = common.copy_buildcell(work, a.buildcell)
    runtimes = {"buildcell": bc, "runc": "/usr/sbin/runc", "crun": "/usr/bin/crun"}
    common.read_back_from_disk(runtimes.values())
    out = {}
    for mode in a.modes.split(","):
        d, bundle, prefix = common.make_bundle(work, mode, a.user, ["/bin/sleep", "30"])
        # a second bundle for run (/bin/true) and one for the busy step
        cfg = json.load(open(f"{bundle}/config.json"))
        for name, args in (("true", ["/bin/true"]),
                           ("busy", ["/bin/sh", "-c", f"i=0; while [ $i -lt {a.execs} ]; do /bin/true; i=$((i+1)); done"])):
            b2 = f"{d}/{name}"
            os.makedirs(b2)
            cfg["root"]["path"] = f"{bundle}/rootfs"
            cfg["process"]["args"] = args
            json.dump(cfg, open(f"{b2}/config.json", "w"))
            if mode == "rootless":
                shutil.chown(b2, a.user)
                shutil.chown(f"{b2}/config.json", a.user)
        tf = f"{d}/state/time"
        res = {n: {s: [] for s in SUBS} for n in runtimes}
        for rep in range(a.reps):
            for n, rt in runtimes.items():  # interleaved
                r = [rt, "--root", f"{d}/state/{n}"]
                cid = f"rss{rep}"
                t0 = time.monotonic()
                res[n]["create"].append(timed(prefix, r + ["create", "--bundle", bundle, "--pid-file", f"{d}/state/pid", cid], tf))
                init = int(open(f"{d}/state/pid").read())
                res[n]["start"].append(timed(prefix, r + ["start", cid], tf))
                res[n]["exec"].append(timed(prefix, r + ["exec", cid, "/bin/true"], tf))
                reaper.call(prefix + r + ["kill", cid, "KILL"])
                wait_stopped(init, t0)
                for _ in range(100):  # the runtime may see the kill late
                    if reaper.call(prefix + r + ["state", cid], out=tf + ".st") == 0 and '"stopped"' in open(tf + ".st").read():
                        break
                    time.sleep(0.02)
                res[n]["delete"].append(timed(prefix, r + ["delete", cid], tf))
                res[n]["run"].append(timed(prefix, r + ["run", "--bundle", f"{d}/true", f"run{rep}"], tf))
        rss = {n: {s: statistics.median(v) for s, v in subs.items()} for n, subs in res.items()}

        # The supervisor of a busy container: detached (create + start) ...
        sup = {}
        r = [bc, "--root", f"{d}/state/buildcell"]
        rc = reaper.call(prefix + r + ["create", "--bundle", f"{d}/busy", "busy"])
        if rc != 0:
            sys.exit("bench: buildcell create of the busy bundle failed")
        st = json.load(open(f"{d}/state/buildcell/busy/state.json"))
        spid, init = st["supervisor_pid"], st["oci"]["pid"]
        t0 = time.monotonic()
        reaper.call(prefix + r + ["start", "busy"])
        hwm, fds = sample(spid, lambda: reaper.wait(init, t0, 0) is not None)
        reaper.wait(init, t0, 300)
        reaper.call(prefix + r + ["delete", "busy"])
        sup["detached (create + start)"] = {"vmhwm_kib": hwm, "fds_min": min(fds), "fds_max": max(fds), "samples": len(fds)}
        # ... and the foreground run, which serves the audit itself.
        t0 = time.monotonic()
        rpid = reaper.spawn(prefix + r + ["run", "--bundle", f"{d}/busy", "busyrun"])
        bpid = rpid
        if mode == "rootless":  # runuser's child is buildcell
            for _ in range(250):
                try:
                    kids = open(f"/proc/{rpid}/task/{rpid}/children").read().split()
                except OSError:
                    kids = []
                if kids and open(f"/proc/{kids[0]}/comm").read().strip() == "buildcell":
                    bpid = int(kids[0])
                    break
                time.sleep(0.01)
        hwm, fds = sample(bpid, lambda: reaper.wait(rpid, t0, 0) is not None)
        if reaper.wait(rpid, t0, 300) != 0:
            sys.exit("bench: buildcell run of the busy bundle failed")
        sup["foreground (run)"] = {"vmhwm_kib": hwm, "fds_min": min(fds), "fds_max": max(fds), "samples": len(fds)}
        out[mode] = {"rss_kib": rss, "supervisor": sup}

    print(f"\nPeak RSS (KiB, GNU time %M, median of {a.reps}) of each subcommand")
    print("| mode | runtime | " + " | ".join(SUBS) + " |")
    print("|---|---|" + "---:|" * len(SUBS))
    for mode, o in out.items():
        for n in runtimes:
            print(f"| {mode} | {n} | " + " | ".join(f"{o['rss_kib'][n][s]:.0f}" for s in SUBS) + " |")
    print(f"\nbuildcell's audit supervisor serving a container that runs {a.execs} fork+exec of /bin/true "
          "(sampled every 20 ms from /proc/PID)")
    print("| mode | supervisor | VmHWM (KiB) | open fds min..max | samples |")
    print("|---|---|---:|---:|---:|")
    for mode, o in out.items():
        for k, v in o["supervisor"].items():
            print(f"| {mode} | {k} | {v['vmhwm_kib']} | {v['fds_min']}..{v['fds_max']} | {v['samples']} |")
    if a.json:
        json.dump(out, open(a.json, "w"))
finally:
    shutil.rmtree(work, ignore_errors=True)
