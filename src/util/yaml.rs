//! Emits JSON values as block-style YAML, quoting whatever YAML 1.1 would read back as
//! another type. The CLI prints with it and Helm's `toYaml` renders with it, so it sits
//! below both.

use serde_json::Value;

/// Emits a JSON value as block-style YAML.
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    emit(value, 0, &mut out, false);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && !s.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`~".contains(c))
                && !looks_numeric(s)
                && !s.contains(": ")
                && !s.contains(" #")
                && !s.ends_with(' ')
                && !s.ends_with(':')
                && !s.contains('\n')
                && !matches!(
                    s.as_str(),
                    "true"
                        | "false"
                        | "null"
                        | "yes"
                        | "no"
                        | "on"
                        | "off"
                        | "True"
                        | "False"
                        | "Null"
                        | "~"
                );
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).expect("strings serialize")
            }
        }
        _ => unreachable!("collections are emitted by emit"),
    }
}

/// Whether a plain scalar could be read back as a number, date or time (YAML 1.1
/// resolves those), so it must be quoted: `100m` stays plain, `1e3`, `.5`,
/// `2001-12-14` and `1:20` do not.
fn looks_numeric(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '+')
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || "._+-:xXoO".contains(c))
}

fn emit(v: &Value, indent: usize, out: &mut String, inline_first: bool) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (i, (k, val)) in map.iter().enumerate() {
                if !(i == 0 && inline_first) {
                    out.push_str(&pad);
                }
                out.push_str(&scalar(&Value::String(k.clone())));
                out.push(':');
                match val {
                    Value::Object(m) if !m.is_empty() => {
                        out.push('\n');
                        emit(val, indent + 2, out, false);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        emit(val, indent, out, false);
                    }
                    _ => {
                        out.push(' ');
                        emit(val, indent + 2, out, true);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    Value::Object(m) if !m.is_empty() => emit(item, indent + 2, out, true),
                    Value::Array(a) if !a.is_empty() => {
                        out.push('\n');
                        emit(item, indent + 2, out, false)
                    }
                    _ => emit(item, indent + 2, out, true),
                }
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        _ => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_documents;

    #[test]
    fn yaml_round_trips_through_our_parser() {
        let v = serde_json::json!({
            "a": {"b": [1, "two", {"c": "x: y", "d": []}], "e": {}},
            "f": "true", "g": "07", "h": null, "i": "multi\nline", "j": [[1, 2], "-x"],
            "k": ["100m", "1e3", ".5", "2001-12-14", "1:20", "+1", "0x1F", "6.0.1"]
        });
        let text = yaml(&v);
        let back = parse_documents(&text).unwrap().remove(0).root.to_json();
        assert_eq!(back, v, "{text}");
    }
}
