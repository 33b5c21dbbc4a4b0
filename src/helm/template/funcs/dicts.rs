//! Sprig's dictionary functions. Like Sprig's they return new maps; a template cannot
//! change a value it was given.

use super::{nested, s, undefined};
use serde_json::{Map, Value};

fn merge_into(dst: &mut Map<String, Value>, src: &Map<String, Value>, overwrite: bool) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Object(d)), Value::Object(sv)) => merge_into(d, sv, overwrite),
            (Some(_), _) if !overwrite => {}
            _ => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Calls a function of this family; the arity is already checked.
pub(super) fn call(name: &str, a: &[Value]) -> Result<Value, String> {
    Ok(match name {
        "dict" => {
            let mut m = Map::new();
            for pair in a.chunks(2) {
                m.insert(s(&pair[0]), pair.get(1).cloned().unwrap_or(Value::Null));
            }
            nested(name, Value::Object(m))?
        }
        "get" => a[0].get(s(&a[1])).cloned().unwrap_or(Value::from("")),
        "set" => {
            let mut m = object(&a[0]);
            m.insert(s(&a[1]), a[2].clone());
            nested(name, Value::Object(m))?
        }
        "unset" => {
            let mut m = object(&a[0]);
            m.remove(&s(&a[1]));
            Value::Object(m)
        }
        "hasKey" => Value::Bool(a[0].as_object().is_some_and(|m| m.contains_key(&s(&a[1])))),
        "keys" => Value::Array(
            a.iter()
                .filter_map(Value::as_object)
                .flat_map(|o| o.keys().cloned())
                .map(Value::from)
                .collect(),
        ),
        "pick" | "omit" => {
            let named: Vec<String> = a[1..].iter().map(s).collect();
            let keep = name == "pick";
            Value::Object(
                object(&a[0])
                    .into_iter()
                    .filter(|(k, _)| named.contains(k) == keep)
                    .collect(),
            )
        }
        "merge" | "mergeOverwrite" => {
            let mut dst = object(&a[0]);
            for src in &a[1..] {
                if let Some(o) = src.as_object() {
                    merge_into(&mut dst, o, name == "mergeOverwrite");
                }
            }
            Value::Object(dst)
        }
        "deepCopy" => a[0].clone(),
        _ => return undefined(name),
    })
}
