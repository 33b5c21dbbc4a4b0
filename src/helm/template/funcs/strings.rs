//! Sprig's string functions. Those that can multiply their input (`repeat`, `indent`,
//! `replace`, `join` …) check the size of their result before building it.

use super::{int, list, s, undefined, want_items, want_text};
use serde_json::Value;

fn indent(name: &str, n: i64, text: &str) -> Result<String, String> {
    let n = n.max(0) as u128;
    let lines = text.matches('\n').count() as u128 + 1;
    want_text(name, text.len() as u128 + n * lines + 1)?;
    let pad = " ".repeat(n as usize);
    Ok(text
        .split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn joined(a: &[Value], sep: &str) -> String {
    a.iter()
        .filter(|v| !v.is_null())
        .map(s)
        .collect::<Vec<_>>()
        .join(sep)
}

fn regex(pattern: &Value) -> Result<regex::Regex, String> {
    regex::Regex::new(&s(pattern)).map_err(|e| e.to_string())
}

/// Sprig's `regexReplaceAll`, stopping once the result would exceed the text limit:
/// a pattern matching everywhere with a long replacement multiplies the input.
fn regex_replace_all(name: &str, a: &[Value]) -> Result<String, String> {
    let re = regex(&a[0])?;
    let (text, rep) = (s(&a[1]), s(&a[2]));
    let mut grown: u128 = text.len() as u128;
    let mut over = false;
    let out = re.replace_all(&text, |caps: &regex::Captures<'_>| {
        let mut dst = String::new();
        if !over {
            caps.expand(&rep, &mut dst);
            grown += dst.len() as u128;
            over = want_text(name, grown).is_err();
        }
        dst
    });
    if over {
        want_text(name, grown)?;
    }
    Ok(out.into_owned())
}

/// The separator and text of `split`/`splitList`, refused if the pieces would be too
/// many (splitting on "" makes one per character).
fn pieces(name: &str, a: &[Value]) -> Result<(String, String), String> {
    let (sep, text) = (s(&a[0]), s(&a[1]));
    let n = if sep.is_empty() {
        text.chars().count() + 2
    } else {
        text.matches(sep.as_str()).count() + 1
    };
    want_items(name, n as u128)?;
    Ok((sep, text))
}

/// Calls a function of this family; the arity is already checked.
pub(super) fn call(name: &str, a: &[Value]) -> Result<Value, String> {
    Ok(Value::from(match name {
        "quote" => a
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| serde_json::to_string(&s(v)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" "),
        "squote" => a
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| format!("'{}'", s(v)))
            .collect::<Vec<_>>()
            .join(" "),
        "cat" => joined(a, " "),
        "indent" => indent(name, int(&a[0])?, &s(&a[1]))?,
        "nindent" => format!("\n{}", indent(name, int(&a[0])?, &s(&a[1]))?),
        "trim" => s(&a[0]).trim().to_string(),
        "trimSuffix" => {
            let t = s(&a[1]);
            t.strip_suffix(s(&a[0]).as_str())
                .map(str::to_string)
                .unwrap_or(t)
        }
        "trimPrefix" => {
            let t = s(&a[1]);
            t.strip_prefix(s(&a[0]).as_str())
                .map(str::to_string)
                .unwrap_or(t)
        }
        "trunc" => {
            let n = int(&a[0])?;
            let chars: Vec<char> = s(&a[1]).chars().collect();
            let keep = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
            if n >= 0 {
                chars.iter().take(keep).collect()
            } else {
                chars[chars.len().saturating_sub(keep)..].iter().collect()
            }
        }
        "upper" => s(&a[0]).to_uppercase(),
        "lower" => s(&a[0]).to_lowercase(),
        "title" => s(&a[0])
            .split(' ')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
        "replace" => {
            let (from, to, text) = (s(&a[0]), s(&a[1]), s(&a[2]));
            let hits = if from.is_empty() {
                text.chars().count() + 1
            } else {
                text.matches(from.as_str()).count()
            };
            want_text(name, text.len() as u128 + hits as u128 * to.len() as u128)?;
            text.replace(&from, &to)
        }
        "contains" => return Ok(Value::Bool(s(&a[1]).contains(&s(&a[0])))),
        "hasPrefix" => return Ok(Value::Bool(s(&a[1]).starts_with(&s(&a[0])))),
        "hasSuffix" => return Ok(Value::Bool(s(&a[1]).ends_with(&s(&a[0])))),
        "repeat" => {
            let n = int(&a[0])?.max(0);
            let t = s(&a[1]);
            want_text(name, t.len() as u128 * n as u128)?;
            t.repeat(n as usize)
        }
        "split" => {
            let (sep, text) = pieces(name, a)?;
            return Ok(Value::Object(
                text.split(sep.as_str())
                    .enumerate()
                    .map(|(i, p)| (format!("_{i}"), Value::from(p)))
                    .collect(),
            ));
        }
        "splitList" => {
            let (sep, text) = pieces(name, a)?;
            return Ok(Value::Array(
                text.split(sep.as_str()).map(Value::from).collect(),
            ));
        }
        "join" => {
            let items = list(&a[1]);
            let sep = s(&a[0]);
            want_text(name, items.len() as u128 * sep.len() as u128)?;
            items.iter().map(s).collect::<Vec<_>>().join(&sep)
        }
        "toString" => s(&a[0]),
        "toStrings" => {
            return Ok(Value::Array(
                list(&a[0]).iter().map(|v| Value::from(s(v))).collect(),
            ))
        }
        "regexMatch" => return Ok(Value::Bool(regex(&a[0])?.is_match(&s(&a[1])))),
        "regexReplaceAll" => regex_replace_all(name, a)?,
        _ => return undefined(name),
    }))
}
