//! The bridge between Kong's Lua side and a [`Plugin`]: the Lua table a
//! native module returns, one "factory" per plugin, and the phase dispatch.
//!
//! A factory is a plain Lua table:
//!
//! | field | what |
//! |---|---|
//! | `name`, `version`, `priority` | the plugin's constants |
//! | `phases` | the phases it implements, in Kong's order |
//! | `reads_request_body` | read the body before rewrite/access |
//! | `stream` | implements `preread`: may be enabled on stream routes |
//! | `schema` | the `config` record in Kong's schema DSL |
//! | `new(conf)` | instance (a table; `id` names the plugin), or `nil, err` |
//! | `validate(conf)` | `true`, or `nil, err` (the constructor's message) |
//! | `stats()` | `{ built = n, live = n, tasks = n }`: constructor calls, live instances, async phases in progress |
//! | `raw_phases` | the sync phases (but `body_filter`) are plain C functions that never raise |
//! | `<phase>(id[, chunk, eof])` | runs one phase of instance `id`, see below |
//!
//! A phase function (`factory.access(instance.id)`) returns one value: nil
//! when the phase continues with nothing to apply (the common case), the
//! pending writes (a string for `kong_rs.actions`, see `LuaPdk` in
//! src/pdk/lua.rs) to apply and continue, or a table `{ writes, status,
//! body, headers }` to exit (performed by the Lua side, since
//! `kong.response.exit` yields) / `{ nil, false, message }` when the plugin
//! failed (an `Err` or a panic; with `raw_phases`, also an unknown instance
//! id: such a phase never raises, see `raw_phase`). `factory.body_filter(instance.id, chunk,
//! eof)` returns nothing, or the writes then the replacement chunk (or
//! `false, message`), as several values. An async phase's function returns
//! what `kong_rs/io.lua` drives (src/io/driver.rs), then the phase's results
//! as several values.

use crate::error::Error;
use crate::io::driver::{self, LuaOutput, Timers};
use crate::io::task::Task;
use crate::pdk::lua::{LuaPdk, PdkCache};
use crate::plugin::{Flow, Phase, Plugin};
use crate::running::Running;
use crate::schema;
use bstr::BString;
use mlua::{AnyUserData, Lua, Table, UserData, Value as LuaValue, Variadic};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

/// The version of the interface between this module and the Lua glue
/// (`kong-plugin/kong_rs/*.lua`): the module table's shape, the phase
/// functions' arguments and results, the ops. The glue refuses a module
/// with another (`kong_rs/loader.lua`), so two rocks built on different
/// kong-rs versions fail loudly instead of half-working.
pub(crate) const ABI: u32 = 2;

/// Where a request's [`Plugin::State`] lives in `kong.ctx.plugin`.
const STATE_KEY: &str = "__kong_rs_state";

/// Builds the table a native module returns to `require`.
///
/// Normally used through [`export_plugins!`](crate::export_plugins).
pub struct ModuleBuilder<'lua> {
    lua: &'lua Lua,
    plugins: Table,
    descriptions: Vec<serde_json::Value>,
    cache: Rc<PdkCache>,
    timers: Timers,
    running: Rc<Running>,
    // Whether phases and `resume` are plain C functions (see
    // `raw_phases_possible`), with the task metatable of src/io/raw.rs.
    raw: Option<Table>,
}

impl<'lua> ModuleBuilder<'lua> {
    /// Starts an empty module in `lua`.
    ///
    /// # Errors
    /// When Lua cannot allocate the table.
    pub fn new(lua: &'lua Lua) -> mlua::Result<Self> {
        let running = Rc::new(Running::default());
        let raw = if raw_phases_possible(lua) {
            Some(crate::io::raw::task_metatable(lua)?)
        } else {
            None
        };
        Ok(ModuleBuilder {
            lua,
            plugins: lua.create_table()?,
            descriptions: Vec::new(),
            cache: Rc::new(PdkCache::new(lua, running.clone())),
            timers: Timers::new(lua, running.clone(), raw.is_some()),
            running,
            raw,
        })
    }

    /// Adds plugin `P` under `P::NAME`.
    ///
    /// # Errors
    /// When `P::Config` has no Kong schema equivalent, or `P::NAME` is taken.
    pub fn add<P: Plugin>(&mut self) -> mlua::Result<&mut Self> {
        if self.plugins.contains_key(P::NAME)? {
            return Err(mlua::Error::runtime(format!(
                "plugin {} is exported twice",
                P::NAME
            )));
        }
        let description = describe::<P>()
            .map_err(|e| mlua::Error::runtime(format!("plugin {}: {e}", P::NAME)))?;
        let factory = factory::<P>(
            self.lua,
            &self.cache,
            &self.running,
            &self.timers,
            self.raw.as_ref(),
            &description,
        )?;
        self.plugins.set(P::NAME, factory)?;
        self.descriptions.push(description);
        Ok(self)
    }

    /// The module table: `abi` (the glue interface version), `phase_rules`
    /// (per phase: `respond`, may it answer; `body`, is the request body
    /// read first), `plugins` (name → factory), `ops` (the write ops
    /// the phases return, `{ code, "kong.* path", args }`, from which
    /// `kong_rs/actions.lua` generates its applier), `dump()` (every plugin's
    /// description as JSON), `is_current(path)` (whether the file at `path`
    /// is the one this module was loaded from; nil when that cannot be
    /// told), `opens` (how many Lua states of this process opened this copy
    /// of the library, this one included) and `version`.
    ///
    /// # Errors
    /// When Lua cannot allocate.
    pub fn finish(self) -> mlua::Result<Table> {
        let module = self.lua.create_table()?;
        module.set("plugins", self.plugins)?;
        module.set("version", env!("CARGO_PKG_VERSION"))?;
        // The write ops, for kong_rs/actions.lua to generate its applier
        // from: { code, "kong path", "args" } in code order.
        let ops = self.lua.create_table()?;
        for (op, path, args) in crate::pdk::actions::OPS {
            let entry = self.lua.create_table()?;
            entry.raw_push(op as u8)?;
            entry.raw_push(path)?;
            entry.raw_push(args.name())?;
            ops.raw_push(entry)?;
        }
        module.set("ops", ops)?;
        // Where each phase may respond and which phases get the request
        // body: Kong's rules as the Rust side knows them, for the glue.
        let phases = self.lua.create_table()?;
        for phase in Phase::ALL {
            let rules = self.lua.create_table()?;
            rules.raw_set("respond", phase.can_respond())?;
            rules.raw_set("body", phase.reads_request_body())?;
            phases.raw_set(phase.name(), rules)?;
        }
        module.set("phase_rules", phases)?;
        // The operations a pending task asks for: { code, name } in code
        // order, matched by name against kong_rs/io.lua's performers.
        let io_ops = self.lua.create_table()?;
        for kind in crate::io::task::OpKind::ALL {
            let entry = self.lua.create_table()?;
            entry.raw_push(*kind as u8)?;
            entry.raw_push(kind.name())?;
            io_ops.raw_push(entry)?;
        }
        module.set("io_ops", io_ops)?;
        let resume = match &self.raw {
            Some(metatable) => owning_c_function(
                self.lua,
                crate::io::raw::RawResume {
                    lua: self.lua.weak(),
                    running: self.running.clone(),
                },
                crate::io::raw::resume,
                Some(metatable),
            )?,
            None => self.lua.create_function(driver::resume)?,
        };
        module.set("resume", resume)?;
        // The glue's function that runs jobs from timers (queues' senders).
        let timers = self.timers.clone();
        module.set(
            "set_timer_runner",
            self.lua.create_function(move |_, runner: mlua::Function| {
                timers.set_runner(runner);
                Ok(())
            })?,
        )?;
        module.set("abi", ABI)?;
        let dump = serde_json::to_string_pretty(&self.descriptions)
            .map_err(|e| mlua::Error::runtime(e.to_string()))?;
        module.set(
            "dump",
            self.lua.create_function(move |_, ()| Ok(dump.clone()))?,
        )?;
        // How many Lua states opened this copy of the library in this
        // process (the loader tells a newly loaded file from one an earlier
        // configuration already loaded).
        static OPENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let opens = OPENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        module.set("opens", opens)?;
        module.set(
            "is_current",
            self.lua
                .create_function(|_, path: String| Ok(crate::library::is_current(&path)))?,
        )?;
        Ok(module)
    }
}

/// What a plugin is, as JSON: name, version, priority, phases and the Kong
/// schema of its config (the role of go-pdk's `-dump`).
///
/// It also checks the rules Kong applies when it loads a plugin, so a
/// plugin Kong would refuse fails here, at `require` and in the `cargo
/// test` test `#[kong_rs::plugin]` generates: the generated schema must meet
/// Kong's metaschema (e.g. descriptions of 10 to 500 bytes), config fields
/// must not use the keys Kong adds to `conf` at run time, and `response`
/// cannot be combined with `header_filter` or `body_filter`.
///
/// # Errors
/// When `P::Config` has no Kong schema equivalent, or the plugin breaks one
/// of Kong's load-time rules (every problem is listed, one per line).
pub fn describe<P: Plugin>() -> crate::Result<serde_json::Value> {
    let phases: Vec<&str> = P::PHASES.iter().map(|p| p.name()).collect();
    let schema = schema::config_record::<P::Config>()?;
    let mut problems = crate::metaschema::check_config(&schema);
    if P::PHASES.contains(&Phase::Response)
        && (P::PHASES.contains(&Phase::HeaderFilter) || P::PHASES.contains(&Phase::BodyFilter))
    {
        problems.push(format!(
            "Plugin \"{}\" can't be loaded because it implements both `response` and \
             `header_filter` or `body_filter` methods (Kong's rule, kong/db/dao/plugins.lua)",
            P::NAME
        ));
    }
    for phase in P::ASYNC_PHASES {
        if !matches!(phase, Phase::Rewrite | Phase::Access | Phase::Preread)
            || !P::PHASES.contains(phase)
        {
            problems.push(format!(
                "Plugin \"{}\": phase {phase} cannot be async (only rewrite, access and \
                 preread may await nginx I/O; log shippers queue their entries)",
                P::NAME
            ));
        }
    }
    let parts: Vec<&str> = P::VERSION.split('.').collect();
    if parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        problems.push(format!(
            "Plugin \"{}\": VERSION {:?} does not follow the \"x.y.z\" format Kong requires",
            P::NAME,
            P::VERSION
        ));
    }
    if !problems.is_empty() {
        return Err(Error::msg(problems.join("\n")));
    }
    Ok(json!({
        "name": P::NAME,
        "version": P::VERSION,
        "priority": P::PRIORITY,
        "phases": phases,
        "async_phases": P::ASYNC_PHASES.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "reads_request_body": P::READS_REQUEST_BODY,
        "schema": schema,
    }))
}

/// Constructor calls and live instances of one plugin, for `stats()`.
#[derive(Default)]
struct Counters {
    built: Cell<u64>,
    live: Cell<u64>,
    // Async phases in progress (their futures alive).
    tasks: Cell<u64>,
}

/// A built plugin: what the weak-keyed cache on the Lua side holds per `conf`.
struct Instance<P> {
    plugin: P,
    counters: Rc<Counters>,
}

impl<P> Drop for Instance<P> {
    fn drop(&mut self) {
        self.counters.live.set(self.counters.live.get() - 1);
    }
}

/// Per-request state stored in `kong.ctx.plugin`.
struct StateBox<S>(S);

impl<S: 'static> UserData for StateBox<S> {}

/// How deep [`without_nulls`] copies; deeper (or cyclic) tables are left as
/// they are for the deserialiser, which refuses cycles.
const NULL_STRIP_DEPTH: usize = 64;

/// `conf` as the config type sees it: every record field that is `null`
/// left out, and at the top the keys Kong itself adds to `conf` at run time
/// ([`RUNTIME_KEYS`](crate::metaschema::RUNTIME_KEYS): `route_id`,
/// `__plugin_id`, `__seq__`, …), so a config type with
/// `#[serde(deny_unknown_fields)]` sees only the plugin's own fields.
///
/// Kong stores a field that is not set as `null` (`ngx.null`, a NULL light
/// userdata; see `process_auto_fields` in kong/db/schema/init.lua), while
/// serde's `#[serde(default)]` applies to missing fields only: without this,
/// an optional `Vec` field left out in the Admin API would fail to parse.
/// Array elements are kept as they are.
///
/// Each table is copied once (`copies`, by identity): a conf that reuses a
/// table, or holds a cycle, costs its size, not one walk per path through it
/// (a cycle stays a cycle, which the deserialiser refuses).
fn without_nulls(
    lua: &Lua,
    value: LuaValue,
    depth: usize,
    copies: &mut HashMap<*const std::ffi::c_void, Table>,
) -> mlua::Result<LuaValue> {
    let LuaValue::Table(table) = value else {
        return Ok(value);
    };
    if depth == 0 {
        return Ok(LuaValue::Table(table));
    }
    if let Some(copy) = copies.get(&table.to_pointer()) {
        return Ok(LuaValue::Table(copy.clone()));
    }
    let copy = lua.create_table()?;
    copy.set_metatable(table.metatable())?;
    copies.insert(table.to_pointer(), copy.clone());
    for pair in table.pairs::<LuaValue, LuaValue>() {
        let (key, value) = pair?;
        if let LuaValue::String(name) = &key {
            let null = matches!(value, LuaValue::LightUserData(ud) if ud.0.is_null());
            let runtime = depth == NULL_STRIP_DEPTH
                && crate::metaschema::RUNTIME_KEYS
                    .iter()
                    .any(|k| name.as_bytes() == k.as_bytes());
            if null || runtime {
                continue;
            }
        }
        copy.raw_set(key, without_nulls(lua, value, depth - 1, copies)?)?;
    }
    Ok(LuaValue::Table(copy))
}

/// Deserialises `conf` (null fields as missing, see [`without_nulls`]) and
/// runs the constructor. A deserialisation error names the field
/// (`config.deny_status: invalid type: …`).
fn build<P: Plugin>(lua: &Lua, conf: LuaValue) -> Result<P, String> {
    let conf = without_nulls(lua, conf, NULL_STRIP_DEPTH, &mut HashMap::new())
        .map_err(|e| format!("config: {e}"))?;
    let options = mlua::serde::DeserializeOptions::new()
        .deny_unsupported_types(false)
        .deny_recursive_tables(true);
    let deserializer = mlua::serde::Deserializer::new_with_options(conf, options);
    let config: P::Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = Error::lua(e.into_inner());
        if path == "." {
            format!("config: {inner}")
        } else {
            format!("config.{path}: {inner}")
        }
    })?;
    match catch_unwind(AssertUnwindSafe(|| P::new(config))) {
        Ok(Ok(plugin)) => Ok(plugin),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!("constructor panicked: {}", panic_message(&panic))),
    }
}

fn factory<P: Plugin>(
    lua: &Lua,
    cache: &Rc<PdkCache>,
    running: &Rc<Running>,
    timers: &Timers,
    raw: Option<&Table>,
    description: &serde_json::Value,
) -> mlua::Result<Table> {
    use mlua::serde::LuaSerdeExt;
    let factory = lua.create_table()?;
    factory.set("name", P::NAME)?;
    factory.set("version", P::VERSION)?;
    factory.set("priority", P::PRIORITY)?;
    factory.set("reads_request_body", P::READS_REQUEST_BODY)?;
    // Serves stream routes (tcp, tls, udp) too: its schema allows them.
    factory.set("stream", P::PHASES.contains(&Phase::Preread))?;
    let phases = lua.create_sequence_from(P::PHASES.iter().map(|p| p.name()))?;
    factory.set("phases", phases)?;
    // Phases run as tasks: the glue drives them (kong_rs/io.lua).
    let async_phases = lua.create_table()?;
    for phase in P::ASYNC_PHASES {
        async_phases.raw_set(phase.name(), true)?;
    }
    factory.set("async_phases", async_phases)?;
    let options = mlua::serde::SerializeOptions::new()
        .set_array_metatable(false)
        .serialize_none_to_null(false);
    factory.set(
        "schema",
        lua.to_value_with(&description["schema"], options)?,
    )?;

    let counters = Rc::new(Counters::default());
    let new_counters = counters.clone();
    let registry: Rc<RefCell<Registry<P>>> = Rc::new(RefCell::new(Registry::default()));
    let new_registry = registry.clone();
    let new_timers = timers.clone();
    factory.set(
        "new",
        lua.create_function(move |lua, conf: LuaValue| {
            new_counters.built.set(new_counters.built.get() + 1);
            match driver::constructing(&new_timers, || build::<P>(lua, conf)) {
                Ok(plugin) => {
                    new_counters.live.set(new_counters.live.get() + 1);
                    let instance = Rc::new(Instance {
                        plugin,
                        counters: new_counters.clone(),
                    });
                    let table = match instance_table(lua, &new_registry, &instance) {
                        Ok(table) => table,
                        Err(e) => return Ok((LuaValue::Nil, Some(e.to_string()))),
                    };
                    Ok((LuaValue::Table(table), None))
                }
                Err(message) => Ok((LuaValue::Nil, Some(message))),
            }
        })?,
    )?;
    let validate_timers = timers.clone();
    factory.set(
        "validate",
        lua.create_function(move |lua, conf: LuaValue| {
            match driver::constructing(&validate_timers, || build::<P>(lua, conf)) {
                Ok(_) => Ok((true, None)),
                Err(message) => Ok((false, Some(message))),
            }
        })?,
    )?;
    // Sync phases (but body_filter) as plain C functions that never raise.
    factory.set("raw_phases", raw.is_some())?;
    phase_functions::<P>(lua, &factory, cache, running, &registry, raw)?;
    let stats_counters = counters;
    factory.set(
        "stats",
        lua.create_function(move |lua, ()| {
            let stats = lua.create_table()?;
            stats.set("built", stats_counters.built.get())?;
            stats.set("live", stats_counters.live.get())?;
            stats.set("tasks", stats_counters.tasks.get())?;
            Ok(stats)
        })?,
    )?;
    Ok(factory)
}

/// The live instances of one plugin type, by id: a slab. The phase
/// functions look an instance up here from the number the Lua side passes,
/// an index and a compare (a typed userdata costs ~50 ns to borrow).
///
/// An id is a slot's index in its low [`INDEX_BITS`] bits and the slot's
/// generation above them; a slot's generation grows each time it takes a
/// new instance, so an id is never reused and a stale id can never reach a
/// later instance. Ids travel as Lua numbers (doubles), exact up to
/// 2^53 - 1: a slot whose generations are used up (2^29 instances built
/// in it, i.e. centuries of config rebuilds) is retired, and past
/// 2^24 live instances of one plugin building is refused.
struct Registry<P> {
    slots: Vec<Slot<P>>,
    // Free slots, reused last-freed first.
    free: Vec<usize>,
}

struct Slot<P> {
    generation: i64,
    instance: Option<Rc<Instance<P>>>,
}

/// The bits of an id that index the slab.
const INDEX_BITS: u32 = 24;
/// The largest integer a double holds exactly, and so the last id.
const MAX_ID: i64 = (1 << 53) - 1;
const MAX_GENERATION: i64 = MAX_ID >> INDEX_BITS;

impl<P> Default for Registry<P> {
    fn default() -> Self {
        Registry {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

/// An id's slot index and generation.
fn split_id(id: i64) -> (usize, i64) {
    ((id & ((1 << INDEX_BITS) - 1)) as usize, id >> INDEX_BITS)
}

impl<P> Registry<P> {
    /// Stores an instance under a new id.
    fn insert(&mut self, instance: Rc<Instance<P>>) -> Result<i64, String> {
        let index = match self.free.pop() {
            Some(index) => index,
            None if self.slots.len() < 1 << INDEX_BITS => {
                self.slots.push(Slot {
                    generation: 0,
                    instance: None,
                });
                self.slots.len() - 1
            }
            None => {
                return Err(format!(
                    "{} live instances of one plugin in this worker: no room for more",
                    1u64 << INDEX_BITS
                ));
            }
        };
        let slot = &mut self.slots[index];
        slot.generation += 1;
        slot.instance = Some(instance);
        Ok((slot.generation << INDEX_BITS) | index as i64)
    }

    fn get(&self, id: i64) -> Option<Rc<Instance<P>>> {
        let (index, generation) = split_id(id);
        let slot = self.slots.get(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.instance.clone()
    }

    fn remove(&mut self, id: i64) -> Option<Rc<Instance<P>>> {
        let (index, generation) = split_id(id);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let removed = slot.instance.take();
        // A slot whose next id would not survive a double is not reused.
        if removed.is_some() && slot.generation < MAX_GENERATION {
            self.free.push(index);
        }
        removed
    }
}

/// Kept in the instance table: when Lua collects the table, this drops the
/// instance from the registry, and with it the plugin (unless a phase of it
/// is running: that holds a clone until it returns).
struct Guard<P> {
    registry: Rc<RefCell<Registry<P>>>,
    id: i64,
}

impl<P: 'static> UserData for Guard<P> {}

impl<P> Drop for Guard<P> {
    fn drop(&mut self) {
        // Take it out first, drop it after the borrow: a plugin's Drop may run Lua.
        let removed = self.registry.borrow_mut().remove(self.id);
        drop(removed);
    }
}

/// An instance as Lua sees it: a table with its `id` (an integer) and a
/// guard userdata that unregisters it when the table is collected. The phase
/// functions are the factory's, the same for every instance
/// (`factory.access(instance.id)`): LuaJIT traces specialise on the function
/// they call, so per-instance functions were kept alive by compiled traces
/// long after Kong dropped their configuration.
fn instance_table<P: Plugin>(
    lua: &Lua,
    registry: &Rc<RefCell<Registry<P>>>,
    instance: &Rc<Instance<P>>,
) -> mlua::Result<Table> {
    let id = registry
        .borrow_mut()
        .insert(instance.clone())
        .map_err(mlua::Error::runtime)?;
    let table = lua.create_table_with_capacity(0, 4)?;
    table.raw_set("id", id)?;
    table.raw_set(
        "guard",
        lua.create_userdata(Guard {
            registry: registry.clone(),
            id,
        })?,
    )?;
    Ok(table)
}

/// The factory's phase functions: `factory.access(instance.id)`,
/// `factory.body_filter(instance.id, chunk, eof)`.
fn phase_functions<P: Plugin>(
    lua: &Lua,
    factory: &Table,
    cache: &Rc<PdkCache>,
    running: &Rc<Running>,
    registry: &Rc<RefCell<Registry<P>>>,
    raw: Option<&Table>,
) -> mlua::Result<()> {
    for &phase in P::PHASES {
        let cache = cache.clone();
        let lookup = {
            let registry = registry.clone();
            move |id: f64| live_instance(&registry, id).ok_or_else(|| no_live_instance::<P>(id))
        };
        let raw_data = || RawPhase {
            lua: lua.weak(),
            cache: cache.clone(),
            running: running.clone(),
            registry: registry.clone(),
            phase,
        };
        let function = if let Some(metatable) = raw
            && phase != Phase::BodyFilter
        {
            if P::ASYNC_PHASES.contains(&phase) {
                owning_c_function(lua, raw_data(), raw_async_phase::<P>, Some(metatable))?
            } else {
                owning_c_function(lua, raw_data(), raw_phase::<P>, None)?
            }
        } else if P::ASYNC_PHASES.contains(&phase) {
            let cache = cache.clone();
            lua.create_function(move |lua, (id, body): (f64, Option<mlua::LuaString>)| {
                // Runs the task up to its first I/O operation (or its end).
                let instance = lookup(id)?;
                driver::start(lua, phase_task::<P>(lua, instance, &cache, phase, body))
            })?
        } else if phase == Phase::BodyFilter {
            lua.create_function(
                move |lua, (id, chunk, eof): (f64, Option<BString>, Option<bool>)| {
                    let instance = lookup(id)?;
                    let chunk = chunk.as_deref().map(|c| c.as_slice());
                    let (actions, outcome) = dispatch(
                        lua,
                        &instance.plugin,
                        &cache,
                        phase,
                        None,
                        chunk,
                        eof.unwrap_or(false),
                    );
                    phase_result(lua, actions, outcome)
                },
            )?
        } else {
            // `body`: the request body the Lua side read for a plugin that
            // declares READS_REQUEST_BODY, handed over instead of read again.
            // One value back (see `phase_value`): the common case, nothing
            // to apply, is a nil.
            if P::READS_REQUEST_BODY && phase.reads_request_body() {
                lua.create_function(move |lua, (id, body): (f64, Option<mlua::LuaString>)| {
                    let instance = lookup(id)?;
                    let (actions, outcome) =
                        dispatch(lua, &instance.plugin, &cache, phase, body, None, false);
                    phase_value(lua, actions, outcome).map(Variadic::from_iter)
                })?
            } else {
                lua.create_function(move |lua, id: f64| {
                    let instance = lookup(id)?;
                    let (actions, outcome) =
                        dispatch(lua, &instance.plugin, &cache, phase, None, None, false);
                    // Pushes no value at all in the common case.
                    phase_value(lua, actions, outcome).map(Variadic::from_iter)
                })?
            }
        };
        factory.raw_set(phase.name(), function)?;
    }
    Ok(())
}

/// The live instance `id` (a Lua number: ids are read as doubles, cheaper
/// than mlua's integer conversion; a fraction or a number out of range is
/// no id). Cloned out of the registry: the phase may run Lua, whose GC may
/// drop other instances (and so borrow the registry).
fn live_instance<P: Plugin>(registry: &RefCell<Registry<P>>, id: f64) -> Option<Rc<Instance<P>>> {
    // (an integer compare, not `fract`: a libm call per phase)
    let whole = id as i64;
    let valid = whole as f64 == id && (1..=MAX_ID).contains(&whole);
    valid.then(|| registry.borrow().get(whole)).flatten()
}

/// The failure of a phase called with `id`, which names no live instance.
#[cold]
fn no_live_instance<P: Plugin>(id: f64) -> mlua::Error {
    mlua::Error::runtime(format!("no live {} instance {id}", P::NAME))
}

/// Whether sync phases may be entered through [`raw_phase`]: when the
/// module is loaded on the Lua state's main thread, which is then mlua's
/// state outside its callbacks, alive as long as the state (see
/// crate::running). Loaded from a coroutine (a test runner's), the phases
/// are mlua callbacks like the others.
fn raw_phases_possible(lua: &Lua) -> bool {
    lua.exec_raw_lua(|raw| {
        let state = raw.state();
        // SAFETY: pushes and pops one value on the live current thread.
        unsafe {
            let main = mlua::ffi::lua_pushthread(state) == 1;
            mlua::ffi::lua_settop(state, -2);
            main
        }
    })
}

/// What a raw phase function needs, owned by the function (an upvalue).
struct RawPhase<P> {
    // Weak: the state holds the function, which holds this.
    lua: mlua::WeakLua,
    cache: Rc<PdkCache>,
    running: Rc<Running>,
    registry: Rc<RefCell<Registry<P>>>,
    phase: Phase,
}

/// Frees the data of a raw C function when Lua collects the function (the
/// second upvalue).
struct RawDataOwner {
    data: *mut std::ffi::c_void,
    free: unsafe fn(*mut std::ffi::c_void),
}

impl UserData for RawDataOwner {}

impl Drop for RawDataOwner {
    fn drop(&mut self) {
        // SAFETY: `data` came from Box::into_raw of the type `free` frees,
        // and is freed once, here.
        unsafe { (self.free)(self.data) }
    }
}

unsafe fn free_raw_data<T>(data: *mut std::ffi::c_void) {
    // SAFETY: see RawDataOwner.
    drop(unsafe { Box::from_raw(data.cast::<T>()) });
}

/// A plain `lua_CFunction` `function` instead of an mlua callback (mlua's
/// callback wrapper cost more than the rest of an empty phase), with
/// upvalues: `data` (light userdata), the userdata that frees it when Lua
/// collects the function, and `extra` if any.
fn owning_c_function<T: 'static>(
    lua: &Lua,
    data: T,
    function: mlua::ffi::lua_CFunction,
    extra: Option<&Table>,
) -> mlua::Result<mlua::Function> {
    let data = Box::into_raw(Box::new(data)).cast::<std::ffi::c_void>();
    let owner = lua.create_userdata(RawDataOwner {
        data,
        free: free_raw_data::<T>,
    })?;
    // SAFETY: the upvalues are on the stack; lua_pushcclosure takes them.
    unsafe {
        match extra {
            Some(extra) => lua.exec_raw((mlua::LightUserData(data), owner, extra), |state| {
                mlua::ffi::lua_pushcclosure(state, function, 3);
            }),
            None => lua.exec_raw((mlua::LightUserData(data), owner), |state| {
                mlua::ffi::lua_pushcclosure(state, function, 2);
            }),
        }
    }
}

/// A sync phase entered from Lua: `(id[, body])` → nothing (continue), or
/// the one value of [`phase_value`]. Never raises: a failure is returned as
/// `{ nil, false, message }` like a failed phase, and a panic is caught
/// here, so no Lua error unwinds through Rust frames.
unsafe extern "C-unwind" fn raw_phase<P: Plugin>(state: *mut mlua::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    // SAFETY: upvalue 1 is the RawPhase<P> that upvalue 2 keeps alive.
    let data =
        unsafe { &*ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)).cast::<RawPhase<P>>() };
    let Some(lua) = data.lua.try_upgrade() else {
        return 0; // the state is closing
    };
    catch_unwind(AssertUnwindSafe(|| data.run(&lua, state))).unwrap_or_else(|panic| {
        let failure = Err(Error::msg(format!("panicked: {}", panic_message(&panic))));
        push_phase_value(&lua, state, None, failure)
    })
}

/// Pushes what a phase produced past the common case (see
/// [`phase_value`]) onto `state`'s stack: 1, the number of values.
#[cold]
#[inline(never)]
fn push_phase_value(
    lua: &Lua,
    state: *mut mlua::lua_State,
    actions: Option<Vec<u8>>,
    outcome: crate::Result<Outcome>,
) -> std::ffi::c_int {
    use mlua::ffi;
    let pushed = phase_value(lua, actions, outcome).and_then(|value| {
        // Made on mlua's state, moved to this thread's stack.
        lua.exec_raw_lua(|raw| {
            // SAFETY: the value is pushed on mlua's live state and moved
            // to `state` (the same Lua state), which has room for it.
            unsafe {
                raw.push_value(&value.unwrap_or(LuaValue::Nil))?;
                ffi::lua_xmove(raw.state(), state, 1);
            }
            Ok::<_, mlua::Error>(())
        })
    });
    if pushed.is_err() {
        push_unreadable(state);
    }
    1
}

/// When not even a failure could be made into a value (out of memory):
/// `false`, which the glue cannot read, so the request fails loudly there
/// instead of passing.
fn push_unreadable(state: *mut mlua::lua_State) {
    // SAFETY: pushing a boolean does not allocate; a C function has
    // LUA_MINSTACK free slots.
    unsafe { mlua::ffi::lua_pushboolean(state, 0) };
}

impl<P: Plugin> RawPhase<P> {
    /// The call's arguments `(id[, body])`: the live instance, and the
    /// request body the glue read for a plugin that reads it.
    #[inline(always)] // the hot path: no Result of mlua's size in memory
    fn arguments(
        &self,
        lua: &Lua,
        state: *mut mlua::lua_State,
    ) -> mlua::Result<(Rc<Instance<P>>, Option<mlua::LuaString>)> {
        // SAFETY: argument 1 of the call (0 when it is not a number).
        let id = unsafe { mlua::ffi::lua_tonumber(state, 1) };
        let instance =
            live_instance(&self.registry, id).ok_or_else(|| no_live_instance::<P>(id))?;
        let body = if P::READS_REQUEST_BODY && self.phase.reads_request_body() {
            body_argument(lua, state)?
        } else {
            None
        };
        Ok((instance, body))
    }

    /// Runs the phase; returns the number of values pushed: none in the
    /// common case (continue, nothing to apply), else one (see
    /// [`push_phase_value`]).
    fn run(&self, lua: &Lua, state: *mut mlua::lua_State) -> std::ffi::c_int {
        let (instance, body) = match self.arguments(lua, state) {
            Ok(arguments) => arguments,
            Err(error) => return push_phase_value(lua, state, None, Err(Error::lua(error))),
        };
        let (actions, outcome) = self.running.with(state, || {
            dispatch(
                lua,
                &instance.plugin,
                &self.cache,
                self.phase,
                body,
                None,
                false,
            )
        });
        if actions.is_none() && matches!(outcome, Ok(Outcome::Flow(Flow::Continue))) {
            return 0;
        }
        push_phase_value(lua, state, actions, outcome)
    }
}

/// Argument 2 of a raw phase call, the request body the glue read, as an
/// mlua string (nil: none, or it did not fit into the body buffer).
fn body_argument(lua: &Lua, state: *mut mlua::lua_State) -> mlua::Result<Option<mlua::LuaString>> {
    use mlua::ffi;
    lua.exec_raw_lua(|raw| {
        // SAFETY: argument 2 is copied to mlua's state (same Lua state)
        // and taken from there as a reference.
        unsafe {
            if ffi::lua_type(state, 2) != ffi::LUA_TSTRING {
                return Ok(None);
            }
            if ffi::lua_checkstack(raw.state(), 1) == 0 {
                return Err(mlua::Error::StackError);
            }
            ffi::lua_pushvalue(state, 2);
            ffi::lua_xmove(state, raw.state(), 1);
            raw.pop::<mlua::LuaString>().map(Some)
        }
    })
}

/// Runs one phase, turning a panic into an error like any other.
///
/// Out of memory is the one failure this cannot turn into a 500: LuaJIT
/// failing to allocate during a PDK call is an `Err` (mlua reports it as a
/// memory error, the request is answered 500), but the Rust allocator
/// failing aborts the process (Rust's `handle_alloc_error` does not
/// unwind), and nginx's master starts a new worker. Unwinding out of an
/// allocation failure would leave the plugin's own data half-updated; a
/// fresh worker is the safer answer.
fn dispatch<P: Plugin>(
    lua: &Lua,
    plugin: &P,
    cache: &PdkCache,
    phase: Phase,
    body: Option<mlua::LuaString>,
    chunk: Option<&[u8]>,
    eof: bool,
) -> (Option<Vec<u8>>, crate::Result<Outcome>) {
    let mut pdk = LuaPdk::new(lua, cache);
    // The glue reads the body before these phases of such a plugin and
    // hands it over, nil when it did not fit into the client body buffer.
    if P::READS_REQUEST_BODY && phase.reads_request_body() {
        pdk.set_request_body(body);
    }
    pdk.set_phase(phase);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run_phase::<P>(plugin, phase, &mut pdk, chunk, eof)
    }))
    .unwrap_or_else(|panic| Err(Error::msg(format!("panicked: {}", panic_message(&panic)))));
    // A failed phase is answered 500: its pending writes are dropped, not applied.
    let actions = match outcome {
        Ok(_) => pdk.take_actions(),
        Err(_) => None,
    };
    (actions, outcome)
}

/// A sync phase's results as one Lua value, for `kong_rs/handler.lua`:
/// nil to continue with nothing to apply (the common case: no conversion
/// of several values), the pending writes (a string) to apply and
/// continue, else a table `{ writes, status, body, headers }` to exit, or
/// `{ nil, false, message }` when the plugin failed.
fn phase_value(
    lua: &Lua,
    actions: Option<Vec<u8>>,
    outcome: crate::Result<Outcome>,
) -> mlua::Result<Option<LuaValue>> {
    match (actions, outcome) {
        // No value at all: the glue reads a missing result as nil.
        (None, Ok(Outcome::Flow(Flow::Continue))) => Ok(None),
        (Some(actions), Ok(Outcome::Flow(Flow::Continue))) => {
            Ok(Some(LuaValue::String(lua.create_string(actions)?)))
        }
        (actions, outcome) => {
            let values = phase_result(lua, actions, outcome)?;
            let table = lua.create_table_with_capacity(values.len(), 0)?;
            for (i, value) in values.into_iter().enumerate() {
                table.raw_set(i + 1, value)?;
            }
            Ok(Some(LuaValue::Table(table)))
        }
    }
}

/// What one phase produced, before it is turned into Lua return values.
enum Outcome {
    Flow(Flow),
    Chunk(Option<Vec<u8>>),
}

fn run_phase<P: Plugin>(
    plugin: &P,
    phase: Phase,
    pdk: &mut LuaPdk<'_>,
    chunk: Option<&[u8]>,
    eof: bool,
) -> crate::Result<Outcome> {
    if phase == Phase::Certificate {
        return plugin
            .certificate(pdk)
            .map(|()| Outcome::Flow(Flow::Continue));
    }
    with_state::<P, _>(pdk, |pdk, state| match phase {
        Phase::Preread => plugin.preread(pdk, state).map(Outcome::Flow),
        Phase::Rewrite => plugin.rewrite(pdk, state).map(Outcome::Flow),
        Phase::Access => plugin.access(pdk, state).map(Outcome::Flow),
        Phase::Response => plugin.response(pdk, state).map(Outcome::Flow),
        Phase::HeaderFilter => plugin
            .header_filter(pdk, state)
            .map(|()| Outcome::Flow(Flow::Continue)),
        Phase::BodyFilter => plugin
            .body_filter(pdk, state, chunk.unwrap_or_default(), eof)
            .map(Outcome::Chunk),
        Phase::Log => plugin
            .log(pdk, state)
            .map(|()| Outcome::Flow(Flow::Continue)),
        Phase::Certificate => unreachable!("handled above"),
    })
}

/// Runs `f` with this request's state: created with `Default` on first use
/// and kept in `kong.ctx.plugin`; a zero-sized state never touches Lua.
fn with_state<P: Plugin, R>(
    pdk: &mut LuaPdk<'_>,
    f: impl FnOnce(&mut LuaPdk<'_>, &mut P::State) -> crate::Result<R>,
) -> crate::Result<R> {
    if size_of::<P::State>() == 0 {
        return f(pdk, &mut P::State::default());
    }
    let mut state = state_of::<P>(pdk)?;
    f(pdk, &mut state.0)
}

/// This request's state (a userdata in `kong.ctx.plugin`), created with
/// `Default` on first use, borrowed until the guard is dropped.
fn state_of<P: Plugin>(
    pdk: &mut LuaPdk<'_>,
) -> crate::Result<mlua::UserDataRefMut<StateBox<P::State>>> {
    let ctx = pdk.plugin_ctx()?;
    let stored: Option<AnyUserData> = ctx.raw_get(STATE_KEY).map_err(Error::lua)?;
    let stored = match stored {
        Some(stored) if stored.is::<StateBox<P::State>>() => stored,
        _ => {
            let created = pdk
                .lua()
                .create_userdata(StateBox(P::State::default()))
                .map_err(Error::lua)?;
            ctx.raw_set(STATE_KEY, &created).map_err(Error::lua)?;
            created
        }
    };
    stored
        .borrow_mut::<StateBox<P::State>>()
        .map_err(Error::lua)
}

/// What an async phase's future borrows for its whole life.
struct PhaseData<P> {
    lua: Lua,
    cache: Rc<PdkCache>,
    instance: Rc<Instance<P>>,
}

impl<P> Drop for PhaseData<P> {
    fn drop(&mut self) {
        let tasks = &self.instance.counters.tasks;
        tasks.set(tasks.get() - 1);
    }
}

/// An async phase entered from Lua as a plain C function (see
/// src/io/raw.rs): `(id[, body])` → the values of a pending or finished
/// task (`nil, false, message` on failure). Never raises. Upvalues: the
/// [`RawPhase`], its owner, the task metatable.
unsafe extern "C-unwind" fn raw_async_phase<P: Plugin>(
    state: *mut mlua::lua_State,
) -> std::ffi::c_int {
    use mlua::ffi;
    // SAFETY: upvalue 1 is the RawPhase<P> that upvalue 2 keeps alive.
    let data =
        unsafe { &*ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)).cast::<RawPhase<P>>() };
    let Some(lua) = data.lua.try_upgrade() else {
        return 0; // the state is closing
    };
    let made = catch_unwind(AssertUnwindSafe(|| {
        let (instance, body) = data.arguments(&lua, state)?;
        Ok::<_, mlua::Error>(phase_task::<P>(
            &lua,
            instance,
            &data.cache,
            data.phase,
            body,
        ))
    }));
    let message = match made {
        Ok(Ok(task)) => {
            let task = driver::LuaTask::new(task, true);
            // SAFETY: `state` is the calling thread; upvalue 3 is the task
            // metatable.
            return unsafe {
                crate::io::raw::start(&lua, state, &data.running, ffi::lua_upvalueindex(3), task)
            };
        }
        Ok(Err(error)) => error.to_string(),
        Err(panic) => format!("panicked: {}", panic_message(&panic)),
    };
    // SAFETY: a C function has LUA_MINSTACK free slots.
    unsafe { crate::io::raw::push_failure(state, &message) }
}

/// The task of one async phase of `instance`.
fn phase_task<P: Plugin>(
    lua: &Lua,
    instance: Rc<Instance<P>>,
    cache: &Rc<PdkCache>,
    phase: Phase,
    body: Option<mlua::LuaString>,
) -> Task<LuaOutput> {
    let tasks = &instance.counters.tasks;
    tasks.set(tasks.get() + 1);
    let data = PhaseData {
        lua: lua.clone(),
        cache: cache.clone(),
        instance,
    };
    Task::borrowing(data, move |data| async move {
        let mut pdk = LuaPdk::new(&data.lua, &data.cache);
        if P::READS_REQUEST_BODY && phase.reads_request_body() {
            pdk.set_request_body(body);
        }
        pdk.set_phase(phase);
        let outcome = run_async_phase::<P>(&data.instance.plugin, phase, &mut pdk).await;
        // A failed phase is answered 500: its pending writes are dropped.
        let actions = match outcome {
            Ok(_) => pdk.take_actions(),
            Err(_) => None,
        };
        LuaOutput::Phase(actions, outcome)
    })
}

async fn run_async_phase<P: Plugin>(
    plugin: &P,
    phase: Phase,
    pdk: &mut LuaPdk<'_>,
) -> crate::Result<Flow> {
    let mut zero_sized = P::State::default();
    let mut stored = None;
    let state = if size_of::<P::State>() == 0 {
        &mut zero_sized
    } else {
        &mut stored.insert(state_of::<P>(pdk)?).0
    };
    match phase {
        Phase::Rewrite => plugin.rewrite_async(pdk, state).await,
        Phase::Access => plugin.access_async(pdk, state).await,
        Phase::Preread => plugin.preread_async(pdk, state).await,
        other => Err(Error::msg(format!("phase {other} cannot be async"))),
    }
}

/// An async phase's results as Lua values (see [`phase_result`]).
pub(crate) fn flow_result(
    lua: &Lua,
    actions: Option<Vec<u8>>,
    outcome: crate::Result<Flow>,
) -> mlua::Result<Variadic<LuaValue>> {
    phase_result(lua, actions, outcome.map(Outcome::Flow))
}

/// Lua return values: the pending writes (a string, or nil), then the outcome.
fn phase_result(
    lua: &Lua,
    actions: Option<Vec<u8>>,
    outcome: crate::Result<Outcome>,
) -> mlua::Result<Variadic<LuaValue>> {
    let mut values = Variadic::new();
    let continues = matches!(
        outcome,
        Ok(Outcome::Flow(Flow::Continue) | Outcome::Chunk(None))
    );
    if actions.is_none() && continues {
        return Ok(values);
    }
    values.push(match actions {
        Some(actions) => LuaValue::String(lua.create_string(actions)?),
        None => LuaValue::Nil,
    });
    match outcome {
        Ok(Outcome::Flow(Flow::Continue)) | Ok(Outcome::Chunk(None)) => {}
        Ok(Outcome::Chunk(Some(chunk))) => {
            values.push(LuaValue::String(lua.create_string(chunk)?));
        }
        Ok(Outcome::Flow(Flow::Exit(exit))) => {
            values.push(LuaValue::Integer(i64::from(exit.status)));
            values.push(match exit.body {
                Some(body) => LuaValue::String(lua.create_string(body)?),
                None => LuaValue::Nil,
            });
            if !exit.headers.is_empty() {
                let headers = lua.create_table_with_capacity(0, exit.headers.len())?;
                for (name, value) in exit.headers {
                    headers.raw_set(name, lua.create_string(value)?)?;
                }
                values.push(LuaValue::Table(headers));
            }
        }
        Err(error) => {
            values.push(LuaValue::Boolean(false));
            values.push(LuaValue::String(lua.create_string(error.to_string())?));
        }
    }
    Ok(values)
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    fn instance(counters: &Rc<Counters>) -> Rc<Instance<Nothing>> {
        counters.live.set(counters.live.get() + 1);
        Rc::new(Instance {
            plugin: Nothing,
            counters: counters.clone(),
        })
    }

    #[test]
    fn ids_stay_exact_through_lua_numbers_up_to_2_pow_53() {
        let lua = Lua::new();
        let counters = Rc::new(Counters::default());
        let mut registry = Registry::<Nothing>::default();
        let first = registry.insert(instance(&counters)).expect("room");
        let (index, _) = split_id(first);
        registry.remove(first);
        // The slot's last generation; the last slot's last id is 2^53 - 1.
        registry.slots[index].generation = MAX_GENERATION - 1;
        let last = registry.insert(instance(&counters)).expect("the last id");
        assert_eq!(last, (MAX_GENERATION << INDEX_BITS) | index as i64);
        assert_eq!(
            (MAX_GENERATION << INDEX_BITS) | ((1 << INDEX_BITS) - 1),
            MAX_ID
        );
        // Through a Lua number (a double) and back, as the glue passes it.
        let f: mlua::Function = lua
            .load("return function(id) return id end")
            .eval()
            .unwrap();
        assert_eq!(f.call::<i64>(MAX_ID).unwrap(), MAX_ID);
        let roundtrip = f.call::<i64>(last).unwrap();
        assert_eq!(roundtrip, last);
        assert!(registry.get(roundtrip).is_some());
        assert!(registry.get(roundtrip + 1).is_none(), "no instance at 2^53");
        assert!(registry.remove(last).is_some());
        assert!(
            registry.get(last).is_none(),
            "removed ids are not found again"
        );
        // That slot is retired: the next instance gets a fresh one.
        let next = registry.insert(instance(&counters)).expect("another slot");
        assert_ne!(split_id(next).0, index);
        assert!(next <= MAX_ID);
        assert_eq!(counters.live.get(), 1, "only the last one is alive");
    }

    #[test]
    fn ids_are_never_reused() {
        let counters = Rc::new(Counters::default());
        let mut registry = Registry::<Nothing>::default();
        let mut seen = std::collections::HashSet::new();
        let mut kept = Vec::new();
        for n in 0..1000 {
            let id = registry.insert(instance(&counters)).unwrap();
            assert!(seen.insert(id));
            assert!(registry.get(id).is_some());
            if n % 3 == 0 {
                kept.push(id);
            } else {
                registry.remove(id);
                assert!(registry.get(id).is_none());
            }
        }
        for id in kept {
            assert!(registry.get(id).is_some(), "{id} still live");
        }
    }
}
