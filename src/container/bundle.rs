//! A bundle's `config.json` read, validated and turned into a launch plan
//! under its profile (the seccomp filter it asks for compiled once).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::audit::{self};
use crate::error::Error;
use crate::spec::{self, LaunchPlan};
use crate::userns::IdMapPlan;

use super::{usage, OCI_VERSION};

/// A bundle's config.json, parsed, with its SHA-256.
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub sha256: String,
}

/// Read and parse `BUNDLE/config.json`; errors name the JSON path.
pub fn load_bundle(dir: &Path) -> Result<Bundle, Error> {
    load_config(&dir.join("config.json"), dir)
}

/// Read and parse the config at `path` of the bundle `dir`.
pub fn load_config(path: &Path, dir: &Path) -> Result<Bundle, Error> {
    let dir =
        std::path::absolute(dir).map_err(|e| usage(format!("--bundle {}: {e}", dir.display())))?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let data = std::fs::read(&path).map_err(|e| {
        usage(format!(
            "{}: cannot read: {e}; give the bundle directory with --bundle",
            path.display()
        ))
    })?;
    let spec = parse_config(&data, &path.display().to_string())?;
    Ok(Bundle {
        sha256: audit::sha256_hex(&data),
        dir,
        spec,
    })
}

/// Parse a config.json's bytes (`name` is the file, for messages): errors
/// name the JSON path; only OCI 1.x is accepted. Pure, so that hostile
/// input can be fuzzed (`fuzz/fuzz_targets/config_json.rs`).
pub fn parse_config(data: &[u8], name: &str) -> Result<Spec, Error> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    let spec: Spec = serde_path_to_error::deserialize(de)
        .map_err(|e| usage(format!("{name}: at {}: {}", e.path(), e.inner())))?;
    let major = spec.version().split('.').next().unwrap_or("");
    if major != "1" {
        return Err(usage(format!(
            "{name}: ociVersion {:?} is not supported (buildcell implements {OCI_VERSION}); write a 1.x config",
            spec.version()
        )));
    }
    Ok(spec)
}

/// The validated plan of a bundle: its seccomp filters compiled.
pub fn bundle_plan(b: &Bundle, verbose: bool) -> Result<LaunchPlan, Error> {
    let filters = bundle_seccomp(&b.spec, b.spec.process().as_ref())?;
    Ok(spec::plan_in(&b.spec, Some(&b.dir), filters, verbose)?)
}

/// A bundle's own seccomp filters, compiled once per `create` (an engine's
/// profile took ~0.25 ms a compile, and the plan is made two or three
/// times), and again only if what they were compiled from has changed:
/// the config's `linux.seccomp` and the process's bounding set (the policy
/// narrows a pod sandbox's capabilities, `policy::evaluate`).
pub(super) struct BundleSeccomp {
    from: SeccompInput,
    pub(super) filters: Vec<crate::seccomp::CompiledFilter>,
}

pub(super) type SeccompInput = (Option<oci_spec::runtime::LinuxSeccomp>, Vec<String>);

impl BundleSeccomp {
    fn input(spec: &Spec) -> SeccompInput {
        (
            spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
            bounding_caps(spec.process().as_ref()),
        )
    }

    pub(super) fn compile(spec: &Spec) -> Result<Self, Error> {
        Ok(BundleSeccomp {
            from: Self::input(spec),
            filters: bundle_seccomp(spec, spec.process().as_ref())?,
        })
    }

    /// The filters for the spec as it is now.
    pub(super) fn current(
        &mut self,
        spec: &Spec,
    ) -> Result<Vec<crate::seccomp::CompiledFilter>, Error> {
        if Self::input(spec) != self.from {
            *self = Self::compile(spec)?;
        }
        Ok(self.filters.clone())
    }
}

/// The plan of a bundle under its profile: the profile's seccomp filter
/// stacked on the bundle's, and the profile's Landlock plan.
pub(super) fn policy_plan(
    b: &Bundle,
    own: &mut BundleSeccomp,
    profile: &crate::policy::Profile,
    verbose: bool,
) -> Result<LaunchPlan, Error> {
    let mut plan = spec::plan_in(&b.spec, Some(&b.dir), own.current(&b.spec)?, verbose)?;
    plan.seccomp.extend(crate::policy::seccomp_filters(
        profile,
        &bounding_caps(b.spec.process().as_ref()),
    )?);
    plan.landlock =
        crate::policy::landlock_plan(profile, &crate::policy::rw_bind_destinations(&b.spec));
    Ok(plan)
}

/// The bounding set of a process as `CAP_*` names.
pub(super) fn bounding_caps(process: Option<&oci_spec::runtime::Process>) -> Vec<String> {
    process
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|s| s.iter().map(|c| format!("CAP_{c}")).collect())
        .unwrap_or_default()
}

/// The config's `linux.seccomp` compiled for `process`'s capabilities
/// (rules may depend on them); none when the config has no filter.
pub(super) fn bundle_seccomp(
    spec: &Spec,
    process: Option<&oci_spec::runtime::Process>,
) -> Result<Vec<crate::seccomp::CompiledFilter>, Error> {
    let caps = bounding_caps(process);
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(sc) => {
            let text = serde_json::to_string(sc).map_err(|e| usage(e.to_string()))?;
            Ok(crate::seccomp::compile_skipping(
                &text,
                "config.json linux.seccomp",
                &caps,
                &|n| !crate::syscalls::is_known(n),
            )?)
        }
        None => Ok(Vec::new()),
    }
}

/// The id maps a bundle asks for, when it asks for a user namespace.
pub(super) fn bundle_idmap(plan: &LaunchPlan, spec: &Spec) -> Result<Option<IdMapPlan>, Error> {
    if !plan.namespaces.user {
        return Ok(None);
    }
    let linux = spec.linux().as_ref();
    let conv = |m: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<(u32, u32, u32)> {
        m.into_iter()
            .flatten()
            .map(|m| (m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let uid = conv(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = conv(linux.and_then(|l| l.gid_mappings().as_ref()));
    if uid.is_empty() || gid.is_empty() {
        return Err(usage(
            "linux.uidMappings/gidMappings: a new user namespace needs both maps; add them to config.json",
        ));
    }
    Ok(Some(IdMapPlan::Explicit { uid, gid }))
}
