//! Kong's plugin schema, generated from the Rust config type.
//!
//! The config type derives [`schemars::JsonSchema`]; its JSON Schema is
//! translated into Kong's schema DSL (`kong/db/schema/init.lua`), which
//! `schema.lua` receives from the native module. The Rust type is therefore the
//! only description of the config: field names (serde renames included), doc
//! comments as `description`, required fields, defaults, enums as `one_of`,
//! `#[schemars(range(..))]` as `between`, `#[schemars(length(..))]` as
//! `len_min`/`len_max`.
//!
//! | Rust | Kong |
//! |---|---|
//! | `String`, unit-variant enum | `string` (enum: `one_of`) |
//! | integers / floats | `integer` / `number` |
//! | `bool` | `boolean` |
//! | `Vec<T>` | `array` with `elements` |
//! | `HashSet<T>`, `BTreeSet<T>` | `set` with `elements` |
//! | `HashMap<String, T>` | `map` with `keys`/`values` |
//! | struct | `record` with `fields` |
//! | `Option<T>` | the field of `T`, not required |
//!
//! Regex `pattern`s are not carried over (Kong's `match` takes Lua patterns,
//! a different language): check them in the constructor, which Kong's
//! `custom_validator` runs anyway.

use crate::error::{Error, Result};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The largest integer a Lua number (a double) holds exactly; the upper
/// bound used when a Rust type only gives a minimum.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The Kong `config` record for config type `C`:
/// `{"type": "record", "fields": [{"name": {...}}, ...]}`.
///
/// # Errors
/// When `C` uses a shape Kong's schema cannot express (a tuple, an enum with
/// data, a map keyed by something else than strings): the message names the
/// field.
pub fn config_record<C: JsonSchema>() -> Result<Value> {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    let schema = generator.into_root_schema_for::<C>();
    let field = convert(schema.as_value(), "config")?;
    if field.get("type") != Some(&json!("record")) {
        return Err(Error::msg("the config type must be a struct"));
    }
    Ok(field)
}

/// Converts one JSON Schema node into a Kong field definition. `path` is the
/// field's dotted name, for messages.
fn convert(schema: &Value, path: &str) -> Result<Value> {
    let unsupported =
        |what: &str| Error::msg(format!("{path}: {what} has no Kong schema equivalent"));
    let Some(object) = schema.as_object() else {
        return Err(unsupported("a boolean schema"));
    };
    // `Option<T>` of a complex T: anyOf [T, null].
    if let Some(variants) = object.get("anyOf").and_then(Value::as_array) {
        let non_null: Vec<&Value> = variants.iter().filter(|v| !is_null_type(v)).collect();
        return match non_null.as_slice() {
            [only] => {
                let mut field = convert(only, path)?;
                copy_annotations(object, &mut field);
                Ok(field)
            }
            _ => Err(unsupported("a union type")),
        };
    }
    // Unit-variant enums with doc comments: oneOf [{const: "a"}, ...].
    if let Some(variants) = object.get("oneOf").and_then(Value::as_array) {
        let values: Option<Vec<Value>> = variants
            .iter()
            .map(|v| v.get("const").cloned().or_else(|| single_enum(v)))
            .collect();
        let values = values.ok_or_else(|| unsupported("an enum with data"))?;
        return enum_field(object, values, path);
    }
    if let Some(values) = object.get("enum").and_then(Value::as_array) {
        let values = values.iter().filter(|v| !v.is_null()).cloned().collect();
        return enum_field(object, values, path);
    }
    if let Some(value) = object.get("const") {
        return enum_field(object, vec![value.clone()], path);
    }
    if object.contains_key("$ref") {
        return Err(unsupported("a recursive type"));
    }

    let kind = schema_type(object).ok_or_else(|| unsupported("a schema without a type"))?;
    let mut field = Map::new();
    match kind {
        "string" => {
            field.insert("type".into(), json!("string"));
            copy_as(object, "minLength", &mut field, "len_min");
            copy_as(object, "maxLength", &mut field, "len_max");
            // Kong refuses empty strings unless `len_min` says otherwise
            // (kong/db/schema/init.lua); a Rust String takes "".
            field.entry("len_min").or_insert(json!(0));
        }
        "integer" | "number" => {
            field.insert("type".into(), json!(kind));
            number_bounds(object, kind, &mut field);
        }
        "boolean" => {
            field.insert("type".into(), json!("boolean"));
        }
        "array" => {
            let unique = object.get("uniqueItems") == Some(&Value::Bool(true));
            field.insert("type".into(), json!(if unique { "set" } else { "array" }));
            let items = object
                .get("items")
                .ok_or_else(|| unsupported("a tuple or untyped array"))?;
            if items.is_array() || object.contains_key("prefixItems") {
                return Err(unsupported("a tuple"));
            }
            field.insert("elements".into(), convert(items, &format!("{path}[]"))?);
            copy_as(object, "minItems", &mut field, "len_min");
            copy_as(object, "maxItems", &mut field, "len_max");
        }
        "object" => match object.get("properties").and_then(Value::as_object) {
            Some(properties) => {
                field.insert("type".into(), json!("record"));
                let required: Vec<&str> = object
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|names| names.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut fields = Vec::with_capacity(properties.len());
                for (name, property) in properties {
                    let mut sub = convert(property, &format!("{path}.{name}"))?;
                    let has_default = sub.get("default").is_some();
                    if required.contains(&name.as_str()) || (has_default && !is_nullable(property))
                    {
                        sub["required"] = json!(true);
                    }
                    fields.push(json!({ name.as_str(): sub }));
                }
                field.insert("fields".into(), Value::Array(fields));
            }
            None => {
                let values = match object.get("additionalProperties") {
                    Some(Value::Object(values)) => Value::Object(values.clone()),
                    // A struct without fields: a record with none.
                    _ => {
                        let mut field = Value::Object(field);
                        field["type"] = json!("record");
                        field["fields"] = json!([]);
                        copy_annotations(object, &mut field);
                        return Ok(field);
                    }
                };
                if let Some(names) = object.get("propertyNames")
                    && names.get("type") != Some(&json!("string"))
                {
                    return Err(unsupported("a map with non-string keys"));
                }
                field.insert("type".into(), json!("map"));
                field.insert("keys".into(), json!({ "type": "string", "len_min": 0 }));
                field.insert("values".into(), convert(&values, &format!("{path}.*"))?);
                copy_as(object, "minProperties", &mut field, "len_min");
                copy_as(object, "maxProperties", &mut field, "len_max");
            }
        },
        other => return Err(unsupported(&format!("type {other:?}"))),
    }
    let mut field = Value::Object(field);
    copy_annotations(object, &mut field);
    Ok(field)
}

/// The schema's type, ignoring `"null"` (which only makes it optional).
fn schema_type(object: &Map<String, Value>) -> Option<&str> {
    match object.get("type")? {
        Value::String(kind) => Some(kind),
        Value::Array(kinds) => {
            let mut kinds = kinds
                .iter()
                .filter_map(Value::as_str)
                .filter(|k| *k != "null");
            let kind = kinds.next()?;
            kinds.next().is_none().then_some(kind)
        }
        _ => None,
    }
}

fn is_null_type(schema: &Value) -> bool {
    schema.get("type") == Some(&json!("null"))
}

fn is_nullable(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::Array(kinds)) => kinds.contains(&json!("null")),
        _ => schema
            .get("anyOf")
            .and_then(Value::as_array)
            .is_some_and(|variants| variants.iter().any(is_null_type)),
    }
}

fn single_enum(schema: &Value) -> Option<Value> {
    match schema.get("enum")?.as_array()?.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    }
}

fn enum_field(object: &Map<String, Value>, values: Vec<Value>, path: &str) -> Result<Value> {
    let kind = if values.iter().all(Value::is_string) {
        "string"
    } else if values.iter().all(|v| v.is_i64() || v.is_u64()) {
        "integer"
    } else if values.iter().all(Value::is_number) {
        "number"
    } else {
        return Err(Error::msg(format!(
            "{path}: an enum mixing types has no Kong schema equivalent"
        )));
    };
    let mut field = json!({ "type": kind, "one_of": values });
    copy_annotations(object, &mut field);
    Ok(field)
}

/// `minimum`/`maximum` (and their exclusive forms) as Kong's `between` or `gt`.
fn number_bounds(object: &Map<String, Value>, kind: &str, field: &mut Map<String, Value>) {
    let integer = kind == "integer";
    let lower = object.get("minimum").and_then(Value::as_f64).or_else(|| {
        let exclusive = object.get("exclusiveMinimum").and_then(Value::as_f64)?;
        integer.then_some(exclusive + 1.0)
    });
    let upper = object.get("maximum").and_then(Value::as_f64).or_else(|| {
        let exclusive = object.get("exclusiveMaximum").and_then(Value::as_f64)?;
        integer.then_some(exclusive - 1.0)
    });
    let number = |n: f64| {
        if integer { json!(n as i64) } else { json!(n) }
    };
    match (lower, upper) {
        (Some(lower), Some(upper)) => {
            field.insert("between".into(), json!([number(lower), number(upper)]));
        }
        (Some(lower), None) if integer => {
            field.insert("between".into(), json!([number(lower), MAX_SAFE_INTEGER]));
        }
        (None, Some(upper)) if integer => {
            field.insert("between".into(), json!([-MAX_SAFE_INTEGER, number(upper)]));
        }
        _ => {
            if let Some(exclusive) = object.get("exclusiveMinimum") {
                field.insert("gt".into(), exclusive.clone());
            }
        }
    }
}

fn copy_as(from: &Map<String, Value>, key: &str, to: &mut Map<String, Value>, as_key: &str) {
    if let Some(value) = from.get(key) {
        to.insert(as_key.into(), value.clone());
    }
}

/// `description` and a non-null `default` travel to the Kong field.
fn copy_annotations(from: &Map<String, Value>, to: &mut Value) {
    if let Some(description) = from.get("description") {
        to["description"] = description.clone();
    }
    if let Some(default) = from.get("default").filter(|d| !d.is_null()) {
        to["default"] = default.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::{BTreeSet, HashMap};

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
        Safe,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Limits {
        #[schemars(range(min = 1, max = 10))]
        burst: u32,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Everything {
        /// The name shown to users.
        #[schemars(length(min = 1, max = 64))]
        name: String,
        #[serde(default = "default_ratio")]
        ratio: f64,
        #[schemars(range(min = 400, max = 599))]
        status: Option<u16>,
        #[serde(default)]
        verbose: bool,
        mode: Mode,
        tags: Vec<String>,
        methods: BTreeSet<String>,
        headers: HashMap<String, String>,
        limits: Limits,
        maybe_limits: Option<Limits>,
        #[serde(rename = "renamed-field")]
        renamed: i64,
    }

    fn default_ratio() -> f64 {
        0.5
    }

    fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
        record["fields"]
            .as_array()
            .expect("fields array")
            .iter()
            .find_map(|f| f.get(name))
            .unwrap_or_else(|| panic!("no field {name} in {record}"))
    }

    #[test]
    fn every_supported_shape_translates() {
        let record = config_record::<Everything>().expect("schema converts");
        assert_eq!(record["type"], "record");
        assert_eq!(
            field(&record, "name"),
            &json!({"type": "string", "len_min": 1, "len_max": 64,
                    "description": "The name shown to users.", "required": true})
        );
        assert_eq!(
            field(&record, "ratio"),
            &json!({"type": "number", "default": 0.5, "required": true})
        );
        assert_eq!(
            field(&record, "status"),
            &json!({"type": "integer", "between": [400, 599]})
        );
        assert_eq!(
            field(&record, "verbose"),
            &json!({"type": "boolean", "default": false, "required": true})
        );
        assert_eq!(
            field(&record, "mode"),
            &json!({"type": "string", "one_of": ["fast", "safe"], "required": true})
        );
        assert_eq!(field(&record, "tags")["type"], "array");
        assert_eq!(
            field(&record, "tags")["elements"],
            json!({"type": "string", "len_min": 0})
        );
        assert_eq!(field(&record, "methods")["type"], "set");
        assert_eq!(
            field(&record, "headers"),
            &json!({"type": "map", "keys": {"type": "string", "len_min": 0},
                    "values": {"type": "string", "len_min": 0}, "required": true})
        );
        let limits = field(&record, "limits");
        assert_eq!(limits["type"], "record");
        assert_eq!(field(limits, "burst")["between"], json!([1, 10]));
        assert_eq!(field(&record, "maybe_limits")["type"], "record");
        assert!(field(&record, "maybe_limits").get("required").is_none());
        assert_eq!(field(&record, "renamed-field")["type"], "integer");
        let order: Vec<&str> = record["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(|f| f.as_object()?.keys().next().map(String::as_str))
            .collect();
        assert_eq!(
            order[..3],
            ["name", "ratio", "status"],
            "declaration order kept"
        );
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    enum WithData {
        A(u8),
        B { x: String },
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Unsupported {
        choice: WithData,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Tuple {
        pair: (u8, String),
    }

    #[derive(Deserialize, JsonSchema)]
    struct Empty {}

    #[test]
    fn a_struct_without_fields_is_an_empty_record() {
        let record = config_record::<Empty>().expect("converts");
        assert_eq!(record["type"], "record");
        assert_eq!(record["fields"], json!([]));
    }

    #[test]
    fn shapes_kong_cannot_express_are_refused_with_the_field_name() {
        let err = config_record::<Unsupported>().expect_err("enum with data refused");
        assert!(err.message().contains("config.choice"), "{err}");
        let err = config_record::<Tuple>().expect_err("tuple refused");
        assert!(err.message().contains("config.pair"), "{err}");
        let err = config_record::<String>().expect_err("non-struct config refused");
        assert!(err.message().contains("struct"), "{err}");
    }
}
