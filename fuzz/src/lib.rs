//! What the fuzz targets share: the profiles every input is checked
//! against, a tiny bundle on disk, and a policy context that never touches
//! the system.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use buildcell::policy::{self, check::Context, Profile};

/// The built-in profiles, plus `build` with a random user (so that
/// `apply_random_user` runs too), resolved once.
pub fn profiles() -> &'static [Profile] {
    static P: OnceLock<Vec<Profile>> = OnceLock::new();
    P.get_or_init(|| {
        let random =
            "extends = \"build\"\n[process]\nuser = \"random\"\nrandom_uids = [1000, 2000]\n";
        policy::BUILT_IN
            .iter()
            .map(|(name, text)| (*name, *text))
            .chain([("build-random", random)])
            .map(|(name, text)| {
                policy::load_text(name, &format!("built-in:profiles/{name}.toml"), text)
                    .unwrap_or_else(|e| panic!("profile {name}: {e}"))
                    .profile
            })
            .collect()
    })
}

/// A bundle directory with an (almost empty) `rootfs/`, created once per
/// process: `rootfs/etc/passwd` exists for the random user.
pub fn bundle_dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("buildcell-fuzz-{}", std::process::id()));
        let etc = dir.join("rootfs/etc");
        std::fs::create_dir_all(&etc).expect("create the fuzz bundle");
        std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n")
            .expect("write the fuzz bundle's passwd");
        dir
    })
}

fn lo_only(_: &Path) -> Result<Vec<String>, String> {
    Ok(vec!["lo".into()])
}

fn lo_and_eth0(_: &Path) -> Result<Vec<String>, String> {
    Ok(vec!["lo".into(), "eth0".into()])
}

fn same(p: &Path) -> PathBuf {
    p.to_path_buf()
}

/// Policy contexts that touch nothing on the host: an unprivileged caller
/// and a step; host root with a bundle (whose joined network namespace has
/// links besides lo).
pub fn contexts(bundle: &Path) -> [Context<'_>; 2] {
    [
        Context {
            host_root: false,
            step: true,
            bundle: None,
            links: &lo_only,
            canonical: &same,
            home: Some("/home/u".into()),
            runtime_dir: None,
        },
        Context {
            host_root: true,
            step: false,
            bundle: Some(bundle),
            links: &lo_and_eth0,
            canonical: &same,
            home: None,
            runtime_dir: Some("/run/user/0".into()),
        },
    ]
}
