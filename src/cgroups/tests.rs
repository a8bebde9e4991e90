//! Pure logic and fake cgroup trees in a temporary directory.
// Resources built field by field read better in the tests.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use std::fs;

/// This host's mountinfo (v1 hybrid, no systemd).
const HYBRID: &str = "\
22 1 0:20 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const HYBRID_SELF: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/6c06
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

/// A classic systemd v1 host: cpu and cpuacct co-mounted, a bind of the same
/// hierarchy twice, a mount point with a space.
const V1_COMOUNT: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:9 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpuacct,cpu
30 25 0:27 / /sys/fs/cgroup/mem\\040ory rw,nosuid shared:11 - cgroup cgroup rw,memory
31 25 0:26 / /mnt/again rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
";

const PURE_V2: &str = "\
22 1 0:20 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

#[test]
fn detects_hybrid_as_on_this_host() {
    let l = Layout::from_mountinfo(HYBRID).unwrap();
    let Layout::Hybrid {
        hierarchies,
        unified,
    } = &l
    else {
        panic!("not hybrid: {l:?}")
    };
    assert_eq!(unified.mountpoint, Path::new("/sys/fs/cgroup/unified"));
    let names: Vec<_> = hierarchies.iter().map(V1Hierarchy::name).collect();
    assert_eq!(
        names,
        [
            "cpu",
            "cpuacct",
            "cpuset",
            "memory",
            "devices",
            "freezer",
            "blkio",
            "pids",
            "name=systemd"
        ]
    );
    assert_eq!(l.version(), Version::V1);
}

#[test]
fn detects_comounted_v1_and_unescapes() {
    let l = Layout::from_mountinfo(V1_COMOUNT).unwrap();
    let Layout::V1 { hierarchies } = &l else {
        panic!("not v1: {l:?}")
    };
    assert_eq!(hierarchies.len(), 3, "{hierarchies:?}");
    assert_eq!(hierarchies[0].controllers, ["name=systemd"]);
    assert_eq!(hierarchies[1].controllers, ["cpu", "cpuacct"]);
    assert_eq!(
        hierarchies[1].mountpoint,
        Path::new("/sys/fs/cgroup/cpu,cpuacct")
    );
    assert_eq!(
        hierarchies[2].mountpoint,
        Path::new("/sys/fs/cgroup/mem ory")
    );
}

#[test]
fn detects_pure_v2_and_nothing() {
    let l = Layout::from_mountinfo(PURE_V2).unwrap();
    assert_eq!(l, Layout::v2_at("/sys/fs/cgroup"));
    assert_eq!(l.version(), Version::V2);
    // Only a named v1 hierarchy beside cgroup2 is still v2.
    let named = format!("{PURE_V2}40 31 0:37 / /run/systemd rw - cgroup cgroup rw,name=systemd\n");
    assert_eq!(
        Layout::from_mountinfo(&named).unwrap().version(),
        Version::V2
    );
    let e = Layout::from_mountinfo("22 1 0:20 / / rw - ext4 /dev/vda rw\ngarbage\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no cgroup"), "{e}");
    assert!(Layout::from_mountinfo("").is_err());
}

#[test]
fn parses_proc_self_cgroup() {
    let p = parse_proc_cgroup(&format!("{HYBRID_SELF}bad line\n10:cpuacct,cpu:/x:y\n"));
    assert_eq!(p.len(), 11);
    assert_eq!(p[5].controllers, ["memory"]);
    assert_eq!(p[5].path, "/process_api/6c06");
    assert_eq!(p[9].id, 0);
    assert!(p[9].controllers.is_empty());
    // Sorted controllers, and a path with a colon kept whole.
    assert_eq!(p[10].controllers, ["cpu", "cpuacct"]);
    assert_eq!(p[10].path, "/x:y");
}

#[test]
fn cgroups_path_forms() {
    assert_eq!(
        CgroupPath::from_spec(Some(Path::new("/libpod_parent/libpod-abc")), "abc").unwrap(),
        CgroupPath::Absolute("libpod_parent/libpod-abc".into())
    );
    assert_eq!(
        CgroupPath::from_spec(Some(Path::new("a/./b/")), "x").unwrap(),
        CgroupPath::Relative("a/b".into())
    );
    assert_eq!(
        CgroupPath::from_spec(None, "ctr1").unwrap(),
        CgroupPath::Relative("ctr1".into())
    );
    assert_eq!(
        CgroupPath::from_spec(Some(Path::new("")), "ctr1").unwrap(),
        CgroupPath::Relative("ctr1".into())
    );
    let e = CgroupPath::parse("system.slice:docker:abc")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cgroupsPath") && e.contains("systemd"), "{e}");
    assert!(CgroupPath::parse("/a/../../etc").is_err());
    assert!(CgroupPath::parse("/").is_err());
    assert!(CgroupPath::from_spec(None, "a/b").is_err());
    assert!(CgroupPath::from_spec(None, "").is_err());
}

#[test]
fn resolves_per_hierarchy_like_runc() {
    let l = Layout::from_mountinfo(HYBRID).unwrap();
    let abs = CgroupPath::parse("/buildcell/c1").unwrap();
    let dirs = resolve(&l, &abs, HYBRID_SELF);
    assert_eq!(dirs.len(), 9);
    assert!(dirs
        .iter()
        .any(|d| d.path == Path::new("/sys/fs/cgroup/memory/buildcell/c1")));
    let rel = CgroupPath::from_spec(None, "c1").unwrap();
    let dirs = resolve(&l, &rel, HYBRID_SELF);
    let mem = dirs.iter().find(|d| d.controllers == ["memory"]).unwrap();
    assert_eq!(
        mem.path,
        Path::new("/sys/fs/cgroup/memory/process_api/6c06/c1")
    );
    let pids = dirs.iter().find(|d| d.controllers == ["pids"]).unwrap();
    assert_eq!(pids.path, Path::new("/sys/fs/cgroup/pids/c1"));

    // Inside a container: the mount's root is the container's cgroup.
    let nested = "\
1 0 0:1 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
2 0 0:2 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    let l = Layout::from_mountinfo(nested).unwrap();
    let dirs = resolve(&l, &rel, "4:memory:/docker/abc/sub\n0::/docker/abc\n");
    assert_eq!(dirs[0].path, Path::new("/sys/fs/cgroup/memory/sub/c1"));
    // A hostile /proc/self/cgroup cannot leave the mount.
    let dirs = resolve(&l, &rel, "4:memory:/../../etc\n");
    assert_eq!(dirs[0].path, Path::new("/sys/fs/cgroup/memory/etc/c1"));

    let l = Layout::from_mountinfo(PURE_V2).unwrap();
    let dirs = resolve(&l, &rel, "0::/user.slice/session-1.scope\n");
    assert_eq!(
        dirs,
        vec![CgroupDir {
            controllers: vec![],
            path: "/sys/fs/cgroup/user.slice/session-1.scope/c1".into()
        }]
    );
    let dirs = resolve(&l, &abs, "0::/user.slice\n");
    assert_eq!(dirs[0].path, Path::new("/sys/fs/cgroup/buildcell/c1"));
}

#[test]
fn flat_keys() {
    let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(parse_flat_key(oom, "oom_kill"), Some(3));
    assert_eq!(parse_flat_key("populated 1\nfrozen 0\n", "frozen"), Some(0));
    assert_eq!(parse_flat_key("", "frozen"), None);
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "buildcell-cgtest-{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    fs::create_dir_all(&d).unwrap();
    d
}

fn touch(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (f, v) in files {
        fs::write(dir.join(f), v).unwrap();
    }
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap()
}

#[test]
fn v1_fake_tree_applies_and_orders_memory() {
    let root = tempdir("v1");
    let mut hierarchies = Vec::new();
    for name in [
        "memory",
        "pids",
        "cpu,cpuacct",
        "devices",
        "freezer",
        "cpuset",
    ] {
        hierarchies.push(V1Hierarchy {
            mountpoint: root.join(name),
            root: "/".into(),
            controllers: name.split(',').map(String::from).collect(),
        });
    }
    let layout = Layout::V1 { hierarchies };
    let c = root.join("memory/x");
    touch(
        &c,
        &[
            ("memory.limit_in_bytes", "9223372036854771712"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712"),
            ("memory.soft_limit_in_bytes", ""),
        ],
    );
    touch(&root.join("pids/x"), &[("pids.max", "max")]);
    touch(
        &root.join("cpu,cpuacct/x"),
        &[
            ("cpu.shares", "1024"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpu.cfs_period_us", "100000"),
        ],
    );
    touch(
        &root.join("devices/x"),
        &[("devices.allow", ""), ("devices.deny", "")],
    );
    touch(&root.join("freezer/x"), &[("freezer.state", "THAWED")]);
    touch(
        &root.join("cpuset/x"),
        &[("cpuset.cpus", ""), ("cpuset.mems", "")],
    );
    let mut r = Resources::default();
    r.memory.limit = Some(32 << 20);
    r.memory.swap = Some(64 << 20);
    r.memory.reservation = Some(16 << 20);
    r.pids_limit = Some(0);
    r.cpu.shares = Some(512);
    r.cpu.quota = Some(50_000);
    r.cpu.period = Some(200_000);
    r.cpu.cpus = Some("0".into());
    r.devices = Some(vec![
        DeviceRule::new(true, DeviceKind::Char, Some(1), Some(3), "rwm").unwrap(),
        DeviceRule::new(false, DeviceKind::Char, Some(1), Some(5), "w").unwrap(),
    ]);
    let path = CgroupPath::parse("/x").unwrap();
    let cg = Cgroup::create_in(&layout, &path, &r).unwrap();
    assert_eq!(read(c.join("memory.limit_in_bytes")), "33554432");
    assert_eq!(read(c.join("memory.memsw.limit_in_bytes")), "67108864");
    assert_eq!(read(c.join("memory.soft_limit_in_bytes")), "16777216");
    assert_eq!(read(root.join("pids/x/pids.max")), "max");
    assert_eq!(read(root.join("cpu,cpuacct/x/cpu.shares")), "512");
    assert_eq!(read(root.join("cpu,cpuacct/x/cpu.cfs_quota_us")), "50000");
    assert_eq!(read(root.join("cpu,cpuacct/x/cpu.cfs_period_us")), "200000");
    assert_eq!(read(root.join("cpuset/x/cpuset.cpus")), "0");
    assert_eq!(read(root.join("devices/x/devices.allow")), "c 1:3 rwm");
    assert_eq!(read(root.join("devices/x/devices.deny")), "c 1:5 w");
    assert_eq!(
        cg.dir_of("cpuacct"),
        Some(root.join("cpu,cpuacct/x").as_path())
    );

    // update: only what is set; a serialised handle works the same.
    let json = serde_json::to_string(&cg).unwrap();
    let cg2: Cgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(cg, cg2);
    let mut u = Resources::default();
    u.memory.limit = Some(-1);
    cg2.update(&u).unwrap();
    assert_eq!(read(c.join("memory.limit_in_bytes")), "-1");
    assert_eq!(read(c.join("memory.memsw.limit_in_bytes")), "-1");
    assert_eq!(read(root.join("cpu,cpuacct/x/cpu.shares")), "512");

    // freezer on a fake file settles at once.
    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    cg.thaw().unwrap();
    assert_eq!(read(root.join("freezer/x/freezer.state")), "THAWED");

    // unified is refused on v1 before anything is written.
    let mut bad = Resources::default();
    bad.unified.insert("memory.high".into(), "1".into());
    assert!(matches!(cg.update(&bad), Err(CgroupError::UnifiedOnV1(_))));
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn v1_missing_controller_and_rollback() {
    let root = tempdir("v1miss");
    let layout = Layout::V1 {
        hierarchies: vec![V1Hierarchy {
            mountpoint: root.join("pids"),
            root: "/".into(),
            controllers: vec!["pids".into()],
        }],
    };
    fs::create_dir_all(root.join("pids")).unwrap();
    let mut r = Resources::default();
    r.memory.limit = Some(1 << 20);
    let e = Cgroup::create_in(&layout, &CgroupPath::parse("/a/b").unwrap(), &r)
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory controller is not available"), "{e}");
    // The directories this call made are gone again.
    assert!(!root.join("pids/a").exists());
    // A write error names the controller, the value, the file and the errno.
    let mut r = Resources::default();
    r.pids_limit = Some(7);
    let e = Cgroup::create_in(&layout, &CgroupPath::parse("/a").unwrap(), &r)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "cgroup pids: writing 7 to {}: No such file or directory",
            root.join("pids/a/pids.max").display()
        )
    );
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn v1_cpuset_copies_parent() {
    let root = tempdir("cpuset");
    touch(&root, &[("cpuset.cpus", "0-3\n"), ("cpuset.mems", "0\n")]);
    touch(
        &root.join("c"),
        &[("cpuset.cpus", "\n"), ("cpuset.mems", "1\n")],
    );
    v1::copy_cpuset_from_parent(&root.join("c")).unwrap();
    assert_eq!(read(root.join("c/cpuset.cpus")), "0-3");
    assert_eq!(read(root.join("c/cpuset.mems")), "1\n");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn v2_fake_tree_applies() {
    let root = tempdir("v2");
    touch(
        &root,
        &[
            ("cgroup.controllers", "cpuset cpu io memory pids"),
            ("cgroup.subtree_control", "cpu memory pids"),
        ],
    );
    touch(
        &root.join("pod"),
        &[
            ("cgroup.controllers", "cpu memory pids"),
            ("cgroup.subtree_control", "cpu memory pids"),
        ],
    );
    let c = root.join("pod/c1");
    touch(
        &c,
        &[
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("memory.low", "0"),
            ("pids.max", "max"),
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("memory.high", "max"),
            ("memory.events", "low 0\nhigh 0\nmax 0\noom 1\noom_kill 2\n"),
        ],
    );
    let layout = Layout::v2_at(&root);
    let mut r = Resources::default();
    r.memory.limit = Some(32 << 20);
    r.memory.swap = Some(48 << 20);
    r.memory.reservation = Some(8 << 20);
    r.pids_limit = Some(16);
    r.cpu.shares = Some(1024);
    r.cpu.quota = Some(50_000);
    r.unified.insert("memory.high".into(), "30000000".into());
    let cg = Cgroup::create_in(&layout, &CgroupPath::parse("/pod/c1").unwrap(), &r).unwrap();
    assert_eq!(cg.version(), Version::V2);
    assert_eq!(read(c.join("memory.max")), "33554432");
    assert_eq!(read(c.join("memory.swap.max")), "16777216");
    assert_eq!(read(c.join("memory.low")), "8388608");
    assert_eq!(read(c.join("pids.max")), "16");
    assert_eq!(read(c.join("cpu.weight")), "39");
    assert_eq!(read(c.join("cpu.max")), "50000");
    assert_eq!(read(c.join("memory.high")), "30000000");
    assert_eq!(cg.oom_kill_count().unwrap(), Some(2));

    // Only the period: the quota in force is kept.
    fs::write(c.join("cpu.max"), "50000 100000").unwrap();
    let mut u = Resources::default();
    u.cpu.period = Some(200_000);
    cg.update(&u).unwrap();
    assert_eq!(read(c.join("cpu.max")), "50000 200000");

    // Device rules are a BPF program attached once at create: `update`
    // leaves them alone on v2 (no file of the cgroup changes).
    let before: Vec<_> = fs::read_dir(&c)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mut d = Resources::default();
    d.devices = Some(vec![
        DeviceRule::new(false, DeviceKind::All, None, None, "rwm").unwrap(),
        DeviceRule::new(true, DeviceKind::Char, Some(1), Some(3), "rwm").unwrap(),
    ]);
    cg.update(&d).unwrap();
    let after: Vec<_> = fs::read_dir(&c)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after);

    // A controller not enabled in the parent is named.
    let mut cs = Resources::default();
    cs.cpu.cpus = Some("0".into());
    let e = Cgroup::create_in(&layout, &CgroupPath::parse("/pod/c2").unwrap(), &cs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cpuset controller is not available"), "{e}");
    assert!(!root.join("pod/c2").exists());
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn v2_enables_controllers_in_ancestors() {
    let root = tempdir("v2enable");
    touch(
        &root,
        &[
            ("cgroup.controllers", "memory"),
            ("cgroup.subtree_control", ""),
        ],
    );
    let layout = Layout::v2_at(&root);
    let cg = Cgroup::create_in(
        &layout,
        &CgroupPath::parse("/new").unwrap(),
        &Resources::default(),
    )
    .unwrap();
    assert_eq!(read(root.join("cgroup.subtree_control")), "+memory");
    assert!(root.join("new").is_dir());
    cg.remove().unwrap();
    assert!(!root.join("new").exists());
    // Already gone: still fine.
    cg.remove().unwrap();
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn write_error_text() {
    let e = CgroupError::Write {
        controller: "memory".into(),
        value: "1048576".into(),
        path: "/sys/fs/cgroup/memory/x/memory.limit_in_bytes".into(),
        source: io::Error::from_raw_os_error(libc::EBUSY),
    };
    assert_eq!(
        e.to_string(),
        "cgroup memory: writing 1048576 to /sys/fs/cgroup/memory/x/memory.limit_in_bytes: Device or resource busy"
    );
    let p = CgroupError::PermissionDenied {
        path: "/sys/fs/cgroup/memory/x".into(),
        source: io::Error::from_raw_os_error(libc::EACCES),
    };
    assert!(p.is_permission_denied());
}
