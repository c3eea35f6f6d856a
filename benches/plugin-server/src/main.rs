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
//! It also serves `ps-io-probe` for the I/O benchmark (`benches/io/run`):
//! what `rs-io-probe`'s Redis modes do, done the plugin-server way. On the
//! access event it reads the `x-key` request header (a PDK round trip), does
//! the Redis `GET`, or the `INCR` + `EXPIRE` pipeline, itself over its own
//! TCP connection (one per server thread, i.e. per Kong connection, kept
//! open; RESP2 by the `redis-protocol` crate, as `kong_rs::redis`), then
//! asks for `kong.response.exit(200, value, {"x-io-probe": "done"})` (a
//! second round trip; `rs-io-probe` sets the same header). Its config:
//! `mode` (`exit`, `redis_get`, `redis_incr`), `host`, `port`, `timeout_ms`.
//! Bulk strings travel as JSON strings here (lossy for non-UTF-8 values,
//! which protobuf would carry as bytes); the benchmark's values are digits.
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

use redis_protocol::resp2::decode::decode as resp_decode;
use redis_protocol::resp2::encode::encode_borrowed as resp_encode;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};
use serde_json::{Value, json};

// The json-validate rules: the very file rs-bench-json uses, so the in-process
// and out-of-process plugins run the same Rust code.
#[path = "../../../tests/plugins/src/bench_json.rs"]
mod bench_json;
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Frames larger than this are refused (the json workload sends ~2 KB).
const MAX_FRAME: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Workload {
    Empty,
    Headers,
    Json,
    IoProbe(IoProbe),
}

/// What `ps-io-probe` does (`rs-io-probe`'s modes of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoMode {
    /// Answer at once, no Redis.
    Exit,
    /// `GET` the key.
    RedisGet,
    /// `INCR` + `EXPIRE key 60` in one pipeline.
    RedisIncr,
}

/// A `ps-io-probe` instance's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IoProbe {
    mode: IoMode,
    host: String,
    port: u16,
    timeout: Duration,
}

impl IoProbe {
    /// From the plugin configuration Kong sends with `start_instance` (a
    /// JSON object in a string).
    fn from_config(config: &str) -> Result<IoProbe, String> {
        let config: Value =
            serde_json::from_str(config).map_err(|e| format!("ps-io-probe: config: {e}"))?;
        let mode = match config.get("mode").and_then(Value::as_str) {
            Some("exit") => IoMode::Exit,
            Some("redis_get") => IoMode::RedisGet,
            Some("redis_incr") => IoMode::RedisIncr,
            other => return Err(format!("ps-io-probe: unknown mode {other:?}")),
        };
        let host = config.get("host").and_then(Value::as_str).unwrap_or("");
        let port = config.get("port").and_then(Value::as_u64).unwrap_or(0);
        let port = u16::try_from(port).unwrap_or(0);
        if mode != IoMode::Exit && (host.is_empty() || port == 0) {
            return Err("ps-io-probe: redis modes need host and port".into());
        }
        let timeout_ms = config
            .get("timeout_ms")
            .and_then(Value::as_u64)
            .unwrap_or(2000)
            .max(1);
        Ok(IoProbe {
            mode,
            host: host.to_owned(),
            port,
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

impl Workload {
    fn start(name: &str, config: &str) -> Result<Workload, String> {
        match name {
            "ps-bench-empty" => Ok(Workload::Empty),
            "ps-bench-headers" => Ok(Workload::Headers),
            "ps-bench-json" => Ok(Workload::Json),
            "ps-io-probe" => IoProbe::from_config(config).map(Workload::IoProbe),
            _ => Err(format!("no plugin named {name}")),
        }
    }
}

/// Plugin instances, one per plugin configuration (as in go-pdk).
#[derive(Default)]
struct Instances {
    next: AtomicU64,
    map: RwLock<HashMap<u64, Arc<Workload>>>,
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
    /// `ps-io-probe`'s Redis connection, opened on first use and kept for
    /// the life of this Kong connection (its thread).
    redis: Option<Redis>,
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
// Redis, for ps-io-probe: a blocking TCP connection, RESP2 by redis-protocol.

/// A Redis reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Nil,
    Int(i64),
    Data(Vec<u8>),
    Status(Vec<u8>),
    Error(String),
    Array(Vec<Reply>),
}

impl From<OwnedFrame> for Reply {
    fn from(frame: OwnedFrame) -> Reply {
        match frame {
            OwnedFrame::Null => Reply::Nil,
            OwnedFrame::Integer(n) => Reply::Int(n),
            OwnedFrame::BulkString(data) => Reply::Data(data),
            OwnedFrame::SimpleString(status) => Reply::Status(status),
            OwnedFrame::Error(message) => Reply::Error(message),
            OwnedFrame::Array(items) => Reply::Array(items.into_iter().map(Reply::from).collect()),
        }
    }
}

/// Appends one command (an array of bulk strings) in RESP2.
fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) -> Result<(), String> {
    let items: Vec<BorrowedFrame> = args
        .iter()
        .map(|arg| BorrowedFrame::BulkString(arg))
        .collect();
    let frame = BorrowedFrame::Array(&items);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    let written = resp_encode(&mut out[start..], &frame, false).map_err(|e| e.to_string())?;
    out.truncate(start + written);
    Ok(())
}

/// Decodes the replies at the start of `input`: `Some((replies, bytes used))`
/// once `count` are complete, `None` while more bytes are needed.
fn decode_replies(input: &[u8], count: usize) -> Result<Option<(Vec<Reply>, usize)>, String> {
    let mut replies = Vec::with_capacity(count);
    let mut used = 0;
    while replies.len() < count {
        match resp_decode(&input[used..]).map_err(|e| format!("not a RESP2 reply: {e}"))? {
            Some((frame, len)) => {
                replies.push(Reply::from(frame));
                used += len;
            }
            None => return Ok(None),
        }
    }
    Ok(Some((replies, used)))
}

struct Redis {
    host: String,
    port: u16,
    stream: TcpStream,
    output: Vec<u8>,
    input: Vec<u8>,
}

impl Redis {
    fn connect(probe: &IoProbe) -> io::Result<Redis> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in (probe.host.as_str(), probe.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, probe.timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(probe.timeout))?;
                    stream.set_write_timeout(Some(probe.timeout))?;
                    return Ok(Redis {
                        host: probe.host.clone(),
                        port: probe.port,
                        stream,
                        output: Vec::with_capacity(256),
                        input: Vec::with_capacity(4096),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends the commands in one write and reads their replies: one round trip.
    fn pipeline(&mut self, commands: &[&[&[u8]]]) -> Result<Vec<Reply>, String> {
        self.output.clear();
        for command in commands {
            encode_command(&mut self.output, command)?;
        }
        self.stream
            .write_all(&self.output)
            .map_err(|e| e.to_string())?;
        self.input.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((replies, used)) = decode_replies(&self.input, commands.len())? {
                if used != self.input.len() {
                    return Err("more bytes than replies".into());
                }
                return Ok(replies);
            }
            let n = self.stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Conn {
    /// Runs a pipeline on this thread's Redis connection (opened, or
    /// re-opened for another address, as needed). Any failure closes it, so
    /// a connection out of step is never reused; the error is a plain
    /// message, not an `io::Error`: the Kong connection is still in step.
    fn redis(&mut self, probe: &IoProbe, commands: &[&[&[u8]]]) -> Result<Vec<Reply>, Error> {
        let fits = |r: &Redis| r.host == probe.host && r.port == probe.port;
        if !self.redis.as_ref().is_some_and(fits) {
            self.redis = None;
            let redis = Redis::connect(probe)
                .map_err(|e| format!("redis {}:{}: connect: {e}", probe.host, probe.port))?;
            self.redis = Some(redis);
        }
        let Some(redis) = self.redis.as_mut() else {
            unreachable!("connected above")
        };
        match redis.pipeline(commands) {
            Ok(replies) => Ok(replies),
            Err(e) => {
                self.redis = None;
                Err(format!("redis {}:{}: {e}", probe.host, probe.port).into())
            }
        }
    }
}

/// The answer `rs-io-probe` gives for a reply; error replies fail the event
/// (Kong answers 500), as a failed command fails rs-io-probe's phase.
fn reply_body(reply: Reply) -> Result<String, Error> {
    Ok(match reply {
        Reply::Nil => "(nil)".to_owned(),
        Reply::Int(n) => n.to_string(),
        Reply::Data(data) | Reply::Status(data) => String::from_utf8_lossy(&data).into_owned(),
        Reply::Error(message) => return Err(format!("redis: {message}").into()),
        Reply::Array(_) => return Err("redis: unexpected array reply".into()),
    })
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

/// `ps-io-probe`: the `x-key` header (one round trip), Redis, the exit
/// (one round trip).
fn io_probe_access(conn: &mut Conn, probe: &IoProbe) -> Result<(), Error> {
    let key = conn.get_header("x-key")?.unwrap_or_default();
    let key = key.as_bytes();
    let body = match probe.mode {
        IoMode::Exit => "(nil)".to_owned(),
        IoMode::RedisGet => {
            let reply = conn.redis(probe, &[&[b"GET", key]])?.pop();
            reply_body(reply.unwrap_or(Reply::Nil))?
        }
        IoMode::RedisIncr => {
            let replies = conn.redis(probe, &[&[b"INCR", key], &[b"EXPIRE", key, b"60"]])?;
            reply_body(replies.into_iter().next().unwrap_or(Reply::Nil))?
        }
    };
    conn.pdk(
        "kong.response.exit",
        json!([200, body, {"x-io-probe": "done"}]),
    )?;
    Ok(())
}

fn run_event(conn: &mut Conn, workload: &Workload, event: &str) -> Result<(), Error> {
    match (workload, event) {
        (Workload::Empty, "access" | "log") => Ok(()),
        (Workload::Headers, "access") => headers_access(conn),
        (Workload::Json, "access") => json_access(conn),
        (Workload::IoProbe(probe), "access") => io_probe_access(conn, probe),
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
            let workload = instances.map.read().unwrap().get(&id).cloned();
            let result = match workload {
                Some(workload) => run_event(conn, &workload, event),
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
            let config = call.get("config").and_then(Value::as_str).unwrap_or("{}");
            let ret = match Workload::start(name, config) {
                Ok(workload) => {
                    let id = instances.next.fetch_add(1, Ordering::Relaxed) + 1;
                    instances
                        .map
                        .write()
                        .unwrap()
                        .insert(id, Arc::new(workload));
                    json!({ "seq": seq, "instance_id": id })
                }
                Err(error) => json!({ "seq": seq, "error": error }),
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
        redis: None,
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
                     serves ps-bench-empty, ps-bench-headers, ps-bench-json and ps-io-probe."
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
    fn commands_are_resp2_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"INCR", b"k"]).unwrap();
        encode_command(&mut out, &[b"EXPIRE", b"k", b"60"]).unwrap();
        assert_eq!(
            out,
            b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n60\r\n"
        );
    }

    #[test]
    fn replies_are_decoded_once_all_are_complete() {
        let input = b":7\r\n$5\r\nhello\r\n$-1\r\n-ERR no\r\n";
        for cut in 0..input.len() {
            assert_eq!(
                decode_replies(&input[..cut], 4).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        let (replies, used) = decode_replies(input, 4).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(
            replies,
            [
                Reply::Int(7),
                Reply::Data(b"hello".to_vec()),
                Reply::Nil,
                Reply::Error("ERR no".into())
            ]
        );
        assert!(decode_replies(b"?what\r\n", 1).is_err());
        assert_eq!(reply_body(Reply::Int(-3)).unwrap(), "-3");
        assert_eq!(reply_body(Reply::Nil).unwrap(), "(nil)");
        assert!(reply_body(Reply::Error("ERR no".into())).is_err());
    }

    #[test]
    fn io_probe_config() {
        let probe = IoProbe::from_config(
            r#"{"mode":"redis_incr","host":"127.0.0.1","port":6379,"socket":"/x","timeout_ms":500}"#,
        )
        .unwrap();
        assert_eq!(probe.mode, IoMode::RedisIncr);
        assert_eq!((probe.host.as_str(), probe.port), ("127.0.0.1", 6379));
        assert_eq!(probe.timeout, Duration::from_millis(500));
        assert!(IoProbe::from_config(r#"{"mode":"redis_get","host":"h"}"#).is_err());
        assert!(IoProbe::from_config(r#"{"mode":"redis_get","host":"h","port":70000}"#).is_err());
        assert!(IoProbe::from_config(r#"{"mode":"http","host":"h","port":1}"#).is_err());
        assert!(IoProbe::from_config(r#"{"mode":"exit"}"#).is_ok());
    }

    /// Kong's side of one event over a socket pair: answers get_header with
    /// `key`; returns the recorded exit's arguments and the return message.
    fn kong_event(kong: &mut UnixStream, instance: u64, key: &str) -> (Value, Value) {
        let mut out = Vec::new();
        let call =
            json!({"seq": 2, "cmd": "handle_event", "instance_id": instance, "event": "access"});
        push_frame(&mut out, &serde_json::to_vec(&call).unwrap());
        kong.write_all(&out).unwrap();
        let mut exit = Value::Null;
        let mut buf = Vec::new();
        loop {
            read_frame(kong, &mut buf).unwrap();
            if buf.is_empty() {
                break;
            }
            let method = String::from_utf8(buf.clone()).unwrap();
            read_frame(kong, &mut buf).unwrap();
            let args: Value = serde_json::from_slice(&buf).unwrap();
            let reply = match method.as_str() {
                "kong.request.get_header" => {
                    assert_eq!(args, json!(["x-key"]));
                    json!(key)
                }
                "kong.response.exit" => {
                    exit = args;
                    Value::Null
                }
                other => panic!("unexpected PDK call {other}"),
            };
            out.clear();
            push_frame(&mut out, &serde_json::to_vec(&reply).unwrap());
            kong.write_all(&out).unwrap();
        }
        read_frame(kong, &mut buf).unwrap();
        (exit, serde_json::from_slice(&buf).unwrap())
    }

    #[test]
    fn io_probe_answers_from_redis_over_the_protocol() {
        // a redis-server for the test (scripts/setup installs it)
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let Ok(mut child) = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
        else {
            eprintln!("redis-server not installed: skipped");
            return;
        };
        let (mut kong, server) = UnixStream::pair().unwrap();
        let instances = Arc::new(Instances::default());
        let thread = std::thread::spawn(move || serve(server, instances));
        let start = |kong: &mut UnixStream, mode: &str| -> u64 {
            let config = json!({"mode": mode, "host": "127.0.0.1", "port": port}).to_string();
            let call =
                json!({"seq": 1, "cmd": "start_instance", "name": "ps-io-probe", "config": config});
            let mut out = Vec::new();
            push_frame(&mut out, &serde_json::to_vec(&call).unwrap());
            kong.write_all(&out).unwrap();
            let mut buf = Vec::new();
            read_frame(kong, &mut buf).unwrap();
            let ret: Value = serde_json::from_slice(&buf).unwrap();
            ret["instance_id"].as_u64().unwrap()
        };
        let get = start(&mut kong, "redis_get");
        let incr = start(&mut kong, "redis_incr");
        // redis-server takes a moment to listen
        let mut ready = false;
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(ready, "redis-server did not start");
        let done = json!({"x-io-probe": "done"});
        let ok = json!({"seq": 2});
        assert_eq!(
            kong_event(&mut kong, get, "k"),
            (json!([200, "(nil)", done]), ok.clone())
        );
        assert_eq!(
            kong_event(&mut kong, incr, "k"),
            (json!([200, "1", done]), ok.clone())
        );
        assert_eq!(
            kong_event(&mut kong, incr, "k"),
            (json!([200, "2", done]), ok.clone())
        );
        assert_eq!(
            kong_event(&mut kong, get, "k"),
            (json!([200, "2", done]), ok.clone())
        );
        // an error reply (INCR of a list) fails the event, without an exit;
        // both connections stay usable
        let probe = IoProbe::from_config(
            &json!({"mode": "redis_get", "host": "127.0.0.1", "port": port}).to_string(),
        )
        .unwrap();
        let mut redis = Redis::connect(&probe).unwrap();
        assert_eq!(
            redis.pipeline(&[&[b"RPUSH", b"list", b"x"]]).unwrap(),
            [Reply::Int(1)]
        );
        let (exit, ret) = kong_event(&mut kong, incr, "list");
        assert_eq!(exit, Value::Null);
        assert!(
            ret["error"].as_str().unwrap().contains("WRONGTYPE"),
            "{ret}"
        );
        assert_eq!(
            kong_event(&mut kong, incr, "k"),
            (json!([200, "3", done]), ok)
        );
        drop(kong);
        thread.join().unwrap().unwrap();
        let _ = child.kill();
        let _ = child.wait();
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
