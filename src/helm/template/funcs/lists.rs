//! Sprig's list functions. Generators (`until`, `untilStep`) count their items before
//! making them; constructors refuse values nested past the limit.

use super::{empty, int, list, nested, s, undefined, want_items};
use serde_json::Value;

/// Sprig's `untilStep`: start, start+step … while short of stop.
fn until_step(name: &str, start: i64, stop: i64, step: i64) -> Result<Value, String> {
    if step == 0 {
        return Err(format!("{name}: step must not be 0"));
    }
    let span = if step > 0 {
        i128::from(stop) - i128::from(start)
    } else {
        i128::from(start) - i128::from(stop)
    };
    let n = if span <= 0 {
        0
    } else {
        (span - 1) / i128::from(step).abs() + 1
    };
    want_items(name, n as u128)?;
    Ok(Value::Array(
        (0..n)
            .map(|k| Value::from((i128::from(start) + k * i128::from(step)) as i64))
            .collect(),
    ))
}

/// Calls a function of this family; the arity is already checked.
pub(super) fn call(name: &str, a: &[Value]) -> Result<Value, String> {
    Ok(match name {
        "list" => nested(name, Value::Array(a.to_vec()))?,
        "first" => list(&a[0]).first().cloned().unwrap_or(Value::Null),
        "last" => list(&a[0]).last().cloned().unwrap_or(Value::Null),
        "rest" => Value::Array(list(&a[0]).into_iter().skip(1).collect()),
        "initial" => {
            let mut l = list(&a[0]);
            l.pop();
            Value::Array(l)
        }
        "append" | "prepend" => {
            let mut l = list(&a[0]);
            want_items(name, l.len() as u128 + 1)?;
            if name == "append" {
                l.push(a[1].clone());
            } else {
                l.insert(0, a[1].clone());
            }
            nested(name, Value::Array(l))?
        }
        "uniq" => {
            let mut out: Vec<Value> = vec![];
            for v in list(&a[0]) {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Value::Array(out)
        }
        "without" => Value::Array(
            list(&a[0])
                .into_iter()
                .filter(|v| !a[1..].contains(v))
                .collect(),
        ),
        "has" => Value::Bool(list(&a[1]).contains(&a[0])),
        "compact" => Value::Array(list(&a[0]).into_iter().filter(|v| !empty(v)).collect()),
        "concat" => {
            let n: usize = a.iter().map(|v| v.as_array().map_or(1, Vec::len)).sum();
            want_items(name, n as u128)?;
            Value::Array(a.iter().flat_map(list).collect())
        }
        "until" => {
            // Sprig counts down for a negative count.
            let n = int(&a[0])?;
            until_step(name, 0, n, if n < 0 { -1 } else { 1 })?
        }
        "untilStep" => until_step(name, int(&a[0])?, int(&a[1])?, int(&a[2])?)?,
        "sortAlpha" => {
            let mut l: Vec<String> = list(&a[0]).iter().map(s).collect();
            l.sort();
            Value::Array(l.into_iter().map(Value::from).collect())
        }
        _ => return undefined(name),
    })
}
