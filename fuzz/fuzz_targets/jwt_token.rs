#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kong_rs_fuzz::jwt::jwt_token(data));
