//! A profile file (`profiles/*.toml`, `/etc/buildcell/profiles`) and the
//! host config (`config.toml`): parsed, merged with the built-in profile it
//! extends and resolved (`policy::load_text`, `policy::Config::parse`); a
//! profile that loads is then used as `create` uses it (checked against a
//! default bundle, its defaults, Landlock plan and `seccomp.deny` filter).
#![no_main]

use std::path::Path;

use buildcell::policy::{self, check};
use buildcell_fuzz::{bundle_dir, contexts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = policy::Config::parse(Path::new("/etc/buildcell/config.toml"), &text);
    let Ok(loaded) = policy::load_text("fuzz", "/etc/buildcell/profiles/fuzz.toml", &text) else {
        return;
    };
    let p = &loaded.profile;
    // What resolve promises: limits are positive (a negative one would be
    // "unlimited" once it is a cgroup value).
    for (key, v) in [
        ("memory_max", p.memory_max),
        ("memory_default", p.memory_default),
        ("pids_max", p.pids_max),
        ("pids_default", p.pids_default),
    ] {
        assert!(
            v.is_none_or(|n| n > 0),
            "{key} = {v:?} resolved from {text:?}"
        );
    }
    let _ = loaded.to_json();
    let _ = p.redacts_env("NPM_TOKEN");
    let spec_json = buildcell::spec::default_bundle_spec(1000, 1000, false);
    let Ok(mut spec) = serde_json::from_value::<oci_spec::runtime::Spec>(spec_json) else {
        return;
    };
    for ctx in contexts(bundle_dir()) {
        let _ = check::check(p, &spec, &ctx);
    }
    let _ = check::apply_defaults(p, &mut spec, true);
    let _ = policy::landlock_plan(p, &["/out".into()]);
    // Only the profile's own deny list: its seccomp file is not read.
    let mut deny_only = p.clone();
    deny_only.seccomp = "none".into();
    let _ = policy::seccomp_filters(&deny_only, &["CAP_KILL".to_string()]);
});
