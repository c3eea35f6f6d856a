//! Fuzz targets that reach the bridge itself, not only the plugins: what
//! crosses between Kong's Lua side and Rust, in a real LuaJIT state with the
//! module built exactly as `export_plugins!` builds it.
//!
//! - `bridge_conf`: an arbitrary Lua `conf` table (nested records, Kong's
//!   `null`, the keys Kong adds at run time, arrays, wrong types, cycles)
//!   into a config type with optional, nested and `deny_unknown_fields`
//!   parts, through `factory.new` and `factory.validate`: never a panic or a
//!   Lua error, `validate` and `new` always agree, and an accepted conf
//!   reads back what the table held.
//! - `bridge_writes`: a phase performing an arbitrary sequence of writes
//!   (any bytes as names and values) returns them as the action buffer;
//!   the glue's applier (`kong_rs/actions.lua`, generated from the module's
//!   `ops`) must perform exactly those calls, in order, bytes unchanged.
//! - `bridge_dispatch`: phase functions called with hostile arguments
//!   (ids that are not live, not integers, NaN, huge, strings, tables;
//!   bodies of every type): a Lua error or a result, never a crash, and a
//!   live instance still answers afterwards.

use crate::reached::hit;
use kong_rs::{Flow, ModuleBuilder, Pdk, Plugin, Result};
use mlua::{Function, Lua, Table, Value as LuaValue};
use schemars::JsonSchema;
use serde::Deserialize;
use std::cell::RefCell;

/// A nested record.
#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Inner {
    /// A required integer of the nested record.
    pub limit: i64,
    /// An optional list of names in the nested record.
    #[serde(default)]
    pub names: Vec<String>,
}

/// The config type `bridge_conf` aims at.
#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FuzzConfig {
    /// A required string field of the fuzzed config.
    pub name: String,
    /// An optional boolean field of the fuzzed config.
    #[serde(default)]
    pub flag: Option<bool>,
    /// An optional nested record of the fuzzed config.
    #[serde(default)]
    pub inner: Option<Inner>,
}

/// Accepts any config it can deserialise; its access phase performs the
/// writes `WRITES` holds.
pub struct FuzzPlugin;

/// One write the phase makes: op (mod 6), header name, value.
type Write = (u8, Vec<u8>, Vec<u8>);

thread_local! {
    static WRITES: RefCell<Vec<Write>> = const { RefCell::new(Vec::new()) };
    static STATE: State = State::new();
}

#[kong_rs::plugin]
impl Plugin for FuzzPlugin {
    type Config = FuzzConfig;
    type State = ();
    const NAME: &'static str = "fuzz-bridge";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1;

    fn new(_config: FuzzConfig) -> Result<Self> {
        Ok(FuzzPlugin)
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        let writes = WRITES.with(|w| w.borrow().clone());
        for (op, name, value) in writes {
            // Names are text in the PDK's API; values are bytes.
            let name = String::from_utf8_lossy(&name).into_owned();
            match op % 6 {
                0 => kong.response().set_header(&name, &value)?,
                1 => kong.response().add_header(&name, &value)?,
                2 => kong.service_request().set_header(&name, &value)?,
                3 => kong.service_request().add_header(&name, &value)?,
                4 => kong.service_request().set_path(&value)?,
                _ => kong.service_request().set_raw_body(&value)?,
            }
        }
        Ok(Flow::Continue)
    }
}

/// The Lua state with the module and the glue's applier, built once.
struct State {
    lua: Lua,
    factory: Table,
    apply: Function,
    /// What the recording stub saw: `{ "kong path", name?, value? }`.
    calls: Table,
}

impl State {
    fn new() -> Self {
        let lua = Lua::new();
        // Interpreted only: LuaJIT's machine code holds references that
        // LeakSanitizer does not scan (it reported a 1 KB "leak" at exit of
        // a JIT-compiling run), and the interpreter is where Kong runs most
        // handlers anyway.
        lua.load("if jit then jit.off() jit.flush() end")
            .exec()
            .expect("jit.off");
        let mut builder = ModuleBuilder::new(&lua).expect("module builder");
        builder
            .add::<FuzzPlugin>()
            .expect("the fuzz plugin is valid");
        let module = builder.finish().expect("module");
        let factory: Table = module
            .get::<Table>("plugins")
            .and_then(|p| p.get("fuzz-bridge"))
            .expect("factory");
        // The glue's applier, as Kong loads it, driving a recording `kong`.
        let actions: Table = lua
            .load(include_str!("../../kong-plugin/kong_rs/actions.lua"))
            .set_name("=kong_rs.actions")
            .eval()
            .expect("kong_rs/actions.lua loads");
        let new_applier: Function = actions.get("new").expect("actions.new");
        let apply: Function = new_applier
            .call(module.get::<Table>("ops").expect("ops"))
            .expect("applier generated from the module's ops");
        let calls: Table = lua
            .load(
                r#"
                local calls = {}
                local function recorder(path)
                  return function(...) calls[#calls + 1] = { path, ... } end
                end
                kong = {
                  response = {}, service = { request = {} },
                  ctx = { plugin = {}, shared = {} },
                }
                for _, f in ipairs({ "set_header", "add_header", "clear_header", "set_status" }) do
                  kong.response[f] = recorder("response." .. f)
                end
                for _, f in ipairs({ "set_header", "add_header", "clear_header", "set_path",
                                     "set_raw_query", "set_method", "set_raw_body" }) do
                  kong.service.request[f] = recorder("service.request." .. f)
                end
                return calls
                "#,
            )
            .eval()
            .expect("recording kong");
        State {
            lua,
            factory,
            apply,
            calls,
        }
    }
}

/// Reads bytes off the input, `0` past its end.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.byte()) % (max + 1);
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const KEYS: &[&str] = &[
    "name",
    "flag",
    "inner",
    "limit",
    "names",
    "route_id",
    "service_id",
    "consumer_id",
    "plugin_instance_name",
    "__plugin_id",
    "__ws_id",
    "__key__",
    "__seq__",
    "other",
    "",
];

/// An arbitrary Lua value; tables nest up to `depth`.
fn lua_value(lua: &Lua, input: &mut Input, depth: usize, tables: &mut Vec<Table>) -> LuaValue {
    match input.byte() % if depth == 0 { 7 } else { 9 } {
        0 => LuaValue::Nil,
        1 => LuaValue::LightUserData(mlua::LightUserData(std::ptr::null_mut())), // ngx.null
        2 => LuaValue::Boolean(input.byte().is_multiple_of(2)),
        3 => LuaValue::Number(f64::from(input.byte()) - 10.0),
        4 => LuaValue::Number(match input.byte() % 5 {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => 1e300,
            3 => 0.5,
            _ => 9_007_199_254_740_993.0,
        }),
        5 | 6 => LuaValue::String(lua.create_string(input.bytes(12)).expect("string")),
        7 if !tables.is_empty() && input.byte().is_multiple_of(8) => {
            // A reference to a table already made: cycles and sharing.
            LuaValue::Table(tables[usize::from(input.byte()) % tables.len()].clone())
        }
        _ => {
            let table = lua.create_table().expect("table");
            tables.push(table.clone());
            for _ in 0..input.byte() % 5 {
                let value = lua_value(lua, input, depth - 1, tables);
                if input.byte().is_multiple_of(4) {
                    table.raw_push(value).expect("push");
                } else {
                    let key = KEYS[usize::from(input.byte()) % KEYS.len()];
                    table.raw_set(key, value).expect("set");
                }
            }
            LuaValue::Table(table)
        }
    }
}

/// `factory.new` and `factory.validate` on an arbitrary conf table.
pub fn bridge_conf(data: &[u8]) {
    STATE.with(|state| {
        let lua = &state.lua;
        let mut input = Input(data);
        let mut tables = Vec::new();
        let conf = lua.create_table().expect("conf");
        tables.push(conf.clone());
        while !input.is_empty() {
            let key = KEYS[usize::from(input.byte()) % KEYS.len()];
            let value = lua_value(lua, &mut input, 3, &mut tables);
            conf.raw_set(key, value).expect("set");
        }
        let new: Function = state.factory.get("new").expect("new");
        let validate: Function = state.factory.get("validate").expect("validate");
        let (instance, new_err): (Option<Table>, Option<String>) =
            new.call(&conf).expect("new never raises");
        let (valid, validate_err): (bool, Option<String>) =
            validate.call(&conf).expect("validate never raises");
        assert_eq!(instance.is_some(), valid, "new and validate disagree");
        assert_eq!(
            new_err, validate_err,
            "new and validate give different messages"
        );
        if instance.is_some() {
            // What was accepted is what the table held.
            if let LuaValue::String(name) = conf.raw_get::<LuaValue>("name").expect("name") {
                assert!(name.to_str().is_ok(), "a non-UTF-8 name was accepted");
            }
            hit(&crate::reached::BRIDGE_CONF_ACCEPTED);
        } else {
            assert!(
                new_err.is_some_and(|e| e.starts_with("config")),
                "refusal without a field"
            );
            hit(&crate::reached::BRIDGE_CONF_REFUSED);
        }
    });
}

/// Arbitrary writes from a phase, applied by the glue's applier.
pub fn bridge_writes(data: &[u8]) {
    let mut input = Input(data);
    let mut writes = Vec::new();
    while !input.is_empty() && writes.len() < 64 {
        let op = input.byte();
        let name = input.bytes(16);
        let value = input.bytes(64);
        writes.push((op, name, value));
    }
    WRITES.with(|w| *w.borrow_mut() = writes.clone());
    STATE.with(|state| {
        let lua = &state.lua;
        let conf = lua.create_table().expect("conf");
        conf.raw_set("name", "x").expect("name");
        let new: Function = state.factory.get("new").expect("new");
        let instance: Table = new.call::<Table>(&conf).expect("instance");
        let id: LuaValue = instance.get("id").expect("id");
        let access: Function = state.factory.get("access").expect("access");
        let results: mlua::MultiValue = access.call(id).expect("dispatch never raises");
        let mut results = results.into_iter();
        let actions = results.next();
        let status = results.next();
        assert!(
            status.is_none(),
            "the phase did not simply continue: {status:?}"
        );
        // What Kong's kong.* functions must receive: the bytes as written
        // (Kong's own normalisation, "" to " ", happens inside them).
        let expected: Vec<(String, Option<Vec<u8>>, Vec<u8>)> = writes
            .iter()
            .map(|(op, name, value)| {
                let name = String::from_utf8_lossy(name).into_owned().into_bytes();
                let value = value.clone();
                match op % 6 {
                    0 => ("response.set_header".into(), Some(name), value),
                    1 => ("response.add_header".into(), Some(name), value),
                    2 => ("service.request.set_header".into(), Some(name), value),
                    3 => ("service.request.add_header".into(), Some(name), value),
                    4 => ("service.request.set_path".into(), None, value),
                    _ => ("service.request.set_raw_body".into(), None, value),
                }
            })
            .collect();
        state.calls.clear().expect("clear");
        match actions {
            Some(LuaValue::String(buffer)) => {
                state
                    .apply
                    .call::<()>(buffer)
                    .expect("the applier performs the buffer");
            }
            None | Some(LuaValue::Nil) => {}
            other => panic!("unexpected action buffer {other:?}"),
        }
        let mut seen = Vec::new();
        for call in state.calls.sequence_values::<Table>() {
            let call = call.expect("call");
            let path: String = call.get(1).expect("path");
            let a: mlua::LuaString = call.get(2).expect("first argument");
            let b: Option<mlua::LuaString> = call.get(3).expect("second argument");
            seen.push(match b {
                Some(value) => (path, Some(a.as_bytes().to_vec()), value.as_bytes().to_vec()),
                None => (path, None, a.as_bytes().to_vec()),
            });
        }
        assert_eq!(
            seen, expected,
            "the applier did not perform the writes as made"
        );
        hit(&crate::reached::BRIDGE_WRITES_APPLIED);
    });
}

/// Phase functions called with hostile arguments.
pub fn bridge_dispatch(data: &[u8]) {
    STATE.with(|state| {
        let lua = &state.lua;
        WRITES.with(|w| w.borrow_mut().clear());
        let conf = lua.create_table().expect("conf");
        conf.raw_set("name", "x").expect("name");
        let new: Function = state.factory.get("new").expect("new");
        let instance: Table = new.call::<Table>(&conf).expect("instance");
        let live: LuaValue = instance.get("id").expect("id");
        let live_number = number(&live).expect("ids are numbers");
        let access: Function = state.factory.get("access").expect("access");
        let mut input = Input(data);
        let mut tables = Vec::new();
        for _ in 0..32 {
            if input.is_empty() {
                break;
            }
            let id = match input.byte() % 4 {
                0 => live.clone(),
                1 => LuaValue::Number(live_number + f64::from(input.byte()) - 128.0),
                _ => lua_value(lua, &mut input, 2, &mut tables),
            };
            let body = lua_value(lua, &mut input, 1, &mut tables);
            let plain_body = matches!(body, LuaValue::Nil | LuaValue::String(_));
            // A refusal comes back as a failed phase, { nil, false, message }
            // (the sync phases never raise), or, on the mlua path, raised.
            let refused = match access.call::<LuaValue>((id.clone(), body)) {
                Ok(LuaValue::Table(failed)) => {
                    failed.raw_get::<LuaValue>(2).expect("status") == LuaValue::Boolean(false)
                }
                Ok(_) => false,
                Err(_) => true,
            };
            match refused {
                false => hit(&crate::reached::BRIDGE_DISPATCH_RAN),
                true => {
                    let is_live = number(&id) == Some(live_number);
                    assert!(!(is_live && plain_body), "the live instance was refused");
                    hit(&crate::reached::BRIDGE_DISPATCH_REFUSED);
                }
            }
        }
        // The live instance still answers.
        access
            .call::<mlua::MultiValue>(live)
            .expect("the live instance answers");
        drop(instance);
    });
}

fn number(value: &LuaValue) -> Option<f64> {
    match value {
        LuaValue::Number(n) => Some(*n),
        LuaValue::Integer(n) => Some(*n as f64),
        _ => None,
    }
}
