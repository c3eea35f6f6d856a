//! The `json-validate` benchmark rules, checked while parsing: shared
//! verbatim by `rs-bench-json` and the plugin-server model
//! (`benches/plugin-server`, which includes this file), so both run the same
//! Rust code. Depends only on serde and serde_json.
//!
//! The body is parsed with serde visitors into [`Shape`]s — a value's type
//! plus what the rules need of it — instead of a `serde_json::Value` tree:
//! nested content is skipped and nothing is allocated. Semantics match
//! parsing into a `Value` and checking it (a test compares them): duplicate
//! keys keep the last value, `null` is a value of its own.

use serde::Deserialize;
use serde::de::{MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// The allowed `plan` values.
pub const PLANS: [&str; 3] = ["free", "pro", "enterprise"];

/// A value the rules do not look at: parsed and checked (strings decoded,
/// so a lone surrogate escape is an error as it is for a `Value`) but not
/// kept. serde's `IgnoredAny` would skip strings undecoded.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        struct SkipVisitor;
        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        d.deserialize_any(SkipVisitor)
    }
}

/// What the rules need of a JSON value.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Shape {
    /// The member is not there.
    #[default]
    Absent,
    Null,
    Bool,
    Int(i64),
    Float,
    /// Character count, and whether it is one of the plans.
    Str(usize, bool),
    Array(usize),
    Object,
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Bool)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Shape, E> {
        Ok(Shape::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Shape, E> {
        Ok(i64::try_from(v).map_or(Shape::Float, Shape::Int))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Float)
    }
    fn visit_str<E>(self, v: &str) -> Result<Shape, E> {
        Ok(Shape::Str(v.chars().count(), PLANS.contains(&v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut len = 0;
        while seq.next_element::<Skip>()?.is_some() {
            len += 1;
        }
        Ok(Shape::Array(len))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Shape::Object)
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

/// The members the rules look at; `user_*` are the fields of `user` when it
/// is an object.
#[derive(Debug, Default)]
struct Doc {
    id: Shape,
    user_name: Shape,
    user_email: Shape,
    user_age: Shape,
    plan: Shape,
    quantity: Shape,
    tags: Shape,
    items: Shape,
    notes: Shape,
    active: Shape,
}

/// `user`: its three fields when it is an object, none otherwise.
struct User(Shape, Shape, Shape);

impl<'de> Deserialize<'de> for User {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<User, D::Error> {
        struct UserVisitor;
        impl<'de> Visitor<'de> for UserVisitor {
            type Value = User;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<User, A::Error> {
                let mut user = User(Shape::Absent, Shape::Absent, Shape::Absent);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "name" => user.0 = map.next_value()?,
                        "email" => user.1 = map.next_value()?,
                        "age" => user.2 = map.next_value()?,
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(user)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<User, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(User(Shape::Absent, Shape::Absent, Shape::Absent))
            }
            fn visit_unit<E>(self) -> Result<User, E> {
                Ok(User(Shape::Absent, Shape::Absent, Shape::Absent))
            }
            fn visit_bool<E>(self, _: bool) -> Result<User, E> {
                Ok(User(Shape::Absent, Shape::Absent, Shape::Absent))
            }
            fn visit_i64<E>(self, _: i64) -> Result<User, E> {
                Ok(User(Shape::Absent, Shape::Absent, Shape::Absent))
            }
            fn visit_u64<E>(self, _: u64) -> Result<User, E> {
                Ok(User(Shape::Absent, Shape::Absent, Shape::Absent))
            }
            fn visit_f64<E>(self, _: f64) -> Result<User, E> {
                Ok(User(Shape::Absent, Shape::Absent, Shape::Absent))
            }
            fn visit_str<E>(self, _: &str) -> Result<User, E> {
                Ok(User(Shape::Absent, Shape::Absent, Shape::Absent))
            }
        }
        d.deserialize_any(UserVisitor)
    }
}

/// Parses the document: `None` when it is valid JSON but not an object.
struct MaybeDoc(Option<Doc>);

impl<'de> Deserialize<'de> for MaybeDoc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MaybeDoc, D::Error> {
        struct DocVisitor;
        impl<'de> Visitor<'de> for DocVisitor {
            type Value = MaybeDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeDoc, A::Error> {
                let mut doc = Doc::default();
                // A later duplicate key replaces the earlier value.
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "id" => doc.id = map.next_value()?,
                        "user" => {
                            let User(name, email, age) = map.next_value()?;
                            (doc.user_name, doc.user_email, doc.user_age) = (name, email, age);
                        }
                        "plan" => doc.plan = map.next_value()?,
                        "quantity" => doc.quantity = map.next_value()?,
                        "tags" => doc.tags = map.next_value()?,
                        "items" => doc.items = map.next_value()?,
                        "notes" => doc.notes = map.next_value()?,
                        "active" => doc.active = map.next_value()?,
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(MaybeDoc(Some(doc)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeDoc, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(MaybeDoc(None))
            }
            fn visit_unit<E>(self) -> Result<MaybeDoc, E> {
                Ok(MaybeDoc(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeDoc, E> {
                Ok(MaybeDoc(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<MaybeDoc, E> {
                Ok(MaybeDoc(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<MaybeDoc, E> {
                Ok(MaybeDoc(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<MaybeDoc, E> {
                Ok(MaybeDoc(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<MaybeDoc, E> {
                Ok(MaybeDoc(None))
            }
        }
        d.deserialize_any(DocVisitor)
    }
}

/// The ten rules, in order, on a request body: `Ok(None)` when it passes,
/// `Ok(Some(violation))` for the first rule it breaks, `Err` when it is not
/// valid JSON or not an object.
///
/// # Errors
/// `"body must be valid JSON"` or `"body must be a JSON object"`.
pub fn body_violation(body: &[u8]) -> Result<Option<&'static str>, &'static str> {
    // JSON text is UTF-8; checking it once up front lets serde borrow
    // strings instead of checking each.
    let Ok(body) = std::str::from_utf8(body) else {
        return Err("body must be valid JSON");
    };
    let doc = match serde_json::from_str::<MaybeDoc>(body) {
        Ok(MaybeDoc(Some(doc))) => doc,
        Ok(MaybeDoc(None)) => return Err("body must be a JSON object"),
        Err(_) => return Err("body must be valid JSON"),
    };
    let str_len = |s: Shape| match s {
        Shape::Str(n, _) => Some(n),
        _ => None,
    };
    let int_in =
        |s: Shape, low: i64, high: i64| matches!(s, Shape::Int(n) if (low..=high).contains(&n));
    let checks = [
        (
            "id must be a 36-character string",
            str_len(doc.id) == Some(36),
        ),
        (
            "user.name must be 1-64 characters",
            str_len(doc.user_name).is_some_and(|n| (1..=64).contains(&n)),
        ),
        (
            "user.email must be 3-254 characters",
            str_len(doc.user_email).is_some_and(|n| (3..=254).contains(&n)),
        ),
        (
            "user.age must be an integer 13-130",
            int_in(doc.user_age, 13, 130),
        ),
        (
            "plan must be free, pro or enterprise",
            matches!(doc.plan, Shape::Str(_, true)),
        ),
        (
            "quantity must be an integer 1-100",
            int_in(doc.quantity, 1, 100),
        ),
        (
            "tags must be an array of at most 10",
            matches!(doc.tags, Shape::Array(n) if n <= 10),
        ),
        (
            "items must be an array of 1-50",
            matches!(doc.items, Shape::Array(n) if (1..=50).contains(&n)),
        ),
        (
            "notes must be at most 1024 characters",
            match doc.notes {
                Shape::Absent => true,
                Shape::Str(n, _) => n <= 1024,
                _ => false,
            },
        ),
        ("active must be a boolean", doc.active == Shape::Bool),
    ];
    Ok(checks
        .iter()
        .find(|(_, ok)| !ok)
        .map(|(message, _)| *message))
}
