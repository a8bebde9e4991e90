//! Audit signing keys. Two kinds, told apart by their content:
//!
//! - a forward-secure sealing key (the default of `audit keygen`; see
//!   [`super::fss`]): a JSON key file, and a JSON public key file holding
//!   the Merkle root of every epoch's key;
//! - a plain Ed25519 key (`audit keygen --plain`, and keys made before
//!   sealing existed): 64 hex digits of secret seed (mode 0600), and 64 hex
//!   digits of public key. The key id is the first 16 hex digits of the
//!   SHA-256 of the public key.
//!
//! The sandbox can never read either secret file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use super::fss::{SealPublic, Sealer};
use super::record::Checkpoint;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a key file (expected 64 hex digits on one line, or a sealing key)")]
    Format { path: PathBuf },
    #[error("{path}: not a valid Ed25519 public key")]
    Invalid { path: PathBuf },
    #[error("{path}: sealing key: {reason}")]
    Sealing { path: PathBuf, reason: String },
}

pub fn key_id(public: &VerifyingKey) -> String {
    super::sha256_hex(public.as_bytes())[..16].to_string()
}

fn read(path: &Path) -> Result<zeroize::Zeroizing<String>, KeyError> {
    fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })
}

fn hex32(path: &Path, text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = zeroize::Zeroizing::new(
        super::unhex(text.trim()).ok_or(KeyError::Format { path: path.into() })?,
    );
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Format { path: path.into() })
}

fn is_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// What signs a log's checkpoints.
#[derive(Debug)]
pub enum AuditSigner {
    Plain(SigningKey),
    Sealed(Sealer),
}

impl From<SigningKey> for AuditSigner {
    fn from(k: SigningKey) -> Self {
        AuditSigner::Plain(k)
    }
}

impl AuditSigner {
    pub fn key_id(&self) -> String {
        match self {
            AuditSigner::Plain(k) => key_id(&k.verifying_key()),
            AuditSigner::Sealed(s) => s.key_id().to_string(),
        }
    }

    pub fn sealer(&self) -> Option<&Sealer> {
        match self {
            AuditSigner::Sealed(s) => Some(s),
            AuditSigner::Plain(_) => None,
        }
    }

    /// The checkpoint record over the chain head `prev` at `seq`.
    pub fn checkpoint(
        &self,
        container: &str,
        seq: u64,
        prev: &str,
    ) -> Result<Checkpoint, KeyError> {
        match self {
            AuditSigner::Plain(k) => Ok(Checkpoint {
                key_id: self.key_id(),
                sig: super::hex(
                    &k.sign(&super::checkpoint_message(container, seq, prev))
                        .to_bytes(),
                ),
                seal: None,
            }),
            AuditSigner::Sealed(s) => {
                let (sig, seal) =
                    s.seal(&|e| super::fss::checkpoint_message(container, seq, prev, e))?;
                Ok(Checkpoint {
                    key_id: s.key_id().to_string(),
                    sig,
                    seal: Some(seal),
                })
            }
        }
    }
}

/// Load a secret key file of either kind.
pub fn load_signing(path: &Path) -> Result<AuditSigner, KeyError> {
    let text = read(path)?;
    if is_json(&text) {
        return Ok(AuditSigner::Sealed(Sealer::open(path)?));
    }
    Ok(AuditSigner::Plain(SigningKey::from_bytes(&hex32(
        path, &text,
    )?)))
}

/// What auditors hold.
#[derive(Debug, Clone)]
pub enum PublicKey {
    Plain(VerifyingKey),
    Sealed(SealPublic),
}

impl PublicKey {
    pub fn key_id(&self) -> String {
        match self {
            PublicKey::Plain(k) => key_id(k),
            PublicKey::Sealed(p) => p.key_id(),
        }
    }
}

/// Load a public key file of either kind.
pub fn load_public(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read(path)?;
    if is_json(&text) {
        return SealPublic::parse(&text)
            .map(PublicKey::Sealed)
            .map_err(|reason| KeyError::Sealing {
                path: path.into(),
                reason,
            });
    }
    VerifyingKey::from_bytes(&hex32(path, &text)?)
        .map(PublicKey::Plain)
        .map_err(|_| KeyError::Invalid { path: path.into() })
}

/// Create a plain (not forward-secure) key pair: `SECRET` (0600, refused
/// if it exists) and `SECRET.pub`. Returns the public key file and the key
/// id.
pub fn generate_plain(secret: &Path) -> Result<(PathBuf, String), KeyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut *seed))
        .map_err(io(Path::new("/dev/urandom")))?;
    let key = SigningKey::from_bytes(&seed);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret)
        .map_err(io(secret))?;
    writeln!(f, "{}", *zeroize::Zeroizing::new(super::hex(&*seed))).map_err(io(secret))?;
    f.sync_all().map_err(io(secret))?;
    let public = key.verifying_key();
    let mut pub_path = secret.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    fs::write(&pub_path, format!("{}\n", super::hex(public.as_bytes()))).map_err(io(&pub_path))?;
    Ok((pub_path, key_id(&public)))
}

/// `15m`, `1h`, `1d`, `30s` or plain seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}
