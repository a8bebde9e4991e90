//! The audit log: a tamper-evident record of what ran in a sandbox.
//!
//! - [`record`]: the record types, one JSON object per line;
//! - [`log`]: the append-only writer (hash chain, signed checkpoints,
//!   durability, failing closed);
//! - [`keys`]: Ed25519 key files and key ids;
//! - [`fss`]: forward-secure sealing keys (a new signing key every epoch,
//!   older ones unrecoverable from the key file);
//! - [`verify`]: the offline checker behind `buildcell audit verify`.
//!
//! Chain: every record carries `prev`, the SHA-256 (hex) of the previous
//! line's bytes (64 zeros for the first). A `checkpoint` record signs,
//! with Ed25519, the context `buildcell-audit-v1`, the container id, its
//! own seq and that `prev`: one signature covers every record before it.
//! A complete log ends with an `end` record followed by a checkpoint.

pub mod fss;
pub mod index;
pub mod keys;
pub mod log;
pub mod record;
pub mod redact;
pub mod supervisor;
pub mod verify;

use std::path::PathBuf;

/// Where logs go by default: `/var/log/buildcell` as host root,
/// `$XDG_STATE_HOME/buildcell/audit` (or `~/.local/state/...`) otherwise.
/// Both lie outside anything a step can reach (home directories are hidden
/// in the sandbox; /var/log/buildcell is 0700 root).
pub fn default_log_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() && crate::userns::in_initial_userns() {
        return PathBuf::from("/var/log/buildcell");
    }
    xdg("XDG_STATE_HOME", ".local/state").join("buildcell/audit")
}

/// Size cap of one audit log (a step's, a container's): reaching it
/// stops the step or container, as any failed record does.
pub const DEFAULT_AUDIT_LIMIT: u64 = 1 << 30;

/// Create the default log directory (mode 0700) if needed; its path.
pub fn ensure_log_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = default_log_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("audit log directory {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The signing key used when it exists: `/etc/buildcell/audit.key` as host
/// root, `$XDG_CONFIG_HOME/buildcell/audit.key` (or `~/.config/...`).
pub fn default_key_path() -> PathBuf {
    if nix::unistd::geteuid().is_root() && crate::userns::in_initial_userns() {
        return PathBuf::from("/etc/buildcell/audit.key");
    }
    xdg("XDG_CONFIG_HOME", ".config").join("buildcell/audit.key")
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/nonexistent"))
            .join(fallback),
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Bytes from lowercase or uppercase hex; `None` on odd length or bad digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// SHA-256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

/// An `io::Write` that SHA-256-hashes what is written to it.
#[derive(Default)]
pub struct HashWriter(sha2::Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl HashWriter {
    pub fn finish_hex(self) -> String {
        hex(&sha2::Digest::finalize(self.0))
    }
}

/// The bytes a checkpoint signs.
pub fn checkpoint_message(container: &str, seq: u64, prev: &str) -> Vec<u8> {
    format!("buildcell-audit-v1\n{container}\n{seq}\n{prev}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(unhex("0001abFF"), Some(vec![0, 1, 0xab, 0xff]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
