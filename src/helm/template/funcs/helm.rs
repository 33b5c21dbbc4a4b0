//! Helm's own functions (`toYaml`, `required` …) and the Sprig functions on defaults,
//! encodings, versions and types.

use super::{empty, s, undefined};
use crate::helm::template::exec::truthy;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Calls a function of this family; the arity is already checked.
pub(super) fn call(name: &str, a: &[Value]) -> Result<Value, String> {
    Ok(match name {
        "toYaml" => Value::from(
            crate::util::yaml::yaml(&a[0])
                .trim_end_matches('\n')
                .to_string(),
        ),
        "toJson" => Value::from(serde_json::to_string(&a[0]).unwrap_or_default()),
        "fromJson" => serde_json::from_str(&s(&a[0])).unwrap_or(Value::Object(Map::new())),
        "fromYaml" => crate::manifest::yaml::parse_documents(&s(&a[0]))
            .ok()
            .and_then(|d| d.into_iter().next())
            .map(|d| d.root.to_json())
            .unwrap_or(Value::Object(Map::new())),
        "required" => {
            if a[1].is_null() || a[1] == "" {
                return Err(s(&a[0]));
            }
            a[1].clone()
        }
        "fail" => return Err(s(&a[0])),
        "default" => match a.get(1) {
            Some(v) if !empty(v) => v.clone(),
            _ => a[0].clone(),
        },
        "empty" => Value::Bool(empty(&a[0])),
        "coalesce" => a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Null),
        "ternary" => {
            if truthy(&a[2]) {
                a[0].clone()
            } else {
                a[1].clone()
            }
        }
        "b64enc" => Value::from(base64::engine::general_purpose::STANDARD.encode(s(&a[0]))),
        "b64dec" => Value::from(
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(s(&a[0]))
                    .map_err(|e| format!("b64dec: {e}"))?,
            )
            .into_owned(),
        ),
        "sha256sum" => Value::from(crate::manifest::object::sha256_hex(s(&a[0]).as_bytes())),
        "semverCompare" => {
            let c = crate::util::semver::Constraint::parse(&s(&a[0]))?;
            let v = crate::util::semver::Version::parse(&s(&a[1]))
                .ok_or_else(|| format!("semverCompare: invalid version {:?}", s(&a[1])))?;
            Value::Bool(c.matches(&v))
        }
        "now" => Value::from(crate::util::time::rfc3339_secs(
            crate::util::time::unix_now(),
        )),
        "date" => Value::from(s(&a[1])),
        "kindIs" => Value::Bool(kind_of(&a[1]) == s(&a[0])),
        "typeOf" => Value::from(match &a[0] {
            Value::Null => "<nil>",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_i64() => "int64",
            Value::Number(_) => "float64",
            Value::String(_) => "string",
            Value::Array(_) => "[]interface {}",
            Value::Object(_) => "map[string]interface {}",
        }),
        _ => return undefined(name),
    })
}

/// Sprig's `kindOf` names.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "invalid",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() => "int64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}
