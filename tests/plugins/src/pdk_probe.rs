//! `rs-pdk-probe` (tests only): makes every read the PDK offers and reports
//! what each returned, so a spec can compare it, call by call, with the same
//! calls made by a Lua plugin (`lua-pdk-probe`, its twin) on the gateway and
//! on real Kong.
//!
//! Report format, shared with the twin: a JSON object `call -> {"ok": v}` or
//! `call -> {"err": true}`, base64-encoded into a response header
//! (`x-probe-access` for what access read, `x-probe-header-filter` for
//! header_filter). Bytes are written as text with every byte outside
//! printable ASCII (and `\`) as `\xHH`; header and query lists are sorted
//! `name: value` strings, one per value.

use base64::Engine;
use kong_rs::pdk::{Entity, Headers, QueryValue};
use kong_rs::{Flow, Pdk, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Configuration of `rs-pdk-probe`: none.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct PdkProbeConfig {}

/// The probe.
#[derive(Debug)]
pub struct PdkProbe;

/// `bytes` as text: printable ASCII kept, anything else `\xHH`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn bytes(value: Option<Vec<u8>>) -> Value {
    value.map_or(Value::Null, |v| Value::String(escape(&v)))
}

fn headers(list: Headers) -> Value {
    let mut lines: Vec<String> = list
        .into_iter()
        .map(|(name, value)| format!("{}: {}", name.to_ascii_lowercase(), escape(&value)))
        .collect();
    lines.sort();
    json!(lines)
}

fn query_value(value: Option<QueryValue>) -> Value {
    match value {
        None => Value::Null,
        Some(QueryValue::Flag) => Value::Bool(true),
        Some(QueryValue::Value(v)) => Value::String(escape(&v)),
    }
}

fn entity(value: Option<Entity>) -> Value {
    json!(value.is_some())
}

/// Records one call: its value, or that it failed.
fn record(report: &mut Map<String, Value>, name: &str, result: Result<Value>) {
    let entry = match result {
        Ok(value) => json!({ "ok": value }),
        Err(_) => json!({ "err": true }),
    };
    report.insert(name.to_string(), entry);
}

fn encode(report: Map<String, Value>) -> Vec<u8> {
    let text = Value::Object(report).to_string();
    base64::engine::general_purpose::STANDARD
        .encode(text)
        .into_bytes()
}

#[kong_rs::plugin]
impl Plugin for PdkProbe {
    type Config = PdkProbeConfig;
    type State = Option<Vec<u8>>;
    const NAME: &'static str = "rs-pdk-probe";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 900;
    const READS_REQUEST_BODY: bool = true;

    fn new(_config: PdkProbeConfig) -> Result<Self> {
        Ok(PdkProbe)
    }

    fn access(&self, kong: &mut dyn Pdk, state: &mut Option<Vec<u8>>) -> Result<Flow> {
        let mut r = Map::new();
        let req = kong.request();
        record(&mut r, "get_method", req.get_method().map(Value::from));
        record(&mut r, "get_path", req.get_path().map(|v| bytes(Some(v))));
        let with_query = req.get_path_with_query().map(|v| bytes(Some(v)));
        record(&mut r, "get_path_with_query", with_query);
        record(
            &mut r,
            "get_raw_query",
            req.get_raw_query().map(|v| bytes(Some(v))),
        );
        for name in ["a", "flag", "empty", "missing"] {
            let value = req.get_query_arg(name).map(query_value);
            record(&mut r, &format!("get_query_arg {name}"), value);
        }
        let query = req.get_query().map(|args| {
            let mut lines: Vec<String> = args
                .into_iter()
                .map(|(name, value)| match value {
                    QueryValue::Flag => escape(&name),
                    QueryValue::Value(v) => format!("{}={}", escape(&name), escape(&v)),
                })
                .collect();
            lines.sort();
            json!(lines)
        });
        record(&mut r, "get_query", query);
        for name in [
            "x-dup",
            "x-empty",
            "x-bin",
            "X-Mixed-Case",
            "x_under",
            "missing",
        ] {
            let value = req.get_header(name).map(bytes);
            record(&mut r, &format!("get_header {name}"), value);
        }
        record(&mut r, "get_headers", req.get_headers().map(headers));
        record(&mut r, "get_scheme", req.get_scheme().map(Value::from));
        record(&mut r, "get_host", req.get_host().map(Value::from));
        record(&mut r, "get_port", req.get_port().map(Value::from));
        record(
            &mut r,
            "get_http_version",
            req.get_http_version().map(|v| json!(v)),
        );
        record(&mut r, "get_raw_body", req.get_raw_body().map(bytes));
        let started = req.get_start_time().map(|t| json!(t > 1e12));
        record(&mut r, "get_start_time > 1e12", started);

        let client = kong.client();
        record(&mut r, "client.get_ip", client.get_ip().map(Value::from));
        let forwarded = client.get_forwarded_ip().map(Value::from);
        record(&mut r, "client.get_forwarded_ip", forwarded);
        record(
            &mut r,
            "client.get_port > 0",
            client.get_port().map(|p| json!(p > 0)),
        );
        record(
            &mut r,
            "client.get_consumer",
            client.get_consumer().map(entity),
        );
        record(
            &mut r,
            "client.get_credential",
            client.get_credential().map(entity),
        );
        record(
            &mut r,
            "router.get_route",
            kong.router().get_route().map(entity),
        );
        record(
            &mut r,
            "router.get_service",
            kong.router().get_service().map(entity),
        );
        let subsystem = kong.nginx().get_subsystem().map(Value::from);
        record(&mut r, "nginx.get_subsystem", subsystem);
        // Not allowed in access (Kong: header_filter and later).
        let status = kong.response().get_status().map(Value::from);
        record(&mut r, "response.get_status in access", status);

        *state = Some(encode(r));
        Ok(Flow::Continue)
    }

    fn header_filter(&self, kong: &mut dyn Pdk, state: &mut Option<Vec<u8>>) -> Result<()> {
        let mut r = Map::new();
        let resp = kong.response();
        record(
            &mut r,
            "response.get_status",
            resp.get_status().map(Value::from),
        );
        let content_type = resp.get_header("content-type").map(bytes);
        record(&mut r, "response.get_header content-type", content_type);
        let status = kong.service_response().get_status().map(|s| json!(s));
        record(&mut r, "service.response.get_status", status);
        let content_type = kong
            .service_response()
            .get_header("content-type")
            .map(bytes);
        record(
            &mut r,
            "service.response.get_header content-type",
            content_type,
        );
        // Not allowed here (Kong: before the content phase only).
        let body = kong.request().get_raw_body().map(bytes);
        record(&mut r, "request.get_raw_body in header_filter", body);
        let report = encode(r);
        if let Some(access) = state.take() {
            kong.response().set_header("x-probe-access", &access)?;
        }
        kong.response().set_header("x-probe-header-filter", &report)
    }

    fn log(&self, kong: &mut dyn Pdk, _state: &mut Option<Vec<u8>>) -> Result<()> {
        let path = kong.request().get_path()?;
        kong.log()
            .warn(&format!("pdk-probe log line for {}", escape(&path)))
    }
}
