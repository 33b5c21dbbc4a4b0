//! Go's `text/template` builtins, with Go's semantics: comparison, logic, `len`,
//! `index` and the `fmt` printers.

use super::{int, num, s, undefined, want_text};
use crate::helm::template::exec::{print, truthy};
use serde_json::{Number, Value};

/// Go's `%v` for a JSON number: integers as integers, floats in shortest form.
pub fn go_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else if f.abs() >= 1e21 || (f != 0.0 && f.abs() < 1e-4) {
        let s = format!("{f:e}");
        // Go prints 1e+21, Rust 1e21.
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => s,
        }
    } else {
        f.to_string()
    }
}

/// The most digits `%f` may print after the point; a precision from a template must
/// not make one string of gigabytes.
const MAX_PRECISION: usize = 1000;

/// Go's `fmt.Sprintf` for the verbs charts use: %s %d %v %q %f (with precision) %x %%.
pub fn sprintf(format: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut prec: Option<usize> = None;
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d == '.' || d.is_ascii_digit() || d == '-' || d == '+' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        if let Some(p) = spec.split_once('.').map(|(_, p)| p) {
            prec = p.parse().ok();
        }
        if prec.is_some_and(|p| p > MAX_PRECISION) {
            return Err(format!(
                "printf: precision in %{spec} exceeds {MAX_PRECISION}"
            ));
        }
        let verb = chars.next().ok_or("printf: format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = it.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        match verb {
            's' | 'v' => out.push_str(&s(a)),
            'd' => out.push_str(&int(a)?.to_string()),
            'q' => out.push_str(&serde_json::to_string(&s(a)).unwrap_or_default()),
            'f' => out.push_str(&format!("{:.*}", prec.unwrap_or(6), num(a)?)),
            'x' => match a {
                Value::String(t) => {
                    out.push_str(&t.bytes().map(|b| format!("{b:02x}")).collect::<String>())
                }
                _ => out.push_str(&format!("{:x}", int(a)?)),
            },
            't' => out.push_str(&truthy(a).to_string()),
            other => return Err(format!("printf: unsupported verb %{other}")),
        }
        want_text("printf", out.len() as u128)?;
    }
    Ok(out)
}

fn cmp(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Number(_), Value::Number(_)) => num(a)?
            .partial_cmp(&num(b)?)
            .ok_or_else(|| "incomparable numbers".into()),
        _ => Err(format!(
            "incompatible types for comparison: {} and {}",
            print(a),
            print(b)
        )),
    }
}

/// Go's `fmt.Sprint`: a space only between operands when neither is a string.
fn sprint(a: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        if i > 0 && !v.is_string() && !a[i - 1].is_string() {
            out.push(' ');
        }
        out.push_str(&s(v));
    }
    out
}

/// Calls a builtin; the arity is already checked.
pub(super) fn call(name: &str, a: &[Value]) -> Result<Value, String> {
    Ok(match name {
        "eq" => Value::Bool(a[1..].iter().any(|b| match (&a[0], b) {
            (Value::Number(_), Value::Number(_)) => num(&a[0]).ok() == num(b).ok(),
            (x, y) => x == y,
        })),
        "ne" => Value::Bool(a[0] != a[1]),
        "lt" | "le" | "gt" | "ge" => {
            let o = cmp(&a[0], &a[1])?;
            Value::Bool(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "and" => a
            .iter()
            .find(|v| !truthy(v))
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => a
            .iter()
            .find(|v| truthy(v))
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Null),
        "not" => Value::Bool(!truthy(&a[0])),
        "len" => Value::from(match &a[0] {
            Value::String(t) => t.len(),
            Value::Array(x) => x.len(),
            Value::Object(o) => o.len(),
            Value::Null => 0,
            other => return Err(format!("len of {}", print(other))),
        }),
        "index" => {
            let mut v = &a[0];
            for k in &a[1..] {
                let next = match v {
                    Value::Array(x) => usize::try_from(int(k)?).ok().and_then(|i| x.get(i)),
                    Value::Object(o) => o.get(&s(k)),
                    _ => None,
                };
                match next {
                    Some(n) => v = n,
                    None => return Ok(Value::Null),
                }
            }
            v.clone()
        }
        "print" => Value::from(sprint(a)),
        "println" => Value::from(format!(
            "{}\n",
            a.iter().map(s).collect::<Vec<_>>().join(" ")
        )),
        "printf" => Value::from(sprintf(&s(&a[0]), &a[1..])?),
        _ => return undefined(name),
    })
}
