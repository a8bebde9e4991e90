#!/usr/bin/env python3
"""Regenerate ci/symbol-order.txt, the order in which ci/build-release.sh
asks the linker to lay out functions: the code every call runs first and
together, the code no call runs after it.

Why: a buildcell call touches a small part of its 3.3 MiB of code, but
the kernel maps file pages around each fault (and whole large folios), so
code spread over the binary puts nearly all of it in every call's RSS
(bench/NOTES.md, "Code layout"). With the hot functions packed (and the
relocations packed, -z pack-relative-relocs) each call peaks 1.0-1.5 MiB
lower: `start` 4,376 -> 2,896 KiB, `create` 4,696 -> 3,216 KiB as root.

How (root; needs perf, runc, the bctest user and the rustup component
llvm-tools, which this installs):
 1. build an instrumented binary (`-C profile-generate`), run a workload of
    every subcommand as root and as --user, once per subcommand group, and
    read which functions each group ran (`llvm-profdata show --covered`):
    complete for the crates built from source;
 2. build the release binary as ci/build-release.sh does, unstripped, keep
    its LTO object and link line, and order: glibc's IFUNC resolvers
    (every static program runs all of them at start), then the functions
    by how many groups run them;
 3. run the workload on that binary under `perf record -e page-faults`:
    every text fault on a function outside the order (std, glibc) adds it;
    relink (0.2 s) and repeat until few new ones appear.
Symbol names are stable across source edits (they hash the crate's cargo
metadata, not its source): regenerate after a toolchain or dependency
update, or when ci/build-release.sh reports many missing symbols.

Usage: sudo ci/symbol-order.py [--user bctest] [--rounds 8] [--out FILE]
       ci/symbol-order.py --check target/release/buildcell.map   (the test command's check)
"""
import argparse, bisect, collections, glob, os, shlex, shutil, subprocess, sys, tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(REPO, "ci", "symbol-order.txt")
TARGET = os.path.join(REPO, "target", "symbol-order")
# ci/build-release.sh's flags, without the order itself and the strip.
RELEASE_FLAGS = ["-C", "target-feature=+crt-static", "-C", "link-arg=-Wl,-z,pack-relative-relocs"]

# The workload, by group: each line is run by sh, as root and as --user,
# with $RB and $RBS the busybox bundles of BUNDLES (made as the benchmarks
# make theirs: runc's spec, as root engines or rootless engines write it)
# and $R the state directory option.
GROUPS = {
    "info": ["$B --version", "$B features", "$B list $R", "mkdir -p spec-out && $B spec --bundle spec-out",
             "$B nosuchcmd", "$B $R state nosuch"],
    "run": ["$B $R run --bundle $RB r1", "$B $R run --bundle $RB r2"],
    "create": ["$B $R create --bundle $RB c1", "$B $R create --bundle $RB c2"],
    "state": ["$B $R state c1", "$B $R list", "$B $R ps c1", "$B $R ps --format json c1"],
    "start": ["$B $R start c1", "$B $R start c2"],
    "delete": ["sleep 0.2; $B $R delete c1", "$B $R delete --force c2", "$B $R delete --force nosuch"],
    "exec": ["$B $R create --bundle $RBS s1", "$B $R start s1",
             "$B $R exec s1 /bin/sh -c 'id; true'", "$B $R exec --cwd / --env A=1 s1 /bin/echo x",
             "$B $R pause s1; $B $R resume s1", "$B $R update --pids-limit 200 s1",
             "$B $R kill s1 KILL; sleep 0.2; $B $R delete s1"],
    "step": ["$B step -- /bin/sh -c 'echo step; /bin/true'", "$B step -- /bin/true"],
    "policy": ["$B policy list", "$B policy show build", "$B policy check $RB"],
    "audit": ["$B audit verify \"$(ls -t $LOGS/*.log | head -1)\""],
}

# The workload's two bundles and their processes.
BUNDLES = {"RB": ["/bin/sh", "-c", "echo hi; /bin/true; ls / >/dev/null"], "RBS": ["/bin/sleep", "10"]}


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def llvm_tool(name):
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    tool = glob.glob(os.path.join(sysroot, "lib", "rustlib", "*", "bin", name))
    if not tool:
        sh(["rustup", "component", "add", "llvm-tools"])
        tool = glob.glob(os.path.join(sysroot, "lib", "rustlib", "*", "bin", name))
    return tool[0]


def workload(binary, work, user, env_for_group):
    """Run every group as root and as `user`; env_for_group(group) -> extra env."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import common  # noqa: E402 (bench/common.py: the benchmarks' bundles)
    for mode in ("root", "rootless"):
        made = {name: common.make_bundle(os.path.join(work, name), mode, user, args)
                for name, args in BUNDLES.items()}
        # The first bundle's directory is the caller's home and work directory.
        d, _, prefix = made["RB"]
        env = {"B": binary, "R": f"--root {d}/st", **{name: m[1] for name, m in made.items()},
               "LOGS": "/var/log/buildcell" if mode == "root" else f"{d}/.local/state/buildcell/audit"}
        for group, lines in GROUPS.items():
            extra = dict(env_for_group(group), **env)
            # The groups end with every container deleted; the last line
            # sweeps what a failed line may have left.
            for line in lines + (["for id in c1 c2 s1; do $B $R delete --force $id; done"]
                                 if group == list(GROUPS)[-1] else []):
                subprocess.run(prefix + ["env"] + [f"{k}={v}" for k, v in extra.items()] + ["sh", "-c", line],
                               cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL)


def world_copy(src, dst):
    shutil.copy(src, dst)
    os.chmod(dst, 0o755)
    return dst


def profile_groups(a, tmp):
    """Step 1: group -> set of functions it ran (instrumented crates)."""
    instr = os.path.join(TARGET, "instrumented")
    prof = os.path.join(tmp, "prof")
    for g in GROUPS:
        os.makedirs(os.path.join(prof, g))
        os.chmod(os.path.join(prof, g), 0o1777)
    env = dict(os.environ, CARGO_TARGET_DIR=instr,
               # -disable-preinline: every function gets its counters, also the small
               # ones LLVM would inline before instrumenting (and the release build
               # may keep out of line).
               RUSTFLAGS=f"-C profile-generate={prof}/build -C llvm-args=-disable-preinline")
    sh(["cargo", "build", "--release", "--bin", "buildcell", "--quiet"], cwd=REPO, env=env)
    binary = world_copy(os.path.join(instr, "release", "buildcell"), os.path.join(tmp, "bc-instr"))
    work = os.path.join(tmp, "w-instr")
    os.makedirs(work)
    os.chmod(work, 0o755)
    workload(binary, work, a.user, lambda g: {"LLVM_PROFILE_FILE": f"{prof}/{g}/%p.profraw"})
    profdata, covered = llvm_tool("llvm-profdata"), {}
    for g in GROUPS:
        raws = glob.glob(f"{prof}/{g}/*.profraw")
        merged = os.path.join(tmp, f"{g}.profdata")
        sh([profdata, "merge", "--failure-mode=all", "-o", merged] + raws, stderr=subprocess.DEVNULL)
        out = subprocess.run([profdata, "show", "--all-functions", "--covered", merged],
                             capture_output=True, text=True, check=True).stdout
        covered[g] = {line.strip().split(";")[-1] for line in out.splitlines() if line.strip()}
        print(f"symbol-order: group {g}: {len(covered[g])} functions ran", flush=True)
    return covered


def release_object(tmp):
    """Step 2a: the release build, unstripped, its LTO object kept; -> link line."""
    rel = os.path.join(TARGET, "release")
    env = dict(os.environ, CARGO_TARGET_DIR=rel)
    # A fresh build prints no link line: make cargo link again.
    os.utime(os.path.join(REPO, "src", "main.rs"))
    out = subprocess.run(["cargo", "rustc", "--release", "--bin", "buildcell", "--quiet", "--"] + RELEASE_FLAGS
                         + ["-C", "save-temps", "--print", "link-args"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if '"cc"' in l or "'cc'" in l)
    args = shlex.split(line)
    lenv = {}
    while "=" in args[0] and not args[0].startswith("-"):
        k, v = args.pop(0).split("=", 1)
        lenv[k] = v
    return args, lenv


def link(args, lenv, order, out):
    args = list(args)
    args[args.index("-o") + 1] = out
    if order:
        args += [f"-Wl,--symbol-ordering-file={order}", "-Wl,--no-warn-symbol-ordering"]
    sh(args, env=dict(os.environ, **lenv), stdout=subprocess.DEVNULL)
    return out


def symbols(binary):
    """[(address, name)] of the functions, by address."""
    out = subprocess.run(["nm", "-n", binary], capture_output=True, text=True, check=True).stdout
    return [(int(p[0], 16), p[2]) for p in (l.split() for l in out.splitlines())
            if len(p) == 3 and p[1] in "tTwWiI"]


def ifunc_resolvers(binary):
    syms = symbols(binary)
    addrs = [s[0] for s in syms]
    out = subprocess.run(["readelf", "-rW", binary], capture_output=True, text=True, check=True).stdout
    names = []
    for line in out.splitlines():
        if "IRELATIV" in line:
            i = bisect.bisect_right(addrs, int(line.split()[-1], 16)) - 1
            names.append(syms[i][1])
    return list(dict.fromkeys(names))


def text_faults(binary, work, user):
    """Step 3: functions whose code page faulted in, in order of first fault."""
    data = os.path.join(os.path.dirname(work), "pf.data")
    os.makedirs(work)
    os.chmod(work, 0o755)
    sh(["perf", "record", "-q", "-e", "page-faults", "-c", "1", "-d", "-o", data, "--",
        sys.executable, os.path.abspath(__file__), "--workload-only", binary, work, user],
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run(["perf", "script", "--no-demangle", "-i", data, "-F", "ip,sym,dso,addr"],
                         capture_output=True, text=True).stdout
    names = []
    for line in out.splitlines():
        p = line.split()
        # addr sym (dso) ip sym (dso): an instruction fetch faults at its ip
        if len(p) >= 6 and p[0] == p[3] and p[2] == f"({binary})" and p[1] != "[unknown]":
            names.append(p[1])
    return list(dict.fromkeys(names))


def check(map_file, least=0.9):
    """The test command's check: how many functions of ci/symbol-order.txt
    the release link (its -Map file) still has. A toolchain or dependency
    update renames them all and the order silently stops working."""
    order = [l.strip() for l in open(OUT) if l.strip() and not l.startswith("#")]
    if not os.path.exists(map_file):
        print(f"release layout: no link map at {map_file}: build the release binary with ci/build-release.sh")
        print("0 passed, 1 failed, 0 skipped")
        return 1
    linked = set()
    for line in open(map_file):
        p = line.split()
        if len(p) != 5:
            continue
        # VMA LMA Size Align, then an input section "FILE:(.text.NAME)" (a
        # Rust function: the map prints its symbol demangled) or a symbol
        # (a C function, in a section "FILE:(.text)" of many).
        if ":(.text." in p[4]:
            linked.add(p[4].split(":(.text.", 1)[1].rstrip(")"))
        elif not p[4].startswith(".") and ":(" not in p[4]:
            linked.add(p[4])
    found = sum(1 for n in order if n in linked)
    ok = found >= least * len(order)
    print(f"release layout: {found} of {len(order)} functions of ci/symbol-order.txt are in the link"
          + ("" if ok else f" (under {least:.0%}: regenerate it with ci/symbol-order.py)"))
    print(f"{int(ok)} passed, {int(not ok)} failed, 0 skipped")
    return 0 if ok else 1


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) == 5 and sys.argv[1] == "--workload-only":
        workload(sys.argv[2], sys.argv[3], sys.argv[4], lambda g: {})
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--user", default=os.environ.get("BUILDCELL_TEST_USER", "bctest"))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--out", default=OUT, help="where to write the order (default: ci/symbol-order.txt)")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("ci/symbol-order.py: run as root (the workload creates containers as root and as --user)")
    tmp = tempfile.mkdtemp(prefix="buildcell-symbol-order-", dir="/var/tmp")
    os.chmod(tmp, 0o755)
    try:
        covered = profile_groups(a, tmp)
        args, lenv = release_object(tmp)
        plain = link(args, lenv, None, os.path.join(tmp, "bc-plain"))
        present = {n for _, n in symbols(plain)}
        uses = collections.Counter(f for s in covered.values() for f in s if f in present)
        order = ifunc_resolvers(plain)
        order += [f for f, _ in sorted(uses.items(), key=lambda kv: (-kv[1], kv[0])) if f not in order]
        print(f"symbol-order: {len(order)} functions from the profile and the IFUNC resolvers", flush=True)
        file = os.path.join(tmp, "order.txt")
        for r in range(a.rounds):
            open(file, "w").write("\n".join(order) + "\n")
            binary = world_copy(link(args, lenv, file, os.path.join(tmp, "bc-linked")),
                                os.path.join(tmp, "bc-ordered"))
            seen = text_faults(binary, os.path.join(tmp, f"w-faults-{r}"), a.user)
            known = set(order)
            new = [n for n in seen if n not in known]
            print(f"symbol-order: round {r}: {len(seen)} functions faulted in, {len(new)} outside the order",
                  flush=True)
            order += new
            if len(new) < 10:
                break
        header = ("# Function order for the linker (ci/build-release.sh, --symbol-ordering-file):\n"
                  "# generated by ci/symbol-order.py; do not edit by hand.\n")
        open(a.out, "w").write(header + "\n".join(order) + "\n")
        print(f"symbol-order: wrote {a.out} ({len(order)} functions)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
