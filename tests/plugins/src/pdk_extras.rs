//! `rs-pdk-extras` (tests only): `kong.client.authenticate`, whole consumer
//! and credential entities, `kong.log.serialize` and `ngx.shared` dicts
//! from Rust, driven by request headers, for spec/pdk (on the gateway and
//! on real Kong).
//!
//! - `X-Auth: {"consumer": {…}, "credential": {…}}` (JSON; either may be
//!   left out): access calls `authenticate(consumer, credential)`.
//! - `X-Ops: [{"op": "set", "key": "k", "value": "v", "ttl": 0.5}, …]`
//!   (JSON): access runs these shared dict operations, in order, on the
//!   configured `dict` (or the op's own `"dict"`): `get`, `set`, `add`,
//!   `incr` (`by`, `init`, `ttl`), `delete`; `ttl` in seconds.
//! - `X-Answer: 1`: access answers 200 with the report as its JSON body;
//!   otherwise the request goes on and header_filter sends the report
//!   base64-encoded in `X-Probe`.
//! - `X-Probe-Id: <id>`: the log phase stores `{"serialize": …,
//!   "authenticate": …, "consumer": …}` as JSON in the dict under
//!   `rs-pdk-extras:log:<id>` (60 s), for a later `get`.
//!
//! The report: `{"authenticate": "ok" | error, "consumer": entity | null,
//! "credential": …, "serialize": error, "ops": [result, …], "pid": n}`; an
//! op's result is `{"ok": value}` or `{"err": message}` (bytes as text,
//! lossily: the spec stores text).

use base64::Engine;
use kong_rs::pdk::Entity;
use kong_rs::{Exit, Flow, Pdk, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Configuration of `rs-pdk-extras`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct PdkExtrasConfig {
    /// The shared dict the operations use unless they name one.
    pub dict: String,
}

/// The probe.
#[derive(Debug)]
pub struct PdkExtras {
    dict: String,
}

fn text(bytes: Option<Vec<u8>>) -> Value {
    bytes.map_or(Value::Null, |b| {
        Value::String(String::from_utf8_lossy(&b).into_owned())
    })
}

fn outcome(result: Result<Value>) -> Value {
    match result {
        Ok(value) => json!({ "ok": value }),
        Err(e) => json!({ "err": e.to_string() }),
    }
}

fn entity(entity: Option<Entity>) -> Value {
    entity.map_or(
        Value::Null,
        |e| json!({ "id": e.id, "name": e.name, "fields": e.fields }),
    )
}

fn header_json(kong: &mut dyn Pdk, name: &str) -> Result<Option<Value>> {
    match kong.request().get_header(name)? {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| kong_rs::Error::msg(format!("{name}: {e}"))),
    }
}

fn ttl(op: &Value) -> Option<Duration> {
    op.get("ttl")
        .and_then(Value::as_f64)
        .map(Duration::from_secs_f64)
}

impl PdkExtras {
    fn run_op(&self, kong: &mut dyn Pdk, op: &Value) -> Result<Value> {
        let name = op.get("dict").and_then(Value::as_str).unwrap_or(&self.dict);
        let key = op
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .as_bytes();
        let value = op.get("value").and_then(Value::as_str).unwrap_or("");
        let dict = kong.shared_dict(name)?;
        match op.get("op").and_then(Value::as_str).unwrap_or("") {
            "get" => dict.get(key).map(text),
            "set" => dict
                .set(key, value.as_bytes(), ttl(op))
                .map(|()| json!(true)),
            "add" => dict.add(key, value.as_bytes(), ttl(op)).map(Value::from),
            "incr" => {
                let by = op.get("by").and_then(Value::as_i64).unwrap_or(1);
                let init = op.get("init").and_then(Value::as_i64);
                dict.incr(key, by, init, ttl(op)).map(Value::from)
            }
            "delete" => dict.delete(key).map(|()| json!(true)),
            other => Err(kong_rs::Error::msg(format!("unknown op {other:?}"))),
        }
    }
}

#[kong_rs::plugin]
impl Plugin for PdkExtras {
    type Config = PdkExtrasConfig;
    type State = Option<Vec<u8>>;
    const NAME: &'static str = "rs-pdk-extras";
    const VERSION: &'static str = "0.1.0";
    // Kong's key-auth's: runs before the plugins it authenticates for.
    const PRIORITY: i32 = 1250;

    fn new(config: PdkExtrasConfig) -> Result<Self> {
        Ok(PdkExtras { dict: config.dict })
    }

    fn access(&self, kong: &mut dyn Pdk, state: &mut Option<Vec<u8>>) -> Result<Flow> {
        let mut r = Map::new();
        if let Some(auth) = header_json(kong, "x-auth")? {
            let result = kong
                .client()
                .authenticate(auth.get("consumer"), auth.get("credential"));
            let result = result.map_or_else(|e| json!(e.to_string()), |()| json!("ok"));
            r.insert("authenticate".into(), result);
        }
        let consumer = kong.client().get_consumer().map(entity);
        r.insert("consumer".into(), outcome(consumer));
        let credential = kong.client().get_credential().map(entity);
        r.insert("credential".into(), outcome(credential));
        let serialize = kong.log().serialize().err().map(|e| e.to_string());
        r.insert("serialize".into(), json!(serialize));
        if let Some(Value::Array(ops)) = header_json(kong, "x-ops")? {
            let results: Vec<Value> = ops
                .iter()
                .map(|op| outcome(self.run_op(kong, op)))
                .collect();
            r.insert("ops".into(), Value::Array(results));
        }
        r.insert("pid".into(), json!(std::process::id()));
        let report = Value::Object(r).to_string();
        if kong.request().get_header("x-answer")?.is_some() {
            let exit = Exit::new(200)
                .body(report)
                .header("Content-Type", "application/json");
            return Ok(Flow::Exit(exit));
        }
        *state = Some(report.into_bytes());
        Ok(Flow::Continue)
    }

    fn header_filter(&self, kong: &mut dyn Pdk, state: &mut Option<Vec<u8>>) -> Result<()> {
        if let Some(report) = state.take() {
            let encoded = base64::engine::general_purpose::STANDARD.encode(report);
            kong.response().set_header("x-probe", encoded.as_bytes())?;
        }
        Ok(())
    }

    fn log(&self, kong: &mut dyn Pdk, _state: &mut Option<Vec<u8>>) -> Result<()> {
        let Some(id) = kong.request().get_header("x-probe-id")? else {
            return Ok(());
        };
        let serialized = outcome(kong.log().serialize());
        let consumer = json!({"id": "00000000-0000-4000-8000-000000000000"});
        let authenticate = kong
            .client()
            .authenticate(Some(&consumer), None)
            .err()
            .map(|e| e.to_string());
        let consumer = outcome(kong.client().get_consumer().map(entity));
        let entry = json!({
            "serialize": serialized,
            "authenticate": authenticate,
            "consumer": consumer,
        });
        let mut key = b"rs-pdk-extras:log:".to_vec();
        key.extend_from_slice(&id);
        kong.shared_dict(&self.dict)?.set(
            &key,
            entry.to_string().as_bytes(),
            Some(Duration::from_secs(60)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kong_rs::{MockPdk, run_request};

    #[test]
    fn authenticates_counts_and_logs_against_the_mock() {
        let consumer =
            r#"{"consumer": {"id": "c1", "username": "alice"}, "credential": {"id": "k"}}"#;
        let ops = r#"[{"op": "incr", "key": "n", "init": 0}, {"op": "get", "key": "n"},
                      {"op": "get", "key": "x", "dict": "nope"}]"#;
        let mut kong = MockPdk::get("/")
            .with_shared_dict("test")
            .with_header("x-auth", consumer)
            .with_header("x-ops", ops)
            .with_header("x-probe-id", "1");
        let config = PdkExtrasConfig {
            dict: "test".into(),
        };
        assert_eq!(
            run_request::<PdkExtras>(config, &mut kong).unwrap(),
            Flow::Continue
        );
        let report = kong.response_header("x-probe").unwrap();
        let report = base64::engine::general_purpose::STANDARD
            .decode(report)
            .unwrap();
        let report: Value = serde_json::from_slice(&report).unwrap();
        assert_eq!(report["authenticate"], "ok");
        assert_eq!(report["consumer"]["ok"]["name"], "alice");
        assert_eq!(
            report["serialize"],
            "function cannot be called in access phase (only in: log)"
        );
        assert_eq!(report["ops"][0], json!({"ok": 1}));
        assert_eq!(report["ops"][1], json!({"ok": "1"}));
        assert!(report["ops"][2]["err"].as_str().unwrap().contains("nope"));

        let logged = kong
            .shared_dicts
            .value("test", b"rs-pdk-extras:log:1")
            .unwrap();
        let logged: Value = serde_json::from_slice(&logged).unwrap();
        assert_eq!(logged["serialize"]["ok"]["consumer"]["username"], "alice");
        assert_eq!(
            logged["authenticate"],
            "function cannot be called in log phase (only in: access)"
        );
    }
}
