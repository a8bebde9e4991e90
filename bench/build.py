#!/usr/bin/env python3
"""A real build: `buildah bud` of a Containerfile with 10 RUN steps, with
buildcell (target/release/buildcell, its default `build` profile: audit,
seccomp, Landlock, cgroup limits, looks-like-root) against runc as the
runtime, as root (--isolation oci) and rootless (--isolation oci, as --user).

The image comes from nothing but busybox-static (`FROM scratch`, `ADD` the
binary, then `busybox --install -s /bin` as the first RUN step): no registry
is ever contacted. buildah keeps its storage in a private directory
(storage.conf, overlay driver) and commits once at the end (--layers=false,
buildah's default), so each RUN step is one runtime `create`/`start`/`delete`
of a container in the same working container.

Other engineers drive podman, buildah and docker on this host: every buildah
call holds the engine lock (flock; $BUILDCELL_ENGINE_LOCK or /run/lock/buildcell-engines.lock), and only for that call; the time is
taken inside the lock (`/usr/bin/time` started by flock), so waiting for it
is never counted. Rounds alternate buildcell and runc; the table gives the
median wall time and the median per-round ratio to runc.

Usage: bench/build.py [--rounds N] [--modes root,rootless] [--json FILE]
"""
import argparse, json, os, shutil, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# Engines shared with other runs on the host (integration suites) are
# serialised on this lock; BUILDCELL_ENGINE_LOCK names another.
LOCK = os.environ.get("BUILDCELL_ENGINE_LOCK", "/run/lock/buildcell-engines.lock")
p = argparse.ArgumentParser()
p.add_argument("--rounds", type=int, default=3)
# The engines run in the host's cgroup view, as on a build host.
a = common.parse_args(__file__, p, cgroup_view=False)

CONTAINERFILE = """FROM scratch
ADD busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /out /work && echo step2 > /out/2
RUN for i in $(seq 1 50); do echo $i > /out/n$i; done
RUN cat /out/n* | wc -l > /out/count
RUN sh -c 'i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done' && echo loop > /out/5
RUN tar -cf /work/out.tar /out && tar -tf /work/out.tar | wc -l > /out/6
RUN gzip -9 /work/out.tar && ls -l /work > /out/7
RUN find / -xdev -type f | wc -l > /out/8
RUN sha256sum /bin/busybox > /out/9
RUN id -u > /out/uid && ls /out | wc -l > /out/10
"""

work = common.tmpdir("buildcell-buildbench-")
results = []
cleanup_dirs = []
try:
    bc = common.copy_buildcell(work, a.buildcell)
    for mode in a.modes.split(","):
        d = os.path.join(work, mode)
        ctx = os.path.join(d, "ctx")
        os.makedirs(ctx)
        shutil.copy("/bin/busybox", os.path.join(ctx, "busybox"))
        open(os.path.join(ctx, "Containerfile"), "w").write(CONTAINERFILE)
        # Storage where the `build` profile lets an engine bind read-write
        # from (its hostname, resolv.conf, .containerenv files live there):
        # as root a directory of its own under /var/lib/containers and
        # /run/containers, never the engines' default storage; rootless
        # under the user's $HOME/.local/share/containers (HOME = this dir).
        if mode == "root":
            store = f"/var/lib/containers/buildcell-bench-{os.getpid()}"
            run = f"/run/containers/buildcell-bench-{os.getpid()}"
            cleanup_dirs.extend([store, run, store + "-tmp"])
        else:
            store = f"{d}/.local/share/containers/storage"
            run = f"{d}/xdg/containers"
        # buildah bud writes each RUN's hostname, hosts, resolv.conf and
        # .containerenv under $TMPDIR (default /var/tmp, which `build` does
        # not let an engine bind): a TMPDIR next to the storage.
        tmp = f"{store}-tmp"
        for sub in (store, run, tmp, f"{d}/xdg"):
            os.makedirs(sub, exist_ok=True)
        os.chmod(f"{d}/xdg", 0o700)
        open(os.path.join(d, "storage.conf"), "w").write(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{store}"\nrunroot = "{run}"\n'
            f'rootless_storage_path = "{store}"\n')
        env = ["env", f"CONTAINERS_STORAGE_CONF={d}/storage.conf", f"TMPDIR={tmp}"]
        if mode == "rootless":
            subprocess.run(["chown", "-R", a.user, d], check=True)
            env = common.as_user_prefix(a.user, d, os.path.join(d, "xdg")) + env[1:]

        def locked(argv, timefile=None, out=None):
            t = ["/usr/bin/time", "-f", "%e", "-o", timefile] if timefile else []
            return subprocess.run(["flock", LOCK] + t + env + ["buildah"] + argv, cwd=d,
                                  stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def build(rt, tag):
            tf = os.path.join(d, "time")
            log = os.path.join(d, f"bud-{tag}.log")
            with open(log, "w") as f:
                r = locked(["bud", "--runtime", rt, "--isolation", "oci", "--network", "none", "--layers=false",
                            "-t", f"localhost/bcbench-{tag}:latest", "-f", f"{ctx}/Containerfile", ctx], tf, f)
            if r.returncode != 0:
                return None, "\n".join(l for l in open(log).read().splitlines() if "buildcell" in l or "rror" in l)[-900:]
            secs = float(open(tf).read().split()[-1])
            locked(["rmi", "-f", f"localhost/bcbench-{tag}:latest"])
            return secs, None

        rts = {"runc": "/usr/sbin/runc", "buildcell": bc}
        times = {n: [] for n in rts}
        ratios = []
        errors = {}
        for rnd in range(a.rounds + 1):  # round 0: warm-up (page cache, storage set-up)
            got = {}
            for n, rt in (list(rts.items()) if rnd % 2 == 0 else list(rts.items())[::-1]):
                if n in errors:
                    continue
                secs, err = build(rt, f"{n}-{mode}")
                if err:
                    errors[n] = err
                    continue
                got[n] = secs
            if rnd == 0:
                continue
            for n, s in got.items():
                times[n].append(s)
            if len(got) == 2:
                ratios.append(got["buildcell"] / got["runc"])
        locked(["rm", "-a"])
        locked(["rmi", "-a", "-f"])
        results.append({"mode": mode, "times": times, "ratios": ratios, "errors": errors})
finally:
    if not os.environ.get("BENCH_KEEP"):
        for c in cleanup_dirs:
            subprocess.run(["flock", LOCK, "sh", "-c", f"umount -R {c}/overlay 2>/dev/null; rm -rf {c}"])
        shutil.rmtree(work, ignore_errors=True)

print(f"\n`buildah bud` (buildah 1.28, --isolation oci, --network none, --layers=false) of a Containerfile with 10 RUN steps "
      f"(FROM scratch + busybox-static); {a.rounds} rounds after a warm-up, buildcell and runc alternating")
print("| mode | runtime | median wall (s) | all (s) | ratio to runc (median of per-round) |")
print("|---|---|---:|---|---:|")
for r in results:
    for n in ("buildcell", "runc"):
        if n in r["errors"]:
            err = " / ".join(r["errors"][n].strip().splitlines()[-3:])[:400] or "?"
            err = err.replace("|", "\\|")
            print(f"| {r['mode']} | {n} | failed: {err} | | |")
            continue
        ratio = f"{statistics.median(r['ratios']):.2f}" if n == "buildcell" and r["ratios"] else ("1.00" if n == "runc" else "")
        print(f"| {r['mode']} | {n} | {statistics.median(r['times'][n]):.2f} | {', '.join(f'{t:.2f}' for t in r['times'][n])} | {ratio} |")
if a.json:
    json.dump(results, open(a.json, "w"))
