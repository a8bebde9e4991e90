//! Forward-secure sealing (FSS): checkpoints are signed with a key that
//! changes every epoch along a one-way chain, so whoever takes the host
//! later (and copies the key file) cannot sign for an earlier epoch.
//!
//! Two levels of one-way chains, all SHA-256 with a label per use:
//!
//! - period seeds: `m[p+1] = H("buildcell-fss-evolve-period" || m[p])`;
//!   period p's Ed25519 key is `H("buildcell-fss-period-key" || m[p])`;
//! - epoch seeds of period p: `s[p,0] = H("buildcell-fss-first-epoch" || m[p])`,
//!   `s[p,i+1] = H("buildcell-fss-evolve" || s[p,i])`; the Ed25519 key of
//!   that epoch is `H("buildcell-fss-epoch-key" || s[p,i])`.
//!
//! `keygen` computes every period public key, and the Merkle root of them
//! goes into the public key file (with the epoch length and counts). When
//! a period begins, its key signs (certifies) the Merkle root of that
//! period's epoch public keys, and `m[p]` is erased at once (the file keeps
//! `m[p+1]`). A checkpoint carries its epoch, the epoch public key, its
//! Merkle proof to the period root, the period key, its certificate and its
//! Merkle proof to the public root. Whoever holds the file in epoch
//! (p, i) holds `m[p+1]` and `s[p,i]`: keys of later epochs only.
//!
//! The key file is rewritten atomically (temporary file, fsync, rename,
//! fsync of the directory) under an exclusive `flock`, and read under it at
//! every checkpoint: a process never keeps a seed between checkpoints and
//! never signs with an older epoch than the file holds.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::keys::KeyError;
use super::record::Seal;

pub const FORMAT: &str = "buildcell-fss-v1";
/// journald's default: a stolen key can forge at most the last 15 minutes.
pub const DEFAULT_EPOCH_SECS: u64 = 15 * 60;
/// 1024 periods of 1024 epochs: 29.9 years of 15-minute epochs.
pub const DEFAULT_PERIODS: u64 = 1024;
pub const DEFAULT_PERIOD_EPOCHS: u64 = 1024;
/// Largest period count and epochs per period a key may have (the
/// verifier refuses anything larger before doing any work).
const MAX_LEVEL: u64 = 1 << 16;
/// How long after the end of a record's epoch the checkpoint sealing it
/// may be made. buildcell's writer seals every record before its epoch
/// ends (or at once, when it notices the epoch has ended); this covers a
/// slow fsync or a busy host. A record sealed by a later epoch was
/// re-sealed after the fact.
pub const SEAL_GRACE_SECS: u64 = 10;

type Seed = Zeroizing<[u8; 32]>;

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

fn seed(label: &str, from: &[u8; 32]) -> Seed {
    Zeroizing::new(h(&[label.as_bytes(), from]))
}

fn next_period(m: &[u8; 32]) -> Seed {
    seed("buildcell-fss-evolve-period", m)
}
fn first_epoch(m: &[u8; 32]) -> Seed {
    seed("buildcell-fss-first-epoch", m)
}
fn next_epoch(s: &[u8; 32]) -> Seed {
    seed("buildcell-fss-evolve", s)
}
fn period_key(m: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed("buildcell-fss-period-key", m))
}
fn epoch_key(s: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed("buildcell-fss-epoch-key", s))
}

// ---- Merkle trees (power-of-two leaf counts, RFC 6962 style prefixes) ----

pub fn leaf_hash(public: &[u8; 32]) -> [u8; 32] {
    h(&[&[0], public])
}

fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    h(&[&[1], l, r])
}

/// Root of a tree whose leaf count is a power of two (≥ 1).
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| node_hash(&p[0], p.get(1).unwrap_or(&p[0])))
            .collect();
    }
    level.first().copied().unwrap_or([0; 32])
}

/// The sibling hashes from leaf `index` up to the root.
pub fn merkle_proof(leaves: &[[u8; 32]], index: usize) -> Vec<[u8; 32]> {
    let mut proof = Vec::new();
    let mut level = leaves.to_vec();
    let mut i = index;
    while level.len() > 1 {
        proof.push(*level.get(i ^ 1).unwrap_or(&level[i.min(level.len() - 1)]));
        level = level
            .chunks(2)
            .map(|p| node_hash(&p[0], p.get(1).unwrap_or(&p[0])))
            .collect();
        i /= 2;
    }
    proof
}

/// The root that `proof` leads to from `leaf` at `index`.
pub fn merkle_climb(leaf: &[u8; 32], index: u64, proof: &[[u8; 32]]) -> [u8; 32] {
    let mut acc = *leaf;
    for (level, sib) in proof.iter().enumerate() {
        acc = if (index >> level) & 1 == 0 {
            node_hash(&acc, sib)
        } else {
            node_hash(sib, &acc)
        };
    }
    acc
}

// ---- the public key (what auditors hold) ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealPublic {
    pub format: String,
    /// Unix time at which epoch 0 began, and the epoch length.
    pub start: u64,
    pub epoch_secs: u64,
    pub periods: u64,
    pub period_epochs: u64,
    /// Merkle root of the period public keys (hex).
    pub root: String,
}

fn check_params(
    start: u64,
    epoch_secs: u64,
    periods: u64,
    period_epochs: u64,
) -> Result<(), String> {
    if epoch_secs == 0 || epoch_secs > 366 * 86_400 {
        return Err(format!(
            "epoch length {epoch_secs} s out of range (1 s to 1 year)"
        ));
    }
    for (what, n) in [("periods", periods), ("epochs per period", period_epochs)] {
        if !n.is_power_of_two() || n > MAX_LEVEL {
            return Err(format!(
                "{what} {n}: must be a power of two up to {MAX_LEVEL}"
            ));
        }
    }
    if start
        .checked_add(epoch_secs * periods * period_epochs)
        .is_none()
    {
        return Err("start time out of range".into());
    }
    Ok(())
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    super::unhex(s)?.try_into().ok()
}

fn hex_list(s: &str, n: u64) -> Option<Vec<[u8; 32]>> {
    if s.len() as u64 != n * 64 {
        return None;
    }
    let bytes = Zeroizing::new(super::unhex(s)?);
    Some(
        bytes
            .chunks(32)
            .map(|c| <[u8; 32]>::try_from(c).unwrap_or([0; 32]))
            .collect(),
    )
}

impl SealPublic {
    /// Parse and check a public key file's text.
    pub fn parse(text: &str) -> Result<SealPublic, String> {
        let p: SealPublic = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if p.format != FORMAT {
            return Err(format!("unknown format {:?}", p.format));
        }
        check_params(p.start, p.epoch_secs, p.periods, p.period_epochs)?;
        hex32(&p.root).ok_or("root is not 32 bytes of hex")?;
        Ok(p)
    }

    /// Key id: the first 16 hex digits of the SHA-256 of everything the key
    /// commits to.
    pub fn key_id(&self) -> String {
        let text = format!(
            "{FORMAT}\n{}\n{}\n{}\n{}\n{}",
            self.start, self.epoch_secs, self.periods, self.period_epochs, self.root
        );
        super::sha256_hex(text.as_bytes())[..16].to_string()
    }

    pub fn epochs(&self) -> u64 {
        self.periods * self.period_epochs
    }

    /// The epoch of Unix time `t` (0 before the start).
    pub fn epoch_at(&self, t: u64) -> u64 {
        t.saturating_sub(self.start) / self.epoch_secs
    }

    /// The latest time at which a record dated `t` may be sealed: the end
    /// of its epoch plus [`SEAL_GRACE_SECS`].
    pub fn seal_deadline(&self, t: u64) -> u64 {
        self.epoch_start(self.epoch_at(t).saturating_add(1))
            .saturating_add(SEAL_GRACE_SECS)
    }

    /// Unix time at which `epoch` begins (saturating).
    pub fn epoch_start(&self, epoch: u64) -> u64 {
        self.start
            .saturating_add(epoch.saturating_mul(self.epoch_secs))
    }

    /// Check a checkpoint's seal: the epoch key is in the tree of period
    /// keys certified under the root, and signed `msg`. `known` is the
    /// epoch key last proven (to skip the proofs for the same key).
    pub fn check(
        &self,
        seal: &Seal,
        sig: &str,
        msg: &[u8],
        known: &mut Option<(u64, String)>,
    ) -> Result<(), String> {
        let e = seal.epoch;
        if e >= self.epochs() {
            return Err(format!(
                "epoch {e} is beyond the key's {} epochs",
                self.epochs()
            ));
        }
        let ek = hex32(&seal.epoch_key)
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .ok_or("the epoch key is not a valid Ed25519 public key")?;
        if known.as_ref() != Some(&(e, seal.epoch_key.clone())) {
            let (p, i) = (e / self.period_epochs, e % self.period_epochs);
            let proof = |list: &[String], n: u64, what: &str| {
                let depth = n.trailing_zeros() as usize;
                if list.len() != depth {
                    return Err(format!(
                        "the {what} proof has {} hashes where {depth} were expected",
                        list.len()
                    ));
                }
                list.iter()
                    .map(|s| hex32(s).ok_or(format!("the {what} proof is not 32-byte hex hashes")))
                    .collect::<Result<Vec<_>, _>>()
            };
            let ep = proof(&seal.epoch_proof, self.period_epochs, "epoch")?;
            let pp = proof(&seal.period_proof, self.periods, "period")?;
            let pk = hex32(&seal.period_key)
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .ok_or("the period key is not a valid Ed25519 public key")?;
            let root = merkle_climb(&leaf_hash(pk.as_bytes()), p, &pp);
            if super::hex(&root) != self.root {
                return Err(format!(
                    "the period key of epoch {e} is not in the sealing key's tree (forged seal)"
                ));
            }
            let period_root = merkle_climb(&leaf_hash(ek.as_bytes()), i, &ep);
            let cert = super::unhex(&seal.period_cert)
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .map(|b| Signature::from_bytes(&b))
                .ok_or("the period certificate is not 64 bytes of hex")?;
            pk.verify_strict(&cert_message(&self.key_id(), p, &period_root), &cert)
                .map_err(|_| {
                    format!("the epoch key of epoch {e} is not certified by its period key (forged seal)")
                })?;
            *known = Some((e, seal.epoch_key.clone()));
        }
        let sig = super::unhex(sig)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or("the signature is not 64 bytes of hex")?;
        ek.verify_strict(msg, &sig).map_err(|_| {
            format!("signature wrong for epoch {e}: the checkpoint or a record before it was forged or edited")
        })
    }
}

fn cert_message(key_id: &str, period: u64, root: &[u8; 32]) -> Vec<u8> {
    format!(
        "buildcell-fss-period-v1\n{key_id}\n{period}\n{}",
        super::hex(root)
    )
    .into_bytes()
}

/// The bytes a sealed checkpoint signs (the epoch is bound too).
pub fn checkpoint_message(container: &str, seq: u64, prev: &str, epoch: u64) -> Vec<u8> {
    format!("buildcell-audit-fss-v1\n{container}\n{seq}\n{prev}\n{epoch}").into_bytes()
}

// ---- the secret key file (0600; only buildcell outside the sandbox reads it) ----

/// The key file: the two current seeds, plus public data the signer needs
/// for its proofs (leaf hashes of the period keys and of the current
/// period's epoch keys, the period key and its certificate).
#[derive(Serialize, Deserialize)]
struct State {
    format: String,
    start: u64,
    epoch_secs: u64,
    periods: u64,
    period_epochs: u64,
    root: String,
    epoch: u64,
    /// `m[p+1]`: the seed of the next period.
    next_period_seed: String,
    /// `s[p,i]`: the seed of the current epoch.
    epoch_seed: String,
    period_key: String,
    period_cert: String,
    period_leaves: String,
    period_keys: String,
}

impl Drop for State {
    fn drop(&mut self) {
        self.next_period_seed.zeroize();
        self.epoch_seed.zeroize();
    }
}

impl State {
    fn public(&self) -> SealPublic {
        SealPublic {
            format: FORMAT.into(),
            start: self.start,
            epoch_secs: self.epoch_secs,
            periods: self.periods,
            period_epochs: self.period_epochs,
            root: self.root.clone(),
        }
    }

    fn parse(bytes: &[u8]) -> Result<State, String> {
        let s: State = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.format != FORMAT {
            return Err(format!("unknown format {:?}", s.format));
        }
        check_params(s.start, s.epoch_secs, s.periods, s.period_epochs)?;
        let ok = hex32(&s.root).is_some()
            && hex32(&s.next_period_seed).is_some()
            && hex32(&s.epoch_seed).is_some()
            && hex32(&s.period_key).is_some()
            && s.period_cert.len() == 128
            && super::unhex(&s.period_cert).is_some()
            && hex_list(&s.period_leaves, s.period_epochs).is_some()
            && hex_list(&s.period_keys, s.periods).is_some()
            && s.epoch < s.periods * s.period_epochs;
        if !ok {
            return Err("a field is missing, malformed or out of range".into());
        }
        Ok(s)
    }

    fn seeds(&self) -> (Seed, Seed) {
        let m = Zeroizing::new(hex32(&self.next_period_seed).unwrap_or([0; 32]));
        let s = Zeroizing::new(hex32(&self.epoch_seed).unwrap_or([0; 32]));
        (m, s)
    }

    /// Begin period `p` whose seed is `m`: certify its epoch keys, keep
    /// `m[p+1]` and `s[p,0]`, and nothing from which `m[p]` follows.
    fn enter_period(&mut self, p: u64, m: &[u8; 32], key_id: &str) {
        let first = first_epoch(m);
        let mut s = first.clone();
        let mut leaves = Vec::with_capacity(self.period_epochs as usize);
        for _ in 0..self.period_epochs {
            leaves.push(leaf_hash(epoch_key(&s).verifying_key().as_bytes()));
            s = next_epoch(&s);
        }
        let root = merkle_root(&leaves);
        let pk = period_key(m);
        self.period_cert = super::hex(&pk.sign(&cert_message(key_id, p, &root)).to_bytes());
        self.period_key = super::hex(pk.verifying_key().as_bytes());
        self.period_leaves = leaves.iter().map(|l| super::hex(l)).collect();
        self.next_period_seed.zeroize();
        self.next_period_seed = super::hex(&*next_period(m));
        self.epoch_seed.zeroize();
        self.epoch_seed = super::hex(&*first);
        self.epoch = p * self.period_epochs;
    }

    /// Move forward to `target` (never back), erasing older seeds.
    fn advance(&mut self, target: u64) {
        if target <= self.epoch {
            return;
        }
        let key_id = self.public().key_id();
        let (p, q) = (self.epoch / self.period_epochs, target / self.period_epochs);
        if q > p {
            let (mut m, _) = self.seeds();
            for _ in p + 1..q {
                m = next_period(&m);
            }
            self.enter_period(q, &m, &key_id);
        }
        let (_, mut s) = self.seeds();
        for _ in self.epoch..target {
            s = next_epoch(&s);
        }
        self.epoch_seed.zeroize();
        self.epoch_seed = super::hex(&*s);
        self.epoch = target;
    }

    /// Sign `msg(epoch)` with the current epoch's key.
    fn seal(&self, msg: &dyn Fn(u64) -> Vec<u8>) -> (String, Seal) {
        let (_, s) = self.seeds();
        let key = epoch_key(&s);
        let e = self.epoch;
        let (p, i) = (e / self.period_epochs, e % self.period_epochs);
        let list = |text: &str, n: u64, at: u64| {
            let leaves = hex_list(text, n).unwrap_or_default();
            merkle_proof(&leaves, at as usize)
                .iter()
                .map(|x| super::hex(x))
                .collect()
        };
        let sig = super::hex(&key.sign(&msg(e)).to_bytes());
        let seal = Seal {
            epoch: e,
            epoch_key: super::hex(key.verifying_key().as_bytes()),
            epoch_proof: list(&self.period_leaves, self.period_epochs, i),
            period_key: self.period_key.clone(),
            period_cert: self.period_cert.clone(),
            period_proof: list(&self.period_keys, self.periods, p),
        };
        (sig, seal)
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            (self.periods + self.period_epochs) as usize * 64 + 4096,
        ));
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
        out
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.into(),
        source,
    }
}

fn bad(path: &Path, why: impl std::fmt::Display) -> KeyError {
    KeyError::Sealing {
        path: path.into(),
        reason: why.to_string(),
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Create a sealing key: `secret` (0600, refused if it exists) and
/// `secret.pub` (the public root, for auditors).
pub fn generate(
    secret: &Path,
    epoch_secs: u64,
    periods: u64,
    period_epochs: u64,
) -> Result<(PathBuf, SealPublic), KeyError> {
    let start = now_secs();
    check_params(start, epoch_secs, periods, period_epochs).map_err(|e| bad(secret, e))?;
    let mut m0 = Zeroizing::new([0u8; 32]);
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut *m0))
        .map_err(io_err(Path::new("/dev/urandom")))?;
    let mut keys = Vec::with_capacity(periods as usize);
    let mut m = m0.clone();
    for _ in 0..periods {
        keys.push(leaf_hash(period_key(&m).verifying_key().as_bytes()));
        m = next_period(&m);
    }
    drop(m);
    let mut state = State {
        format: FORMAT.into(),
        start,
        epoch_secs,
        periods,
        period_epochs,
        root: super::hex(&merkle_root(&keys)),
        epoch: 0,
        next_period_seed: String::new(),
        epoch_seed: String::new(),
        period_key: String::new(),
        period_cert: String::new(),
        period_leaves: String::new(),
        period_keys: keys.iter().map(|l| super::hex(l)).collect(),
    };
    let public = state.public();
    state.enter_period(0, &m0, &public.key_id());
    drop(m0);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(secret)
        .map_err(io_err(secret))?;
    f.write_all(&state.encode())
        .and_then(|_| f.sync_all())
        .and_then(|_| sync_dir(secret))
        .map_err(io_err(secret))?;
    let mut pub_path = secret.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    let text = serde_json::to_string(&public).map_err(|e| bad(&pub_path, e))? + "\n";
    fs::write(&pub_path, text).map_err(io_err(&pub_path))?;
    Ok((pub_path, public))
}

/// The key file, open and exclusively locked (the path still names it).
fn lock(path: &Path) -> Result<nix::fcntl::Flock<File>, KeyError> {
    for _ in 0..1000 {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err(path))?;
        let f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(path)(e.into()))?;
        let held = f.metadata().map_err(io_err(path))?;
        // Another process may have replaced the file while we waited.
        if let Ok(now) = fs::metadata(path) {
            if now.dev() == held.dev() && now.ino() == held.ino() {
                return Ok(f);
            }
        }
    }
    Err(bad(path, "the key file keeps being replaced"))
}

fn read_locked(path: &Path, f: &mut File) -> Result<State, KeyError> {
    let len = f.metadata().map_err(io_err(path))?.len();
    if len > 64 << 20 {
        return Err(bad(path, "key file too large"));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(len as usize + 1));
    f.read_to_end(&mut bytes).map_err(io_err(path))?;
    State::parse(&bytes).map_err(|e| bad(path, e))
}

/// Replace the key file atomically: temporary file, fsync, rename, fsync
/// of the directory. The old content is gone once the rename is durable.
fn write_atomic(path: &Path, state: &State) -> Result<(), KeyError> {
    let name = path
        .file_name()
        .ok_or_else(|| bad(path, "not a file name"))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let r = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&state.encode())?;
            f.sync_all()
        })
        .and_then(|_| fs::rename(&tmp, path))
        .and_then(|_| sync_dir(path));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map_err(io_err(path))
}

/// A sealing key in use: its path and public part. The seeds are read
/// from the file (under its lock) at each signature and erased after.
#[derive(Debug, Clone)]
pub struct Sealer {
    path: PathBuf,
    public: SealPublic,
    key_id: String,
}

impl Sealer {
    /// Open a key file: refused when malformed or past its last epoch.
    pub fn open(path: &Path) -> Result<Sealer, KeyError> {
        let mut f = lock(path)?;
        let state = read_locked(path, &mut f)?;
        let public = state.public();
        let s = Sealer {
            path: path.into(),
            key_id: public.key_id(),
            public,
        };
        s.check_lifetime(s.epoch_now().max(state.epoch))?;
        Ok(s)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public(&self) -> &SealPublic {
        &self.public
    }

    /// The epoch of the clock now.
    pub fn epoch_now(&self) -> u64 {
        self.public.epoch_at(now_secs())
    }

    /// Time left until the current epoch ends.
    pub fn until_epoch_end(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let end = Duration::from_secs(self.public.epoch_start(self.epoch_now() + 1));
        end.saturating_sub(now)
    }

    fn check_lifetime(&self, epoch: u64) -> Result<(), KeyError> {
        if epoch >= self.public.epochs() {
            return Err(bad(
                &self.path,
                "the sealing key is past its last epoch; make a new one with `buildcell audit keygen`",
            ));
        }
        Ok(())
    }

    /// Sign `msg(epoch)` with the key of the current epoch (the clock's, or
    /// the file's if that is later), evolving the file first if needed.
    pub fn seal(&self, msg: &dyn Fn(u64) -> Vec<u8>) -> Result<(String, Seal), KeyError> {
        self.seal_at(self.epoch_now(), msg)
    }

    fn seal_at(&self, now: u64, msg: &dyn Fn(u64) -> Vec<u8>) -> Result<(String, Seal), KeyError> {
        let mut f = lock(&self.path)?;
        let mut state = read_locked(&self.path, &mut f)?;
        if state.public() != self.public {
            return Err(bad(&self.path, "the key file was replaced by another key"));
        }
        if now > state.epoch {
            self.check_lifetime(now)?;
            state.advance(now);
            write_atomic(&self.path, &state)?;
        }
        Ok(state.seal(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u8) -> Vec<[u8; 32]> {
        (0..n).map(|i| leaf_hash(&[i; 32])).collect()
    }

    #[test]
    fn merkle_proofs_lead_to_the_root_only_from_their_leaf() {
        for n in [1u8, 2, 4, 8, 16] {
            let l = leaves(n);
            let root = merkle_root(&l);
            for i in 0..n as usize {
                let proof = merkle_proof(&l, i);
                assert_eq!(proof.len(), n.trailing_zeros() as usize);
                assert_eq!(merkle_climb(&l[i], i as u64, &proof), root);
                if n > 1 {
                    let other = (i + 1) % n as usize;
                    assert_ne!(merkle_climb(&l[other], i as u64, &proof), root);
                    assert_ne!(merkle_climb(&l[i], other as u64, &proof), root);
                }
            }
        }
    }

    #[test]
    fn chains_are_one_way_and_domain_separated() {
        let m = [7u8; 32];
        let s = first_epoch(&m);
        assert_ne!(*s, *next_period(&m));
        assert_ne!(*next_epoch(&s), *s);
        assert_ne!(
            epoch_key(&s).verifying_key(),
            period_key(&m).verifying_key()
        );
        // Jumping ahead equals stepping.
        let mut a = s.clone();
        for _ in 0..3 {
            a = next_epoch(&a);
        }
        assert_eq!(*a, *next_epoch(&next_epoch(&next_epoch(&s))));
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bc-fss-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn msg(e: u64) -> Vec<u8> {
        checkpoint_message("c", 1, "p", e)
    }

    #[test]
    fn every_epoch_verifies_across_periods_and_the_file_forgets() {
        let d = tmpdir("periods");
        let key = d.join("k");
        let (pub_path, public) = generate(&key, 3600, 4, 4).unwrap();
        let parsed = SealPublic::parse(&fs::read_to_string(pub_path).unwrap()).unwrap();
        assert_eq!(parsed, public);
        let sealer = Sealer::open(&key).unwrap();
        let first = fs::read_to_string(&key).unwrap();
        let seeds0 = State::parse(first.as_bytes()).unwrap();
        let mut known = None;
        for e in [0u64, 1, 3, 4, 9, 15] {
            let (sig, seal) = sealer.seal_at(e, &msg).unwrap();
            assert_eq!(seal.epoch, e);
            public.check(&seal, &sig, &msg(e), &mut known).unwrap();
            // A fresh verifier (no cache) agrees.
            public.check(&seal, &sig, &msg(e), &mut None).unwrap();
            // Another message, or another epoch's claim, fails.
            assert!(public.check(&seal, &sig, &msg(e + 1), &mut None).is_err());
            let mut moved = seal.clone();
            moved.epoch = e ^ 1;
            assert!(public.check(&moved, &sig, &msg(e ^ 1), &mut None).is_err());
        }
        // Never back: asking for an older epoch signs with the file's.
        let (_, seal) = sealer.seal_at(2, &msg).unwrap();
        assert_eq!(seal.epoch, 15);
        let text = fs::read_to_string(&key).unwrap();
        assert!(!text.contains(&seeds0.epoch_seed));
        assert!(!text.contains(&seeds0.next_period_seed));
        // The stolen file's seed gives keys for its own epoch only: an
        // epoch-0 claim with a key derived from it is rejected.
        let stolen = State::parse(text.as_bytes()).unwrap();
        let (_, s) = stolen.seeds();
        let k = epoch_key(&s);
        let (_, mut seal) = sealer.seal_at(15, &msg).unwrap();
        let sig0 = super::super::hex(&k.sign(&msg(0)).to_bytes());
        seal.epoch = 0;
        let err = public.check(&seal, &sig0, &msg(0), &mut None).unwrap_err();
        assert!(err.contains("forged seal"), "{err}");
        // Past the last epoch: refused.
        assert!(sealer.seal_at(16, &msg).is_err());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn hostile_seals_never_panic() {
        let d = tmpdir("hostile");
        let key = d.join("k");
        let (_, public) = generate(&key, 60, 4, 4).unwrap();
        let (sig, seal) = Sealer::open(&key).unwrap().seal_at(0, &msg).unwrap();
        let cases: [fn(&mut Seal); 7] = [
            |s| s.epoch = u64::MAX,
            |s| s.epoch_key = "zz".into(),
            |s| s.epoch_proof.push("00".repeat(32)),
            |s| s.epoch_proof = vec!["ab".into(); 2],
            |s| s.period_proof.clear(),
            |s| s.period_cert = "00".repeat(1000),
            |s| s.period_key = "00".repeat(32),
        ];
        for f in cases {
            let mut s = seal.clone();
            f(&mut s);
            assert!(public.check(&s, &sig, &msg(s.epoch), &mut None).is_err());
        }
        assert!(public.check(&seal, "xyz", &msg(0), &mut None).is_err());
        assert!(SealPublic::parse(r#"{"format":"buildcell-fss-v1","start":1,"epoch_secs":1,"periods":3,"period_epochs":4,"root":""}"#).is_err());
        assert!(SealPublic::parse(r#"{"format":"buildcell-fss-v1","start":18446744073709551615,"epoch_secs":1,"periods":4,"period_epochs":4,"root":""}"#).is_err());
        let _ = fs::remove_dir_all(&d);
    }
}
