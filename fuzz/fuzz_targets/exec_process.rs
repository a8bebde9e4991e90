//! `exec --process FILE`: the process JSON parsed
//! (`container::parse_process`), checked against every built-in profile
//! (`policy::check::check_process`), given its defaults and validated into
//! a process plan (`spec::plan_process`), as `exec` does.
#![no_main]

use buildcell::policy::check;
use buildcell_fuzz::profiles;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(process) = buildcell::container::parse_process(data, "process.json") else {
        return;
    };
    for p in profiles() {
        let _ = check::check_process(p, &process, "process");
        let mut proc = process.clone();
        check::apply_process_defaults(p, &mut proc);
        let _ = buildcell::spec::plan_process(&proc, "process");
        for e in proc.env().iter().flatten() {
            if let Some((name, _)) = e.split_once('=') {
                let _ = buildcell::audit::redact::is_secret_name(name) || p.redacts_env(name);
            }
        }
    }
});
