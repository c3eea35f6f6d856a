#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kong_rs_fuzz::bridge::bridge_dispatch(data));
