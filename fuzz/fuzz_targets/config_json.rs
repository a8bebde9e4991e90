//! A bundle's config.json, as `create` and `run` take it: parsed
//! (`container::parse_config`), validated into a launch plan with its
//! seccomp filter compiled (`container::bundle_plan`, `spec::plan_in`), then
//! checked against every built-in profile and given its defaults
//! (`policy::check`). Whatever the bytes, nothing may panic.
#![no_main]

use buildcell::container::{self, Bundle};
use buildcell::policy::{self, check};
use buildcell_fuzz::{bundle_dir, contexts, profiles};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = container::parse_config(data, "config.json") else {
        return;
    };
    let dir = bundle_dir();
    let mut bundle = Bundle {
        dir: dir.to_path_buf(),
        spec: spec.clone(),
        sha256: String::new(),
    };
    let _ = container::bundle_plan(&bundle, false);
    // Again with the fixed rootfs, so that a root path that does not exist
    // here does not stop the validation at its first field.
    if let Some(mut root) = bundle.spec.root().clone() {
        root.set_path("rootfs".into());
        bundle.spec.set_root(Some(root));
        let _ = buildcell::spec::plan_in(&bundle.spec, Some(dir), Vec::new(), false);
    }
    // As a step's spec (no bundle): the step rules.
    let _ = buildcell::spec::plan_in(&spec, None, Vec::new(), false);

    let passwd = dir.join(format!("passwd-{}", std::process::id()));
    for p in profiles() {
        for ctx in contexts(dir) {
            let _ = check::check(p, &spec, &ctx);
            let _ = check::adds_user_namespace(p, &spec, ctx.host_root);
        }
        let mut s = spec.clone();
        let _ = check::narrow_capabilities(p, &mut s);
        let _ = check::apply_defaults(p, &mut s, true);
        let _ = check::apply_random_user(p, &mut s, &dir.join("rootfs"), &passwd, 12345);
        let _ = policy::landlock_plan(p, &policy::rw_bind_destinations(&s));
        let _ = serde_json::to_vec(&s);
    }
    let _ = std::fs::remove_file(&passwd);
});
