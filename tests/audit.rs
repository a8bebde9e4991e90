//! `buildcell audit keygen|verify|show` on logs written by buildcell's own
//! writer, then tampered with the ways an attacker would: every tamper case
//! must make `verify` exit 1 and name the first record at fault. The
//! forward-secure sealing test runs real steps through the shared harness.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildcell::audit::keys;
use buildcell::audit::log::{AuditLog, CheckpointPolicy};
use buildcell::audit::record::{Body, Exec, Record, Start, GENESIS};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_buildcell"))
}

/// A test's own directory (its logs and its private key), removed when
/// the test ends, pass or fail.
struct TestDir(PathBuf);

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> TestDir {
    let d = std::env::temp_dir().join(format!("buildcell-audit-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    TestDir(d)
}

fn buildcell(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A key pair through the real `audit keygen`.
fn keygen(d: &Path) -> (PathBuf, PathBuf) {
    let key = d.join("audit.key");
    let (code, out, err) = buildcell(&["audit", "keygen", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let meta = fs::metadata(&key).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    (key.clone(), d.join("audit.key.pub"))
}

/// A complete signed log of `n` exec records, checkpoints every 4 records.
fn write_log(path: &Path, key: &Path, n: usize) {
    let start = Start {
        buildcell_version: "test".into(),
        container_id: "ctr-1".into(),
        host: "h".into(),
        ..Default::default()
    };
    let policy = CheckpointPolicy {
        every_records: 4,
        every: std::time::Duration::from_secs(3600),
    };
    let mut log = AuditLog::create(
        path,
        start,
        Some(keys::load_signing(key).unwrap()),
        policy,
        1 << 20,
    )
    .unwrap();
    for i in 0..n {
        log.append(Body::Exec(Exec {
            pid: 100 + i as i32,
            cwd: Some("/src".into()),
            argv: vec!["make".into(), format!("target{i}")],
            result: "ok".into(),
            ..Default::default()
        }))
        .unwrap();
    }
    log.finish(Some(0)).unwrap();
}

fn verify(log: &Path, key: &Path) -> (i32, String) {
    let (code, out, err) = buildcell(&[
        "audit",
        "verify",
        "--key",
        key.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    (code, out)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn intact_log_verifies() {
    let d = dir("intact");
    let (key, public) = keygen(&d);
    let log = d.join("ctr-1.log");
    write_log(&log, &key, 10);
    let (code, out) = verify(&log, &public);
    assert_eq!(code, 0, "{out}");
    // 1 start + 10 exec + checkpoints + end + final checkpoint
    assert!(
        out.starts_with(&format!("OK: {}: ", log.display())),
        "{out}"
    );
    assert!(out.contains("complete"), "{out}");
    assert!(out.contains("last signed checkpoint at seq"), "{out}");
}

#[test]
fn every_tamper_is_detected() {
    let d = dir("tamper");
    let (key, public) = keygen(&d);
    let log = d.join("orig.log");
    write_log(&log, &key, 10);
    let orig = lines(&log);
    let case = |name: &str, content: &[u8]| {
        let p = d.join(format!("{name}.log"));
        fs::write(&p, content).unwrap();
        let (code, out) = verify(&p, &public);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.starts_with("FAIL: "), "{name}: {out}");
        out
    };
    // Edit one byte of an exec record's argv.
    let mut edited = orig.clone();
    edited[3] = edited[3].replacen("target2", "targex2", 1);
    let out = case("edit-byte", (edited.join("\n") + "\n").as_bytes());
    assert!(out.contains("line 4") || out.contains("line 5"), "{out}");
    // Drop a line.
    let mut dropped = orig.clone();
    dropped.remove(4);
    let out = case("drop", (dropped.join("\n") + "\n").as_bytes());
    assert!(out.contains("line 5: seq 5 where 4 was expected"), "{out}");
    // Swap two lines.
    let mut swapped = orig.clone();
    swapped.swap(2, 3);
    let out = case("swap", (swapped.join("\n") + "\n").as_bytes());
    assert!(out.contains("line 3"), "{out}");
    // Truncate in the middle of a line.
    let all = fs::read(&log).unwrap();
    let out = case("truncate-mid", &all[..all.len() - 20]);
    assert!(out.contains("truncated"), "{out}");
    // Truncate at a line boundary: the end is missing.
    let out = case("truncate-lines", (orig[..6].join("\n") + "\n").as_bytes());
    assert!(out.contains("cut off after seq 5"), "{out}");
    // An empty (wiped) log.
    let out = case("empty", b"");
    assert!(out.contains("empty log"), "{out}");
    // Replace the key: re-sign with another key, verify with the auditor's.
    let other = d.join("other");
    fs::create_dir_all(&other).unwrap();
    let (other_key, _) = keygen(&other);
    let forged = d.join("forged.log");
    write_log(&forged, &other_key, 10);
    let (code, out) = verify(&forged, &public);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not with the given key"), "{out}");
    // A garbage file never crashes the verifier.
    let out = case("garbage", b"\x00\xff{\"seq\":\n\n[]\n");
    assert!(out.contains("line 1"), "{out}");
    // Appending a fake record after the end.
    let mut appended = orig.clone();
    let last = appended.last().unwrap().clone();
    appended.push(last);
    write_lines(&d.join("x.log"), &appended);
    let (code, _) = verify(&d.join("x.log"), &public);
    assert_eq!(code, 1);
}

#[test]
fn show_prints_the_commands() {
    let d = dir("show");
    let (key, _) = keygen(&d);
    let log = d.join("ctr.log");
    write_log(&log, &key, 3);
    let (code, out, err) = buildcell(&["audit", "show", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.lines().nth(2).unwrap().ends_with("make target1"),
        "{out}"
    );
    let (_, out, _) = buildcell(&[
        "audit",
        "show",
        "--json",
        "--pid",
        "102",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("\"target2\""), "{out}");
    let (_, out, _) = buildcell(&[
        "audit",
        "show",
        "--command",
        "target0",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn keygen_refuses_to_overwrite() {
    let d = dir("keygen");
    keygen(&d);
    let (code, _, err) = buildcell(&["audit", "keygen", d.join("audit.key").to_str().unwrap()]);
    assert_eq!(code, 125);
    assert!(err.contains("File exists"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn a_failed_write_fails_the_log_closed() {
    // Once a record cannot be written the log must refuse every later
    // record instead of carrying on without it.
    let d = dir("full");
    let (key, _) = keygen(&d);
    let start = Start {
        container_id: "c".into(),
        ..Default::default()
    };
    // A log at its size limit refuses the record that would cross it, and
    // every record after.
    let path = d.join("small.log");
    let mut log = AuditLog::create(
        &path,
        start,
        Some(keys::load_signing(&key).unwrap()),
        CheckpointPolicy::default(),
        600,
    )
    .unwrap();
    let exec = || {
        Body::Exec(Exec {
            pid: 1,
            argv: vec!["x".repeat(100)],
            result: "ok".into(),
            ..Default::default()
        })
    };
    let mut refused = None;
    for i in 0..10 {
        if let Err(e) = log.append(exec()) {
            refused = Some((i, e.to_string()));
            break;
        }
    }
    let (i, msg) = refused.expect("the size limit must refuse a record");
    assert!(msg.contains("size limit of 600 bytes"), "{msg}");
    let e = log.append(exec()).unwrap_err().to_string();
    assert!(e.contains("no further record can be written"), "{e}");
    // What was written is whole and verifies up to the cut.
    let data = fs::read(&path).unwrap();
    let v = buildcell::audit::verify::verify(&data, None).unwrap();
    assert_eq!(v.records, 1 + i as u64);
    assert!(!v.complete);
}

#[test]
fn index_detects_a_deleted_or_truncated_log() {
    let d = dir("index");
    let (key, public) = keygen(&d);
    let logs = d.join("logs");
    fs::create_dir_all(&logs).unwrap();
    for name in ["a", "b", "c"] {
        write_log(&logs.join(format!("{name}.log")), &key, 3);
    }
    let index = logs.join("index");
    let check = || {
        let out = Command::new(bin())
            .args([
                "audit",
                "verify",
                "--key",
                public.to_str().unwrap(),
                "--index",
                index.to_str().unwrap(),
            ])
            .arg(logs.join("a.log"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("index intact, 3 logs present and matching"),
        "{out}"
    );
    // Truncate a whole log at a record boundary: its own chain is fine but
    // the index knows its last line.
    let b = logs.join("b.log");
    let lines: Vec<String> = fs::read_to_string(&b)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    fs::write(&b, lines[..3].join("\n") + "\n").unwrap();
    let (code, out) = check();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("b.log: does not match its index entry"),
        "{out}"
    );
    // Delete a whole log.
    fs::remove_file(&b).unwrap();
    let (code, out) = check();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("b.log: listed in the index but missing: the log was deleted"),
        "{out}"
    );
    // Remove the index line that names it: the index chain breaks.
    let text = fs::read_to_string(&index).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains("\"b.log\"")).collect();
    fs::write(&index, kept.join("\n") + "\n").unwrap();
    let (code, out) = check();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the index chain is broken"), "{out}");
}

fn seal_epochs(log: &Path) -> Vec<u64> {
    lines(log)
        .iter()
        .filter_map(|l| match serde_json::from_str::<Record>(l).unwrap().body {
            Body::Checkpoint(c) => Some(c.seal.expect("a sealed checkpoint").epoch),
            _ => None,
        })
        .collect()
}

/// Forward-secure sealing, end to end: a key with 1 s epochs, a step whose
/// checkpoints fall in several epochs verifies; the key file afterwards no
/// longer holds the seeds it started with; and a thief who copies the key
/// file later cannot re-seal an edited earlier record.
#[test]
fn sealed_step_spans_epochs_and_a_stolen_key_cannot_reseal_the_past() {
    use common::{chown_to, each_mode, harness, run};
    let cases = std::sync::Mutex::new(Vec::new());
    each_mode(|m| {
        let d = harness().dir.join(format!("fss-{m:?}"));
        let _ = fs::remove_dir_all(&d);
        let work = d.join("work");
        fs::create_dir_all(&work).unwrap();
        chown_to(m, &d);
        chown_to(m, &work);
        let key = d.join("audit.key");
        let r = run(
            m,
            &d,
            &["audit", "keygen", "--epoch", "1s", key.to_str().unwrap()],
        );
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains("epochs of 1 s"), "{r:?}");
        let before = fs::read_to_string(&key).unwrap();
        let log = d.join("step.log");
        let r = run(
            m,
            &work,
            &[
                "step",
                "--audit-log",
                log.to_str().unwrap(),
                "--audit-key",
                key.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                "/bin/true; sleep 1.2; /bin/true; sleep 1.2; /bin/true",
            ],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let public = d.join("audit.key.pub");
        let (code, out) = verify(&log, &public);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("sealed in epochs"), "{out}");
        let mut epochs = seal_epochs(&log);
        assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "{epochs:?}");
        epochs.dedup();
        assert!(
            epochs.len() >= 2,
            "checkpoints in one epoch only: {epochs:?}"
        );
        // The key file moved on and no longer holds the seeds it had.
        let after = fs::read_to_string(&key).unwrap();
        let field = |text: &str, name: &str| {
            serde_json::from_str::<serde_json::Value>(text).unwrap()[name].clone()
        };
        assert!(field(&after, "epoch").as_u64() >= Some(*epochs.last().unwrap()));
        // (`next_period_seed` stays until the next period: it leads to
        // later periods' keys only.)
        let old = field(&before, "epoch_seed");
        assert!(
            !after.contains(old.as_str().unwrap()),
            "the epoch-0 seed is still in the key file"
        );
        // Epochs going back within a log is a fault, key or no key.
        let mut back = lines(&log);
        let last = back.pop().unwrap();
        let max = *epochs[..epochs.len() - 1].iter().max().unwrap();
        assert!(max >= 1, "{epochs:?}");
        let mut rec: Record = serde_json::from_str(&last).unwrap();
        if let Body::Checkpoint(c) = &mut rec.body {
            c.seal.as_mut().unwrap().epoch = max - 1;
        }
        back.push(serde_json::to_string(&rec).unwrap());
        let backwards = d.join("backwards.log");
        write_lines(&backwards, &back);
        let (code, out, _) = buildcell(&["audit", "verify", backwards.to_str().unwrap()]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("epochs went backwards"), "{out}");
        cases.lock().unwrap().push((d, key, public, log));
    });
    // The thief comes later (here 12 s: more than one epoch plus the 10 s
    // grace) and copies the key file.
    std::thread::sleep(std::time::Duration::from_secs(12));
    for (d, key, public, log) in cases.into_inner().unwrap() {
        let stolen = d.join("stolen.key");
        fs::copy(&key, &stolen).unwrap();
        let orig = lines(&log);
        let i = orig
            .iter()
            .position(|l| l.contains(r#"["/bin/true"]"#))
            .unwrap();
        let mut edited = orig.clone();
        edited[i] = edited[i].replace(r#"["/bin/true"]"#, r#"["/bin/evil"]"#);
        // Edited only: the chain breaks at the next line, as before.
        let plain_edit = d.join("edited.log");
        write_lines(&plain_edit, &edited);
        let (code, out) = verify(&plain_edit, &public);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!("line {}:", i + 2)), "{out}");
        // Re-chained and every checkpoint re-signed with the stolen key:
        // the proofs are valid, but only for the thief's epoch, which
        // began long after the records it claims to seal.
        let signer = keys::load_signing(&stolen).unwrap();
        let mut container = String::new();
        let mut prev = GENESIS.to_string();
        let mut forged = Vec::new();
        for l in &edited {
            let mut rec: Record = serde_json::from_str(l).unwrap();
            rec.prev = prev.clone();
            match &rec.body {
                Body::Start(s) => container = s.container_id.clone(),
                Body::Checkpoint(_) => {
                    rec.body =
                        Body::Checkpoint(signer.checkpoint(&container, rec.seq, &prev).unwrap())
                }
                _ => {}
            }
            let line = serde_json::to_string(&rec).unwrap();
            prev = buildcell::audit::sha256_hex(line.as_bytes());
            forged.push(line);
        }
        let forged_log = d.join("forged.log");
        write_lines(&forged_log, &forged);
        let (code, out) = verify(&forged_log, &public);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("sealed too late"), "{out}");
        // Without the sealing rules (no key given) the forgery's chain is
        // whole: the key is what catches it.
        let (code, out, _) = buildcell(&["audit", "verify", forged_log.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}");
    }
}

/// The retention procedure of the README ("For auditors"): logs fetched
/// into an archive may be removed from the host; the archive, which the
/// fetches only ever add to, still verifies whole against the host's
/// latest index, and the host's own copy names each removed log.
#[test]
fn pruned_logs_verify_from_the_archive_that_kept_them() {
    let d = dir("prune");
    let (key, public) = keygen(&d);
    let (host, archive) = (d.join("host"), d.join("archive"));
    fs::create_dir_all(&host).unwrap();
    fs::create_dir_all(&archive).unwrap();
    // Copy what the archive lacks, and the index (it only grows).
    let fetch = || {
        for e in fs::read_dir(&host).unwrap() {
            let e = e.unwrap();
            let to = archive.join(e.file_name());
            if e.file_name() == "index" || !to.exists() {
                fs::copy(e.path(), to).unwrap();
            }
        }
    };
    let verify_all = |dir: &Path| {
        let mut logs: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        let out = Command::new(bin())
            .args(["audit", "verify", "--key", public.to_str().unwrap()])
            .arg("--index")
            .arg(dir.join("index"))
            .args(&logs)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for name in ["a", "b"] {
        write_log(&host.join(format!("{name}.log")), &key, 3);
    }
    fetch();
    // Pruned on the host once fetched; later steps go on writing.
    fs::remove_file(host.join("a.log")).unwrap();
    write_log(&host.join("c.log"), &key, 3);
    fetch();
    let (code, out) = verify_all(&archive);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("index intact, 3 logs present and matching"),
        "{out}"
    );
    let (code, out) = verify_all(&host);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("a.log: listed in the index but missing: the log was deleted"),
        "{out}"
    );
    // An archive that missed a log (fetched only after the prune) fails.
    fs::remove_file(archive.join("a.log")).unwrap();
    let (code, out) = verify_all(&archive);
    assert_eq!(code, 1, "{out}");
}
