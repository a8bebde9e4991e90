//! A hostile audit log must never crash `audit verify`: the bytes as a log
//! (`audit::verify::verify`, without a key, with a plain Ed25519 key and
//! with a sealing key), as `audit show` reads it (`cli::audit_show`), and
//! as an index (`audit::index::verify_text`, the log it names being the
//! same bytes).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use buildcell::audit::{index, keys, verify};
use buildcell::cli::{audit_show, ShowFilter};
use libfuzzer_sys::fuzz_target;

/// The public keys the seed logs were signed with (fuzz/keys/).
fn public_keys() -> &'static [keys::PublicKey] {
    static K: OnceLock<Vec<keys::PublicKey>> = OnceLock::new();
    K.get_or_init(|| {
        let dir = buildcell_fuzz::bundle_dir();
        [
            ("plain.pub", include_str!("../keys/plain.pub")),
            ("sealed.pub", include_str!("../keys/sealed.pub")),
        ]
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a public key");
            keys::load_public(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = verify::verify(data, None) {
        let _ = verify::summary(&v);
    }
    for key in public_keys() {
        if let Ok(v) = verify::verify(data, Some(key)) {
            let _ = verify::summary(&v);
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for filter in [
        ShowFilter::default(),
        ShowFilter {
            json: true,
            pid: Some(2),
            command: Some("sh".into()),
        },
    ] {
        let _ = audit_show(text, "audit.log", &filter, &mut |_| {});
    }
    let _ = index::verify_text(Path::new("/var/log/buildcell/index"), text, &|_| {
        Some(text.to_string())
    });
});
