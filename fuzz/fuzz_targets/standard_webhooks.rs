//! The Standard Webhooks headers (id, timestamp, signature list) on any text.
#![no_main]

use enac_cd::auth::webhook::verify_standard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let id = parts.next();
    let timestamp = parts.next();
    let signatures = parts.next();
    let body = parts.next().unwrap_or_default().as_bytes();
    for now in [0, 1_700_000_000, i64::MIN, i64::MAX] {
        let _ = verify_standard(b"a fuzzing key", id, timestamp, body, signatures, now);
    }
});
