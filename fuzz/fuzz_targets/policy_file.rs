//! The policy loader on any text: an error or a policy, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secret = |name: &str| Some(format!("{name}-fuzz-secret-0123456789"));
    let _ = enac_cd::policy::parse_policy(text, std::path::Path::new("fuzz.toml"), &secret);
});
