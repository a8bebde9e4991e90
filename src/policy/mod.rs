//! Policy as code: named profiles (TOML, `profiles/`) say what a step may
//! have and what it gets when the bundle says nothing. This module finds
//! the profile that applies ([`select`]), loads and resolves it ([`load`]),
//! checks a bundle against it ([`check`]) and fills in its defaults
//! ([`check::apply_defaults`]).
//!
//! Where profiles come from, first match wins: the directories of the
//! config (`profile_dirs`), else `$XDG_CONFIG_HOME/buildcell/profiles`
//! (not as root) and `/etc/buildcell/profiles`; then the copies of the
//! repository's `profiles/*.toml` built into the binary.

pub mod check;
pub mod profile;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use profile::Profile;

include!(concat!(env!("OUT_DIR"), "/profiles_json.rs"));

/// Profiles built into the binary: the repository's `profiles/`.
pub const BUILT_IN: [(&str, &str); 4] = [
    ("build", include_str!("../../profiles/build.toml")),
    (
        "build-network",
        include_str!("../../profiles/build-network.toml"),
    ),
    ("strict", include_str!("../../profiles/strict.toml")),
    (
        "engine-compat",
        include_str!("../../profiles/engine-compat.toml"),
    ),
];

/// The annotation a bundle may use to pick a profile the config allows.
pub const PROFILE_ANNOTATION: &str = "org.buildcell.profile";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}:{line}: {key}: {message}; fix the profile (schema: profiles/README.md)")]
    Profile {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{file}:{line}: {message}; fix the config (keys: default_profile, selectable_by_annotation, profile_dirs)")]
    Config {
        file: String,
        line: usize,
        message: String,
    },
    #[error("profile {name:?} ({why}): not found in {searched}; see buildcell policy list")]
    Unknown {
        name: String,
        why: String,
        searched: String,
    },
    #[error("profile {0}: `extends` makes a cycle ({1}); break it")]
    Cycle(String, String),
    #[error("annotation {PROFILE_ANNOTATION}={name:?}: not selectable by annotation in {config} (selectable: {selectable}); ask the host's admin to list it in selectable_by_annotation")]
    NotSelectable {
        name: String,
        config: String,
        selectable: String,
    },
    #[error("profile {profile} refuses this {what} ({} violation{}): {}", .violations.len(), if .violations.len() == 1 { "" } else { "s" }, .violations.join("; "))]
    Violations {
        profile: String,
        what: &'static str,
        violations: Vec<String>,
    },
    #[error("seccomp profile {name:?} of profile {profile}: {message}")]
    Seccomp {
        name: String,
        profile: String,
        message: String,
    },
}

/// The host's buildcell config (`config.toml`).
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where it was read from (`None`: no file, the built-in defaults).
    pub file: Option<PathBuf>,
    pub default_profile: Option<String>,
    pub selectable_by_annotation: Vec<String>,
    pub profile_dirs: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_profile: Option<String>,
    selectable_by_annotation: Option<Vec<String>>,
    profile_dirs: Option<Vec<PathBuf>>,
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn user_config_dir() -> Option<PathBuf> {
    if running_as_root() {
        return None;
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".config"))
        })
        .map(|d| d.join("buildcell"))
}

impl Config {
    /// `$BUILDCELL_CONFIG`, else the user's config (not as root), else
    /// `/etc/buildcell/config.toml`; none of them: built-in defaults.
    pub fn load() -> Result<Config, PolicyError> {
        let explicit_path = std::env::var_os("BUILDCELL_CONFIG").filter(|p| !p.is_empty());
        let candidates: Vec<PathBuf> = match &explicit_path {
            Some(p) => vec![PathBuf::from(p)],
            None => user_config_dir()
                .map(|d| d.join("config.toml"))
                .into_iter()
                .chain([PathBuf::from("/etc/buildcell/config.toml")])
                .collect(),
        };
        let explicit = explicit_path.is_some();
        for path in candidates {
            match std::fs::read_to_string(&path) {
                Ok(text) => return Config::parse(&path, &text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => continue,
                Err(e) => {
                    return Err(PolicyError::Config {
                        file: path.display().to_string(),
                        line: 0,
                        message: format!("cannot read: {e}"),
                    })
                }
            }
        }
        Ok(Config::default())
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, PolicyError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| PolicyError::Config {
            file: path.display().to_string(),
            line: line_of_span(text, e.span()),
            message: e.message().to_string(),
        })?;
        let dirs = raw.profile_dirs.unwrap_or_default();
        if let Some(d) = dirs.iter().find(|d| !d.is_absolute()) {
            return Err(PolicyError::Config {
                file: path.display().to_string(),
                line: find_line(text, &format!("{:?}", d.display().to_string())),
                message: format!("profile_dirs: {} is not absolute", d.display()),
            });
        }
        Ok(Config {
            file: Some(path.to_path_buf()),
            default_profile: raw.default_profile,
            selectable_by_annotation: raw.selectable_by_annotation.unwrap_or_default(),
            profile_dirs: dirs,
        })
    }

    /// Directories searched for `NAME.toml`, in order.
    pub fn search_dirs(&self) -> Vec<PathBuf> {
        if !self.profile_dirs.is_empty() {
            return self.profile_dirs.clone();
        }
        user_config_dir()
            .map(|d| d.join("profiles"))
            .into_iter()
            .chain([PathBuf::from("/etc/buildcell/profiles")])
            .collect()
    }

    fn describe(&self) -> String {
        match &self.file {
            Some(f) => f.display().to_string(),
            None => "the built-in config (no config.toml)".into(),
        }
    }
}

/// The profile chosen for a call, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub name: String,
    pub why: String,
}

/// The profile of the shipped default.
pub const DEFAULT_PROFILE: &str = "build";

/// Which profile applies. In order: the annotation (only a profile the
/// config lists as selectable; any other is an error), the operator's
/// choice (`--profile`, or the binary called as `buildcell-NAME`), the
/// config's default, `build`.
pub fn select(
    flag: Option<&str>,
    argv0: &str,
    annotation: Option<&str>,
    config: &Config,
) -> Result<Selection, PolicyError> {
    if let Some(name) = annotation {
        if !config.selectable_by_annotation.iter().any(|s| s == name) {
            return Err(PolicyError::NotSelectable {
                name: name.into(),
                config: config.describe(),
                selectable: match config.selectable_by_annotation.is_empty() {
                    true => "none".into(),
                    false => config.selectable_by_annotation.join(", "),
                },
            });
        }
        return Ok(Selection {
            name: name.into(),
            why: format!("annotation {PROFILE_ANNOTATION}"),
        });
    }
    if let Some(name) = flag {
        return Ok(Selection {
            name: name.into(),
            why: "--profile".into(),
        });
    }
    let base = Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if let Some(name) = base.strip_prefix("buildcell-").filter(|n| !n.is_empty()) {
        return Ok(Selection {
            name: name.into(),
            why: format!("called as {base}"),
        });
    }
    if let Some(name) = &config.default_profile {
        return Ok(Selection {
            name: name.clone(),
            why: format!("default_profile of {}", config.describe()),
        });
    }
    Ok(Selection {
        name: DEFAULT_PROFILE.into(),
        why: "the built-in default".into(),
    })
}

/// A resolved profile, where it came from, and its SHA-256 (of its
/// resolved form as JSON: what `policy show` prints).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub profile: Profile,
    pub sha256: String,
    /// Files (or `built-in:NAME`) it was read from, the profile's own first.
    pub sources: Vec<String>,
}

impl Loaded {
    /// The resolved profile as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.profile).unwrap_or_default()
    }
}

/// A profile's file (or `built-in:...`) and text.
type ProfileText = (String, String);

/// Find a profile's text: the first directory holding `NAME.toml`, else
/// the built-in copy.
fn find_text(name: &str, config: &Config) -> Result<Option<ProfileText>, PolicyError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        return Ok(None);
    }
    for dir in config.search_dirs() {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(Some((path.display().to_string(), text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(PolicyError::Profile {
                    file: path.display().to_string(),
                    line: 0,
                    key: "(file)".into(),
                    message: format!("cannot read: {e}"),
                })
            }
        }
    }
    Ok(BUILT_IN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, t)| (format!("built-in:profiles/{n}.toml"), t.to_string())))
}

/// Load profile `name` with everything it extends, and resolve it.
pub fn load(selection: &Selection, config: &Config) -> Result<Loaded, PolicyError> {
    let searched = || {
        config
            .search_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .chain(["the built-in profiles".to_string()])
            .collect::<Vec<_>>()
            .join(", ")
    };
    load_with(selection, &|name| find_text(name, config), &searched)
}

/// Load a profile from its text alone: the profile `name` is `text` (read
/// from `file`), and what it `extends` is one of the built-in profiles.
/// Pure (no file is read), so that hostile profiles can be fuzzed
/// (`fuzz/fuzz_targets/profile_toml.rs`).
pub fn load_text(name: &str, file: &str, text: &str) -> Result<Loaded, PolicyError> {
    let find = |n: &str| -> Result<Option<ProfileText>, PolicyError> {
        if n == name {
            return Ok(Some((file.to_string(), text.to_string())));
        }
        Ok(BUILT_IN
            .iter()
            .find(|(b, _)| *b == n)
            .map(|(b, t)| (format!("built-in:profiles/{b}.toml"), t.to_string())))
    };
    let selection = Selection {
        name: name.into(),
        why: format!("the profile of {file}"),
    };
    load_with(&selection, &find, &|| "the built-in profiles".to_string())
}

/// [`load`] with the lookup of a profile's text (`find`: its file and text,
/// `None` when there is none) and the description of where it looked.
fn load_with(
    selection: &Selection,
    find: &dyn Fn(&str) -> Result<Option<ProfileText>, PolicyError>,
    searched: &dyn Fn() -> String,
) -> Result<Loaded, PolicyError> {
    let mut chain: Vec<String> = Vec::new();
    let mut sources = Vec::new();
    let mut raws = Vec::new();
    let mut next = Some(selection.name.clone());
    while let Some(name) = next.take() {
        if chain.contains(&name) {
            chain.push(name);
            return Err(PolicyError::Cycle(
                selection.name.clone(),
                chain.join(" -> "),
            ));
        }
        let Some((file, text)) = find(&name)? else {
            let why = match chain.last() {
                Some(child) => format!("extended by {child}"),
                None => selection.why.clone(),
            };
            return Err(PolicyError::Unknown {
                name,
                why,
                searched: searched(),
            });
        };
        let raw = parse_profile(&file, &text)?;
        next = raw.extends.clone();
        chain.push(name);
        sources.push(file.clone());
        raws.push((file, text, raw));
    }
    // Merge from the root of the chain down to the profile itself.
    let files: Vec<(String, String)> = raws
        .iter()
        .map(|(f, t, _)| (f.clone(), t.clone()))
        .collect();
    let mut merged = profile::RawProfile::default();
    for (_, _, raw) in raws.into_iter().rev() {
        merged = raw.over(merged);
    }
    let profile =
        profile::resolve(&selection.name, merged, &crate::syscalls::is_known).map_err(|p| {
            // Name the file and line that set the key: the first in the
            // chain (the profile itself first) that mentions the value, or
            // else the key.
            let by_value = p.value.as_deref().and_then(|v| {
                files.iter().find_map(|(f, t)| {
                    let l = find_line(t, &format!("{v:?}"));
                    (l > 0).then(|| (f.clone(), l))
                })
            });
            let by_key = || {
                files.iter().find_map(|(f, t)| {
                    let l = find_key_line(t, &p.key);
                    (l > 0).then(|| (f.clone(), l))
                })
            };
            let (file, line) = by_value
                .or_else(by_key)
                .unwrap_or_else(|| (files[0].0.clone(), 0));
            PolicyError::Profile {
                file,
                line,
                key: p.key,
                message: p.message,
            }
        })?;
    let json = serde_json::to_vec(&profile).unwrap_or_default();
    Ok(Loaded {
        sha256: crate::audit::sha256_hex(&json),
        profile,
        sources,
    })
}

/// A profile's text parsed: a built-in profile's (unchanged text, its own
/// name) from the JSON build.rs made of it, anything else as TOML.
fn parse_profile(file: &str, text: &str) -> Result<profile::RawProfile, PolicyError> {
    let built_in = BUILT_IN
        .iter()
        .zip(BUILT_IN_JSON)
        .find_map(|((n, t), (jn, json))| {
            (n == jn && *t == text && file == format!("built-in:profiles/{n}.toml"))
                .then_some(*json)
        });
    match built_in {
        // Written by build.rs from this very text: a failure would be a
        // build bug, reported like any profile error all the same.
        Some(json) => serde_json::from_str(json).map_err(|e| PolicyError::Profile {
            file: file.into(),
            line: 0,
            key: "(file)".into(),
            message: format!("the build's JSON of this profile: {e}"),
        }),
        None => parse_raw(file, text),
    }
}

fn parse_raw(file: &str, text: &str) -> Result<profile::RawProfile, PolicyError> {
    toml::from_str(text).map_err(|e| {
        let line = line_of_span(text, e.span());
        PolicyError::Profile {
            file: file.into(),
            line,
            key: section_at(text, line),
            message: e.message().to_string(),
        }
    })
}

/// 1-based line of a byte span's start (0 when unknown).
fn line_of_span(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(0)
}

/// The `[section]` (or top level) a line belongs to, with the key on it.
fn section_at(text: &str, line: usize) -> String {
    let mut section = String::new();
    let mut key = String::new();
    for (i, l) in text.lines().enumerate() {
        if i + 1 > line {
            break;
        }
        let t = l.trim();
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if i + 1 == line {
            key = t.split('=').next().unwrap_or("").trim().to_string();
        }
    }
    match (section.is_empty(), key.is_empty() || key.starts_with('[')) {
        (true, true) => "(top level)".into(),
        (true, false) => key,
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    }
}

fn find_line(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// The line of `section.key = ...`.
fn find_key_line(text: &str, dotted: &str) -> usize {
    let (section, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == section && t.split('=').next().map(str::trim) == Some(key) {
            return i + 1;
        }
    }
    0
}

/// Names of every profile visible: files in the search dirs, then the
/// built-in ones not shadowed, with where each comes from.
pub fn list(config: &Config) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for dir in config.search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".toml"))
                    .map(String::from)
            })
            .collect();
        names.sort();
        for n in names {
            if !out.iter().any(|(x, _)| *x == n) {
                let path = dir.join(format!("{n}.toml")).display().to_string();
                out.push((n, path));
            }
        }
    }
    for (n, _) in BUILT_IN {
        if !out.iter().any(|(x, _)| x == n) {
            out.push((n.to_string(), format!("built-in:profiles/{n}.toml")));
        }
    }
    out
}

#[cfg(test)]
mod tests;

/// How the operator chose a profile on the command line: `--profile`, and
/// the name the binary was called by (`buildcell-NAME`).
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub flag: Option<String>,
    pub argv0: String,
}

impl Choice {
    /// From this process's command line and the `--profile` flag.
    pub fn from_env(flag: Option<String>) -> Choice {
        Choice {
            flag,
            argv0: std::env::args_os()
                .next()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}

/// A spec checked against the profile that applies to it.
#[derive(Debug)]
pub struct Evaluation {
    pub selection: Selection,
    pub loaded: Loaded,
    pub violations: Vec<String>,
    /// Defaults given to the spec, one line each.
    pub notes: Vec<String>,
    /// A user namespace is added (looks-like-root for a root engine).
    pub adds_user_namespace: bool,
}

impl Evaluation {
    /// Refuse with every violation in one message, if there is any.
    pub fn refuse_violations(&self, what: &'static str) -> Result<(), PolicyError> {
        if self.violations.is_empty() {
            return Ok(());
        }
        Err(PolicyError::Violations {
            profile: self.loaded.profile.name.clone(),
            what,
            violations: self.violations.clone(),
        })
    }

    /// The state's annotations that say which profile applied and what it
    /// changed.
    pub fn annotations(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (
                "org.buildcell.policy.profile".to_string(),
                self.loaded.profile.name.clone(),
            ),
            (
                "org.buildcell.policy.sha256".to_string(),
                self.loaded.sha256.clone(),
            ),
            (
                "org.buildcell.policy.selected-by".to_string(),
                self.selection.why.clone(),
            ),
        ];
        if !self.notes.is_empty() {
            out.push((
                "org.buildcell.policy.defaults".to_string(),
                self.notes.join("; "),
            ));
        }
        out
    }
}

/// What `create` does with a root engine's bundle that has no user
/// namespace: add one (`user_namespace = "add"`, looks-like-root), refuse
/// it (`"require"`), or, for a profile that does not list `user` among its
/// new namespaces, run it as the engine asked (as runc would).
pub fn user_namespace_policy(p: &Profile) -> crate::userns::UserNamespacePolicy {
    use crate::userns::UserNamespacePolicy;
    if !p.new_namespaces.iter().any(|n| n == "user") {
        return UserNamespacePolicy::Off;
    }
    match p.user_namespace {
        profile::UserNamespace::Add => UserNamespacePolicy::Add,
        profile::UserNamespace::Require => UserNamespacePolicy::Require,
    }
}

/// Whether this process is root of the initial user namespace.
pub fn host_root() -> bool {
    running_as_root() && crate::userns::in_initial_userns()
}

/// Select, load and check: the whole policy decision for a spec, before
/// anything is created. `cgroups`: the caller will create a cgroup, so
/// cgroup defaults apply. `spec` gets the profile's defaults.
pub fn evaluate(
    spec: &mut oci_spec::runtime::Spec,
    bundle: Option<&Path>,
    choice: &Choice,
    cgroups: bool,
) -> Result<Evaluation, PolicyError> {
    let config = Config::load()?;
    let annotation = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(PROFILE_ANNOTATION).cloned());
    let selection = select(
        choice.flag.as_deref(),
        &choice.argv0,
        annotation.as_deref(),
        &config,
    )?;
    let loaded = load(&selection, &config)?;
    let host_root = host_root();
    let ctx = check::Context {
        host_root,
        step: bundle.is_none(),
        bundle,
        links: &check::netns_links,
        canonical: &|p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()),
        home: std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute()),
        runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute()),
    };
    // step's default set, and a pod sandbox's (see is_pod_sandbox), are
    // narrowed to the profile's instead of refused.
    let narrowed = match bundle {
        None => check::narrow_capabilities(&loaded.profile, spec),
        Some(_) if check::is_pod_sandbox(spec) => check::narrow_capabilities(&loaded.profile, spec)
            .map(|n| format!("{n}: pod sandbox (pause)")),
        Some(_) => None,
    };
    let violations = check::check(&loaded.profile, spec, &ctx);
    let adds_user_namespace =
        bundle.is_some() && check::adds_user_namespace(&loaded.profile, spec, host_root);
    let mut notes = check::apply_defaults(&loaded.profile, spec, cgroups);
    notes.extend(narrowed);
    if adds_user_namespace {
        notes.insert(
            0,
            "linux.namespaces: a user namespace is added (looks-like-root: root inside, an unprivileged range outside)".into(),
        );
    }
    Ok(Evaluation {
        selection,
        loaded,
        violations,
        notes,
        adds_user_namespace,
    })
}

/// Where a container's resolved profile is kept, in its state directory
/// (`exec` and `update` are checked against it).
pub const STATE_FILE: &str = "profile.json";

/// Read back the profile a container was created under.
pub fn load_saved(dir: &Path) -> Option<Profile> {
    let data = std::fs::read(dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Directories searched for `seccomp/NAME.json` before the built-in
/// `default`.
fn seccomp_dirs() -> Vec<PathBuf> {
    user_config_dir()
        .map(|d| d.join("seccomp"))
        .into_iter()
        .chain([PathBuf::from("/etc/buildcell/seccomp")])
        .collect()
}

/// Whether the profile's seccomp profile is the built-in `default`, not
/// overridden by a file (then `step` uses the copy compiled at build time).
pub fn uses_builtin_seccomp(p: &Profile) -> bool {
    p.seccomp == "default"
        && !seccomp_dirs()
            .iter()
            .any(|d| d.join("default.json").exists())
}

/// The filters a profile stacks on a process with bounding set `caps`
/// (`CAP_*` names): its seccomp profile, then its `seccomp.deny` list.
/// `None` for the profile means the built-in default applies unchanged
/// (`step` uses the copy compiled at build time).
pub fn seccomp_filters(
    p: &Profile,
    caps: &[String],
) -> Result<Vec<crate::seccomp::CompiledFilter>, PolicyError> {
    let err = |message: String| PolicyError::Seccomp {
        name: p.seccomp.clone(),
        profile: p.name.clone(),
        message,
    };
    let mut filters = Vec::new();
    if p.seccomp != "none" {
        let mut text = None;
        for dir in seccomp_dirs() {
            let path = dir.join(format!("{}.json", p.seccomp));
            match std::fs::read_to_string(&path) {
                Ok(t) => {
                    text = Some((path.display().to_string(), t));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(format!("{}: {e}", path.display()))),
            }
        }
        let (source, text) = match (text, p.seccomp.as_str()) {
            (Some(t), _) => t,
            (None, "default") => (
                "built-in:seccomp/default.json".to_string(),
                crate::seccomp::DEFAULT_PROFILE.to_string(),
            ),
            (None, _) => {
                return Err(err(format!(
                    "not found in {} (only `default` is built in); install it there",
                    seccomp_dirs()
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        };
        // The built-in profile (or an installed copy of it, byte for byte)
        // as build.rs compiled it, when no rule depends on capabilities.
        let embedded = (text == crate::seccomp::DEFAULT_PROFILE)
            .then(crate::spec::default_seccomp_for_any_caps)
            .flatten();
        match embedded {
            Some(compiled) => filters.extend(compiled),
            None => filters.extend(
                crate::seccomp::compile_skipping(&text, &source, caps, &|n| {
                    !crate::syscalls::is_known(n)
                })
                .map_err(|e| err(e.to_string()))?,
            ),
        }
    }
    if !p.seccomp_deny.is_empty() {
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": p.seccomp_deny, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        });
        filters.extend(
            crate::seccomp::compile(&json.to_string(), "seccomp.deny", caps)
                .map_err(|e| err(e.to_string()))?,
        );
    }
    Ok(filters)
}

/// The Landlock plan of a profile for a container whose read-write bind
/// destinations (its declared outputs) are `outputs`; `None` with
/// `landlock.mode = "off"`.
pub fn landlock_plan(p: &Profile, outputs: &[PathBuf]) -> Option<crate::landlock::LandlockPlan> {
    use crate::landlock::{Compat, FsRules, LandlockPlan};
    use profile::{LandlockMode, NetworkMode};
    let compat = match p.landlock {
        LandlockMode::Off => return None,
        LandlockMode::Require => Compat::Require,
        LandlockMode::BestEffort => Compat::BestEffort,
    };
    let fs = (!p.landlock_read_exec.is_empty() || !p.landlock_read_write.is_empty()).then(|| {
        let mut read_write = p.landlock_read_write.clone();
        if p.landlock_writable_binds {
            for o in outputs {
                if !read_write.contains(o) {
                    read_write.push(o.clone());
                }
            }
        }
        FsRules {
            read_exec: p.landlock_read_exec.clone(),
            read_write,
        }
    });
    // `none`: no TCP at all; `tcp`: only the listed ports; `loopback` and
    // `host`: TCP is not limited by Landlock (the namespace limits it).
    let (tcp_connect, tcp_bind) = match p.network {
        NetworkMode::None => (Some(Vec::new()), Some(Vec::new())),
        NetworkMode::Tcp => (Some(p.connect_tcp.clone()), Some(p.bind_tcp.clone())),
        NetworkMode::Loopback | NetworkMode::Host => (None, None),
    };
    let plan = LandlockPlan {
        compat,
        fs,
        tcp_connect,
        tcp_bind,
        scope_abstract_unix: p.scope_abstract_unix,
        scope_signal: p.scope_signal,
    };
    let empty = plan.fs.is_none()
        && plan.tcp_connect.is_none()
        && plan.tcp_bind.is_none()
        && !plan.scope_signal
        && !plan.scope_abstract_unix;
    (!empty).then_some(plan)
}

/// Destinations of a spec's read-write bind mounts: a container's
/// declared outputs.
pub fn rw_bind_destinations(spec: &oci_spec::runtime::Spec) -> Vec<PathBuf> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| {
            let opts = m.options().clone().unwrap_or_default();
            let bind = m.typ().as_deref() == Some("bind")
                || opts.iter().any(|o| o == "bind" || o == "rbind");
            bind && !opts.iter().any(|o| o == "ro")
        })
        .map(|m| m.destination().clone())
        .collect()
}

/// One line for `state` and the audit record: what Landlock enforces.
pub fn landlock_summary(r: &crate::landlock::Report) -> String {
    r.lines().join("; ")
}
