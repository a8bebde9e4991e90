"""Shared helpers of the bench/ parts (lifecycle, phases, exec_oci, rss, build, load).

- `parse_args()`: the options every part shares (--modes, --user,
  --buildcell, --json), root only, then `private_cgroup_view()`.
- `private_cgroup_view()`: re-execute the calling script in a private mount
  namespace without /sys/fs/cgroup/unified (crun 1.8 refuses this hybrid
  host otherwise), as bench/lifecycle.py does; every runtime then sees the
  same cgroup v1 view and the namespace set-up is never timed.
- `make_bundle(work, mode, user, args)`: a busybox-static bundle, config from
  `runc spec` (root) or `runc spec --rootless` made as the user (rootless),
  plus a network namespace (buildcell's `build` profile refuses the host's
  network; every runtime gets the same config).
- `read_back_from_disk(paths)`: every runtime binary's page cache dropped
  before peak RSS is measured (written and read-back files map differently).
- `Reaper`: this process becomes a child subreaper and one thread reaps
  every child (the runtimes it starts and the containers' inits they leave
  behind, as conmon or containerd's shim would); `spawn` + `wait` replace
  subprocess so that no exit status is lost to the reaper.
"""
import ctypes, json, os, pwd, shutil, subprocess, sys, tempfile, threading, time

UNIFIED = "/sys/fs/cgroup/unified"
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse_args(script, p, modes=True, json_out=True, cgroup_view=True):
    """Add the options the parts share to argparse parser `p` (--user,
    --buildcell, and --modes / --json unless told not to), parse, refuse to
    run as anyone but root, and (unless cgroup_view is false) re-execute in
    the private cgroup view. -> the parsed arguments."""
    if modes:
        p.add_argument("--modes", default="root,rootless")
    p.add_argument("--user", default=os.environ.get("BUILDCELL_TEST_USER", "bctest"))
    p.add_argument("--buildcell")
    if json_out:
        p.add_argument("--json")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit(f"bench/{os.path.basename(script)}: run as root")
    if cgroup_view:
        private_cgroup_view(script, sys.argv[1:])
    return a


def private_cgroup_view(script, argv):
    """exec `script argv` again in a private mount namespace without the
    cgroup2 mount of the hybrid hierarchy (no return), unless already done."""
    if os.environ.get("BUILDCELL_BENCH_NS") == "1" or not os.path.ismount(UNIFIED):
        return
    os.environ["BUILDCELL_BENCH_NS"] = "1"
    os.execvp("unshare", ["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f'umount {UNIFIED} && exec "$@"', "sh", sys.executable, os.path.abspath(script)] + argv)


def as_user_prefix(user, home, xdg):
    return ["runuser", "-u", user, "--", "env", "-i", f"PATH={PATH}", f"HOME={home}", f"USER={user}",
            f"LOGNAME={user}", f"XDG_RUNTIME_DIR={xdg}"]


def make_bundle(work, mode, user, args, runc="/usr/sbin/runc"):
    """-> (dir, bundle, prefix): prefix runs a command as the mode's caller."""
    d = os.path.join(work, mode)
    bundle = os.path.join(d, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    for sub in ("proc", "sys", "dev", "tmp", "etc"):
        os.makedirs(os.path.join(rootfs, sub))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    apps = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for app in apps:
        if app != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", app))
    xdg = os.path.join(d, "xdg")
    os.makedirs(xdg, mode=0o700)
    os.makedirs(os.path.join(d, "state"))
    prefix = []
    if mode == "rootless":
        u = pwd.getpwnam(user)
        subprocess.run(["chown", "-R", f"{u.pw_uid}:{u.pw_gid}", d], check=True)
        prefix = as_user_prefix(user, d, xdg)
        subprocess.run(prefix + ["sh", "-c", f"cd {bundle} && {runc} spec --rootless"], check=True)
    else:
        subprocess.run([runc, "spec"], cwd=bundle, check=True)
    cfg_path = os.path.join(bundle, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["process"]["args"] = args
    cfg["process"]["terminal"] = False
    nss = cfg["linux"]["namespaces"]
    if not any(n["type"] == "network" for n in nss):
        nss.append({"type": "network"})
    json.dump(cfg, open(cfg_path, "w"), indent=1)
    if mode == "rootless":
        os.chown(cfg_path, u.pw_uid, u.pw_gid)
    return d, bundle, prefix


def copy_buildcell(work, path=None):
    """A world-readable copy of the release binary (the rootless user must
    reach it wherever the repo lives)."""
    src = path or os.path.join(REPO, "target", "release", "buildcell")
    if not os.path.exists(src):
        sys.exit(f"bench: {src} missing: ci/build-release.sh first")
    bc = os.path.join(work, "buildcell")
    shutil.copy(src, bc)
    os.chmod(bc, 0o755)
    return bc


def read_back_from_disk(paths):
    """Drop the page cache of each runtime binary (after a sync: only clean
    pages go), so that each is read back by its own page faults, as an
    installed binary is after a reboot or under cache pressure. A file just
    written (the build's link, this bench's copy) sits in the page cache in
    the folios its writer made, and the kernel's fault-around maps whole
    folios: one buildcell binary peaked at 3,284 KiB (rootless `run`) as `cp`
    wrote it and at 3,044 KiB read back, while runc's and crun's files were
    read back long ago. Every runtime is measured the same way."""
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Reaper:
    """Child subreaper with one reaping thread; exit statuses by pid."""

    def __init__(self):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        self.cv = threading.Condition()
        self.status = {}  # pid -> (exit code, monotonic time reaped)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                pid, st = os.wait()
            except ChildProcessError:
                time.sleep(0.005)
                continue
            with self.cv:
                self.status[pid] = (os.waitstatus_to_exitcode(st), time.monotonic())
                self.cv.notify_all()

    def spawn(self, argv, out=None):
        """Start argv, stdin /dev/null, stdout+stderr to file `out` (or
        /dev/null). -> pid."""
        target = out or os.devnull
        acts = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2)]
        return os.posix_spawnp(argv[0], argv, os.environ, file_actions=acts)

    def wait(self, pid, since=0.0, timeout=120):
        """Exit code of pid reaped after `since` (monotonic), None on timeout."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                st = self.status.get(pid)
                if st and st[1] >= since:
                    return st[0]
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def call(self, argv, out=None, timeout=120):
        t = time.monotonic()
        return self.wait(self.spawn(argv, out), t, timeout)


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def mem_available_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def cgroup_dirs_matching(needle):
    """Every cgroup directory (each v1 hierarchy and cgroup2 mount seen by
    this process) whose path holds `needle`."""
    found = []
    seen = set()
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        sep = f.index("-")
        if f[sep + 1] not in ("cgroup", "cgroup2"):
            continue
        mp = f[4]
        if mp in seen:
            continue
        seen.add(mp)
        for root, dirs, _ in os.walk(mp):
            for dd in dirs:
                if needle in dd:
                    found.append(os.path.join(root, dd))
    return found


def mount_points():
    return sorted(l.split()[4] for l in open("/proc/self/mountinfo"))


def tmpdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix, dir="/var/tmp")
    os.chmod(d, 0o755)
    return d
