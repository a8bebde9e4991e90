//! `update --resources FILE` (and runc's single-value flags over it): the
//! JSON turned into OCI resources (`cli::resources_from`), converted to the
//! cgroup resources buildcell writes (`cgroups::Resources::try_from`) and
//! checked against every built-in profile's maxima
//! (`policy::check::check_resources`).
#![no_main]

use buildcell::cgroups::Resources;
use buildcell::cli::{resources_from, UpdateCmd};
use buildcell::policy::check;
use buildcell_fuzz::profiles;
use libfuzzer_sys::fuzz_target;

fn flags(with: bool) -> UpdateCmd {
    UpdateCmd {
        resources: None,
        memory: with.then(|| "64m".into()),
        memory_swap: with.then(|| "-1".into()),
        memory_reservation: None,
        pids_limit: with.then_some(100),
        cpu_shares: None,
        cpu_quota: with.then_some(50_000),
        cpu_period: None,
        cpuset_cpus: with.then(|| "0".into()),
        cpuset_mems: None,
        id: "fuzz".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for with in [false, true] {
        let Ok(oci) = resources_from(Some((text, "resources.json")), &flags(with)) else {
            continue;
        };
        for p in profiles() {
            let _ = check::check_resources(p, &oci, true);
            let _ = check::check_resources(p, &oci, false);
        }
        if let Ok(r) = Resources::try_from(&oci) {
            for d in r.devices.iter().flatten() {
                let _ = d.render_v1();
            }
            let _ = r.cpu.shares.map(buildcell::cgroups::shares_to_weight);
        }
    }
});
