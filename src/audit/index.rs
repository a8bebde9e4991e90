//! The index: an append-only file beside the logs (`index`) that chains
//! every log's first and last record hash, so that deleting or truncating
//! a whole log is detected too. Each line is a JSON object with `seq`,
//! `time`, `event` (`start` or `end`), `log` (file name), `container_id`,
//! `hash` (SHA-256 of the log's first line for `start`, of its last line
//! for `end`), `records` (for `end`) and `prev` (SHA-256 of the previous
//! index line). Writers take an exclusive `flock` to append.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::GENESIS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub time: String,
    pub event: String,
    pub log: String,
    pub container_id: String,
    pub hash: String,
    pub records: Option<u64>,
    pub prev: String,
}

/// The index of the logs in `dir`.
pub fn path_for(log: &Path) -> PathBuf {
    log.parent().unwrap_or(Path::new(".")).join("index")
}

/// Append an entry under an exclusive lock, chained to the last line.
pub fn append(
    index: &Path,
    event: &str,
    log: &Path,
    container_id: &str,
    hash: &str,
    records: Option<u64>,
) -> std::io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(index)?;
    let mut f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    // Only the last line is needed: read the file's tail, not all of it
    // (the index grows with every step of the host).
    let last = last_line(&f)?;
    let seq = match &last {
        Some(l) => serde_json::from_str::<Entry>(l)
            .map(|e| e.seq + 1)
            .map_err(|e| {
                std::io::Error::other(format!(
                    "{}: last entry unreadable ({e}); run audit verify --index",
                    index.display()
                ))
            })?,
        None => 0,
    };
    let entry = Entry {
        seq,
        time: super::record::now(),
        event: event.into(),
        log: log
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        container_id: container_id.into(),
        hash: hash.into(),
        records,
        prev: last
            .map(|l| super::sha256_hex(l.as_bytes()))
            .unwrap_or_else(|| GENESIS.into()),
    };
    let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    // The end entry is synced; a start entry reaches the disk with it (or
    // with the log's own checkpoints), sparing one fdatasync per step.
    if event == "end" {
        f.sync_data()?;
    }
    Ok(())
}

/// The last line of the file (an entry is far below 16 KiB): found in its
/// last KiB, else in its last 16 KiB (a tail without a line end is taken
/// whole). Reading and converting 16 KiB at every start and end of a step
/// cost ~30 us of the runtime's CPU.
fn last_line(f: &fs::File) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let mut line = None;
    for window in [1024, 16 * 1024] {
        let start = len.saturating_sub(window);
        let mut buf = vec![0u8; (len - start) as usize];
        f.read_exact_at(&mut buf, start)?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(Some(text(&body[i + 1..]))),
            None if start == 0 => return Ok((!buf.is_empty()).then(|| text(body))),
            None => line = Some(text(body)),
        }
    }
    Ok(line)
}

/// Check the index chain and every log it names in its directory: a log
/// that is listed but missing, or whose first or last line no longer
/// matches, is a fault. Returns the number of logs checked.
pub fn verify(index: &Path) -> Result<usize, String> {
    let text = fs::read_to_string(index).map_err(|e| format!("{}: {e}", index.display()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    verify_text(index, &text, &|name| {
        fs::read_to_string(dir.join(name)).ok()
    })
}

/// [`verify`] of an index's text (read from `index`); `read_log` gives the
/// text of a log named in it (a file name in the index's directory), `None`
/// when it is missing. Pure but for `read_log`, so that hostile indexes
/// can be fuzzed (`fuzz/fuzz_targets/audit_verify.rs`).
pub fn verify_text(
    index: &Path,
    text: &str,
    read_log: &dyn Fn(&str) -> Option<String>,
) -> Result<usize, String> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut prev = GENESIS.to_string();
    let mut logs = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = |why: String| format!("{} line {}: {why}", index.display(), i + 1);
        let e: Entry =
            serde_json::from_str(line).map_err(|e| at(format!("not an index entry ({e})")))?;
        if e.seq != i as u64 || e.prev != prev {
            return Err(at(
                "the index chain is broken: an entry was edited, removed or reordered".into(),
            ));
        }
        prev = super::sha256_hex(line.as_bytes());
        if e.log.contains('/') || e.log.is_empty() {
            return Err(at(format!("bad log name {:?}", e.log)));
        }
        logs.entry(e.log.clone()).or_insert_with(Vec::new).push(e);
    }
    for (name, entries) in &logs {
        let path = dir.join(name);
        let data = read_log(name).ok_or_else(|| {
            format!(
                "{}: listed in the index but missing: the log was deleted",
                path.display()
            )
        })?;
        let mut lines = data.lines();
        let first = lines.next().map(|l| super::sha256_hex(l.as_bytes()));
        let last = data.lines().last().map(|l| super::sha256_hex(l.as_bytes()));
        for e in entries {
            let ok = match e.event.as_str() {
                "start" => first.as_deref() == Some(e.hash.as_str()),
                "end" => {
                    last.as_deref() == Some(e.hash.as_str())
                        && e.records == Some(data.lines().count() as u64)
                }
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "{}: does not match its index entry seq {} ({}): the log was replaced, truncated or extended",
                    path.display(),
                    e.seq,
                    e.event
                ));
            }
        }
    }
    Ok(logs.len())
}

#[cfg(test)]
mod tests {
    use super::last_line;
    use std::io::Write;

    fn last_of(content: &[u8]) -> Option<String> {
        let mut f = tempfile_in_tmp();
        f.write_all(content).unwrap();
        last_line(&f).unwrap()
    }

    /// An unnamed file in /tmp (O_TMPFILE): nothing to remove afterwards.
    fn tempfile_in_tmp() -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open("/tmp")
            .unwrap()
    }

    #[test]
    fn last_line_as_lines_last_gives_it() {
        let long = "y".repeat(3000);
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"a\n".to_vec(),
            b"a\nb".to_vec(),
            b"a\nb\n".to_vec(),
            b"a\n\n".to_vec(),
            b"\n".to_vec(),
            format!("{}\n{long}\n", "x".repeat(20_000)).into_bytes(),
            format!("a\n{long}").into_bytes(),
            "z".repeat(20_000).into_bytes(),
        ];
        for c in cases {
            // What the whole file's text says (the window of 16 KiB aside).
            let text =
                String::from_utf8_lossy(&c[c.len().saturating_sub(16 * 1024)..]).into_owned();
            let want = text.lines().last().map(str::to_string);
            assert_eq!(last_of(&c), want, "content of {} bytes", c.len());
        }
    }
}
