//! Benchmark workloads (`benches/`):
//! each has a Lua twin in `benches/plugins/` doing exactly the same work.
//!
//! - `rs-bench-empty`: access, header_filter and log handlers that do nothing.
//! - `rs-bench-headers`: reads three request headers, sets two upstream
//!   headers and one response header.
//! - `rs-bench-json`: checks a ~2 KB JSON body against ten field rules and
//!   answers 400 with the first violation.

use kong_rs::{Flow, Pdk, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub use crate::bench_json::body_violation;

/// No configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct NoConfig {}

/// Does nothing, in three phases.
#[derive(Debug)]
pub struct BenchEmpty;

#[kong_rs::plugin]
impl Plugin for BenchEmpty {
    type Config = NoConfig;
    type State = ();
    const NAME: &'static str = "rs-bench-empty";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1000;

    fn new(_config: NoConfig) -> Result<Self> {
        Ok(BenchEmpty)
    }

    fn access(&self, _kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    fn header_filter(&self, _kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        Ok(())
    }

    fn log(&self, _kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        Ok(())
    }
}

/// Reads `x-bench-a/b/c`, sends `x-upstream-a: <a>` and `x-upstream-bc: <b>,<c>`
/// upstream and answers `x-bench: ok|missing`.
#[derive(Debug)]
pub struct BenchHeaders;

#[kong_rs::plugin]
impl Plugin for BenchHeaders {
    type Config = NoConfig;
    type State = ();
    const NAME: &'static str = "rs-bench-headers";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1000;

    fn new(_config: NoConfig) -> Result<Self> {
        Ok(BenchHeaders)
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        let request = kong.request();
        let a = request.get_header("x-bench-a")?;
        let b = request.get_header("x-bench-b")?;
        let c = request.get_header("x-bench-c")?;
        let complete = a.is_some() && b.is_some() && c.is_some();
        let mut bc = b.unwrap_or_default();
        bc.push(b',');
        bc.extend_from_slice(&c.unwrap_or_default());
        let upstream = kong.service_request();
        upstream.set_header("x-upstream-a", &a.unwrap_or_default())?;
        upstream.set_header("x-upstream-bc", &bc)?;
        kong.response()
            .set_header("x-bench", if complete { b"ok" } else { b"missing" })?;
        Ok(Flow::Continue)
    }
}

/// Validates the request body as JSON against ten rules.
#[derive(Debug)]
pub struct BenchJson;

use crate::bench_json::PLANS;

fn violation(message: &str) -> Result<Flow> {
    Ok(Flow::Exit(
        kong_rs::Exit::new(400)
            .body(format!("{{\"message\":\"{message}\"}}"))
            .header("content-type", "application/json"),
    ))
}

fn string_len(value: Option<&Value>) -> Option<usize> {
    value.and_then(Value::as_str).map(|s| s.chars().count())
}

fn int_in(value: Option<&Value>, low: i64, high: i64) -> bool {
    value
        .and_then(Value::as_i64)
        .is_some_and(|n| (low..=high).contains(&n))
}

/// The ten rules, in order, on a parsed document; the first violation is
/// the answer. The reference [`body_violation`] is tested against.
pub fn first_violation(doc: &Value) -> Option<&'static str> {
    let user = doc.get("user");
    let checks: [(&'static str, bool); 10] = [
        (
            "id must be a 36-character string",
            string_len(doc.get("id")) == Some(36),
        ),
        (
            "user.name must be 1-64 characters",
            string_len(user.and_then(|u| u.get("name"))).is_some_and(|n| (1..=64).contains(&n)),
        ),
        (
            "user.email must be 3-254 characters",
            string_len(user.and_then(|u| u.get("email"))).is_some_and(|n| (3..=254).contains(&n)),
        ),
        (
            "user.age must be an integer 13-130",
            int_in(user.and_then(|u| u.get("age")), 13, 130),
        ),
        (
            "plan must be free, pro or enterprise",
            doc.get("plan")
                .and_then(Value::as_str)
                .is_some_and(|p| PLANS.contains(&p)),
        ),
        (
            "quantity must be an integer 1-100",
            int_in(doc.get("quantity"), 1, 100),
        ),
        (
            "tags must be an array of at most 10",
            doc.get("tags")
                .and_then(Value::as_array)
                .is_some_and(|t| t.len() <= 10),
        ),
        (
            "items must be an array of 1-50",
            doc.get("items")
                .and_then(Value::as_array)
                .is_some_and(|i| (1..=50).contains(&i.len())),
        ),
        (
            "notes must be at most 1024 characters",
            doc.get("notes")
                .is_none_or(|n| n.as_str().is_some_and(|s| s.chars().count() <= 1024)),
        ),
        (
            "active must be a boolean",
            doc.get("active").is_some_and(Value::is_boolean),
        ),
    ];
    checks
        .iter()
        .find(|(_, ok)| !ok)
        .map(|(message, _)| *message)
}

/// What [`body_violation`] must answer, computed the plain way: parse into
/// a `serde_json::Value`, then [`first_violation`]. The tests and the
/// `request_json` fuzz target compare the two.
///
/// # Errors
/// `"body must be valid JSON"` or `"body must be a JSON object"`.
pub fn reference_violation(body: &[u8]) -> std::result::Result<Option<&'static str>, &'static str> {
    match serde_json::from_slice::<Value>(body) {
        Ok(doc) if doc.is_object() => Ok(first_violation(&doc)),
        Ok(_) => Err("body must be a JSON object"),
        Err(_) => Err("body must be valid JSON"),
    }
}

#[kong_rs::plugin]
impl Plugin for BenchJson {
    type Config = NoConfig;
    type State = ();
    const NAME: &'static str = "rs-bench-json";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1000;
    const READS_REQUEST_BODY: bool = true;

    fn new(_config: NoConfig) -> Result<Self> {
        Ok(BenchJson)
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        let Some(body) = kong.request().get_raw_body()? else {
            return violation("body must be a JSON object");
        };
        match body_violation(&body) {
            Ok(None) => Ok(Flow::Continue),
            Ok(Some(message)) | Err(message) => violation(message),
        }
    }
}

/// The PDK call `rs-inworker` repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InWorkerOp {
    /// Nothing: the loop itself.
    Noop,
    /// `kong.request.get_header("x-bench-a")`.
    GetHeader,
    /// `kong.service.request.set_header("x-bench-set", "value")`.
    SetHeader,
    /// `kong.ctx.shared.bench = "value"`.
    CtxSet,
    /// `kong.ctx.shared.bench`.
    CtxGet,
}

/// Configuration of `rs-inworker`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct InWorkerConfig {
    /// The call to repeat.
    pub op: InWorkerOp,
    /// How many times, in one access phase.
    #[schemars(range(min = 1, max = 100_000_000))]
    pub iterations: u32,
}

/// In-worker benchmark helper (benches/inworker): repeats one PDK call
/// `iterations` times from Rust, so the Lua side can time it per call.
#[derive(Debug)]
pub struct InWorker {
    op: InWorkerOp,
    iterations: u32,
}

#[kong_rs::plugin]
impl Plugin for InWorker {
    type Config = InWorkerConfig;
    type State = ();
    const NAME: &'static str = "rs-inworker";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1000;

    fn new(config: InWorkerConfig) -> Result<Self> {
        Ok(InWorker {
            op: config.op,
            iterations: config.iterations,
        })
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        let mut found = 0usize;
        for _ in 0..self.iterations {
            match self.op {
                InWorkerOp::Noop => found += std::hint::black_box(1),
                InWorkerOp::GetHeader => {
                    found += usize::from(kong.request().get_header("x-bench-a")?.is_some());
                }
                InWorkerOp::SetHeader => {
                    kong.service_request().set_header("x-bench-set", b"value")?;
                }
                InWorkerOp::CtxSet => {
                    kong.ctx()
                        .shared_set("bench", kong_rs::Value::from("value"))?;
                }
                InWorkerOp::CtxGet => {
                    found += usize::from(kong.ctx().shared_get("bench")? != kong_rs::Value::Nil);
                }
            }
        }
        std::hint::black_box(found);
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kong_rs::{MockPdk, run_request};

    /// The benchmark's valid document (benches/data/valid.json).
    const VALID: &str = include_str!("../../../benches/data/valid.json");

    #[test]
    fn the_benchmark_document_is_about_2_kb_and_valid() {
        assert!((1800..=2400).contains(&VALID.len()), "{}", VALID.len());
        let mut kong = MockPdk::request("POST", "/", Some(VALID.as_bytes()));
        assert_eq!(
            run_request::<BenchJson>(NoConfig {}, &mut kong).unwrap(),
            Flow::Continue
        );
    }

    #[test]
    fn each_rule_reports_its_violation_first() {
        let valid: Value = serde_json::from_str(VALID).unwrap();
        let cases = [
            ("/id", Value::from("short"), "id must be"),
            ("/user/age", Value::from(7), "user.age"),
            ("/plan", Value::from("gold"), "plan must"),
            ("/quantity", Value::from(1000), "quantity"),
            ("/active", Value::from("yes"), "active"),
        ];
        for (pointer, bad, expected) in cases {
            let mut doc = valid.clone();
            *doc.pointer_mut(pointer).unwrap() = bad;
            assert!(
                first_violation(&doc).unwrap().starts_with(expected),
                "{pointer}"
            );
        }
        let mut kong = MockPdk::request("POST", "/", Some(b"{not json"));
        let flow = run_request::<BenchJson>(NoConfig {}, &mut kong).unwrap();
        assert!(matches!(flow, Flow::Exit(ref e) if e.status == 400));
    }

    #[test]
    fn the_streaming_check_agrees_with_the_value_based_rules() {
        let valid: Value = serde_json::from_str(VALID).unwrap();
        let mut docs = vec![valid.clone()];
        for (pointer, bad) in [
            ("/id", Value::from(36)),
            ("/user", Value::from("not an object")),
            ("/user/name", Value::from("")),
            ("/user/email", Value::Null),
            ("/user/age", Value::from(13.5)),
            ("/plan", Value::from("gold")),
            ("/quantity", Value::from(0)),
            ("/tags", Value::from("a,b")),
            ("/items", serde_json::json!([])),
            ("/notes", Value::from("n".repeat(1025))),
            ("/active", Value::from(1)),
        ] {
            let mut doc = valid.clone();
            *doc.pointer_mut(pointer).unwrap() = bad;
            docs.push(doc);
        }
        let mut without_notes = valid.clone();
        without_notes.as_object_mut().unwrap().remove("notes");
        docs.push(without_notes);
        for doc in docs {
            let body = serde_json::to_vec(&doc).unwrap();
            assert_eq!(body_violation(&body), Ok(first_violation(&doc)), "{doc}");
        }
        let mut null_notes = valid.clone();
        null_notes["notes"] = Value::Null;
        let body = serde_json::to_vec(&null_notes).unwrap();
        assert_eq!(body_violation(&body), Ok(first_violation(&null_notes)));
        assert_eq!(
            body_violation(&body),
            Ok(Some("notes must be at most 1024 characters"))
        );
        // Duplicate keys: the last one wins, as when parsing into a Value.
        let duplicate = br#"{"plan":"gold","plan":"pro"}"#;
        let parsed: Value = serde_json::from_slice(duplicate).unwrap();
        assert_eq!(body_violation(duplicate), Ok(first_violation(&parsed)));
        assert_eq!(body_violation(b"[1,2]"), Err("body must be a JSON object"));
        // Invalid UTF-8 or a lone surrogate inside a skipped string is invalid JSON.
        let mut bad_utf8 = serde_json::to_vec(&valid).unwrap();
        let at = bad_utf8.windows(4).position(|w| w == b"Item").unwrap();
        bad_utf8[at] = 0xde;
        assert!(serde_json::from_slice::<Value>(&bad_utf8).is_err());
        assert_eq!(body_violation(&bad_utf8), Err("body must be valid JSON"));
        let surrogate = br#"{"items":["\ud800"]}"#;
        assert_eq!(
            body_violation(surrogate).is_err(),
            serde_json::from_slice::<Value>(surrogate).is_err()
        );
        assert_eq!(body_violation(b"{\"id\":"), Err("body must be valid JSON"));
        // A non-string plan comes after id in rule order, as with the Value rules.
        let plan_number = br#"{"id":"x","plan":5}"#;
        assert_eq!(
            body_violation(plan_number),
            Ok(Some("id must be a 36-character string"))
        );
    }

    /// Raw JSON texts (some invalid) for the checked members: the corners
    /// where a scanner could part ways with serde_json.
    const TRICKY_VALUES: &[&str] = &[
        "0",
        "-0",
        "1",
        "13",
        "100",
        "101",
        "-1",
        "1.0",
        "1e2",
        "1E+2",
        "2.5e-3",
        "1e400",
        "-1e400",
        "1e-400",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "01",
        "-01",
        "-",
        "1.",
        ".5",
        "+1",
        "1e",
        "1e+",
        "0x10",
        "Infinity",
        "NaN",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "\"\"",
        "\"pro\"",
        "\"free\"",
        "\"enterprise\"",
        "\"Pro\"",
        "\"pr\\u006f\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\ud800\\n\"",
        "\"\\ud800\"",
        "\"a\\x\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"tab\there\"",
        "\"ctl\u{1}\"",
        "\"del\u{7f}\"",
        "\"caf\u{e9}\"",
        "\"\u{1F980}\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"unterminated",
        "[]",
        "[1]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[[[]]]",
        "{}",
        "{\"a\":1}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{1:2}",
        "{\"a\":}",
        " \t\r\n1",
        "\u{c}1",
        "[\"a\",\"b\"]",
    ];

    /// 36 characters written in several ways, and near misses.
    fn tricky_ids() -> Vec<String> {
        vec![
            format!("\"{}\"", "a".repeat(36)),
            format!("\"{}\"", "a".repeat(35)),
            format!("\"{}\"", "\\u0041".repeat(36)),
            format!("\"{}\"", "\u{e9}".repeat(36)),
            format!("\"{}\"", "\\ud83d\\ude00".repeat(36)),
            format!("\"{}\"", "\u{1F980}".repeat(36)),
            format!("\"{}\\n\"", "a".repeat(35)),
            format!("\"{}\"", "n".repeat(1025)),
            format!("\"{}\"", "n".repeat(1024)),
        ]
    }

    /// xorshift64*: deterministic cases without a dependency.
    fn next(state: &mut u64) -> usize {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 16) as usize
    }

    #[test]
    fn the_scanner_agrees_with_serde_json_on_generated_documents() {
        let ids = tricky_ids();
        let mut pool: Vec<&str> = TRICKY_VALUES.to_vec();
        pool.extend(ids.iter().map(String::as_str));
        let nested: Vec<String> = (125..=129)
            .map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)))
            .collect();
        pool.extend(nested.iter().map(String::as_str));
        let valid: Value = serde_json::from_str(VALID).unwrap();
        let members: Vec<(String, String)> = valid
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (format!("{k:?}"), v.to_string()))
            .collect();
        let user_keys = [
            "\"name\"",
            "\"email\"",
            "\"age\"",
            "\"n\\u0061me\"",
            "\"x\"",
        ];
        let keys = [
            "\"id\"",
            "\"\\u0069d\"",
            "\"plan\"",
            "\"quantity\"",
            "\"tags\"",
            "\"notes\"",
            "\"active\"",
            "\"items\"",
            "\"user\"",
            "\"other\"",
            "\"id\\u0000\"",
        ];
        let spaces = ["", " ", "\n\t", "\r\n  "];
        let mut state = 0x6a73_6f6e_u64;
        let mut disagreements = Vec::new();
        let cases = 20_000;
        for case in 0..cases {
            let mut parts = Vec::new();
            for (key, value) in &members {
                match next(&mut state) % 10 {
                    0 => {} // member left out
                    1 => parts.push(format!("{key}:{}", pool[next(&mut state) % pool.len()])),
                    2 if key == "\"user\"" => {
                        let fields: Vec<String> = (0..next(&mut state) % 5)
                            .map(|_| {
                                let k = user_keys[next(&mut state) % user_keys.len()];
                                format!("{k}:{}", pool[next(&mut state) % pool.len()])
                            })
                            .collect();
                        parts.push(format!("{key}:{{{}}}", fields.join(",")));
                    }
                    3 => {
                        let k = keys[next(&mut state) % keys.len()];
                        parts.push(format!("{k}:{}", pool[next(&mut state) % pool.len()]));
                        parts.push(format!("{key}:{value}"));
                    }
                    _ => parts.push(format!("{key}:{value}")),
                }
            }
            let sp = spaces[next(&mut state) % spaces.len()];
            let mut body = format!("{sp}{{{sp}{}{sp}}}{sp}", parts.join(&format!("{sp},{sp}")));
            if case % 7 == 0 {
                // A byte-level change anywhere: mostly invalid documents.
                let at = next(&mut state) % body.len();
                let piece = pool[next(&mut state) % pool.len()];
                if body.is_char_boundary(at) {
                    body.insert_str(at, piece);
                }
            }
            let expected = reference_violation(body.as_bytes());
            let got = body_violation(body.as_bytes());
            if got != expected {
                disagreements.push((body, got, expected));
            }
        }
        for top in [
            "[]",
            "1",
            "\"s\"",
            "null",
            "",
            " ",
            "{",
            "{}",
            "{} x",
            "{}{}",
            "\u{feff}{}",
        ] {
            let expected = reference_violation(top.as_bytes());
            let got = body_violation(top.as_bytes());
            if got != expected {
                disagreements.push((top.to_string(), got, expected));
            }
        }
        assert!(
            disagreements.is_empty(),
            "{} of {cases} disagree, first: {:?}",
            disagreements.len(),
            disagreements.first()
        );
    }

    #[test]
    fn headers_workload_reads_three_and_writes_three() {
        let mut kong = MockPdk::get("/")
            .with_header("x-bench-a", "1")
            .with_header("x-bench-b", "2")
            .with_header("x-bench-c", "3");
        let _ = run_request::<BenchHeaders>(NoConfig {}, &mut kong).unwrap();
        assert_eq!(kong.upstream_header("x-upstream-a"), Some(&b"1"[..]));
        assert_eq!(kong.upstream_header("x-upstream-bc"), Some(&b"2,3"[..]));
        assert_eq!(kong.response_header("x-bench"), Some(&b"ok"[..]));
    }
}
