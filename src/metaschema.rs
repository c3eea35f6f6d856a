//! Kong's load-time rules for a plugin, checked on the generated schema.
//!
//! Kong validates every plugin schema against its metaschema when it loads
//! the plugin (`MetaSchema.MetaSubSchema` in `kong/db/schema/metaschema.lua`)
//! and refuses to start when one fails. This is our own port of the rules a
//! generated schema can break, so the author hears of them from
//! `cargo test` or at `require`, with the field named, instead of from a
//! Kong that will not start. Only what our generator can emit is checked:
//! field types, the attributes each type needs and allows, description
//! lengths, defaults that must be valid values of their own field, and the
//! config keys Kong sets at run time.

use serde_json::{Map, Value};

/// Field types Kong knows (`Schema.valid_types`, minus the ones a plugin
/// config cannot hold: `foreign`, `function`).
const TYPES: &[&str] = &[
    "array", "set", "string", "number", "boolean", "integer", "map", "record", "json",
];

/// Kong's bounds on a field description, in bytes (`#value`).
const DESCRIPTION_LEN: std::ops::RangeInclusive<usize> = 10..=500;

/// Keys Kong writes into every plugin's `conf` table at run time
/// (`get_plugin_config` in `kong/runloop/plugins_iterator.lua`): a config
/// field of the same name would be overwritten by Kong.
pub(crate) const RUNTIME_KEYS: &[&str] = &[
    "route_id",
    "service_id",
    "consumer_id",
    "plugin_instance_name",
    "__plugin_id",
    "__ws_id",
    "__key__",
    "__seq__",
];

/// Checks the `config` record of a plugin; every problem found, one line
/// each, naming the field (`config.port: ...`).
pub(crate) fn check_config(record: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(fields) = record.get("fields").and_then(Value::as_array) {
        for (name, _) in fields.iter().filter_map(single_entry) {
            if RUNTIME_KEYS.contains(&name.as_str()) {
                problems.push(format!(
                    "config.{name}: Kong sets this key in every plugin's conf at run time \
                     (kong/runloop/plugins_iterator.lua); rename the field"
                ));
            }
        }
    }
    check_field("config", record, &mut problems);
    problems
}

fn single_entry(item: &Value) -> Option<(&String, &Value)> {
    let object = item.as_object()?;
    let mut entries = object.iter();
    let entry = entries.next()?;
    entries.next().is_none().then_some(entry)
}

fn check_field(path: &str, field: &Value, problems: &mut Vec<String>) {
    let Some(object) = field.as_object() else {
        problems.push(format!("{path}: a field definition must be a table"));
        return;
    };
    let Some(kind) = object.get("type").and_then(Value::as_str) else {
        problems.push(format!("{path}: missing type declaration"));
        return;
    };
    if !TYPES.contains(&kind) {
        problems.push(format!("{path}: unknown type {kind:?}"));
        return;
    }
    let needs: &[&str] = match kind {
        "array" | "set" => &["elements"],
        "map" => &["keys", "values"],
        "record" => &["fields"],
        _ => &[],
    };
    for attribute in needs {
        if !object.contains_key(*attribute) {
            problems.push(format!(
                "{path}: field of type '{kind}' must declare '{attribute}'"
            ));
        }
    }
    for (attribute, types) in ALLOWED_ON {
        if object.contains_key(*attribute) && !types.contains(&kind) {
            problems.push(format!(
                "{path}: field of type '{kind}' cannot have attribute '{attribute}'"
            ));
        }
    }
    if let Some(description) = object.get("description") {
        match description.as_str() {
            Some(text) if DESCRIPTION_LEN.contains(&text.len()) => {}
            Some(text) => problems.push(format!(
                "{path}: the description (the doc comment) is {} bytes; Kong's metaschema \
                 needs {} to {} (kong/db/schema/metaschema.lua), or Kong refuses to start: \
                 {text:?}",
                text.len(),
                DESCRIPTION_LEN.start(),
                DESCRIPTION_LEN.end()
            )),
            None => problems.push(format!("{path}: description must be a string")),
        }
    }
    for attribute in ["elements", "keys", "values"] {
        if let Some(nested) = object.get(attribute) {
            check_field(&format!("{path}.{attribute}"), nested, problems);
        }
    }
    if let Some(fields) = object.get("fields") {
        match fields.as_array() {
            Some(fields) => {
                for item in fields {
                    match single_entry(item) {
                        Some((name, sub)) => check_field(&format!("{path}.{name}"), sub, problems),
                        None => problems.push(format!(
                            "{path}: each entry in fields must be a table with one key"
                        )),
                    }
                }
            }
            None => problems.push(format!("{path}: fields must be an array")),
        }
    }
    if let Some(default) = object.get("default")
        && let Err(why) = value_fits(default, object)
    {
        problems.push(format!(
            "{path}: the default {default} is not a valid value of the field: {why}"
        ));
    }
}

/// Attributes Kong allows on some types only (`attribute_types` in the
/// metaschema), among those a generated schema may carry.
const ALLOWED_ON: &[(&str, &[&str])] = &[
    ("between", &["integer", "number"]),
    ("gt", &["integer", "number"]),
    ("one_of", &["string", "number", "integer"]),
    ("len_eq", &["array", "set", "string", "map"]),
    ("match", &["string"]),
];

/// Whether `value` is a valid value of the field `field` (the metaschema
/// declares `default = { type = "self" }`).
fn value_fits(value: &Value, field: &Map<String, Value>) -> Result<(), String> {
    let kind = field.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match kind {
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|n| n.fract() == 0.0),
        "array" | "set" => value.is_array(),
        "map" | "record" => value.is_object(),
        _ => true,
    };
    if !ok {
        return Err(format!("expected a {kind}"));
    }
    if let Some(allowed) = field.get("one_of").and_then(Value::as_array)
        && !allowed.iter().any(|a| numbers_or_equal(a, value))
    {
        return Err("not one of the allowed values".into());
    }
    if let (Some([low, high]), Some(n)) = (
        field
            .get("between")
            .and_then(Value::as_array)
            .map(Vec::as_slice),
        value.as_f64(),
    ) && (low.as_f64().is_some_and(|low| n < low) || high.as_f64().is_some_and(|high| n > high))
    {
        return Err(format!("not between {low} and {high}"));
    }
    let length = match value {
        Value::String(s) => Some(s.len()),
        Value::Array(a) => Some(a.len()),
        Value::Object(o) if kind == "map" => Some(o.len()),
        _ => None,
    };
    if let Some(length) = length {
        let bound = |key: &str| field.get(key).and_then(Value::as_u64);
        if bound("len_min").is_some_and(|min| (length as u64) < min)
            || bound("len_max").is_some_and(|max| (length as u64) > max)
        {
            return Err("its length is out of the field's bounds".into());
        }
    }
    let nested = |key: &str| field.get(key).and_then(Value::as_object);
    match value {
        Value::Array(items) => {
            if let Some(elements) = nested("elements") {
                items
                    .iter()
                    .try_for_each(|item| value_fits(item, elements))?;
            }
        }
        Value::Object(entries) if kind == "map" => {
            if let Some(values) = nested("values") {
                entries
                    .values()
                    .try_for_each(|item| value_fits(item, values))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn numbers_or_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(fields: Value) -> Value {
        json!({ "type": "record", "fields": fields })
    }

    #[test]
    fn a_valid_schema_passes() {
        let config = record(json!([
            { "port": { "type": "integer", "between": [1, 65535], "default": 80,
                        "required": true, "description": "The port to connect to." } },
            { "mode": { "type": "string", "one_of": ["a", "b"], "default": "a" } },
            { "tags": { "type": "array", "elements": { "type": "string", "len_min": 0 },
                        "default": ["x"] } },
        ]));
        assert_eq!(check_config(&config), Vec::<String>::new());
    }

    #[test]
    fn descriptions_outside_10_to_500_bytes_are_refused() {
        let short = record(json!([{ "port": { "type": "integer", "description": "Port." } }]));
        let problems = check_config(&short);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("config.port: the description"),
            "{problems:?}"
        );
        let long = "x".repeat(501);
        let long = record(json!([{ "a": { "type": "string", "description": long } }]));
        assert_eq!(check_config(&long).len(), 1);
        let exact = record(json!([
            { "a": { "type": "string", "description": "0123456789" } },
            { "b": { "type": "string", "description": "y".repeat(500) } },
        ]));
        assert!(check_config(&exact).is_empty());
    }

    #[test]
    fn runtime_keys_as_field_names_are_refused() {
        let config = record(json!([{ "route_id": { "type": "string" } }]));
        let problems = check_config(&config);
        assert!(problems[0].contains("Kong sets this key"), "{problems:?}");
    }

    #[test]
    fn attributes_on_the_wrong_type_and_missing_parts_are_refused() {
        let config = record(json!([
            { "a": { "type": "string", "between": [1, 2] } },
            { "b": { "type": "array" } },
            { "c": { "type": "map", "keys": { "type": "string" } } },
            { "d": { "type": "tuple" } },
            { "e": { "type": "boolean", "one_of": [true] } },
        ]));
        let problems = check_config(&config);
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn defaults_must_be_values_of_their_field() {
        for (field, ok) in [
            (json!({ "type": "integer", "default": 1.5 }), false),
            (
                json!({ "type": "integer", "between": [1, 10], "default": 11 }),
                false,
            ),
            (
                json!({ "type": "string", "one_of": ["a"], "default": "b" }),
                false,
            ),
            (
                json!({ "type": "string", "len_min": 2, "default": "a" }),
                false,
            ),
            (
                json!({ "type": "array", "elements": { "type": "integer" }, "default": ["a"] }),
                false,
            ),
            (json!({ "type": "number", "default": 1.5 }), true),
            (
                json!({ "type": "string", "one_of": ["a"], "default": "a" }),
                true,
            ),
        ] {
            let problems = check_config(&record(json!([{ "f": field.clone() }])));
            assert_eq!(problems.is_empty(), ok, "{field}: {problems:?}");
        }
    }

    #[test]
    fn nested_records_are_checked() {
        let config = record(json!([{ "inner": record(json!([
            { "x": { "type": "string", "description": "short" } }
        ])) }]));
        let problems = check_config(&config);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("config.inner.x:"), "{problems:?}");
    }
}
