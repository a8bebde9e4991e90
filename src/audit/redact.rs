//! Build secrets never reach the audit log: every occurrence of a secret's
//! value in an exec record's argv, path or recorded environment values is
//! replaced by `<redacted:NAME>`. Secrets are the files given with
//! `--secret NAME=FILE` and the environment variables whose names look like
//! credentials (`*_TOKEN`, `*_KEY`, `*PASSWORD*`, `*PASSWD*`, `*SECRET*`,
//! `*CREDENTIAL*`).

use super::record::Exec;

/// Values shorter than this are not redacted (a one-letter "secret" would
/// blank out every command line).
pub const MIN_SECRET_LEN: usize = 4;

#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// (name, value), longest values first so that a value containing
    /// another is replaced whole.
    secrets: Vec<(String, String)>,
}

/// Whether an environment variable's name marks its value as a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.ends_with("_TOKEN")
        || n.ends_with("_KEY")
        || ["PASSWORD", "PASSWD", "SECRET", "CREDENTIAL"]
            .iter()
            .any(|p| n.contains(p))
}

impl Redactor {
    pub fn add(&mut self, name: &str, value: &str) {
        for v in [value, value.trim_end_matches(['\n', '\r'])] {
            if v.len() >= MIN_SECRET_LEN && !self.secrets.iter().any(|(_, x)| x == v) {
                self.secrets.push((name.to_string(), v.to_string()));
            }
        }
        self.secrets
            .sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, value) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("<redacted:{name}>"));
            }
        }
        out
    }

    /// Redact every free-text field of an exec record.
    pub fn exec(&self, e: &mut Exec) {
        if self.secrets.is_empty() {
            return;
        }
        for a in e.argv.iter_mut() {
            *a = self.apply(a);
        }
        for v in e.env.values_mut() {
            *v = self.apply(v);
        }
        for f in [&mut e.path, &mut e.resolved, &mut e.cwd]
            .into_iter()
            .flatten()
        {
            *f = self.apply(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_mark_secrets() {
        for n in [
            "API_TOKEN",
            "npm_token",
            "DB_PASSWORD",
            "AWS_SECRET_ACCESS_KEY",
            "SSH_KEY",
            "GIT_CREDENTIALS",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["PATH", "HOME", "TOKENIZER", "KEYBOARD"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn values_are_replaced_everywhere() {
        let mut r = Redactor::default();
        r.add("tok", "s3cr3t-value\n");
        r.add("short", "ab");
        let mut e = Exec {
            argv: vec![
                "curl".into(),
                "-H".into(),
                "Authorization: s3cr3t-value".into(),
                "ab".into(),
            ],
            path: Some("/bin/s3cr3t-value".into()),
            ..Default::default()
        };
        r.exec(&mut e);
        assert_eq!(e.argv[2], "Authorization: <redacted:tok>");
        assert_eq!(e.argv[3], "ab", "too short to be redacted");
        assert_eq!(e.path.as_deref(), Some("/bin/<redacted:tok>"));
    }
}
