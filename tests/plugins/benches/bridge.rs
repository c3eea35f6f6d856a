//! Rust-side costs of the bridge, with criterion, in a LuaJIT state (the
//! system LuaJIT; no nginx): building an instance from a conf table, the
//! instance cache hit and dispatch, per-request state, and each bundled
//! plugin's logic against the PDK mock.
//!
//! `cargo bench -p kong-rs-test-plugins --bench bridge`
//! (in-worker figures: benches/inworker/run; end to end: benches/e2e/run).

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use kong_rs::plugins::{FileLog, FileLogConfig, Hello, HelloConfig};
use kong_rs::{Flow, MockPdk, ModuleBuilder, Pdk, Plugin, Result};
use kong_rs_test_plugins::bench::{BenchHeaders, BenchJson, NoConfig};
use mlua::{Function, Lua, Table};
use schemars::JsonSchema;
use serde::Deserialize;

const VALID_JSON: &str = include_str!("../../../benches/data/valid.json");

/// A plugin with per-request state, to price state creation.
struct Stateful;

#[derive(Deserialize, JsonSchema)]
struct Empty {}

#[derive(Default)]
struct Counter {
    phases: u32,
}

#[kong_rs::plugin]
impl Plugin for Stateful {
    type Config = Empty;
    type State = Counter;
    const NAME: &'static str = "stateful";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1;

    fn new(_config: Empty) -> Result<Self> {
        Ok(Stateful)
    }

    fn access(&self, _kong: &mut dyn Pdk, state: &mut Counter) -> Result<Flow> {
        state.phases += 1;
        Ok(Flow::Continue)
    }
}

fn module(lua: &Lua) -> Table {
    let mut builder = ModuleBuilder::new(lua).expect("builder");
    builder.add::<Hello>().expect("rs-hello");
    builder.add::<FileLog>().expect("rs-file-log");
    builder.add::<Stateful>().expect("stateful");
    builder.finish().expect("module")
}

fn factory(module: &Table, name: &str) -> Table {
    module
        .get::<Table>("plugins")
        .and_then(|p| p.get(name))
        .expect("factory")
}

fn config_build(c: &mut Criterion) {
    let lua = Lua::new();
    let module = module(&lua);
    let new: Function = factory(&module, "rs-hello").get("new").expect("new");
    let conf: Table = lua
        .load(r#"return { message = "hello from rust", deny_status = 403 }"#)
        .eval()
        .expect("conf");
    c.bench_function(
        "config: rs-hello conf table -> instance (deserialise + new)",
        |b| b.iter(|| black_box(new.call::<mlua::Value>(&conf).expect("built"))),
    );
    let new: Function = factory(&module, "rs-file-log").get("new").expect("new");
    let conf: Table = lua
        .load(r#"return { path = "/tmp/kong-rs-bench.log", reopen = false }"#)
        .eval()
        .expect("conf");
    c.bench_function("config: rs-file-log conf table -> instance", |b| {
        b.iter(|| black_box(new.call::<mlua::Value>(&conf).expect("built")))
    });
}

fn cache_and_dispatch(c: &mut Criterion) {
    let lua = Lua::new();
    let module = module(&lua);
    lua.globals()
        .set("factory", factory(&module, "stateful"))
        .expect("global");
    // The glue's lookup: weak-keyed cache hit, then the phase function.
    let hit: Function = lua
        .load(
            r#"
            kong = { ctx = { plugin = {} } }
            local instances = setmetatable({}, { __mode = "k" })
            local conf = {}
            instances[conf] = factory.new(conf)
            return function(n)
              for _ = 1, n do
                local instance = instances[conf]
                factory.access(instance.id)
              end
            end
        "#,
        )
        .eval()
        .expect("chunk");
    c.bench_function(
        "dispatch: cache hit + access() with state kept in ctx.plugin",
        |b| b.iter(|| hit.call::<()>(1000).expect("ran")),
    );
    let fresh: Function = lua
        .load(
            r#"
            local instance = factory.new({})
            return function(n)
              for _ = 1, n do
                kong.ctx.plugin = {}
                factory.access(instance.id)
              end
            end
        "#,
        )
        .eval()
        .expect("chunk");
    c.bench_function("state: new request (fresh ctx.plugin) + access()", |b| {
        b.iter(|| fresh.call::<()>(1000).expect("ran"))
    });
}

fn plugin_logic(c: &mut Criterion) {
    let hello = Hello::new(HelloConfig {
        message: "hello".into(),
        deny_status: None,
    })
    .expect("valid");
    let mut kong = MockPdk::get("/");
    c.bench_function("logic: rs-hello access (mock)", |b| {
        b.iter(|| black_box(hello.access(&mut kong, &mut ()).expect("ok")))
    });

    let path = std::env::temp_dir().join("kong-rs-bench-file-log.log");
    let file_log = FileLog::new(FileLogConfig {
        path: path.to_string_lossy().into_owned(),
        reopen: false,
    })
    .expect("valid");
    let mut kong = MockPdk::get("/a/b?x=1");
    c.bench_function("logic: rs-file-log log, kept handle (mock)", |b| {
        b.iter(|| file_log.log(&mut kong, &mut ()).expect("ok"))
    });
    let _ = std::fs::remove_file(&path);

    let headers = BenchHeaders::new(NoConfig {}).expect("valid");
    let mut kong = MockPdk::get("/")
        .with_header("x-bench-a", "1")
        .with_header("x-bench-b", "2")
        .with_header("x-bench-c", "3");
    c.bench_function("logic: headers workload (mock)", |b| {
        b.iter(|| black_box(headers.access(&mut kong, &mut ()).expect("ok")))
    });

    let json = BenchJson::new(NoConfig {}).expect("valid");
    let mut kong = MockPdk::request("POST", "/", Some(VALID_JSON.as_bytes()));
    c.bench_function(
        "logic: json-validate workload, 2 KB valid body (mock)",
        |b| b.iter(|| black_box(json.access(&mut kong, &mut ()).expect("ok"))),
    );
}

criterion_group!(benches, config_build, cache_and_dispatch, plugin_logic);
criterion_main!(benches);
