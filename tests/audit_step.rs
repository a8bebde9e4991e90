//! The audit log of `buildcell step`: every exec of every process in the
//! sandbox is recorded before it runs, the log verifies, and the step fails
//! closed when a record cannot be written. Real binary, both modes.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

use buildcell::audit::record::{Body, Record};

fn verify(m: Mode, log: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    args.push(log.to_str().unwrap());
    run(m, &harness().dir, &args)
}

#[test]
fn every_exec_of_every_process_is_recorded() {
    each_mode(|m| {
        let d = workdir(m, "audit-all");
        let log = log_path(m, "all");
        let probe = harness().probe.display().to_string();
        let script = format!(
            "ls / > /dev/null; /bin/true; sh -c 'exec /bin/echo grandchild'; \
             (setsid sh -c 'exec /bin/echo daemon' &); sleep 0.3; \
             {probe} thread-exec /bin/echo from-thread; \
             {probe} memfd-exec /bin/echo from-memfd; \
             env no-such-tool-xyz --flag 'two words' 2>/dev/null; true"
        );
        let r = audited(m, &d, &log, &["--", "sh", "-c", &script]);
        assert_eq!(r.code, 0, "{r:?}");
        let x = execs(&log);
        assert_eq!(ran(&x, &["sh", "-c", &script]), 1, "the step's own exec");
        assert_eq!(ran(&x, &["ls", "/"]), 1);
        assert_eq!(ran(&x, &["/bin/true"]), 1);
        assert_eq!(ran(&x, &["/bin/echo", "grandchild"]), 1);
        assert_eq!(
            ran(&x, &["/bin/echo", "daemon"]),
            1,
            "a double-forked daemon"
        );
        assert_eq!(
            ran(&x, &["/bin/echo", "from-thread"]),
            1,
            "exec from a thread"
        );
        assert_one_memfd_exec(&x, &["/bin/echo", "from-memfd"]);
        // Failed attempts are records too (env searching PATH).
        assert!(
            x.iter().any(|e| e.result == "failed"
                && e.path
                    .as_deref()
                    .is_some_and(|p| p.ends_with("/no-such-tool-xyz"))
                && e.argv == ["no-such-tool-xyz", "--flag", "two words"]),
            "{x:?}"
        );
        // Fields of an exec record.
        let ls = x.iter().find(|e| e.argv == ["ls", "/"]).unwrap();
        assert_eq!(ls.uid, Some(0));
        assert_eq!(ls.cwd.as_deref(), Some(d.to_str().unwrap()));
        assert!(
            ls.resolved.as_deref().is_some_and(|p| p.ends_with("/ls")),
            "{ls:?}"
        );
        assert!(ls.pid_inside.is_some_and(|p| p > 2), "{ls:?}");
        assert_ne!(ls.host_uid, Some(0), "never host root: {ls:?}");
        assert!(ls.env_names.contains(&"PATH".to_string()));
        // The start record carries the real id maps.
        let first = fs::read_to_string(&log).unwrap();
        let start: Record = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        let Body::Start(start) = start.body else {
            panic!("first record is not start")
        };
        match m {
            Mode::Root => assert!(
                start.uid_map.starts_with("0 ")
                    && start.uid_map.ends_with(" 65536")
                    && !start.uid_map.starts_with("0 0 "),
                "{start:?}"
            ),
            Mode::User => assert!(
                start.uid_map.starts_with(&format!("0 {} 1", caller_uid(m))),
                "{start:?}"
            ),
        }
        let v = verify(m, &log, &[]);
        assert_eq!(v.code, 0, "{v:?}");
        assert!(v.stdout.contains("complete"), "{v:?}");
    });
}

#[test]
fn ten_thousand_execs_none_missing() {
    each_mode(|m| {
        let d = workdir(m, "audit-many");
        let log = log_path(m, "many");
        // The step counts its own execs; the log must hold exactly as many.
        let script = "i=0; while [ $i -lt 10000 ]; do /bin/true; i=$((i+1)); done; echo $i";
        let r = audited(m, &d, &log, &["--", "sh", "-c", script]);
        assert_eq!(r.stdout.trim(), "10000", "{r:?}");
        assert_eq!(ran(&execs(&log), &["/bin/true"]), 10000);
        assert_eq!(verify(m, &log, &[]).code, 0);
    });
}

#[test]
fn long_argv_is_cut_and_hashed() {
    each_mode(|m| {
        let d = workdir(m, "audit-argv");
        let log = log_path(m, "argv");
        // 1 MiB of argv in 18 arguments (one string may not exceed 128 KiB).
        let big: Vec<String> = (0..18)
            .map(|i| format!("{:x}", i % 16).repeat(60_000))
            .collect();
        let mut args = vec![
            "step",
            "--audit-log",
            log.to_str().unwrap(),
            "--",
            "/bin/true",
        ];
        args.extend(big.iter().map(String::as_str));
        let r = run(m, &d, &args);
        assert_eq!(r.code, 0, "{r:?}");
        let x = execs(&log);
        let e = x
            .iter()
            .find(|e| e.argv.first().map(String::as_str) == Some("/bin/true"))
            .unwrap();
        assert_eq!(e.argv.last().map(String::as_str), Some("<truncated>"));
        let whole = format!("/bin/true\0{}", big.join("\0"));
        assert_eq!(
            e.argv_truncated_sha256.as_deref(),
            Some(buildcell::audit::sha256_hex(whole.as_bytes()).as_str())
        );
    });
}

#[test]
fn signed_log_verifies_with_the_public_key() {
    each_mode(|m| {
        let d = workdir(m, "audit-signed");
        // The default key location: /etc/buildcell as root (here a 0600
        // root-owned key elsewhere, passed with --audit-key), the user's
        // $XDG_CONFIG_HOME/buildcell otherwise: here a config home of this
        // test's own inside the home (hidden from the step), so that the
        // steps other tests run meanwhile do not pick the key up and lose
        // it when it is removed.
        let xdg = home_of(m).join(format!(".config-buildcell-test-{}", std::process::id()));
        let (key, flag) = match m {
            Mode::Root => {
                let k = harness().dir.join("root-keys");
                let _ = fs::remove_dir_all(&k);
                fs::create_dir_all(&k).unwrap();
                (k.join("audit.key"), true)
            }
            Mode::User => {
                let k = xdg.join("buildcell");
                let _ = fs::remove_dir_all(&k);
                fs::create_dir_all(&k).unwrap();
                chown_to(m, &k);
                chown_to(m, &xdg);
                (k.join("audit.key"), false)
            }
        };
        let env = [("XDG_CONFIG_HOME", xdg.to_str().unwrap())];
        let r = run(m, &d, &["audit", "keygen", key.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{r:?}");
        let log = log_path(m, "signed");
        let mut args = vec!["step", "--audit-log", log.to_str().unwrap()];
        if flag {
            args.extend(["--audit-key", key.to_str().unwrap()]);
        }
        args.extend(["--", "cat", key.to_str().unwrap()]);
        let r = run_env(m, &d, &args, &env);
        // The step cannot read the key that signs its log.
        assert_ne!(r.code, 0, "{r:?}");
        assert!(r.stdout.is_empty(), "{r:?}");
        let pubkey = format!("{}.pub", key.display());
        let v = verify(m, &log, &["--key", &pubkey]);
        assert_eq!(v.code, 0, "{v:?}");
        assert!(v.stdout.contains("last signed checkpoint at seq"), "{v:?}");
        if m == Mode::User {
            let _ = fs::remove_dir_all(&xdg);
        }
    });
}

#[test]
fn log_inside_the_working_directory_is_refused() {
    each_mode(|m| {
        let d = workdir(m, "audit-inside");
        let r = run(m, &d, &["step", "--audit-log", "audit.log", "--", "true"]);
        assert_refused(&r, 125, "which the step can write");
        assert!(!d.join("audit.log").exists());
    });
}

#[test]
fn default_log_location_is_used_without_flag() {
    each_mode(|m| {
        let d = workdir(m, "audit-default");
        let r = run(m, &d, &["step", "--verbose", "--", "true"]);
        assert_eq!(r.code, 0, "{r:?}");
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains("audit log "))
            .expect("verbose names the log");
        let path = line.rsplit("audit log ").next().unwrap().trim();
        match m {
            Mode::Root => assert!(path.starts_with("/var/log/buildcell/"), "{path}"),
            Mode::User => assert!(path.contains("/.local/state/buildcell/audit/"), "{path}"),
        }
        assert!(Path::new(path).exists());
        // Left in place: the index beside it lists it, and a deleted log is
        // exactly what `audit verify --index` reports.
    });
}

#[test]
fn full_log_filesystem_stops_the_step() {
    if !is_root() {
        return skip("needs root to mount a small tmpfs for the log");
    }
    let m = Mode::Root;
    let d = workdir(m, "audit-full");
    let mnt = harness().dir.join("full-fs");
    fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16k",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let log = mnt.join("step.log");
    // Each iteration runs /bin/true, then counts it in the working directory.
    let script =
        "i=0; while [ $i -lt 2000 ]; do /bin/true || exit 9; i=$((i+1)); echo $i >> count; done";
    let r = audited(m, &d, &log, &["--", "sh", "-c", script]);
    let data = fs::read(&log).unwrap();
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    // Not one line: the step's shell may report its killed child first.
    assert_eq!(r.code, 125, "{r:?}");
    assert!(
        r.stderr
            .lines()
            .last()
            .unwrap_or("")
            .contains(log.to_str().unwrap()),
        "buildcell's last line names the log: {r:?}"
    );
    let counted = fs::read_to_string(d.join("count"))
        .unwrap_or_default()
        .lines()
        .count();
    assert!(counted < 2000, "the step was stopped");
    // Every record written before is whole and verifies; the log is cut off.
    let v = buildcell::audit::verify::verify(&data, None).unwrap();
    assert!(!v.complete);
    let text = String::from_utf8(data).unwrap();
    let recorded = text
        .lines()
        .filter(|l| l.contains("\"argv\":[\"/bin/true\"]") && l.contains("\"result\":\"ok\""))
        .count();
    // No /bin/true ran without its record (the count line comes after it).
    assert!(
        counted <= recorded,
        "counted {counted} > recorded {recorded}"
    );
}

#[test]
fn build_secrets_never_reach_the_log() {
    each_mode(|m| {
        let d = workdir(m, "audit-secret");
        let secrets = harness().dir.join(format!("secrets-{m:?}"));
        fs::create_dir_all(&secrets).unwrap();
        let file = secrets.join("tok");
        fs::write(&file, "hunter2-file-secret\n").unwrap();
        chown_to(m, &secrets);
        chown_to(m, &file);
        let log = log_path(m, "secret");
        let secret_arg = format!("tok={}", file.display());
        let r = audited(m, &d, &log, &["--secret", &secret_arg,
              "--env", "API_TOKEN=env-secret-4242", "--",
              "sh", "-c", "/bin/echo \"$(cat /run/secrets/tok)\"; /bin/echo \"$API_TOKEN\"; \
                           stat -c %a /run/secrets/tok; echo x > /run/secrets/tok 2>/dev/null || echo read-only; \
                           grep ' /run/secrets ' /proc/self/mountinfo | cut -d' ' -f9"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(
            r.stdout, "hunter2-file-secret\nenv-secret-4242\n400\nread-only\ntmpfs\n",
            "{r:?}"
        );
        let text = fs::read_to_string(&log).unwrap();
        assert!(!text.contains("hunter2-file-secret"), "{text}");
        assert!(!text.contains("env-secret-4242"), "{text}");
        let x = execs(&log);
        assert_eq!(ran(&x, &["/bin/echo", "<redacted:tok>"]), 1, "{x:?}");
        assert_eq!(ran(&x, &["/bin/echo", "<redacted:API_TOKEN>"]), 1, "{x:?}");
        // The secret is not in the working directory either.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
        // A bad --secret is one line naming it.
        let r = run(
            m,
            &d,
            &["step", "--secret", "../x=/etc/hostname", "--", "true"],
        );
        assert_refused(&r, 125, "--secret \"../x=/etc/hostname\": NAME must be");
    });
}

#[test]
fn records_name_what_ran_even_when_a_thread_rewrites_argv() {
    each_mode(|m| {
        let d = workdir(m, "audit-race");
        let log = log_path(m, "race");
        let probe = harness().probe.display().to_string();
        let r = audited(m, &d, &log, &["--", &probe, "race-exec", "200"]);
        assert_eq!(r.code, 0, "{r:?}");
        // What each shell really received, by its pid inside.
        let ran: std::collections::BTreeMap<i32, String> = r
            .stdout
            .lines()
            .map(|l| {
                let (pid, arg) = l.split_once(' ').unwrap();
                (pid.parse().unwrap(), arg.to_string())
            })
            .collect();
        assert_eq!(ran.len(), 200, "{r:?}");
        let recorded: std::collections::BTreeMap<i32, String> = execs(&log)
            .into_iter()
            .filter(|e| e.result == "ok" && e.argv.len() == 5 && e.argv[0] == "sh")
            .map(|e| (e.pid_inside.unwrap(), e.argv[4].clone()))
            .collect();
        let wrong: Vec<_> = ran
            .iter()
            .filter(|(pid, arg)| recorded.get(pid) != Some(arg))
            .collect();
        assert!(
            wrong.is_empty(),
            "{} of 200 records differ from what ran: {wrong:?}",
            wrong.len()
        );
        // The race was real: the argument did change under the exec.
        let distinct: std::collections::BTreeSet<_> = ran.values().collect();
        assert!(distinct.len() > 1, "{distinct:?}");
    });
}

#[test]
fn i386_exec_is_killed_by_the_profile_or_recorded() {
    each_mode(|m| {
        let d = workdir(m, "audit-i386");
        let probe = harness().probe.display().to_string();
        // The default profile kills any syscall of another architecture
        // before the audit filter would notify: nothing runs unrecorded.
        let log = log_path(m, "i386-default");
        let r = audited(
            m,
            &d,
            &log,
            &["--", &probe, "i386-exec", "/bin/echo", "hello-i386"],
        );
        assert_eq!(r.code, 128 + 31, "SIGSYS: {r:?}");
        assert!(!r.stdout.contains("hello-i386"), "{r:?}");
        assert_eq!(ran(&execs(&log), &["/bin/echo", "hello-i386"]), 0);
        // Without a profile filter the i386 execve reaches the audit filter
        // (it has rules for i386 syscalls 11 and 358) and is recorded.
        let log = log_path(m, "i386-allow");
        let mut args = step_without_seccomp(m, &d);
        args.extend([
            "--audit-log",
            log.to_str().unwrap(),
            "--",
            &probe,
            "i386-exec",
            "/bin/echo",
            "hello-i386",
        ]);
        let r = run(m, &d, &args);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.stdout, "hello-i386\n");
        assert_eq!(ran(&execs(&log), &["/bin/echo", "hello-i386"]), 1);
    });
}

#[test]
fn a_32_bit_program_is_recorded_from_its_own_initial_stack() {
    // The record of a program that runs is read from its initial stack at
    // the exec stop; a 32-bit program's holds 4-byte pointers.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/echo32.c");
    each_mode(|m| {
        let d = workdir(m, "audit-32bit");
        let bin = d.join("echo32");
        let cc = Command::new("cc")
            .args([
                "-m32",
                "-nostdlib",
                "-static",
                "-no-pie",
                "-fno-pie",
                "-O1",
                "-o",
            ])
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("cc (gcc) runs");
        assert!(cc.status.success(), "cc -m32: {cc:?}");
        chown_to(m, &bin);
        // Without a profile filter (the default one kills i386 syscalls).
        let log = log_path(m, "32bit");
        let prog = bin.display().to_string();
        let mut args = step_without_seccomp(m, &d);
        args.extend([
            "--audit-log",
            log.to_str().unwrap(),
            "--env",
            "MARK32=on",
            "--",
            &prog,
            "hello-32",
            "two words",
            "",
        ]);
        let r = run(m, &d, &args);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.stdout, "hello-32\n");
        let execs = execs(&log);
        let rec: Vec<_> = execs
            .iter()
            .filter(|e| e.argv.first() == Some(&prog))
            .collect();
        assert_eq!(rec.len(), 1, "{execs:?}");
        assert_eq!(rec[0].argv, [prog.as_str(), "hello-32", "two words", ""]);
        assert_eq!(rec[0].result, "ok");
        assert!(
            rec[0].env_names.iter().any(|n| n == "MARK32"),
            "{:?}",
            rec[0]
        );
        assert!(rec[0].env_names.iter().any(|n| n == "PATH"), "{:?}", rec[0]);
    });
}

#[test]
fn log_size_cap_stops_the_step() {
    each_mode(|m| {
        let d = workdir(m, "audit-cap");
        let log = log_path(m, "cap");
        let script = "i=0; while [ $i -lt 500 ]; do /bin/true || exit 9; i=$((i+1)); done";
        let r = audited(
            m,
            &d,
            &log,
            &["--audit-max-size", "8k", "--", "sh", "-c", script],
        );
        // The step's shell may report its killed child before buildcell's line.
        assert_eq!(r.code, 125, "{r:?}");
        let last = r.stderr.lines().last().unwrap_or("");
        assert!(last.contains("size limit of 8192 bytes"), "{r:?}");
        assert!(r.stderr.contains(log.to_str().unwrap()), "{r:?}");
        assert!(fs::metadata(&log).unwrap().len() <= 8192);
        let r = run(m, &d, &["step", "--audit-max-size", "lots", "--", "true"]);
        assert_eq!(r.code, 125, "{r:?}");
    });
}
