//! Fuzzes the shim's config + environment parsing: input is `KEY=VALUE` lines, NUL, then stdin.
//! Any input must yield a parsed invocation or a CNI error with a spec code, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(err) = enipool_cni::config::parse_fuzz_input(data) {
        let code = err.code();
        assert!(matches!(code, 1..=7 | 11), "unexpected code {code} for {err}");
        let _ = serde_json::to_string(&err.to_reply("1.0.0"));
    }
});
