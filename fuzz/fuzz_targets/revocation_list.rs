#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| certshift::fuzzing::revocation_list(data));
