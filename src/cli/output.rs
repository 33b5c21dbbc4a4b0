//! Output helpers: aligned tables like `flux get`, and a small YAML emitter for `-o yaml`.

pub use crate::util::yaml::yaml;
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

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "READY"],
            &[vec!["flux-system".into(), "True".into()]],
        );
        assert_eq!(t, "NAME          READY\nflux-system   True\n");
    }
}
