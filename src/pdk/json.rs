//! Lua tables ⇄ JSON values, as `cjson` (which Kong's logging plugins and
//! Admin API use) writes and reads them: see [`Log::serialize`] and
//! [`Client::authenticate`] for the rules.
//!
//! Hand-written rather than mlua's serde bridge: mlua's deserializer into
//! `serde_json::Value` refuses integer keys of non-sequence tables and
//! non-UTF-8 strings, and knows mlua's array metatable but not cjson's.
//!
//! [`Log::serialize`]: super::Log::serialize
//! [`Client::authenticate`]: super::Client::authenticate

use crate::error::{Error, Result};
use base64::Engine;
use mlua::{Lua, LuaString, Table, Value as LuaValue};
use serde_json::{Map, Number, Value as Json};

/// How deep tables may nest, both ways (cjson's default is 1000; Kong's
/// entities and serializer output nest a few levels).
const MAX_DEPTH: usize = 100;

/// What cjson marks arrays with, when cjson is loaded in this Lua state.
#[derive(Clone, Default)]
pub(crate) struct CjsonMarkers {
    /// `cjson.empty_array` (a light userdata).
    empty_array: Option<mlua::LightUserData>,
    /// `cjson.array_mt`.
    array_mt: Option<Table>,
    /// `cjson.empty_array_mt`.
    empty_array_mt: Option<Table>,
}

impl CjsonMarkers {
    /// cjson's markers, if `require "cjson"` succeeds in `lua` (run on
    /// Lua thread `thread`, see crate::running).
    pub(crate) fn load(lua: &Lua, thread: *mut mlua::lua_State) -> CjsonMarkers {
        let found: mlua::Result<(LuaValue, LuaValue, LuaValue)> = crate::running::eval_on(
            lua,
            thread,
            "local ok, c = pcall(require, 'cjson') \
             if ok and type(c) == 'table' then return c.empty_array, c.array_mt, c.empty_array_mt end",
        );
        let Ok((empty_array, array_mt, empty_array_mt)) = found else {
            return CjsonMarkers::default();
        };
        CjsonMarkers {
            empty_array: match empty_array {
                LuaValue::LightUserData(ud) => Some(ud),
                _ => None,
            },
            array_mt: array_mt.as_table().cloned(),
            empty_array_mt: empty_array_mt.as_table().cloned(),
        }
    }

    fn is_array_mt(&self, mt: &Table) -> bool {
        self.array_mt.as_ref() == Some(mt) || self.empty_array_mt.as_ref() == Some(mt)
    }
}

/// `bytes` as a JSON string when UTF-8, else `{"base64": "…"}`.
fn string_json(s: &LuaString) -> Json {
    match s.to_str() {
        Ok(text) => Json::String(text.to_string()),
        Err(_) => {
            let mut object = Map::new();
            let encoded = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
            object.insert("base64".into(), Json::String(encoded));
            Json::Object(object)
        }
    }
}

fn number_json(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Json::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

/// A positive integral key (an array index), if `key` is one.
fn index_of(key: &LuaValue) -> Option<usize> {
    match key {
        LuaValue::Integer(i) if *i >= 1 => usize::try_from(*i).ok(),
        LuaValue::Number(n) if *n >= 1.0 && n.fract() == 0.0 && *n < 9.0e15 => Some(*n as usize),
        _ => None,
    }
}

/// An object key as cjson writes it; `None` for keys it cannot.
fn key_text(key: &LuaValue) -> Option<String> {
    match key {
        LuaValue::String(s) => Some(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
        LuaValue::Integer(i) => Some(i.to_string()),
        LuaValue::Number(n) => match number_json(*n) {
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        },
        LuaValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A Lua value as JSON; `None` for what JSON cannot hold (functions,
/// threads, userdata, light userdata other than `ngx.null`/`cjson.null`
/// and `cjson.empty_array`).
pub(crate) fn lua_to_json(
    value: &LuaValue,
    markers: &CjsonMarkers,
    depth: usize,
) -> Result<Option<Json>> {
    Ok(Some(match value {
        LuaValue::Nil => Json::Null,
        LuaValue::LightUserData(ud) if ud.0.is_null() => Json::Null,
        LuaValue::LightUserData(ud) if markers.empty_array == Some(*ud) => Json::Array(Vec::new()),
        LuaValue::Boolean(b) => Json::Bool(*b),
        LuaValue::Integer(i) => Json::Number(Number::from(*i)),
        LuaValue::Number(n) => number_json(*n),
        LuaValue::String(s) => string_json(s),
        LuaValue::Table(t) => table_to_json(t, markers, depth + 1)?,
        _ => return Ok(None),
    }))
}

fn table_to_json(table: &Table, markers: &CjsonMarkers, depth: usize) -> Result<Json> {
    if depth > MAX_DEPTH {
        return Err(Error::msg(format!(
            "table nests deeper than {MAX_DEPTH} levels (a cycle?)"
        )));
    }
    let marked = table.metatable().is_some_and(|mt| markers.is_array_mt(&mt));
    let mut pairs = Vec::new();
    let (mut max, mut all_indices) = (0usize, true);
    for pair in table.pairs::<LuaValue, LuaValue>() {
        let (key, value) = pair.map_err(Error::lua)?;
        match index_of(&key) {
            Some(i) => max = max.max(i),
            None => all_indices = false,
        }
        pairs.push((key, value));
    }
    let count = pairs.len();
    // cjson's rule: an array unless excessively sparse (more than twice as
    // many slots as items, beyond 10), where we write an object instead.
    let array = all_indices && (marked || (count > 0 && (max <= 10 || max <= count * 2)));
    if array {
        let mut items = vec![Json::Null; max];
        for (key, value) in &pairs {
            if let Some(i) = index_of(key) {
                items[i - 1] = lua_to_json(value, markers, depth)?.unwrap_or(Json::Null);
            }
        }
        return Ok(Json::Array(items));
    }
    let mut object = Map::new();
    for (key, value) in &pairs {
        if let (Some(key), Some(value)) = (key_text(key), lua_to_json(value, markers, depth)?) {
            object.insert(key, value);
        }
    }
    Ok(Json::Object(object))
}

/// JSON as a Lua value: an object's `null` fields are left out, a `null`
/// elsewhere is `ngx.null` (a NULL light userdata), arrays get
/// `cjson.array_mt` when cjson is loaded.
pub(crate) fn json_to_lua(
    lua: &Lua,
    value: &Json,
    markers: &CjsonMarkers,
    depth: usize,
) -> Result<LuaValue> {
    if depth > MAX_DEPTH {
        return Err(Error::msg(format!(
            "JSON nests deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(match value {
        Json::Null => LuaValue::NULL,
        Json::Bool(b) => LuaValue::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => LuaValue::Integer(i),
            None => LuaValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => LuaValue::String(lua.create_string(s).map_err(Error::lua)?),
        Json::Array(items) => {
            let table = lua
                .create_table_with_capacity(items.len(), 0)
                .map_err(Error::lua)?;
            for (i, item) in items.iter().enumerate() {
                table
                    .raw_set(i + 1, json_to_lua(lua, item, markers, depth + 1)?)
                    .map_err(Error::lua)?;
            }
            if let Some(mt) = &markers.array_mt {
                table.set_metatable(Some(mt.clone())).map_err(Error::lua)?;
            }
            LuaValue::Table(table)
        }
        Json::Object(fields) => {
            let table = lua
                .create_table_with_capacity(0, fields.len())
                .map_err(Error::lua)?;
            for (key, field) in fields {
                if !field.is_null() {
                    table
                        .raw_set(key.as_str(), json_to_lua(lua, field, markers, depth + 1)?)
                        .map_err(Error::lua)?;
                }
            }
            LuaValue::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lua_json(lua: &Lua, code: &str) -> Json {
        let value: LuaValue = lua.load(code).eval().unwrap();
        let markers = CjsonMarkers::load(lua, std::ptr::null_mut());
        lua_to_json(&value, &markers, 0).unwrap().unwrap()
    }

    #[test]
    fn tables_become_json_as_cjson_writes_them() {
        let lua = Lua::new();
        assert_eq!(lua_json(&lua, "return {}"), json!({}));
        assert_eq!(
            lua_json(&lua, "return { 1, 'a', true }"),
            json!([1, "a", true])
        );
        assert_eq!(lua_json(&lua, "return { 1.5, 2.0 }"), json!([1.5, 2]));
        // holes inside a dense enough array are nulls; a sparse one is an object
        assert_eq!(
            lua_json(&lua, "return { [1] = 1, [3] = 3 }"),
            json!([1, null, 3])
        );
        assert_eq!(
            lua_json(&lua, "return { [1] = 1, [100] = 2 }"),
            json!({"1": 1, "100": 2})
        );
        assert_eq!(
            lua_json(
                &lua,
                "return { a = { b = { 'x' } }, [2] = 'two', ok = false }"
            ),
            json!({"a": {"b": ["x"]}, "2": "two", "ok": false})
        );
        // functions and userdata are left out, NULL light userdata is null
        let value: LuaValue = lua.load("return { f = print, n = 1 }").eval().unwrap();
        let markers = CjsonMarkers::default();
        assert_eq!(
            lua_to_json(&value, &markers, 0).unwrap().unwrap(),
            json!({"n": 1})
        );
        let null = lua_to_json(&LuaValue::NULL, &markers, 0).unwrap().unwrap();
        assert_eq!(null, Json::Null);
        let table = lua.create_table().unwrap();
        table.set("x", LuaValue::NULL).unwrap();
        table
            .set("s", lua.create_string(b"\xff\x00a").unwrap())
            .unwrap();
        assert_eq!(
            lua_to_json(&LuaValue::Table(table), &markers, 0)
                .unwrap()
                .unwrap(),
            json!({"x": null, "s": {"base64": "/wBh"}})
        );
    }

    #[test]
    fn cycles_are_an_error_not_a_crash() {
        let lua = Lua::new();
        let value: LuaValue = lua.load("local t = {} t.t = t return t").eval().unwrap();
        let err = lua_to_json(&value, &CjsonMarkers::default(), 0).unwrap_err();
        assert!(err.to_string().contains("deeper than 100"), "{err}");
    }

    #[test]
    fn json_becomes_lua_and_back() {
        let lua = Lua::new();
        let markers = CjsonMarkers::default();
        let value = json!({"id": "x", "tags": ["a", null], "n": 1.5, "i": -3, "gone": null,
                           "nested": {"t": true}});
        let lua_value = json_to_lua(&lua, &value, &markers, 0).unwrap();
        let table = lua_value.as_table().unwrap();
        assert!(table.get::<LuaValue>("gone").unwrap().is_nil());
        assert_eq!(table.get::<i64>("i").unwrap(), -3);
        let back = lua_to_json(&lua_value, &markers, 0).unwrap().unwrap();
        assert_eq!(
            back,
            json!({"id": "x", "tags": ["a", null], "n": 1.5, "i": -3, "nested": {"t": true}})
        );
    }
}
