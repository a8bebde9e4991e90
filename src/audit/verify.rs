//! `buildcell audit verify`: check a log offline. Every line must parse,
//! follow its predecessor (`seq` + 1, `prev` = SHA-256 of the previous
//! line), every checkpoint signature must verify with the auditor's public
//! key, and a complete log ends with `end` and a checkpoint after it. The
//! first fault is reported with its line and why. Never panics on a
//! hostile file: every field is checked, nothing is indexed blindly.
//!
//! With a sealing key (see [`super::fss`]) each checkpoint's epoch key must
//! lead to the key's public root, epochs never go back within a log, and no
//! record may be sealed by an epoch that began more than
//! [`super::fss::SEAL_GRACE_SECS`] after the end of the record's own epoch:
//! a thief of the current key can only seal with the current or later
//! epochs, so re-sealing an edited earlier record shows.

use ed25519_dalek::{Signature, Verifier};

use super::keys::PublicKey;

use super::record::{Body, Record, GENESIS};

/// What a good log looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub last_checkpoint: Option<u64>,
    pub signatures_checked: bool,
    pub complete: bool,
    /// First and last epoch of the sealed checkpoints.
    pub epochs: Option<(u64, u64)>,
}

/// The first fault found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct Fault {
    pub line: usize,
    pub reason: String,
}

fn fault(line: usize, reason: impl Into<String>) -> Fault {
    Fault {
        line,
        reason: reason.into(),
    }
}

/// Verify a log's bytes; `key` checks the checkpoint signatures.
pub fn verify(data: &[u8], key: Option<&PublicKey>) -> Result<Verified, Fault> {
    if data.is_empty() {
        return Err(fault(
            1,
            "empty log: not even a start record (deleted content or a log that never started)",
        ));
    }
    let key_id = key.map(PublicKey::key_id);
    let mut epochs: Option<(u64, u64)> = None;
    let mut known_epoch_key = None;
    // The oldest record (line, seq, Unix time) since the last checkpoint.
    let mut oldest_unsealed: Option<(usize, u64, u64)> = None;
    let mut prev = GENESIS.to_string();
    let mut container = String::new();
    let mut last_checkpoint = None;
    let mut last_body: Option<Body> = None;
    let mut count = 0u64;
    let mut start_key: Option<String> = None;
    let mut end_seq: Option<u64> = None;
    let ends_with_newline = data.last() == Some(&b'\n');
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let n_lines = if ends_with_newline {
        lines.len() - 1
    } else {
        lines.len()
    };
    for (i, raw) in lines.iter().take(n_lines).enumerate() {
        let line_no = i + 1;
        if !ends_with_newline && i + 1 == n_lines {
            return Err(fault(
                line_no,
                format!(
                    "truncated: the last line is incomplete; the log is cut off after seq {}",
                    count.saturating_sub(1)
                ),
            ));
        }
        let rec: Record = serde_json::from_slice(raw).map_err(|e| {
            fault(
                line_no,
                format!("not a valid record ({e}): edited or corrupted"),
            )
        })?;
        if rec.seq != count {
            return Err(fault(line_no, format!("seq {} where {count} was expected: a record was removed, inserted or reordered", rec.seq)));
        }
        if rec.prev != prev {
            return Err(fault(line_no, format!("seq {}: prev does not match the hash of the line before: the previous record was edited, or records were removed or reordered", rec.seq)));
        }
        match &rec.body {
            Body::Start(s) => {
                if count != 0 {
                    return Err(fault(
                        line_no,
                        format!("seq {}: a second start record", rec.seq),
                    ));
                }
                container = s.container_id.clone();
                start_key = s.key_id.clone();
            }
            _ if count == 0 => {
                return Err(fault(line_no, "the first record is not a start record"))
            }
            Body::Checkpoint(c) => {
                if let Some(seal) = &c.seal {
                    if let Some((_, last)) = epochs {
                        if seal.epoch < last {
                            return Err(fault(line_no, format!("seq {}: sealed in epoch {} after a checkpoint of epoch {last}: epochs went backwards (forged or spliced)", rec.seq, seal.epoch)));
                        }
                    }
                    epochs = Some((epochs.map_or(seal.epoch, |(a, _)| a), seal.epoch));
                }
                if let (Some(PublicKey::Sealed(public)), Some(kid)) = (key, &key_id) {
                    if &c.key_id != kid {
                        return Err(fault(line_no, format!("seq {}: checkpoint signed with key {}, not with the given key {kid}", rec.seq, c.key_id)));
                    }
                    let seal = c.seal.as_ref().ok_or_else(|| {
                        fault(line_no, format!("seq {}: checkpoint not sealed (no epoch), but the key is a sealing key", rec.seq))
                    })?;
                    let msg =
                        super::fss::checkpoint_message(&container, rec.seq, &rec.prev, seal.epoch);
                    public
                        .check(seal, &c.sig, &msg, &mut known_epoch_key)
                        .map_err(|why| fault(line_no, format!("seq {}: {why}", rec.seq)))?;
                    if let Some((l, s, t)) = oldest_unsealed {
                        let began = public.epoch_start(seal.epoch);
                        if began > public.seal_deadline(t) {
                            return Err(fault(l, format!(
                                "seq {s}: dated {} but first sealed by the checkpoint at seq {} in epoch {}, which began at {}: sealed too late, re-sealed after the fact with a later key (or the host was suspended or its clock jumped)",
                                super::record::format_time(t, 0), rec.seq, seal.epoch, super::record::format_time(began, 0)
                            )));
                        }
                    }
                } else if let (Some(PublicKey::Plain(key)), Some(kid)) = (key, &key_id) {
                    if &c.key_id != kid {
                        return Err(fault(line_no, format!("seq {}: checkpoint signed with key {}, not with the given key {kid}", rec.seq, c.key_id)));
                    }
                    let sig = super::unhex(&c.sig)
                        .and_then(|b| <[u8; 64]>::try_from(b).ok())
                        .map(|b| Signature::from_bytes(&b))
                        .ok_or_else(|| {
                            fault(
                                line_no,
                                format!("seq {}: the signature is not 64 bytes of hex", rec.seq),
                            )
                        })?;
                    let msg = super::checkpoint_message(&container, rec.seq, &rec.prev);
                    key.verify(&msg, &sig).map_err(|_| {
                        fault(line_no, format!("seq {}: signature wrong: the checkpoint or a record before it was forged or edited", rec.seq))
                    })?;
                }
                last_checkpoint = Some(rec.seq);
                oldest_unsealed = None;
            }
            Body::End(_) => end_seq = Some(rec.seq),
            Body::Exec(_) => {}
        }
        if matches!(last_body, Some(Body::End(_))) && !matches!(rec.body, Body::Checkpoint(_)) {
            return Err(fault(
                line_no,
                format!("seq {}: a record after the end record", rec.seq),
            ));
        }
        if let (Some(PublicKey::Sealed(_)), false) = (key, matches!(rec.body, Body::Checkpoint(_)))
        {
            let t = super::record::parse_time(&rec.time).ok_or_else(|| {
                fault(
                    line_no,
                    format!(
                        "seq {}: time {:?} is not an RFC 3339 UTC time",
                        rec.seq, rec.time
                    ),
                )
            })?;
            if oldest_unsealed.is_none_or(|(_, _, o)| t < o) {
                oldest_unsealed = Some((line_no, rec.seq, t));
            }
        }
        prev = super::sha256_hex(raw);
        last_body = Some(rec.body);
        count += 1;
    }
    // Complete: the last record is the end record, or (in a signed log)
    // the checkpoint written right after it.
    let signed = start_key.is_some();
    let complete = match &last_body {
        Some(Body::End(_)) => !signed,
        Some(Body::Checkpoint(_)) => end_seq.is_some_and(|e| e + 2 == count),
        _ => false,
    };
    Ok(Verified {
        records: count,
        last_checkpoint,
        signatures_checked: key.is_some(),
        complete,
        epochs,
    })
}

/// The one-line verdict `audit verify` prints for a good log.
pub fn summary(v: &Verified) -> String {
    let cp = match v.last_checkpoint {
        Some(s) => match v.epochs {
            Some((a, b)) => {
                format!("last signed checkpoint at seq {s}, sealed in epochs {a} to {b}")
            }
            None => format!("last signed checkpoint at seq {s}"),
        },
        None => "no signed checkpoint".into(),
    };
    let sigs = if v.signatures_checked {
        ""
    } else {
        " (signatures not checked: give --key)"
    };
    let end = if v.complete {
        "complete".to_string()
    } else {
        format!(
            "cut off after seq {} (no end record: the step was interrupted or the log truncated)",
            v.records.saturating_sub(1)
        )
    };
    format!("{} records, {cp}, {end}{sigs}", v.records)
}
