//! Audit signing keys: an Ed25519 secret key file (64 hex digits, mode
//! 0600) that the sandbox can never read, and the public key file (64 hex
//! digits) that auditors hold. The key id is the first 16 hex digits of the
//! SHA-256 of the public key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a key file (expected 64 hex digits on one line)")]
    Format { path: PathBuf },
    #[error("{path}: not a valid Ed25519 public key")]
    Invalid { path: PathBuf },
}

pub fn key_id(public: &VerifyingKey) -> String {
    super::sha256_hex(public.as_bytes())[..16].to_string()
}

fn read_hex32(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.into(),
        source,
    })?;
    let bytes = super::unhex(text.trim()).ok_or(KeyError::Format { path: path.into() })?;
    bytes
        .try_into()
        .map_err(|_| KeyError::Format { path: path.into() })
}

pub fn load_signing(path: &Path) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&read_hex32(path)?))
}

pub fn load_public(path: &Path) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&read_hex32(path)?)
        .map_err(|_| KeyError::Invalid { path: path.into() })
}

/// Create a new key pair: `SECRET` (0600, refused if it exists) and
/// `SECRET.pub`. Returns the public key file and the key id.
pub fn generate(secret: &Path) -> Result<(PathBuf, String), KeyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let mut seed = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .map_err(io(Path::new("/dev/urandom")))?;
    let key = SigningKey::from_bytes(&seed);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret)
        .map_err(io(secret))?;
    writeln!(f, "{}", super::hex(&seed)).map_err(io(secret))?;
    f.sync_all().map_err(io(secret))?;
    let public = key.verifying_key();
    let mut pub_path = secret.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    fs::write(&pub_path, format!("{}\n", super::hex(public.as_bytes()))).map_err(io(&pub_path))?;
    Ok((pub_path, key_id(&public)))
}
