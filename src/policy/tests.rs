//! Pure policy logic: schema errors, extends, selection, every check rule,
//! the defaults. The real binary's behaviour is tested in tests/policy.rs.

use std::path::{Path, PathBuf};

use super::check::{self, Context};
use super::profile::{self, RawProfile};
use super::*;

fn resolve_text(text: &str) -> Result<Profile, String> {
    let raw: RawProfile = toml::from_str(text).map_err(|e| e.message().to_string())?;
    profile::resolve("t", raw, &crate::syscalls::is_known).map_err(|p| p.message)
}

fn config_with_dir(dir: &Path) -> Config {
    Config {
        file: None,
        default_profile: None,
        selectable_by_annotation: vec![],
        profile_dirs: vec![dir.to_path_buf()],
    }
}

/// A test's profile directory, removed when the test ends, pass or fail.
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("bc-policy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

#[test]
fn shipped_profiles_resolve() {
    let config = config_with_dir(Path::new("/nonexistent"));
    for (name, _) in BUILT_IN {
        let sel = Selection {
            name: name.into(),
            why: "test".into(),
        };
        let l = load(&sel, &config).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(l.profile.name, name);
        assert_eq!(l.sha256.len(), 64);
    }
}

#[test]
fn strict_inherits_from_build_and_overrides() {
    let config = config_with_dir(Path::new("/nonexistent"));
    let get = |n: &str| {
        load(
            &Selection {
                name: n.into(),
                why: "t".into(),
            },
            &config,
        )
        .unwrap()
        .profile
    };
    let (build, strict) = (get("build"), get("strict"));
    assert!(strict.capabilities.is_empty());
    assert!(strict.rootfs_read_only);
    assert_eq!(strict.never, build.never, "never is inherited");
    assert_eq!(strict.network, profile::NetworkMode::None);
    assert_eq!(build.network, profile::NetworkMode::Loopback);
    let net = get("build-network");
    assert_eq!(net.connect_tcp, vec![80, 443]);
    assert_eq!(net.landlock, profile::LandlockMode::Require);
}

#[test]
fn unknown_key_names_file_line_and_section() {
    let d = tmpdir("unknown");
    std::fs::write(
        d.join("x.toml"),
        "description = \"x\"\n[process]\nno_new_privileges = true\ncapabilties = []\n",
    )
    .unwrap();
    let e = load(
        &Selection {
            name: "x".into(),
            why: "t".into(),
        },
        &config_with_dir(&d),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("x.toml:4: process.capabilties"), "{e}");
    assert!(e.contains("unknown field `capabilties`"), "{e}");
}

#[test]
fn wrong_type_and_bad_names_are_errors_with_lines() {
    let d = tmpdir("types");
    std::fs::write(d.join("a.toml"), "[cgroups]\npids_max = \"many\"\n").unwrap();
    std::fs::write(
        d.join("b.toml"),
        "[process]\ncapabilities = [\n  \"CAP_CHOWN\",\n  \"CAP_FLY\",\n]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("c.toml"),
        "[seccomp]\ndeny = [\"bpf\", \"no_such_call\"]\n",
    )
    .unwrap();
    let err = |n: &str| {
        load(
            &Selection {
                name: n.into(),
                why: "t".into(),
            },
            &config_with_dir(&d),
        )
        .unwrap_err()
        .to_string()
    };
    let a = err("a");
    assert!(a.contains("a.toml:2: cgroups.pids_max"), "{a}");
    let b = err("b");
    assert!(b.contains("b.toml:4: process.capabilities"), "{b}");
    assert!(b.contains("CAP_FLY"), "{b}");
    let c = err("c");
    assert!(c.contains("c.toml:2: seccomp.deny"), "{c}");
    assert!(c.contains("no_such_call"), "{c}");
}

#[test]
fn extends_cycle_and_unknown_parent() {
    let d = tmpdir("cycle");
    std::fs::write(d.join("a.toml"), "extends = \"b\"\n").unwrap();
    std::fs::write(d.join("b.toml"), "extends = \"a\"\n").unwrap();
    std::fs::write(d.join("c.toml"), "extends = \"missing\"\n").unwrap();
    let cfg = config_with_dir(&d);
    let sel = |n: &str| Selection {
        name: n.into(),
        why: "t".into(),
    };
    let e = load(&sel("a"), &cfg).unwrap_err().to_string();
    assert!(e.contains("cycle (a -> b -> a)"), "{e}");
    let e = load(&sel("c"), &cfg).unwrap_err().to_string();
    assert!(e.contains("\"missing\" (extended by c)"), "{e}");
}

#[test]
fn a_file_shadows_the_built_in_profile() {
    let d = tmpdir("shadow");
    std::fs::write(d.join("build.toml"), "description = \"site build\"\n").unwrap();
    let l = load(
        &Selection {
            name: "build".into(),
            why: "t".into(),
        },
        &config_with_dir(&d),
    )
    .unwrap();
    assert_eq!(l.profile.description, "site build");
    assert!(l.profile.capabilities.is_empty());
}

#[test]
fn selection_order_and_annotation_gate() {
    let mut cfg = Config::default();
    let s = |flag: Option<&str>, argv0: &str, ann: Option<&str>, cfg: &Config| {
        select(flag, argv0, ann, cfg).map(|s| s.name)
    };
    assert_eq!(s(None, "/usr/bin/buildcell", None, &cfg).unwrap(), "build");
    assert_eq!(
        s(None, "/usr/local/bin/buildcell-strict", None, &cfg).unwrap(),
        "strict"
    );
    assert_eq!(
        s(Some("engine-compat"), "buildcell-strict", None, &cfg).unwrap(),
        "engine-compat"
    );
    cfg.default_profile = Some("strict".into());
    assert_eq!(s(None, "buildcell", None, &cfg).unwrap(), "strict");
    // An annotation may pick only what the config lists.
    let e = s(None, "buildcell", Some("engine-compat"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not selectable by annotation"), "{e}");
    cfg.selectable_by_annotation = vec!["build-network".into()];
    assert_eq!(
        s(None, "buildcell-strict", Some("build-network"), &cfg).unwrap(),
        "build-network"
    );
}

#[test]
fn config_unknown_key_is_an_error() {
    let e = Config::parse(
        Path::new("/etc/x.toml"),
        "default_profile = \"b\"\nselectable = []\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/etc/x.toml:2"), "{e}");
}

#[test]
fn value_checks() {
    assert!(resolve_text("[network]\nmode = \"wide\"\n")
        .unwrap_err()
        .contains("not none, loopback, tcp or host"));
    assert!(resolve_text("[network]\nconnect_tcp = [80]\n")
        .unwrap_err()
        .contains("mode = \"tcp\""));
    assert!(
        resolve_text("[cgroups]\nmemory_max = \"1G\"\nmemory_default = \"2G\"\n")
            .unwrap_err()
            .contains("above its *_max")
    );
    assert!(resolve_text("[mounts]\nnever = [\"etc/shadow\"]\n")
        .unwrap_err()
        .contains("not an absolute path"));
    assert!(resolve_text("[process]\nrlimits = { RLIMIT_FOO = 1 }\n")
        .unwrap_err()
        .contains("RLIMIT_FOO"));
    assert!(resolve_text("[namespaces]\nnew = [\"time\"]\n")
        .unwrap_err()
        .contains("unknown namespace"));
}

#[test]
fn glob() {
    use profile::glob_match as g;
    assert!(g("net.*", "net.ipv4.ip_forward"));
    assert!(!g("net.*", "kernel.net"));
    assert!(g("*", "x"));
    assert!(g("/proc/*/exe", "/proc/123/exe"));
    assert!(!g("/proc/*/exe", "/proc/123/root"));
    assert!(g("kernel.sem", "kernel.sem"));
    assert!(!g("kernel.sem", "kernel.semx"));
    assert!(g("*PASSWORD*", "DB_PASSWORD_FILE"));
}

#[test]
fn a_star_in_an_allowed_path_matches_within_one_component() {
    use check::path_under as u;
    let p = Path::new;
    assert!(u(p("/var/tmp/buildah*"), p("/var/tmp/buildah2790/hosts")));
    assert!(u(p("/var/tmp/buildah*"), p("/var/tmp/buildah2790")));
    assert!(!u(p("/var/tmp/buildah*"), p("/var/tmp/x/buildah1")));
    assert!(!u(p("/var/tmp/buildah*"), p("/var/tmp")));
    assert!(!u(p("/var/tmp/buildah*"), p("/var/tmp/other/hosts")));
    assert!(u(p("/var/lib/containers"), p("/var/lib/containers/x")));
    assert!(!u(p("/var/lib/containers"), p("/var/lib/containersx")));
}

#[test]
fn build_allows_buildahs_default_run_directory_and_nothing_else_of_var_tmp() {
    // buildah (TMPDIR unset) binds each RUN step's hosts, resolv.conf,
    // hostname and .containerenv from /var/tmp/buildahNNN.
    let bind = |src: &str| {
        engine_like(serde_json::json!({"mounts": [
            {"destination": "/etc/hosts", "type": "bind", "source": src, "options": ["rbind", "rw"]}
        ]}))
    };
    let v = run_check(&build(), &bind("/var/tmp/buildah3944045331/hosts"), true);
    assert!(v.is_empty(), "{v:?}");
    let v = run_check(&build(), &bind("/var/tmp/secrets/hosts"), true);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("/var/tmp/buildah*"), "{v:?}");
}

#[test]
fn build_refuses_the_engines_trees_whole_and_their_databases_and_keys() {
    let bind = |src: &str| {
        engine_like(serde_json::json!({"mounts": [
            {"destination": "/x", "type": "bind", "source": src, "options": ["rbind", "rw"]}
        ]}))
    };
    // What the engines bind: per-container files, volumes.
    for ok in [
        "/var/lib/docker/containers/14074eb7/hosts",
        "/var/lib/docker/volumes/cache/_data",
        "/var/lib/containers/storage/overlay-containers/9f92e67e/userdata/shm",
        "/var/lib/containers/storage/volumes/v/_data",
        "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/d51a/resolv.conf",
        "/home/u/.local/share/containers/storage/overlay-containers/69/userdata/shm",
    ] {
        let v = run_check(&build(), &bind(ok), true);
        assert!(v.is_empty(), "{ok}: {v:?}");
    }
    // A whole tree, or what is inside it that no engine binds.
    for (bad, names) in [
        ("/var/lib/docker", "/var/lib/docker/image"),
        (
            "/var/lib/docker/swarm/certificates",
            "/var/lib/docker/swarm",
        ),
        (
            "/var/lib/containers/storage",
            "/var/lib/containers/storage/libpod",
        ),
        (
            "/var/lib/containers/storage/secrets/filedriver",
            "/var/lib/containers/storage/secrets",
        ),
        (
            "/var/lib/containerd",
            "/var/lib/containerd/io.containerd.metadata.v1.bolt",
        ),
        (
            "/home/u/.local/share/containers/storage",
            "/home/u/.local/share/containers/storage/libpod",
        ),
    ] {
        let v = run_check(&build(), &bind(bad), true);
        assert_eq!(v.len(), 1, "{bad}: {v:?}");
        assert!(
            v[0].contains(&format!("exposes {names},")) && v[0].contains("never allows"),
            "{bad}: {v:?}"
        );
    }
}

fn spec_of(v: serde_json::Value) -> oci_spec::runtime::Spec {
    serde_json::from_value(v).unwrap()
}

fn engine_like(extra: serde_json::Value) -> oci_spec::runtime::Spec {
    let mut base = serde_json::json!({
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN"],
                             "permitted": ["CAP_CHOWN", "CAP_KILL"]}},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/containers/x/hosts", "options": ["rbind", "rw"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                                 {"type": "uts"}, {"type": "mount"}]}
    });
    merge(&mut base, extra);
    spec_of(base)
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn build() -> Profile {
    load(
        &Selection {
            name: "build".into(),
            why: "t".into(),
        },
        &Config::default(),
    )
    .unwrap()
    .profile
}

fn run_check(p: &Profile, spec: &oci_spec::runtime::Spec, host_root: bool) -> Vec<String> {
    let links = |path: &Path| -> Result<Vec<String>, String> {
        if path.ends_with("podnet") {
            Ok(vec!["lo".into(), "eth0".into()])
        } else {
            Ok(vec!["lo".into()])
        }
    };
    let canonical = |p: &Path| p.to_path_buf();
    let ctx = Context {
        host_root,
        step: false,
        bundle: Some(Path::new("/b")),
        links: &links,
        canonical: &canonical,
        home: Some("/home/u".into()),
        runtime_dir: Some("/run/user/1000".into()),
    };
    check::check(p, spec, &ctx)
}

#[test]
fn an_engine_default_bundle_passes_build() {
    let v = run_check(&build(), &engine_like(serde_json::json!({})), true);
    assert!(v.is_empty(), "{v:?}");
    assert!(check::adds_user_namespace(
        &build(),
        &engine_like(serde_json::json!({})),
        true
    ));
    // A profile that does not require a new user namespace adds none.
    let mut no_user = build();
    no_user.new_namespaces.retain(|n| n != "user");
    assert!(!check::adds_user_namespace(
        &no_user,
        &engine_like(serde_json::json!({})),
        true
    ));
}

#[test]
fn privileged_host_network_and_socket_bind_are_all_listed() {
    let all: Vec<String> = ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_CHOWN"]
        .map(String::from)
        .to_vec();
    let spec = engine_like(serde_json::json!({
        "process": {"capabilities": {"bounding": all, "effective": all, "permitted": all}},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/var/run/docker.sock", "type": "bind", "source": "/run/docker.sock", "options": ["rbind"]},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "rw"]},
            {"destination": "/x", "type": "bind", "source": "/run", "options": ["rbind", "ro"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                  "devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}],
                  "sysctl": {"kernel.core_pattern": "|/x", "net.ipv4.ip_forward": "1"}},
        "hooks": {"prestart": [{"path": "/tmp/evil"}]}
    }));
    let v = run_check(&build(), &spec, true);
    let text = v.join("\n");
    assert_eq!(v.len(), 8, "{text}");
    assert!(text.contains("no network namespace, so the host's network would be shared; profile build allows network = loopback"), "{text}");
    assert!(
        text.contains("CAP_NET_ADMIN, CAP_SYS_ADMIN not allowed"),
        "{text}"
    );
    assert!(
        text.contains("bind of /run/docker.sock exposes /run/docker.sock"),
        "{text}"
    );
    assert!(
        text.contains("read-write bind of /srv/data is not under"),
        "{text}"
    );
    assert!(text.contains("bind of /run exposes"), "{text}");
    assert!(
        text.contains("linux.devices: /dev/sda not allowed"),
        "{text}"
    );
    assert!(text.contains("linux.sysctl.kernel.core_pattern"), "{text}");
    assert!(!text.contains("ip_forward"), "{text}");
    assert!(text.contains("hooks.prestart[0].path: /tmp/evil"), "{text}");
}

#[test]
fn joined_network_namespace_is_inspected() {
    let joined = |path: &str| {
        engine_like(serde_json::json!({"linux": {"namespaces": [
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
            {"type": "network", "path": path}]}}))
    };
    assert!(run_check(&build(), &joined("/run/netns/empty"), true).is_empty());
    let v = run_check(&build(), &joined("/run/netns/podnet"), true);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("network namespace is joined by path /run/netns/podnet with links eth0; profile build allows network = loopback"),
        "{v:?}"
    );
    // A pod's ipc/uts/pid may be joined, a mount namespace may not.
    let pod = engine_like(serde_json::json!({"linux": {"namespaces": [
        {"type": "pid", "path": "/proc/9/ns/pid"}, {"type": "ipc", "path": "/proc/9/ns/ipc"},
        {"type": "uts", "path": "/proc/9/ns/uts"}, {"type": "mount"}, {"type": "network"}]}}));
    assert!(run_check(&build(), &pod, true).is_empty());
}

#[test]
fn user_namespace_require_refuses_root_bundles_only() {
    let mut p = build();
    p.user_namespace = profile::UserNamespace::Require;
    let spec = engine_like(serde_json::json!({}));
    let v = run_check(&p, &spec, true);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("would run as host root"), "{v:?}");
    // Rootless (inside the engine's user namespace): already not root.
    assert!(run_check(&p, &spec, false).is_empty());
}

#[test]
fn limits_above_the_maximum_and_defaults() {
    let spec = engine_like(serde_json::json!({"linux": {"resources": {
        "memory": {"limit": 64i64 << 30}, "pids": {"limit": 100000},
        "cpu": {"quota": 400000, "period": 100000}}}}));
    let v = run_check(&build(), &spec, true);
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(
        v[0].contains("64G is above profile build's memory_max 16G"),
        "{v:?}"
    );

    let mut spec =
        engine_like(serde_json::json!({"linux": {"resources": {"memory": {"limit": -1}}}}));
    assert!(run_check(&build(), &spec, true).is_empty());
    let notes = check::apply_defaults(&build(), &mut spec, true);
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    assert_eq!(r.memory().unwrap().limit(), Some(4 << 30));
    assert_eq!(r.pids().unwrap().limit(), 4096);
    assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(200000));
    assert_eq!(
        spec.process().as_ref().unwrap().no_new_privileges(),
        Some(true)
    );
    assert_eq!(notes.len(), 4, "{notes:?}");
    // `update` to unlimited is above the maximum.
    let unlimited: oci_spec::runtime::LinuxResources =
        serde_json::from_value(serde_json::json!({"memory": {"limit": -1}})).unwrap();
    assert_eq!(check::check_resources(&build(), &unlimited, true).len(), 1);
}

#[test]
fn rlimits_and_exec_process() {
    let spec = engine_like(serde_json::json!({"process": {"rlimits": [
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4194304}]}}));
    let v = run_check(&build(), &spec, true);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("RLIMIT_NOFILE hard limit 4194304"), "{v:?}");
    let proc: oci_spec::runtime::Process = serde_json::from_value(serde_json::json!({
        "cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_SYS_PTRACE"]}}))
    .unwrap();
    let v = check::check_process(&build(), &proc, "process");
    assert!(
        v[0].contains("CAP_SYS_PTRACE not allowed (in bounding)"),
        "{v:?}"
    );
}

#[test]
fn home_relative_allowed_binds() {
    let spec = engine_like(serde_json::json!({"mounts": [
        {"destination": "/etc/hosts", "type": "bind",
         "source": "/home/u/.local/share/containers/storage/x/hosts", "options": ["rbind"]},
        {"destination": "/etc/resolv.conf", "type": "bind",
         "source": "/run/user/1000/containers/x/resolv.conf", "options": ["rbind"]}]}));
    assert!(run_check(&build(), &spec, false).is_empty());
}

#[test]
fn a_pod_sandbox_is_recognised_by_either_cri_annotation() {
    let with = |k: &str, v: &str| engine_like(serde_json::json!({"annotations": {k: v}}));
    assert!(check::is_pod_sandbox(&with(
        "io.kubernetes.cri.container-type",
        "sandbox"
    )));
    assert!(check::is_pod_sandbox(&with(
        "io.kubernetes.cri-o.ContainerType",
        "sandbox"
    )));
    assert!(!check::is_pod_sandbox(&with(
        "io.kubernetes.cri.container-type",
        "container"
    )));
    assert!(!check::is_pod_sandbox(&engine_like(serde_json::json!({}))));
}

#[test]
fn strict_narrows_step_capabilities() {
    let config = Config::default();
    let strict = load(
        &Selection {
            name: "strict".into(),
            why: "t".into(),
        },
        &config,
    )
    .unwrap()
    .profile;
    let mut spec = engine_like(serde_json::json!({}));
    let note = check::narrow_capabilities(&strict, &mut spec).unwrap();
    assert!(note.contains("CAP_CHOWN, CAP_KILL dropped"), "{note}");
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert!(caps.bounding().as_ref().unwrap().is_empty());
}

#[test]
fn policy_evaluation_is_fast() {
    // The issue's target: under 1 ms for a 200-line profile (load and
    // check). build.toml with its comments is about 80 lines; strict
    // extends it (two files).
    let config = Config::default();
    let spec = engine_like(serde_json::json!({}));
    let start = std::time::Instant::now();
    let n = 200;
    for _ in 0..n {
        let l = load(
            &Selection {
                name: "strict".into(),
                why: "t".into(),
            },
            &config,
        )
        .unwrap();
        let _ = run_check(&l.profile, &spec, true);
    }
    let per = start.elapsed() / n;
    eprintln!("policy load+check: {per:?} per call");
    // Generous for a debug build on a loaded machine; the release figure
    // is in the issue note.
    assert!(per < std::time::Duration::from_millis(20), "{per:?}");
}

#[test]
fn a_user_namespace_that_maps_host_root_is_no_user_namespace() {
    let spec = engine_like(serde_json::json!({"linux": {
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                       {"type": "uts"}, {"type": "mount"}, {"type": "user"}],
        "uidMappings": [{"containerID": 0, "hostID": 0, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 0, "size": 65536}]}}));
    let v = run_check(&build(), &spec, true);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("container ids 0..65535 map host root"),
        "{v:?}"
    );
    // Not host root: host id 0 is the caller's own root, never the host's.
    assert!(run_check(&build(), &spec, false).is_empty());
}

#[test]
fn load_text_extends_only_built_in_profiles() {
    let l = load_text("mine", "/x/mine.toml", "extends = \"strict\"\n").unwrap();
    assert_eq!(l.profile.name, "mine");
    assert!(l.profile.capabilities.is_empty());
    assert_eq!(
        l.sources,
        [
            "/x/mine.toml",
            "built-in:profiles/strict.toml",
            "built-in:profiles/build.toml"
        ]
    );
    let e = load_text("mine", "/x/mine.toml", "extends = \"mine\"\n").unwrap_err();
    assert!(matches!(e, PolicyError::Cycle(..)), "{e}");
    let e = load_text("mine", "/x/mine.toml", "extends = \"other\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found in the built-in profiles"), "{e}");
    let e = load_text("mine", "/x/mine.toml", "[process]\nuser = \"nobody\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/x/mine.toml:2: process.user:"), "{e}");
}

/// Found by fuzz/fuzz_targets/config_json.rs: an empty uid mapping (all
/// zeros, size 0) made the host-root rule subtract 1 from 0 and panic.
#[test]
fn fuzz_regression_uid_mapping_of_size_zero() {
    let spec = crate::container::parse_config(
        br#"{"linux":{"uidMappings":[{}]},"ociVersion":"1"}"#,
        "crash.json",
    )
    .unwrap();
    let strict = load_text("strict", "t", BUILT_IN[2].1).unwrap().profile;
    for p in [build(), strict] {
        for host_root in [true, false] {
            let v = run_check(&p, &spec, host_root);
            assert!(!v.iter().any(|l| l.contains("uidMappings")), "{v:?}");
        }
    }
    // A real mapping of host root is still refused.
    let spec = crate::container::parse_config(
        br#"{"linux":{"uidMappings":[{"size":1}]},"ociVersion":"1"}"#,
        "root.json",
    )
    .unwrap();
    let v = run_check(&build(), &spec, true);
    assert!(
        v.iter()
            .any(|l| l.contains("container ids 0..0 map host root")),
        "{v:?}"
    );
}

/// Checked by fuzz/fuzz_targets/profile_toml.rs (limits resolve positive),
/// found by reading: a size above i64::MAX resolved to a negative
/// memory_max, so that the profile's default gave containers no memory
/// limit at all while refusing every limit a bundle set.
#[test]
fn fuzz_regression_memory_max_above_i64_is_an_error() {
    let e = load_text("x", "x.toml", "[cgroups]\nmemory_max = \"9000000t\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "x.toml:2: cgroups.memory_max: \"9000000t\": must be positive and below 8 EiB"
        ),
        "{e}"
    );
}

#[test]
fn random_user_draws_in_range_and_extends_the_image_passwd() {
    let d = tmpdir("random");
    std::fs::create_dir_all(d.join("rootfs/etc")).unwrap();
    std::fs::write(
        d.join("rootfs/etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nold:x:1500:0::/:/bin/sh\n",
    )
    .unwrap();
    let mut p = build();
    p.user = profile::UserMode::Random;
    p.random_uids = [1500, 1500];
    let mut spec = engine_like(serde_json::json!({"process": {"env": ["HOME=/root", "A=1"]}}));
    let note = check::apply_random_user(&p, &mut spec, &d.join("rootfs"), &d.join("passwd"), 42)
        .unwrap()
        .unwrap();
    assert!(note.contains("random uid 1500"), "{note}");
    let text = std::fs::read_to_string(d.join("passwd")).unwrap();
    // The image's line for the same uid is replaced by buildcell's.
    assert_eq!(
        text,
        "root:x:0:0::/root:/bin/sh\nbuildcell-1500:x:1500:0:buildcell random user:/tmp:/bin/sh\n"
    );
    let proc = spec.process().as_ref().unwrap();
    assert_eq!((proc.user().uid(), proc.user().gid()), (1500, 0));
    let env = proc.env().clone().unwrap();
    assert!(
        env.contains(&"HOME=/tmp".to_string()) && env.contains(&"A=1".to_string()),
        "{env:?}"
    );
    assert!(!env.contains(&"HOME=/root".to_string()));
    let caps = proc.capabilities().clone().unwrap();
    assert!(caps.effective().is_none() && caps.permitted().is_none());
    assert!(spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.destination() == Path::new("/etc/passwd")));
    // A profile that keeps the bundle's user changes nothing.
    let mut spec2 = engine_like(serde_json::json!({}));
    assert!(
        check::apply_random_user(&build(), &mut spec2, &d, &d.join("p2"), 1)
            .unwrap()
            .is_none()
    );
}

/// A container of a Kubernetes pod as containerd's CRI plugin sends it on
/// a production host (the pod's ipc, uts and network namespaces joined by
/// path, its hostname, hosts, resolv.conf and /dev/shm bound from
/// containerd's sandbox directories), the network namespace at `netns`.
fn cri_pod_container(netns: &str) -> oci_spec::runtime::Spec {
    let sandbox = "io.containerd.grpc.v1.cri/sandboxes/0123abcd";
    let bind = |dest: &str, src: String| {
        serde_json::json!({"destination": dest, "type": "bind", "source": src,
                           "options": ["rbind", "rprivate", "rw"]})
    };
    engine_like(serde_json::json!({
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            bind("/etc/hostname", format!("/var/lib/containerd/{sandbox}/hostname")),
            bind("/etc/hosts", format!("/var/lib/containerd/{sandbox}/hosts")),
            bind("/etc/resolv.conf", format!("/var/lib/containerd/{sandbox}/resolv.conf")),
            bind("/dev/shm", format!("/run/containerd/{sandbox}/shm")),
            bind("/dev/termination-log", "/var/lib/kubelet/pods/uid/containers/c/0".into()),
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"},
            {"type": "ipc", "path": "/proc/42/ns/ipc"}, {"type": "uts", "path": "/proc/42/ns/uts"},
            {"type": "network", "path": netns}]}
    }))
}

/// On a cluster's pod network (eth0): `build-network` lets the pod's
/// container run; `build` refuses it for the pod network's eth0 alone.
#[test]
fn a_kubernetes_pod_container_runs_under_build_network_only() {
    let spec = cri_pod_container("/var/run/netns/podnet");
    let net = load(
        &Selection {
            name: "build-network".into(),
            why: "t".into(),
        },
        &Config::default(),
    )
    .unwrap()
    .profile;
    let v = run_check(&net, &spec, true);
    assert!(v.is_empty(), "{v:?}");
    let v = run_check(&build(), &spec, true);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("eth0"), "{v:?}");
}

/// On the loopback-only network of the buildcell-build handler
/// (deploy/cni): `build` lets the pod's container run, binds and all.
#[test]
fn a_kubernetes_pod_container_on_a_loopback_only_network_runs_under_build() {
    let spec = cri_pod_container("/var/run/netns/cni-lo");
    let v = run_check(&build(), &spec, true);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn built_in_profiles_read_from_the_builds_json_are_their_toml() {
    // build.rs lists the same profiles, in the same order.
    let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
    let json_names: Vec<&str> = BUILT_IN_JSON.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, json_names);
    for (name, text) in BUILT_IN {
        let file = format!("built-in:profiles/{name}.toml");
        let from_toml: RawProfile = toml::from_str(text).unwrap();
        let from_json = parse_profile(&file, text).unwrap();
        assert_eq!(format!("{from_json:?}"), format!("{from_toml:?}"), "{name}");
    }
    // Any other text, or the same text under another name, is TOML: an
    // error there names its line.
    let err = parse_profile("built-in:profiles/build.toml", "[cgroups]\nbogus = 1\n").unwrap_err();
    assert!(err.to_string().contains(":2"), "{err}");
}
