//! Template functions: Go's builtins (`eq`, `and`, `printf`, `len` …) with Go's
//! semantics, Helm's (`toYaml`, `required`, …) and the Sprig functions real charts use.
//! An unknown function is an error, never empty output.

use super::exec::{print, truthy};
use base64::Engine as _;
use serde_json::{Map, Number, Value};

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

fn is_int(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_i64())
}

fn arith(
    args: &[Value],
    name: &str,
    op: fn(f64, f64) -> f64,
    iop: fn(i64, i64) -> Option<i64>,
) -> Result<Value, String> {
    let [a, b] = args else {
        return Err(format!("{name} needs 2 arguments"));
    };
    if is_int(a) && is_int(b) {
        return iop(int(a)?, int(b)?)
            .map(Value::from)
            .ok_or_else(|| format!("{name}: division by zero"));
    }
    Ok(Number::from_f64(op(num(a)?, num(b)?))
        .map(Value::Number)
        .unwrap_or(Value::Null))
}

fn s(v: &Value) -> String {
    print(v)
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

fn indent(n: i64, text: &str) -> String {
    let pad = " ".repeat(n.max(0) as usize);
    text.split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

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
    }
    Ok(out)
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

/// Calls a function by name.
pub fn call(name: &str, args: Vec<Value>, _dot: &Value) -> Result<Value, String> {
    let a = &args;
    let arg = |i: usize| a.get(i).cloned().unwrap_or(Value::Null);
    let want = |n: usize| {
        if a.len() < n {
            Err(format!("{name}: needs {n} arguments, got {}", a.len()))
        } else {
            Ok(())
        }
    };
    Ok(match name {
        // Go builtins
        "eq" => {
            want(2)?;
            Value::Bool(a[1..].iter().any(|b| match (&a[0], b) {
                (Value::Number(_), Value::Number(_)) => num(&a[0]).ok() == num(b).ok(),
                (x, y) => x == y,
            }))
        }
        "ne" => {
            want(2)?;
            Value::Bool(a[0] != a[1])
        }
        "lt" | "le" | "gt" | "ge" => {
            want(2)?;
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
        "not" => Value::Bool(!truthy(&arg(0))),
        "len" => Value::from(match &arg(0) {
            Value::String(t) => t.len(),
            Value::Array(x) => x.len(),
            Value::Object(o) => o.len(),
            Value::Null => 0,
            other => return Err(format!("len of {}", print(other))),
        }),
        "index" => {
            let mut v = arg(0);
            for k in &a[1..] {
                v = match (&v, k) {
                    (Value::Array(x), _) => x.get(int(k)? as usize).cloned().unwrap_or(Value::Null),
                    (Value::Object(o), _) => o.get(&s(k)).cloned().unwrap_or(Value::Null),
                    _ => Value::Null,
                };
            }
            v
        }
        "print" => {
            // Go's fmt.Sprint: a space only between operands when neither is a string.
            let mut out = String::new();
            for (i, v) in a.iter().enumerate() {
                if i > 0 && !v.is_string() && !a[i - 1].is_string() {
                    out.push(' ');
                }
                out.push_str(&s(v));
            }
            Value::from(out)
        }
        "println" => Value::from(format!(
            "{}\n",
            a.iter().map(s).collect::<Vec<_>>().join(" ")
        )),
        "printf" => {
            want(1)?;
            Value::from(sprintf(&s(&a[0]), &a[1..])?)
        }
        // Helm
        "toYaml" => Value::from(
            crate::cli::output::yaml(&arg(0))
                .trim_end_matches('\n')
                .to_string(),
        ),
        "toJson" => Value::from(serde_json::to_string(&arg(0)).unwrap_or_default()),
        "fromJson" => serde_json::from_str(&s(&arg(0))).unwrap_or(Value::Object(Map::new())),
        "fromYaml" => crate::manifest::yaml::parse_documents(&s(&arg(0)))
            .ok()
            .and_then(|d| d.into_iter().next())
            .map(|d| d.root.to_json())
            .unwrap_or(Value::Object(Map::new())),
        "required" => {
            want(2)?;
            if a[1].is_null() || a[1] == "" {
                return Err(s(&a[0]));
            }
            a[1].clone()
        }
        "fail" => return Err(s(&arg(0))),
        // defaults and emptiness
        "default" => {
            want(1)?;
            match a.get(1) {
                Some(v) if !empty(v) => v.clone(),
                _ => a[0].clone(),
            }
        }
        "empty" => Value::Bool(empty(&arg(0))),
        "coalesce" => a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Null),
        "ternary" => {
            want(3)?;
            if truthy(&a[2]) {
                a[0].clone()
            } else {
                a[1].clone()
            }
        }
        // quoting and layout
        "quote" => Value::from(
            a.iter()
                .filter(|v| !v.is_null())
                .map(|v| serde_json::to_string(&s(v)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "squote" => Value::from(
            a.iter()
                .filter(|v| !v.is_null())
                .map(|v| format!("'{}'", s(v)))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "indent" => Value::from(indent(int(&arg(0))?, &s(&arg(1)))),
        "nindent" => Value::from(format!("\n{}", indent(int(&arg(0))?, &s(&arg(1))))),
        // strings
        "trim" => Value::from(s(&arg(0)).trim().to_string()),
        "trimSuffix" => Value::from(
            s(&arg(1))
                .strip_suffix(s(&arg(0)).as_str())
                .map(str::to_string)
                .unwrap_or_else(|| s(&arg(1))),
        ),
        "trimPrefix" => Value::from(
            s(&arg(1))
                .strip_prefix(s(&arg(0)).as_str())
                .map(str::to_string)
                .unwrap_or_else(|| s(&arg(1))),
        ),
        "trunc" => {
            let n = int(&arg(0))?;
            let t = s(&arg(1));
            let chars: Vec<char> = t.chars().collect();
            Value::from(if n >= 0 {
                chars.iter().take(n as usize).collect::<String>()
            } else {
                chars[chars.len().saturating_sub((-n) as usize)..]
                    .iter()
                    .collect()
            })
        }
        "upper" => Value::from(s(&arg(0)).to_uppercase()),
        "lower" => Value::from(s(&arg(0)).to_lowercase()),
        "title" => Value::from(
            s(&arg(0))
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "replace" => Value::from(s(&arg(2)).replace(&s(&arg(0)), &s(&arg(1)))),
        "contains" => Value::Bool(s(&arg(1)).contains(&s(&arg(0)))),
        "hasPrefix" => Value::Bool(s(&arg(1)).starts_with(&s(&arg(0)))),
        "hasSuffix" => Value::Bool(s(&arg(1)).ends_with(&s(&arg(0)))),
        "repeat" => Value::from(s(&arg(1)).repeat(int(&arg(0))?.max(0) as usize)),
        "cat" => Value::from(
            a.iter()
                .filter(|v| !v.is_null())
                .map(s)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "split" => Value::Object(
            s(&arg(1))
                .split(s(&arg(0)).as_str())
                .enumerate()
                .map(|(i, p)| (format!("_{i}"), Value::from(p)))
                .collect(),
        ),
        "splitList" => Value::Array(
            s(&arg(1))
                .split(s(&arg(0)).as_str())
                .map(Value::from)
                .collect(),
        ),
        "join" => Value::from(
            list(&arg(1))
                .iter()
                .map(s)
                .collect::<Vec<_>>()
                .join(&s(&arg(0))),
        ),
        "toString" => Value::from(s(&arg(0))),
        "toStrings" => Value::Array(list(&arg(0)).iter().map(|v| Value::from(s(v))).collect()),
        "regexMatch" => Value::Bool(
            regex::Regex::new(&s(&arg(0)))
                .map_err(|e| e.to_string())?
                .is_match(&s(&arg(1))),
        ),
        "regexReplaceAll" => Value::from(
            regex::Regex::new(&s(&arg(0)))
                .map_err(|e| e.to_string())?
                .replace_all(&s(&arg(1)), s(&arg(2)).as_str())
                .into_owned(),
        ),
        // lists
        "list" => Value::Array(a.clone()),
        "first" => list(&arg(0)).first().cloned().unwrap_or(Value::Null),
        "last" => list(&arg(0)).last().cloned().unwrap_or(Value::Null),
        "rest" => Value::Array(list(&arg(0)).into_iter().skip(1).collect()),
        "initial" => {
            let l = list(&arg(0));
            Value::Array(l[..l.len().saturating_sub(1)].to_vec())
        }
        "append" => {
            let mut l = list(&arg(0));
            l.push(arg(1));
            Value::Array(l)
        }
        "prepend" => {
            let mut l = list(&arg(0));
            l.insert(0, arg(1));
            Value::Array(l)
        }
        "uniq" => {
            let mut out: Vec<Value> = vec![];
            for v in list(&arg(0)) {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Value::Array(out)
        }
        "without" => {
            let drop = &a[1..];
            Value::Array(
                list(&arg(0))
                    .into_iter()
                    .filter(|v| !drop.contains(v))
                    .collect(),
            )
        }
        "has" => Value::Bool(list(&arg(1)).contains(&arg(0))),
        "compact" => Value::Array(list(&arg(0)).into_iter().filter(|v| !empty(v)).collect()),
        "concat" => Value::Array(a.iter().flat_map(list).collect()),
        "until" => Value::Array((0..int(&arg(0))?).map(Value::from).collect()),
        "untilStep" => {
            let (start, stop, step) = (int(&arg(0))?, int(&arg(1))?, int(&arg(2))?);
            if step == 0 {
                return Err("untilStep: step must not be 0".into());
            }
            let mut out = vec![];
            let mut i = start;
            while (step > 0 && i < stop) || (step < 0 && i > stop) {
                out.push(Value::from(i));
                i += step;
            }
            Value::Array(out)
        }
        "sortAlpha" => {
            let mut l: Vec<String> = list(&arg(0)).iter().map(s).collect();
            l.sort();
            Value::Array(l.into_iter().map(Value::from).collect())
        }
        // dicts
        "dict" => {
            let mut m = Map::new();
            for pair in a.chunks(2) {
                m.insert(s(&pair[0]), pair.get(1).cloned().unwrap_or(Value::Null));
            }
            Value::Object(m)
        }
        "get" => arg(0).get(s(&arg(1))).cloned().unwrap_or(Value::from("")),
        "set" => {
            let mut m = arg(0).as_object().cloned().unwrap_or_default();
            m.insert(s(&arg(1)), arg(2));
            Value::Object(m)
        }
        "unset" => {
            let mut m = arg(0).as_object().cloned().unwrap_or_default();
            m.remove(&s(&arg(1)));
            Value::Object(m)
        }
        "hasKey" => Value::Bool(
            arg(0)
                .as_object()
                .is_some_and(|m| m.contains_key(&s(&arg(1)))),
        ),
        "keys" => Value::Array(
            a.iter()
                .flat_map(|m| {
                    m.as_object()
                        .map(|o| o.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .map(Value::from)
                .collect(),
        ),
        "pick" => {
            let m = arg(0).as_object().cloned().unwrap_or_default();
            let keep: Vec<String> = a[1..].iter().map(s).collect();
            Value::Object(m.into_iter().filter(|(k, _)| keep.contains(k)).collect())
        }
        "omit" => {
            let m = arg(0).as_object().cloned().unwrap_or_default();
            let drop: Vec<String> = a[1..].iter().map(s).collect();
            Value::Object(m.into_iter().filter(|(k, _)| !drop.contains(k)).collect())
        }
        "merge" | "mergeOverwrite" => {
            let mut dst = arg(0).as_object().cloned().unwrap_or_default();
            for src in &a[1..] {
                if let Some(o) = src.as_object() {
                    merge_into(&mut dst, o, name == "mergeOverwrite");
                }
            }
            Value::Object(dst)
        }
        "deepCopy" => arg(0),
        // numbers
        "add" => {
            let mut acc = Value::from(0);
            for v in a {
                acc = arith(
                    &[acc, v.clone()],
                    "add",
                    |x, y| x + y,
                    |x, y| x.checked_add(y),
                )?;
            }
            acc
        }
        "sub" => arith(a, "sub", |x, y| x - y, |x, y| x.checked_sub(y))?,
        "mul" => {
            let mut acc = Value::from(1);
            for v in a {
                acc = arith(
                    &[acc, v.clone()],
                    "mul",
                    |x, y| x * y,
                    |x, y| x.checked_mul(y),
                )?;
            }
            acc
        }
        "div" => arith(a, "div", |x, y| x / y, |x, y| x.checked_div(y))?,
        "mod" => arith(a, "mod", |x, y| x % y, |x, y| x.checked_rem(y))?,
        "max" => Value::from(
            a.iter()
                .map(int)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .max()
                .unwrap_or(0),
        ),
        "min" => Value::from(
            a.iter()
                .map(int)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .min()
                .unwrap_or(0),
        ),
        "int" | "int64" => Value::from(int(&arg(0)).unwrap_or(0)),
        "float64" => Number::from_f64(num(&arg(0)).unwrap_or(0.0))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        "atoi" => Value::from(s(&arg(0)).trim().parse::<i64>().unwrap_or(0)),
        // encoding and hashing
        "b64enc" => Value::from(base64::engine::general_purpose::STANDARD.encode(s(&arg(0)))),
        "b64dec" => Value::from(
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(s(&arg(0)))
                    .map_err(|e| format!("b64dec: {e}"))?,
            )
            .into_owned(),
        ),
        "sha256sum" => Value::from(crate::manifest::object::sha256_hex(s(&arg(0)).as_bytes())),
        // versions, dates, types
        "semverCompare" => {
            let c = crate::image::semver::Constraint::parse(&s(&arg(0)))?;
            let v = crate::image::semver::Version::parse(&s(&arg(1)))
                .ok_or_else(|| format!("semverCompare: invalid version {:?}", s(&arg(1))))?;
            Value::Bool(c.matches(&v))
        }
        "now" => Value::from(crate::util::time::rfc3339_secs(
            crate::util::time::unix_now(),
        )),
        "date" => Value::from(s(&arg(1))),
        "kindIs" => Value::Bool(kind_of(&arg(1)) == s(&arg(0))),
        "typeOf" => Value::from(match arg(0) {
            Value::Null => "<nil>",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_i64() => "int64",
            Value::Number(_) => "float64",
            Value::String(_) => "string",
            Value::Array(_) => "[]interface {}",
            Value::Object(_) => "map[string]interface {}",
        }),
        other => return Err(format!("function {other:?} not defined")),
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
