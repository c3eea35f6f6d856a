//! The bridge in a real Lua state (the system LuaJIT), without nginx: module
//! table, phase dispatch, deferred exits, errors and panics, per-request state.

use kong_rs::{Flow, ModuleBuilder, Pdk, Phase, Plugin, Result, Value};
use mlua::{Lua, Table};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct CounterConfig {
    /// What to do in access: "continue", "exit", "err", "panic" or "lua_error".
    action: String,
    /// Unused; optional, to test how Kong's `null` for "not set" is read.
    #[serde(default)]
    #[allow(dead_code)]
    labels: Vec<String>,
}

/// Counts the phases of a request in its state and reports it in log.
struct Counter {
    action: String,
}

#[derive(Default)]
struct Seen {
    phases: Vec<&'static str>,
}

#[kong_rs::plugin]
impl Plugin for Counter {
    type Config = CounterConfig;
    type State = Seen;
    const NAME: &'static str = "counter";
    const VERSION: &'static str = "1.2.3";
    const PRIORITY: i32 = 42;

    fn new(config: CounterConfig) -> Result<Self> {
        Ok(Counter {
            action: config.action,
        })
    }

    // Declared out of Kong's order on purpose: PHASES must still be ordered.
    fn log(&self, kong: &mut dyn Pdk, state: &mut Seen) -> Result<()> {
        state.phases.push("log");
        let seen = state.phases.join(",");
        kong.ctx().shared_set("seen", Value::from(seen.as_str()))
    }

    fn access(&self, kong: &mut dyn Pdk, state: &mut Seen) -> Result<Flow> {
        state.phases.push("access");
        match self.action.as_str() {
            "exit" => Ok(Flow::Exit(
                kong_rs::Exit::new(418)
                    .body("teapot")
                    .header("x-why", "tea"),
            )),
            "err" => Err("access refused on purpose".into()),
            "panic" => panic!("boom"),
            "lua_error" => kong.response().get_status().map(|_| Flow::Continue),
            _ => {
                let host = kong.request().get_header("host")?.unwrap_or_default();
                kong.service_request().set_header("x-host-seen", &host)?;
                Ok(Flow::Continue)
            }
        }
    }

    fn header_filter(&self, _kong: &mut dyn Pdk, state: &mut Seen) -> Result<()> {
        state.phases.push("header_filter");
        Ok(())
    }
}

const STUB: &str = r#"
    local upstream = {}
    kong = {
      request = { get_header = function(name) return ({ host = "h\255st" })[name] end },
      response = {
        get_status = function()
          error("code must be a number between 100 and 599")
        end,
      },
      service = { request = { set_header = function(k, v) upstream[k] = v end } },
      ctx = { plugin = {}, shared = {} },
    }
    return upstream
"#;

fn module(lua: &Lua) -> Table {
    let mut builder = ModuleBuilder::new(lua).expect("builder");
    builder.add::<Counter>().expect("add");
    builder.finish().expect("module")
}

fn factory(lua: &Lua) -> Table {
    let plugins: Table = module(lua).get("plugins").expect("plugins");
    plugins.get("counter").expect("counter factory")
}

fn instance(lua: &Lua, factory: &Table, action: &str) -> mlua::Value {
    let conf = lua.create_table().expect("conf");
    conf.set("action", action).expect("set");
    let new: mlua::Function = factory.get("new").expect("new");
    new.call(conf).expect("instance")
}

/// Runs phase `name` of `instance` the way the glue does:
/// `factory[name](instance.id)`, whose one result the glue reads as
/// (writes, status, body, headers): nil is nothing, a string the writes
/// alone, a table those four in order.
fn run(factory: &Table, instance: &mlua::Value, name: &str) -> Vec<mlua::Value> {
    let ud: mlua::Value = instance
        .as_table()
        .expect("instance table")
        .get("id")
        .expect("id");
    let phase: mlua::Function = factory.get(name).expect("phase function");
    let result: mlua::Value = phase.call(ud).expect("dispatch never raises");
    match result {
        mlua::Value::Nil => Vec::new(),
        mlua::Value::Table(values) => {
            let mut values: Vec<mlua::Value> =
                (1..=4).map(|i| values.raw_get(i).expect("value")).collect();
            while values.last() == Some(&mlua::Value::Nil) {
                values.pop();
            }
            values
        }
        writes => vec![writes],
    }
}

fn access(lua: &Lua, factory: &Table, action: &str) -> Vec<mlua::Value> {
    let instance = instance(lua, factory, action);
    run(factory, &instance, "access")
}

#[test]
fn the_factory_describes_the_plugin() {
    let lua = Lua::new();
    let factory = factory(&lua);
    assert_eq!(factory.get::<String>("name").unwrap(), "counter");
    assert_eq!(factory.get::<String>("version").unwrap(), "1.2.3");
    assert_eq!(factory.get::<i64>("priority").unwrap(), 42);
    let phases: Vec<String> = factory.get("phases").unwrap();
    assert_eq!(phases, ["access", "header_filter", "log"]);
    assert_eq!(
        Counter::PHASES,
        &[Phase::Access, Phase::HeaderFilter, Phase::Log]
    );
    let schema: Table = factory.get("schema").unwrap();
    assert_eq!(schema.get::<String>("type").unwrap(), "record");
}

#[test]
fn writes_are_deferred_to_one_buffer_with_bytes_unchanged() {
    let lua = Lua::new();
    let upstream: Table = lua.load(STUB).eval().unwrap();
    let values = access(&lua, &factory(&lua), "continue");
    assert_eq!(values.len(), 1, "only the pending writes come back");
    let actions = values[0].as_string().expect("action buffer");
    // op 5 (service.request.set_header), name, value: as kong_rs/actions.lua reads it.
    let mut expected = vec![5u8];
    expected.extend_from_slice(&11u32.to_le_bytes());
    expected.extend_from_slice(b"x-host-seen");
    expected.extend_from_slice(&4u32.to_le_bytes());
    expected.extend_from_slice(b"h\xffst");
    assert_eq!(&*actions.as_bytes(), expected.as_slice());
    assert!(
        upstream
            .get::<Option<String>>("x-host-seen")
            .unwrap()
            .is_none(),
        "not applied by Rust"
    );
}

#[test]
fn an_exit_is_returned_for_the_lua_side_to_perform() {
    let lua = Lua::new();
    lua.load(STUB).exec().unwrap();
    let values = access(&lua, &factory(&lua), "exit");
    assert_eq!(values[0], mlua::Value::Nil, "no pending writes");
    assert_eq!(values[1].as_i64(), Some(418));
    assert_eq!(values[2].as_string().unwrap().to_str().unwrap(), "teapot");
    let headers = values[3].as_table().unwrap();
    assert_eq!(headers.get::<String>("x-why").unwrap(), "tea");
}

#[test]
fn err_panic_and_lua_errors_come_back_as_false_and_a_message() {
    let lua = Lua::new();
    lua.load(STUB).exec().unwrap();
    let factory = factory(&lua);
    for (action, expected) in [
        ("err", "access refused on purpose"),
        ("panic", "panicked: boom"),
        ("lua_error", "code must be a number between 100 and 599"),
    ] {
        let values = access(&lua, &factory, action);
        assert_eq!(values[0], mlua::Value::Nil, "{action}: writes dropped");
        assert_eq!(values[1], mlua::Value::Boolean(false), "{action}");
        let message = values[2].as_string().unwrap().to_str().unwrap().to_string();
        assert!(message.contains(expected), "{action}: {message}");
    }
}

#[test]
fn state_is_carried_across_the_phases_of_one_request_only() {
    let lua = Lua::new();
    lua.load(STUB).exec().unwrap();
    let factory = factory(&lua);
    let instance = instance(&lua, &factory, "continue");
    let run = |name: &str| {
        let _ = run(&factory, &instance, name);
    };
    run("access");
    run("header_filter");
    run("log");
    let seen: String = lua.load("return kong.ctx.shared.seen").eval().unwrap();
    assert_eq!(seen, "access,header_filter,log");

    // A new request: Kong gives it a new kong.ctx.plugin table.
    lua.load("kong.ctx.plugin = {}").exec().unwrap();
    run("log");
    let seen: String = lua.load("return kong.ctx.shared.seen").eval().unwrap();
    assert_eq!(seen, "log");
}

#[test]
fn constructor_counts_and_drops_are_visible() {
    let lua = Lua::new();
    let factory = factory(&lua);
    let stats: mlua::Function = factory.get("stats").unwrap();
    let instance = instance(&lua, &factory, "continue");
    let s: Table = stats.call(()).unwrap();
    assert_eq!(
        (
            s.get::<u64>("built").unwrap(),
            s.get::<u64>("live").unwrap()
        ),
        (1, 1)
    );
    drop(instance);
    lua.gc_collect().unwrap();
    lua.gc_collect().unwrap();
    let s: Table = stats.call(()).unwrap();
    assert_eq!(
        (
            s.get::<u64>("built").unwrap(),
            s.get::<u64>("live").unwrap()
        ),
        (1, 0)
    );
}

#[test]
fn invalid_configs_are_refused_with_the_field_named() {
    let lua = Lua::new();
    let factory = factory(&lua);
    let validate: mlua::Function = factory.get("validate").unwrap();
    let conf = lua.create_table().unwrap();
    conf.set("action", 5).unwrap();
    let (ok, err): (bool, String) = validate.call(conf).unwrap();
    assert!(!ok);
    assert!(err.starts_with("config.action: invalid type"), "{err}");
}

#[test]
fn null_fields_read_as_not_set() {
    // Kong stores a field that is not set as null (ngx.null, a NULL light
    // userdata): an optional field then takes its default, and a required
    // one is reported missing.
    let lua = Lua::new();
    let factory = factory(&lua);
    let validate: mlua::Function = factory.get("validate").unwrap();
    let conf = lua.create_table().unwrap();
    conf.set("action", "continue").unwrap();
    conf.set("labels", mlua::Value::NULL).unwrap();
    let (ok, err): (bool, Option<String>) = validate.call(&conf).unwrap();
    assert!(ok, "{err:?}");
    conf.set("action", mlua::Value::NULL).unwrap();
    let (ok, err): (bool, String) = validate.call(&conf).unwrap();
    assert!(!ok);
    assert!(err.contains("missing field `action`"), "{err}");
    // an array keeps its null elements (and `labels` refuses them)
    let labels = lua.create_sequence_from([mlua::Value::NULL]).unwrap();
    conf.set("action", "continue").unwrap();
    conf.set("labels", labels).unwrap();
    let (ok, err): (bool, String) = validate.call(&conf).unwrap();
    assert!(!ok);
    assert!(err.starts_with("config.labels"), "{err}");
}

#[test]
fn the_dump_is_json_and_duplicate_names_are_refused() {
    let lua = Lua::new();
    let dump: mlua::Function = module(&lua).get("dump").unwrap();
    let json: String = dump.call(()).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0]["name"], "counter");
    assert_eq!(
        parsed[0]["phases"],
        serde_json::json!(["access", "header_filter", "log"])
    );

    let mut builder = ModuleBuilder::new(&lua).unwrap();
    builder.add::<Counter>().unwrap();
    let err = builder.add::<Counter>().err().expect("second add refused");
    assert!(err.to_string().contains("exported twice"));
}

#[test]
fn a_stale_or_forged_instance_id_is_an_error_not_another_instance() {
    let lua = Lua::new();
    lua.load(STUB).exec().unwrap();
    let factory = factory(&lua);
    let instance = instance(&lua, &factory, "continue");
    let id: i64 = instance.as_table().unwrap().get("id").unwrap();
    let access: mlua::Function = factory.get("access").unwrap();
    drop(instance);
    lua.gc_collect().unwrap();
    lua.gc_collect().unwrap();
    // Ids are never reused: the next instance gets a new one.
    let next = self::instance(&lua, &factory, "continue");
    let next_id: i64 = next.as_table().unwrap().get("id").unwrap();
    assert_ne!(id, next_id);
    for bad in [id, 999_999, -1] {
        // Refused as a failed phase ({ nil, false, message }), not raised:
        // the sync phases are plain C functions that never raise.
        let failed: mlua::Table = access.call(bad).expect("a failure is a value");
        assert_eq!(failed.get::<Option<bool>>(2).unwrap(), Some(false));
        let message: String = failed.get(3).unwrap();
        assert!(message.contains("no live counter instance"), "{message}");
    }
    assert!(access.call::<mlua::MultiValue>(next_id).is_ok());
}

/// A config type that refuses unknown fields.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StrictConfig {
    /// The only field this plugin has.
    #[allow(dead_code)]
    name: String,
}

struct Strict;

#[kong_rs::plugin]
impl Plugin for Strict {
    type Config = StrictConfig;
    type State = ();
    const NAME: &'static str = "strict";
    const VERSION: &'static str = "1.0.0";
    const PRIORITY: i32 = 1;

    fn new(_config: StrictConfig) -> Result<Self> {
        Ok(Strict)
    }
}

#[test]
fn keys_kong_adds_to_conf_at_run_time_do_not_break_deny_unknown_fields() {
    let lua = Lua::new();
    let mut builder = ModuleBuilder::new(&lua).unwrap();
    builder.add::<Strict>().unwrap();
    let plugins: Table = builder.finish().unwrap().get("plugins").unwrap();
    let factory: Table = plugins.get("strict").unwrap();
    let new: mlua::Function = factory.get("new").unwrap();
    // What kong/runloop/plugins_iterator.lua adds to every conf.
    let conf: Table = lua
        .load(
            r#"return { name = "x", route_id = "r", service_id = "s", consumer_id = "c",
                        plugin_instance_name = "p", __plugin_id = "id", __ws_id = "ws",
                        __key__ = "plugins:strict:r:s:c::ws", __seq__ = 7 }"#,
        )
        .eval()
        .unwrap();
    let (instance, err): (Option<Table>, Option<String>) = new.call(&conf).unwrap();
    assert!(instance.is_some(), "{err:?}");
    // The conf table Kong owns is not changed.
    assert_eq!(conf.get::<i64>("__seq__").unwrap(), 7);
    // A key Kong does not add is still refused, by name.
    conf.set("colour", "red").unwrap();
    let (instance, err): (Option<Table>, Option<String>) = new.call(&conf).unwrap();
    assert!(instance.is_none());
    assert!(err.unwrap().contains("unknown field `colour`"));
}

#[test]
fn a_conf_reusing_tables_or_holding_a_cycle_is_refused_quickly() {
    // Found by the bridge_conf fuzz target: copying a conf walked every path
    // through shared tables (2^depth work) and a cycle 64 levels deep.
    let lua = Lua::new();
    let factory = factory(&lua);
    let new: mlua::Function = factory.get("new").unwrap();
    let conf: Table = lua
        .load(
            r#"
            local conf = { action = "continue" }
            local t = {}
            for _ = 1, 40 do t = { a = t, b = t } end
            conf.labels = t
            local cycle = {}
            cycle.self, cycle.again = cycle, cycle
            conf.cycle = cycle
            return conf
            "#,
        )
        .eval()
        .unwrap();
    let started = std::time::Instant::now();
    let (instance, err): (Option<Table>, Option<String>) = new.call(&conf).unwrap();
    assert!(instance.is_none());
    assert!(err.unwrap().starts_with("config"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// The sync phases are plain C functions; inside nginx they run on the
/// request's coroutine, not on the thread that loaded the module, and every
/// call into Lua (`kong.*`, `kong.ctx`) must run on that coroutine: it is
/// how lua-nginx-module finds the request. The stub answers by the thread
/// it runs on.
#[test]
fn calls_into_lua_run_on_the_coroutine_that_runs_the_phase() {
    let lua = Lua::new();
    let upstream: Table = lua
        .load(
            r#"
            local upstream = {}
            local function where()
              return coroutine.running() and "coroutine" or "main"
            end
            kong = {
              request = { get_header = function(name) return where() end },
              response = { get_status = function() error("raised on the " .. where()) end },
              service = { request = { set_header = function(k, v) upstream[k] = v end } },
              ctx = setmetatable({}, { __index = function(_, key)
                upstream["ctx." .. key] = where()
                local t = {}
                rawset(kong.ctx, key, t)
                return t
              end }),
            }
            return upstream
        "#,
        )
        .eval()
        .unwrap();
    let factory = factory(&lua);
    let in_coroutine: mlua::Function = lua
        .load(
            r#"
            return function(phase, id)
              return coroutine.wrap(function() return phase(id) end)()
            end
        "#,
        )
        .eval()
        .unwrap();
    let continuing = instance(&lua, &factory, "continue");
    let id: f64 = continuing.as_table().unwrap().get("id").unwrap();
    let access: mlua::Function = factory.get("access").unwrap();
    let writes: Option<mlua::LuaString> = in_coroutine.call((&access, id)).unwrap();
    let writes = writes.expect("the header write is handed back");
    assert!(
        writes.as_bytes().windows(9).any(|w| w == b"coroutine"),
        "kong.request.get_header ran on the main thread: {:?}",
        writes.to_string_lossy()
    );
    // The state lives in kong.ctx.plugin, resolved on the coroutine.
    assert_eq!(upstream.get::<String>("ctx.plugin").unwrap(), "coroutine");

    // A Lua error raised by a kong.* call on the coroutine is the phase's
    // failure, not an error unwinding through Rust.
    let failing = instance(&lua, &factory, "lua_error");
    let id: f64 = failing.as_table().unwrap().get("id").unwrap();
    let failed: Table = in_coroutine.call((&access, id)).unwrap();
    assert_eq!(failed.get::<Option<bool>>(2).unwrap(), Some(false));
    let message: String = failed.get(3).unwrap();
    assert!(message.contains("raised on the coroutine"), "{message}");
}
