//! Fuzz targets of kong-rs (issue 4), as plain functions of `&[u8]`.
//!
//! The same functions are driven two ways:
//! - by libFuzzer (`fuzz_targets/*.rs`, `cargo fuzz run <target>`, the long
//!   run: coverage-guided, needs nightly flags, see `reliability/fuzz`);
//! - by `tests/quick.rs` (plain `cargo test`, stable): the seed corpus, then
//!   fixed-seed random and mutated inputs, for a bounded number of cases.
//!
//! Each target panics (= a crash for the fuzzer) when a plugin panics or
//! breaks one of its promises:
//! - `config_*`: arbitrary bytes as JSON, deserialised into the config type
//!   both with serde_json and through a Lua table (the way Kong's `conf`
//!   reaches Rust), then the constructor; an accepted config must respect
//!   the constructor's rules.
//! - `request_*`: an arbitrary request (method, path, query, headers, body)
//!   run through every phase against `kong_rs::MockPdk`: rs-hello with
//!   `deny_status` must deny, without it must set its header and proxy;
//!   rs-file-log must write exactly one valid JSON line describing the
//!   request losslessly; rs-bench-json must give the answer of parsing
//!   into a `serde_json::Value` and checking that (pass, or 400 with the
//!   same first violation) and never proxy a refused request.

pub mod bridge;
pub mod jwt;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use kong_rs::plugins::{FileLog, FileLogConfig, Hello, HelloConfig};
use kong_rs::{Flow, MockPdk, Plugin, run_request};
use kong_rs_test_plugins::bench::{BenchJson, reference_violation};
use serde_json::Value;
use std::cell::RefCell;
use std::path::PathBuf;

/// How often each interesting branch was reached (printed and checked by
/// the quick run, so a generator that never reaches a branch is noticed).
pub mod reached {
    use std::sync::atomic::{AtomicUsize, Ordering};
    pub static HELLO_ACCEPTED: AtomicUsize = AtomicUsize::new(0);
    pub static HELLO_DENY_ACCEPTED: AtomicUsize = AtomicUsize::new(0);
    pub static FILE_LOG_ACCEPTED: AtomicUsize = AtomicUsize::new(0);
    pub static HELLO_DENIED: AtomicUsize = AtomicUsize::new(0);
    pub static HELLO_PASSED: AtomicUsize = AtomicUsize::new(0);
    pub static LINES_WRITTEN: AtomicUsize = AtomicUsize::new(0);
    pub static NON_UTF8_LOGGED: AtomicUsize = AtomicUsize::new(0);
    pub static JSON_REFUSED: AtomicUsize = AtomicUsize::new(0);
    pub static JSON_PASSED: AtomicUsize = AtomicUsize::new(0);
    pub static BRIDGE_CONF_ACCEPTED: AtomicUsize = AtomicUsize::new(0);
    pub static BRIDGE_CONF_REFUSED: AtomicUsize = AtomicUsize::new(0);
    pub static BRIDGE_WRITES_APPLIED: AtomicUsize = AtomicUsize::new(0);
    pub static BRIDGE_DISPATCH_RAN: AtomicUsize = AtomicUsize::new(0);
    pub static BRIDGE_DISPATCH_REFUSED: AtomicUsize = AtomicUsize::new(0);
    pub static JWT_PARSED: AtomicUsize = AtomicUsize::new(0);
    pub static JWT_REFUSED: AtomicUsize = AtomicUsize::new(0);
    pub static JWT_ACCEPTED: AtomicUsize = AtomicUsize::new(0);
    pub(crate) fn hit(counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    /// Name and count of every counter.
    pub fn all() -> Vec<(&'static str, usize)> {
        [
            ("hello configs accepted", &HELLO_ACCEPTED),
            ("hello deny configs accepted", &HELLO_DENY_ACCEPTED),
            ("file-log configs accepted", &FILE_LOG_ACCEPTED),
            ("hello requests denied", &HELLO_DENIED),
            ("hello requests passed", &HELLO_PASSED),
            ("file-log lines checked", &LINES_WRITTEN),
            ("file-log non-UTF-8 fields", &NON_UTF8_LOGGED),
            ("json bodies refused", &JSON_REFUSED),
            ("json bodies passed", &JSON_PASSED),
            ("bridge confs accepted", &BRIDGE_CONF_ACCEPTED),
            ("bridge confs refused", &BRIDGE_CONF_REFUSED),
            ("bridge write buffers applied", &BRIDGE_WRITES_APPLIED),
            ("bridge dispatches run", &BRIDGE_DISPATCH_RAN),
            ("bridge dispatches refused", &BRIDGE_DISPATCH_REFUSED),
            ("jwt tokens parsed", &JWT_PARSED),
            ("jwt tokens refused", &JWT_REFUSED),
            ("jwt tokens accepted", &JWT_ACCEPTED),
        ]
        .into_iter()
        .map(|(n, c)| (n, c.load(Ordering::Relaxed)))
        .collect()
    }
}
use reached::hit;

thread_local! {
    static LUA: mlua::Lua = mlua::Lua::new();
    static LOG_PATH: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Deserialises `data` as JSON into `T` with serde_json, and (when it is
/// JSON at all) through a Lua value as the bridge does with Kong's `conf`.
/// Returns every config that was accepted.
fn configs<T: serde::de::DeserializeOwned>(data: &[u8]) -> Vec<T> {
    let mut out = Vec::new();
    if let Ok(config) = serde_json::from_slice::<T>(data) {
        out.push(config);
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        LUA.with(|lua| {
            use mlua::LuaSerdeExt;
            if let Ok(lua_value) = lua.to_value(&value)
                && let Ok(config) = lua.from_value::<T>(lua_value)
            {
                out.push(config);
            }
        });
    }
    out
}

/// Config deserialisation + constructor of rs-hello.
pub fn config_hello(data: &[u8]) {
    for config in configs::<HelloConfig>(data) {
        let Ok(plugin) = Hello::new(config.clone()) else {
            continue;
        };
        hit(&reached::HELLO_ACCEPTED);
        if config.deny_status.is_some() {
            hit(&reached::HELLO_DENY_ACCEPTED);
        }
        // What the constructor accepted must behave within its rules.
        let mut kong = MockPdk::get("/");
        let flow = plugin
            .access(&mut kong, &mut ())
            .expect("access cannot fail");
        match (config.deny_status, flow) {
            (Some(status), Flow::Exit(exit)) => {
                assert!(
                    (400..=599).contains(&status),
                    "accepted deny_status {status}"
                );
                assert_eq!(exit.status, status);
                assert_eq!(exit.body.as_deref(), Some(config.message.as_bytes()));
            }
            (None, Flow::Continue) => {
                let header = kong
                    .response_header("x-hello-from-rust")
                    .expect("header set");
                assert!(
                    !header.contains(&b'\r') && !header.contains(&b'\n'),
                    "a header value with CR/LF was accepted"
                );
            }
            (deny, flow) => panic!("deny_status {deny:?} gave {flow:?}"),
        }
    }
}

/// Config deserialisation + constructor of rs-file-log (no file is touched:
/// the constructor does not open the path).
pub fn config_file_log(data: &[u8]) {
    for config in configs::<FileLogConfig>(data) {
        if FileLog::new(config.clone()).is_ok() {
            hit(&reached::FILE_LOG_ACCEPTED);
            assert!(
                config.path.starts_with('/'),
                "relative path accepted: {:?}",
                config.path
            );
            assert!(!config.path.contains('\0'), "NUL accepted");
            assert!(!config.path.ends_with('/'), "directory accepted");
        }
    }
}

/// An arbitrary client request.
#[derive(Debug, Arbitrary)]
pub struct Request {
    method: String,
    path: Vec<u8>,
    query: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
    status: u16,
}

impl Request {
    fn mock(&self) -> MockPdk {
        let mut kong = MockPdk::request(&self.method, "/", self.body.as_deref());
        kong.path = self.path.clone();
        kong.query = self.query.clone();
        kong.upstream_path = self.path.clone();
        kong.upstream_query = self.query.clone();
        for (name, value) in &self.headers {
            kong = kong.with_header(name, value.clone());
        }
        kong
    }
}

/// rs-hello's request handling (both modes) against the mock.
pub fn request_hello(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(request) = Request::arbitrary(&mut u) else {
        return;
    };
    let deny: Option<u16> = match u.int_in_range(0..=250u16) {
        Ok(n) if n < 200 => Some(400 + n),
        _ => None,
    };
    let message: String = u.arbitrary().unwrap_or_default();
    let config = HelloConfig {
        message: message.clone(),
        deny_status: deny,
    };
    if Hello::new(config.clone()).is_err() {
        return; // refused by the constructor (the config target covers that)
    }
    let mut kong = request.mock();
    match run_request::<Hello>(config, &mut kong) {
        Ok(Flow::Exit(exit)) => {
            let status = deny.expect("exit only with deny_status");
            assert_eq!(exit.status, status);
            assert_eq!(kong.status, status);
            assert_eq!(kong.service_status, None, "denied request was proxied");
            hit(&reached::HELLO_DENIED);
        }
        Ok(Flow::Continue) => {
            assert!(deny.is_none(), "deny_status {deny:?} let a request through");
            assert_eq!(
                kong.response_header("x-hello-from-rust"),
                Some(message.as_bytes())
            );
            hit(&reached::HELLO_PASSED);
        }
        Err(e) => panic!("rs-hello failed a request: {e}"),
    }
}

/// Removes the temporary directory the file-log target writes into (the
/// quick run calls it when done; a libFuzzer run ends by exiting).
pub fn remove_temp_files() {
    LOG_PATH.with(|slot| {
        if let Some(path) = slot.borrow_mut().take()
            && let Some(dir) = path.parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    });
}

fn log_path() -> PathBuf {
    LOG_PATH.with(|slot| {
        slot.borrow_mut()
            .get_or_insert_with(|| {
                let dir = std::env::temp_dir().join(format!("kong-rs-fuzz-{}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                dir.join("file-log.jsonl")
            })
            .clone()
    })
}

fn decode_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) => base64::engine::general_purpose::STANDARD
            .decode(o["base64"].as_str().expect("base64 field"))
            .expect("valid base64"),
        other => panic!("not a byte value: {other}"),
    }
}

/// rs-file-log's request handling: one valid, lossless JSON line per request.
pub fn request_file_log(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(request) = Request::arbitrary(&mut u) else {
        return;
    };
    let path = log_path();
    let _ = std::fs::remove_file(&path);
    let config = FileLogConfig {
        path: path.to_string_lossy().into_owned(),
        reopen: u.arbitrary().unwrap_or(false),
    };
    let mut kong = request.mock();
    kong.status = request.status;
    let flow = run_request::<FileLog>(config, &mut kong).expect("logging never fails a request");
    assert_eq!(flow, Flow::Continue);
    let text = std::fs::read(&path).expect("a line was written");
    assert_eq!(text.last(), Some(&b'\n'));
    let lines: Vec<&[u8]> = text[..text.len() - 1].split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 1, "exactly one line (no raw newline inside)");
    let entry: Value = serde_json::from_slice(lines[0]).expect("the line is JSON");
    assert_eq!(entry["method"].as_str(), Some(request.method.as_str()));
    assert_eq!(
        decode_bytes(&entry["path"]),
        request.path,
        "path kept losslessly"
    );
    assert_eq!(
        decode_bytes(&entry["query"]),
        request.query,
        "query kept losslessly"
    );
    assert_eq!(entry["status"].as_u64(), Some(u64::from(request.status)));
    hit(&reached::LINES_WRITTEN);
    if entry["path"].is_object() || entry["query"].is_object() {
        hit(&reached::NON_UTF8_LOGGED);
    }
}

/// rs-bench-json: anything but a valid JSON object meeting the rules is
/// refused with 400 and never proxied.
pub fn request_json(data: &[u8]) {
    // First byte even: the rest is the body of a plain POST (JSON-ish text,
    // so the corpus can hold documents); odd: an arbitrary request.
    let request = match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => Request {
            method: "POST".into(),
            path: b"/json".to_vec(),
            query: Vec::new(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Some(rest.to_vec()),
            status: 200,
        },
        Some((_, rest)) => match Request::arbitrary(&mut Unstructured::new(rest)) {
            Ok(request) => request,
            Err(_) => return,
        },
        None => return,
    };
    let mut kong = request.mock();
    let flow = run_request::<BenchJson>(kong_rs_test_plugins::bench::NoConfig {}, &mut kong)
        .expect("rs-bench-json never errs");
    // The answer parsing into a Value gives. A request without a body has
    // an empty one, as Kong's get_raw_body answers "" (not nil).
    let expected = match request.body.as_deref() {
        Some(body) => reference_violation(body),
        None => reference_violation(b""),
    };
    match flow {
        Flow::Continue => {
            assert_eq!(
                expected,
                Ok(None),
                "an invalid body passed: {:?}",
                request.body
            );
            assert!(kong.service_status.is_some());
            hit(&reached::JSON_PASSED);
        }
        Flow::Exit(exit) => {
            assert_eq!(exit.status, 400);
            let body: Value = serde_json::from_slice(exit.body.as_deref().unwrap_or_default())
                .expect("the refusal is JSON");
            // The first violation, word for word (none: a valid body was refused).
            let message = match expected {
                Ok(Some(message)) | Err(message) => Some(message),
                Ok(None) => None,
            };
            assert_eq!(
                body["message"].as_str(),
                message,
                "wrong refusal of {:?}",
                request.body
            );
            assert_eq!(kong.service_status, None, "refused request was proxied");
            hit(&reached::JSON_REFUSED);
        }
    }
}

/// A fuzz target: takes one input, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target, by name (for the quick run).
pub const TARGETS: &[(&str, Target)] = &[
    ("config_hello", config_hello),
    ("config_file_log", config_file_log),
    ("request_hello", request_hello),
    ("request_file_log", request_file_log),
    ("request_json", request_json),
    ("bridge_conf", bridge::bridge_conf),
    ("bridge_writes", bridge::bridge_writes),
    ("bridge_dispatch", bridge::bridge_dispatch),
    ("jwt_token", jwt::jwt_token),
];
