//! `buildcell audit verify`: check a log offline. Every line must parse,
//! follow its predecessor (`seq` + 1, `prev` = SHA-256 of the previous
//! line), every checkpoint signature must verify with the auditor's public
//! key, and a complete log ends with `end` and a checkpoint after it. The
//! first fault is reported with its line and why. Never panics on a
//! hostile file: every field is checked, nothing is indexed blindly.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use super::record::{Body, Record, GENESIS};

/// What a good log looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub last_checkpoint: Option<u64>,
    pub signatures_checked: bool,
    pub complete: bool,
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
pub fn verify(data: &[u8], key: Option<&VerifyingKey>) -> Result<Verified, Fault> {
    if data.is_empty() {
        return Err(fault(
            1,
            "empty log: not even a start record (deleted content or a log that never started)",
        ));
    }
    let key_id = key.map(super::keys::key_id);
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
                if let (Some(key), Some(kid)) = (key, &key_id) {
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
    })
}

/// The one-line verdict `audit verify` prints for a good log.
pub fn summary(v: &Verified) -> String {
    let cp = match v.last_checkpoint {
        Some(s) => format!("last signed checkpoint at seq {s}"),
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
