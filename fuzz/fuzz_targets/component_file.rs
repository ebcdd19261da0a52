//! The component file given with `--config`.
#![no_main]

use kubevirt_leader_exporter::config::parse_components;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_components(text);
    }
});
