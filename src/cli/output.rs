//! Output helpers: aligned tables like `flux get`, and a small YAML emitter for `-o yaml`.

use serde_json::Value;

/// Output format of the `get` commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Renders rows under headers with columns padded to fit.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Renders JSON rows as a table: `columns` pairs a header with the key it shows.
pub fn rows_table(columns: &[(&str, &str)], rows: &[Value]) -> String {
    let cell = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, k)| cell(&r[*k])).collect())
        .collect();
    table(&headers, &cells)
}

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

/// Prints a value in the chosen machine format (JSON or YAML).
pub fn print_value(format: Format, value: &Value) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON values serialize")
        ),
        _ => print!("{}", yaml(value)),
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

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "READY"],
            &[vec!["flux-system".into(), "True".into()]],
        );
        assert_eq!(t, "NAME          READY\nflux-system   True\n");
    }
}
