//! The `http_request` fuzz target: see [`kubevirt_leader_exporter_fuzz::http_request`], whose `run` the
//! seed test (`tests/seeds.rs`) also calls with every seed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kubevirt_leader_exporter_fuzz::http_request::run(data);
});
