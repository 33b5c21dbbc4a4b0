//! Template functions: Go's builtins (`eq`, `and`, `printf`, `len` …) with Go's
//! semantics, Helm's (`toYaml`, `required`, …) and the Sprig functions real charts use,
//! one file per family. Every call is checked against the function's arity first, and
//! every result against [`limits`](super::limits), so no argument list can panic and no
//! result can grow without bound. An unknown function is an error, never empty output.

mod builtins;
mod dicts;
mod helm;
mod lists;
mod numbers;
mod strings;

pub use builtins::{go_number, sprintf};

use super::exec::{print, truthy};
use super::limits::{MAX_ITEMS, MAX_TEXT, MAX_VALUE_DEPTH};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A function of one family: its name (families share code) and checked arguments.
type Func = fn(&str, &[Value]) -> Result<Value, String>;

/// No upper bound on the number of arguments.
const MANY: usize = usize::MAX;

/// Name, fewest and most arguments, implementation.
const TABLE: &[(&str, usize, usize, Func)] = &[
    // Go builtins
    ("eq", 2, MANY, builtins::call),
    ("ne", 2, 2, builtins::call),
    ("lt", 2, 2, builtins::call),
    ("le", 2, 2, builtins::call),
    ("gt", 2, 2, builtins::call),
    ("ge", 2, 2, builtins::call),
    ("and", 1, MANY, builtins::call),
    ("or", 1, MANY, builtins::call),
    ("not", 1, 1, builtins::call),
    ("len", 1, 1, builtins::call),
    ("index", 1, MANY, builtins::call),
    ("print", 0, MANY, builtins::call),
    ("println", 0, MANY, builtins::call),
    ("printf", 1, MANY, builtins::call),
    // Helm, defaults, encodings, versions and types
    ("toYaml", 1, 1, helm::call),
    ("toJson", 1, 1, helm::call),
    ("fromJson", 1, 1, helm::call),
    ("fromYaml", 1, 1, helm::call),
    ("required", 2, 2, helm::call),
    ("fail", 1, 1, helm::call),
    ("default", 1, 2, helm::call),
    ("empty", 1, 1, helm::call),
    ("coalesce", 0, MANY, helm::call),
    ("ternary", 3, 3, helm::call),
    ("b64enc", 1, 1, helm::call),
    ("b64dec", 1, 1, helm::call),
    ("sha256sum", 1, 1, helm::call),
    ("semverCompare", 2, 2, helm::call),
    ("now", 0, 0, helm::call),
    ("date", 2, 2, helm::call),
    ("kindIs", 2, 2, helm::call),
    ("typeOf", 1, 1, helm::call),
    // strings
    ("quote", 0, MANY, strings::call),
    ("squote", 0, MANY, strings::call),
    ("indent", 2, 2, strings::call),
    ("nindent", 2, 2, strings::call),
    ("trim", 1, 1, strings::call),
    ("trimSuffix", 2, 2, strings::call),
    ("trimPrefix", 2, 2, strings::call),
    ("trunc", 2, 2, strings::call),
    ("upper", 1, 1, strings::call),
    ("lower", 1, 1, strings::call),
    ("title", 1, 1, strings::call),
    ("replace", 3, 3, strings::call),
    ("contains", 2, 2, strings::call),
    ("hasPrefix", 2, 2, strings::call),
    ("hasSuffix", 2, 2, strings::call),
    ("repeat", 2, 2, strings::call),
    ("cat", 0, MANY, strings::call),
    ("split", 2, 2, strings::call),
    ("splitList", 2, 2, strings::call),
    ("join", 2, 2, strings::call),
    ("toString", 1, 1, strings::call),
    ("toStrings", 1, 1, strings::call),
    ("regexMatch", 2, 2, strings::call),
    ("regexReplaceAll", 3, 3, strings::call),
    // lists
    ("list", 0, MANY, lists::call),
    ("first", 1, 1, lists::call),
    ("last", 1, 1, lists::call),
    ("rest", 1, 1, lists::call),
    ("initial", 1, 1, lists::call),
    ("append", 2, 2, lists::call),
    ("prepend", 2, 2, lists::call),
    ("uniq", 1, 1, lists::call),
    ("without", 1, MANY, lists::call),
    ("has", 2, 2, lists::call),
    ("compact", 1, 1, lists::call),
    ("concat", 0, MANY, lists::call),
    ("until", 1, 1, lists::call),
    ("untilStep", 3, 3, lists::call),
    ("sortAlpha", 1, 1, lists::call),
    // dicts
    ("dict", 0, MANY, dicts::call),
    ("get", 2, 2, dicts::call),
    ("set", 3, 3, dicts::call),
    ("unset", 2, 2, dicts::call),
    ("hasKey", 2, 2, dicts::call),
    ("keys", 1, MANY, dicts::call),
    ("pick", 1, MANY, dicts::call),
    ("omit", 1, MANY, dicts::call),
    ("merge", 1, MANY, dicts::call),
    ("mergeOverwrite", 1, MANY, dicts::call),
    ("deepCopy", 1, 1, dicts::call),
    // numbers
    ("add", 0, MANY, numbers::call),
    ("sub", 2, 2, numbers::call),
    ("mul", 1, MANY, numbers::call),
    ("div", 2, 2, numbers::call),
    ("mod", 2, 2, numbers::call),
    ("max", 1, MANY, numbers::call),
    ("min", 1, MANY, numbers::call),
    ("int", 1, 1, numbers::call),
    ("int64", 1, 1, numbers::call),
    ("float64", 1, 1, numbers::call),
    ("atoi", 1, 1, numbers::call),
];

fn lookup(name: &str) -> Option<(usize, usize, Func)> {
    static MAP: OnceLock<HashMap<&'static str, (usize, usize, Func)>> = OnceLock::new();
    MAP.get_or_init(|| {
        TABLE
            .iter()
            .map(|&(n, min, max, f)| (n, (min, max, f)))
            .collect()
    })
    .get(name)
    .copied()
}

/// Go's arity error: "wrong number of args for quote: want 1 got 0".
pub fn check_arity(name: &str, got: usize, min: usize, max: usize) -> Result<(), String> {
    if got < min && max == MANY {
        Err(format!(
            "wrong number of args for {name}: want at least {min} got {got}"
        ))
    } else if got < min || got > max {
        let want = if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        };
        Err(format!(
            "wrong number of args for {name}: want {want} got {got}"
        ))
    } else {
        Ok(())
    }
}

/// Calls a function by name, after checking its arity; checks the result's size.
pub fn call(name: &str, args: Vec<Value>) -> Result<Value, String> {
    let Some((min, max, f)) = lookup(name) else {
        return Err(format!("function {name:?} not defined"));
    };
    check_arity(name, args.len(), min, max)?;
    let v = f(name, &args)?;
    check_size(name, &v)?;
    Ok(v)
}

/// Rejects a value over [`MAX_TEXT`] or [`MAX_ITEMS`] at its top level.
pub fn check_size(name: &str, v: &Value) -> Result<(), String> {
    match v {
        Value::String(t) if t.len() > MAX_TEXT => Err(format!(
            "{name}: result of {} bytes exceeds the limit of {MAX_TEXT}",
            t.len()
        )),
        Value::Array(a) if a.len() > MAX_ITEMS => Err(too_many(name, a.len())),
        Value::Object(o) if o.len() > MAX_ITEMS => Err(too_many(name, o.len())),
        _ => Ok(()),
    }
}

fn too_many(name: &str, n: usize) -> String {
    format!("{name}: {n} items exceed the limit of {MAX_ITEMS}")
}

/// Refuses a string of `len` bytes before it is built.
fn want_text(name: &str, len: u128) -> Result<(), String> {
    if len > MAX_TEXT as u128 {
        Err(format!(
            "{name}: result of {len} bytes would exceed the limit of {MAX_TEXT}"
        ))
    } else {
        Ok(())
    }
}

/// Refuses a list of `n` items before it is built.
fn want_items(name: &str, n: u128) -> Result<(), String> {
    if n > MAX_ITEMS as u128 {
        Err(format!(
            "{name}: {n} items would exceed the limit of {MAX_ITEMS}"
        ))
    } else {
        Ok(())
    }
}

/// Refuses a built container nested deeper than [`MAX_VALUE_DEPTH`].
fn nested(name: &str, v: Value) -> Result<Value, String> {
    fn too_deep(v: &Value, left: usize) -> bool {
        match v {
            Value::Array(a) => left == 0 || a.iter().any(|x| too_deep(x, left - 1)),
            Value::Object(o) => left == 0 || o.values().any(|x| too_deep(x, left - 1)),
            _ => false,
        }
    }
    if too_deep(&v, MAX_VALUE_DEPTH) {
        Err(format!(
            "{name}: the value would nest deeper than {MAX_VALUE_DEPTH}"
        ))
    } else {
        Ok(v)
    }
}

fn num(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number")),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::Null => Ok(0.0),
        other => Err(format!("{} is not a number", print(other))),
    }
}

fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => Ok(n.as_i64().unwrap_or(n.as_f64().unwrap_or(0.0) as i64)),
        _ => num(v).map(|f| f as i64),
    }
}

fn s(v: &Value) -> String {
    print(v)
}

fn empty(v: &Value) -> bool {
    !truthy(v)
}

fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

fn undefined(name: &str) -> Result<Value, String> {
    Err(format!("function {name:?} not defined"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_refuses_too_few_and_too_many_arguments() {
        for &(name, min, max, _) in TABLE {
            if min > 0 {
                let err = call(name, vec![Value::Null; min - 1]).unwrap_err();
                assert!(err.starts_with("wrong number of args"), "{name}: {err}");
            }
            if max != MANY {
                let err = call(name, vec![Value::Null; max + 1]).unwrap_err();
                assert!(err.starts_with("wrong number of args"), "{name}: {err}");
            }
            // Any argument count in range may fail, but must not panic.
            for n in min..=max.min(min + 3) {
                let _ = call(name, vec![Value::Null; n]);
                let _ = call(name, vec![Value::from(-1); n]);
                let _ = call(name, vec![Value::from(i64::MIN); n]);
                let _ = call(name, vec![Value::from(""); n]);
                let _ = call(name, vec![serde_json::json!([1, [2]]); n]);
                let _ = call(name, vec![serde_json::json!({"a": {"b": 1}}); n]);
            }
        }
    }
}
