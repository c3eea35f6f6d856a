//! `kong-rs-plugin-server --socket PATH`
//!
//! **A model of the plugin-server mechanism, not Kong's plugin server.** It
//! serves the three kong-rs benchmark workloads (`empty`, `headers`, `json`,
//! the same logic as `src/plugins/bench.rs`) out of process, so that the
//! end-to-end benchmark (`benches/e2e/run`) can put a number on what Kong's
//! external plugin servers pay: a unix-socket round trip per event and one
//! per PDK call. The Lua side is `benches/plugins/ps_bench/rpc.lua`, used by
//! the `ps-bench-*` plugins.
//!
//! The message flow follows Kong's ProtoBuf:1 plugin servers
//! (`kong/runloop/plugin_servers/rpc/pb_rpc.lua` on the Kong side,
//! `server/pbserver.go` in go-pdk): Kong takes a connection from the
//! cosocket keepalive pool, sends one call; for an event the server runs the
//! handler, and every PDK call is the server sending a method frame and an
//! argument frame and waiting for Kong's reply frame; an empty frame ends the
//! event, then the return frame. Differences from Kong: JSON instead of
//! protobuf, one framing for everything, no plugin info/schema commands.
//!
//! # Protocol
//!
//! Every frame is a `u32` little-endian length followed by that many bytes
//! (as Kong's `lua_pack "I"` and go-pdk's `binary.LittleEndian`). Messages:
//!
//! ```text
//! Kong   -> server  {"seq":N,"cmd":"start_instance","name":"ps-bench-json","config":"{...}"}
//! server -> Kong    {"seq":N,"instance_id":I}
//!
//! Kong   -> server  {"seq":N,"cmd":"close_instance","instance_id":I}
//! server -> Kong    {"seq":N}
//!
//! Kong   -> server  {"seq":N,"cmd":"handle_event","instance_id":I,"event":"access"}
//!   repeated, once per PDK call:
//!   server -> Kong  "kong.request.get_header"      (method name, raw)
//!   server -> Kong  ["x-bench-a"]                  (arguments, a JSON array)
//!   Kong   -> server "1"                           (the result, JSON; null for nil)
//! server -> Kong    ""                             (empty frame: event done)
//! server -> Kong    {"seq":N}  or  {"seq":N,"error":"no plugin instance 7"}
//! ```
//!
//! One thread per connection (go-pdk: one goroutine per connection); Kong
//! keeps connections in its cosocket keepalive pool, so one connection
//! carries many events, one at a time.

use serde_json::{Value, json};

// The json-validate rules: the very file rs-bench-json uses, so the in-process
// and out-of-process plugins run the same Rust code.
#[path = "../../../tests/plugins/src/bench_json.rs"]
mod bench_json;
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Frames larger than this are refused (the json workload sends ~2 KB).
const MAX_FRAME: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Empty,
    Headers,
    Json,
}

impl Workload {
    fn by_name(name: &str) -> Option<Workload> {
        match name {
            "ps-bench-empty" => Some(Workload::Empty),
            "ps-bench-headers" => Some(Workload::Headers),
            "ps-bench-json" => Some(Workload::Json),
            _ => None,
        }
    }
}

/// Plugin instances, one per plugin configuration (as in go-pdk).
#[derive(Default)]
struct Instances {
    next: AtomicU64,
    map: RwLock<HashMap<u64, Workload>>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn read_frame(reader: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf)
}

fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One connection from a Kong worker.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Conn {
    /// A PDK call: method frame + argument frame out, reply frame in.
    fn pdk(&mut self, method: &str, args: Value) -> Result<Value, Error> {
        self.output.clear();
        push_frame(&mut self.output, method.as_bytes());
        let args = serde_json::to_vec(&args)?;
        push_frame(&mut self.output, &args);
        self.writer.write_all(&self.output)?;
        read_frame(&mut self.reader, &mut self.input)?;
        Ok(serde_json::from_slice(&self.input)?)
    }

    fn send(&mut self, frames: &[&[u8]]) -> io::Result<()> {
        self.output.clear();
        for frame in frames {
            push_frame(&mut self.output, frame);
        }
        self.writer.write_all(&self.output)
    }

    fn get_header(&mut self, name: &str) -> Result<Option<String>, Error> {
        match self.pdk("kong.request.get_header", json!([name]))? {
            Value::String(s) => Ok(Some(s)),
            Value::Null => Ok(None),
            other => Err(format!("get_header: unexpected reply {other}").into()),
        }
    }
}

// ---------------------------------------------------------------------------
// The workloads: the logic of src/plugins/bench.rs, PDK calls as round trips.

fn headers_access(conn: &mut Conn) -> Result<(), Error> {
    let a = conn.get_header("x-bench-a")?;
    let b = conn.get_header("x-bench-b")?;
    let c = conn.get_header("x-bench-c")?;
    let complete = a.is_some() && b.is_some() && c.is_some();
    let mut bc = b.unwrap_or_default();
    bc.push(',');
    bc.push_str(&c.unwrap_or_default());
    conn.pdk(
        "kong.service.request.set_header",
        json!(["x-upstream-a", a.unwrap_or_default()]),
    )?;
    conn.pdk(
        "kong.service.request.set_header",
        json!(["x-upstream-bc", bc]),
    )?;
    conn.pdk(
        "kong.response.set_header",
        json!(["x-bench", if complete { "ok" } else { "missing" }]),
    )?;
    Ok(())
}

fn violation(conn: &mut Conn, message: &str) -> Result<(), Error> {
    conn.pdk(
        "kong.response.exit",
        json!([400, format!("{{\"message\":\"{message}\"}}"), {"content-type": "application/json"}]),
    )?;
    Ok(())
}

fn json_access(conn: &mut Conn) -> Result<(), Error> {
    let body = match conn.pdk("kong.request.get_raw_body", json!([]))? {
        Value::String(body) => body,
        _ => return violation(conn, "body must be a JSON object"),
    };
    match bench_json::body_violation(body.as_bytes()) {
        Ok(None) => Ok(()),
        Ok(Some(message)) | Err(message) => violation(conn, message),
    }
}

fn run_event(conn: &mut Conn, workload: Workload, event: &str) -> Result<(), Error> {
    match (workload, event) {
        (Workload::Empty, "access" | "log") => Ok(()),
        (Workload::Headers, "access") => headers_access(conn),
        (Workload::Json, "access") => json_access(conn),
        _ => Err(format!("undefined method {event}").into()),
    }
}

// ---------------------------------------------------------------------------
// The server loop.

fn handle_call(conn: &mut Conn, instances: &Instances, call: &Value) -> Result<(), Error> {
    let seq = call.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let cmd = call.get("cmd").and_then(Value::as_str).unwrap_or("");
    match cmd {
        "handle_event" => {
            let id = call.get("instance_id").and_then(Value::as_u64).unwrap_or(0);
            let event = call.get("event").and_then(Value::as_str).unwrap_or("");
            let workload = instances.map.read().unwrap().get(&id).copied();
            let result = match workload {
                Some(workload) => run_event(conn, workload, event),
                None => Err(format!("no plugin instance {id}").into()),
            };
            let ret = match result {
                Ok(()) => json!({ "seq": seq }),
                // an I/O error mid-event leaves the stream out of step: drop it
                Err(e) if e.is::<io::Error>() => return Err(e),
                Err(e) => json!({ "seq": seq, "error": e.to_string() }),
            };
            conn.send(&[b"", &serde_json::to_vec(&ret)?])?;
        }
        "start_instance" => {
            let name = call.get("name").and_then(Value::as_str).unwrap_or("");
            let ret = match Workload::by_name(name) {
                Some(workload) => {
                    let id = instances.next.fetch_add(1, Ordering::Relaxed) + 1;
                    instances.map.write().unwrap().insert(id, workload);
                    json!({ "seq": seq, "instance_id": id })
                }
                None => json!({ "seq": seq, "error": format!("no plugin named {name}") }),
            };
            conn.send(&[&serde_json::to_vec(&ret)?])?;
        }
        "close_instance" => {
            let id = call.get("instance_id").and_then(Value::as_u64).unwrap_or(0);
            instances.map.write().unwrap().remove(&id);
            conn.send(&[&serde_json::to_vec(&json!({ "seq": seq }))?])?;
        }
        other => {
            let ret = json!({ "seq": seq, "error": format!("unknown command {other:?}") });
            conn.send(&[&serde_json::to_vec(&ret)?])?;
        }
    }
    Ok(())
}

fn serve(stream: UnixStream, instances: Arc<Instances>) -> Result<(), Error> {
    let mut conn = Conn {
        reader: BufReader::with_capacity(64 * 1024, stream.try_clone()?),
        writer: stream,
        input: Vec::with_capacity(4096),
        output: Vec::with_capacity(4096),
    };
    let mut call_buf = Vec::with_capacity(256);
    loop {
        match read_frame(&mut conn.reader, &mut call_buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let call: Value = serde_json::from_slice(&call_buf)?;
        handle_call(&mut conn, &instances, &call)?;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut socket = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => socket = args.next(),
            "-h" | "--help" => {
                println!(
                    "usage: kong-rs-plugin-server --socket PATH\n\
                     A model of Kong's plugin-server mechanism (not Kong's plugin server):\n\
                     serves ps-bench-empty, ps-bench-headers and ps-bench-json."
                );
                return;
            }
            other => {
                eprintln!("kong-rs-plugin-server: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let Some(socket) = socket else {
        eprintln!("usage: kong-rs-plugin-server --socket PATH");
        std::process::exit(2);
    };
    // a stale socket from a previous run would make bind fail
    if std::fs::symlink_metadata(&socket).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        let _ = std::fs::remove_file(&socket);
    }
    let listener = match UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("kong-rs-plugin-server: cannot bind {socket}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "kong-rs-plugin-server (a model of the plugin-server mechanism) listening on {socket}"
    );
    let instances = Arc::new(Instances::default());
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let instances = Arc::clone(&instances);
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, instances) {
                        eprintln!("kong-rs-plugin-server: connection: {e}");
                    }
                });
            }
            Err(e) => eprintln!("kong-rs-plugin-server: accept: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = include_str!("../../data/valid.json");

    #[test]
    fn the_benchmark_document_passes_and_a_bad_one_names_its_rule() {
        let mut doc: Value = serde_json::from_str(VALID).unwrap();
        let body = serde_json::to_vec(&doc).unwrap();
        assert_eq!(bench_json::body_violation(&body), Ok(None));
        doc["plan"] = json!("gold");
        let body = serde_json::to_vec(&doc).unwrap();
        assert_eq!(
            bench_json::body_violation(&body),
            Ok(Some("plan must be free, pro or enterprise"))
        );
    }

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        push_frame(&mut out, b"abc");
        push_frame(&mut out, b"");
        let mut r = &out[..];
        let mut buf = Vec::new();
        read_frame(&mut r, &mut buf).unwrap();
        assert_eq!(buf, b"abc");
        read_frame(&mut r, &mut buf).unwrap();
        assert!(buf.is_empty());
    }
}
