//! Lists for the `get` commands, printed once or watched (`-w`, as `kubectl get -w`):
//! the first listing prints in full, then one row each time a row is new or changed.
//! `changed_rows` decides what to print; `watch` only polls and writes.

use crate::cli::output::{self, Format};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// One row: a stable key (the object's identity), the table cells, and the value
/// printed by `-o json|yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Identity of the row, e.g. `test/podinfo`.
    pub key: String,
    /// Table cells, one per header.
    pub cells: Vec<String>,
    /// The machine-readable row.
    pub value: Value,
}

/// A titled list of rows.
#[derive(Clone, Debug)]
pub struct Listing {
    /// Column headers.
    pub headers: &'static [&'static str],
    /// Rows in display order.
    pub rows: Vec<Row>,
}

impl Listing {
    /// Prints the whole list in `fmt`.
    pub fn print(&self, fmt: Format) {
        if fmt == Format::Table {
            let cells: Vec<Vec<String>> = self.rows.iter().map(|r| r.cells.clone()).collect();
            print!("{}", output::table(self.headers, &cells));
        } else {
            let values = self.rows.iter().map(|r| r.value.clone()).collect();
            output::print_value(fmt, &Value::Array(values));
        }
    }
}

/// The rows of `now` that differ from what was last printed for their key, in order;
/// records them in `printed`. Rows that disappear are forgotten, so a row that comes
/// back prints again.
pub fn changed_rows(printed: &mut BTreeMap<String, Row>, now: Vec<Row>) -> Vec<Row> {
    printed.retain(|k, _| now.iter().any(|r| &r.key == k));
    let mut out = Vec::new();
    for row in now {
        if printed.get(&row.key) != Some(&row) {
            printed.insert(row.key.clone(), row.clone());
            out.push(row);
        }
    }
    out
}

/// Column widths for a watch: the header's and the first listing's, since rows
/// printed later cannot move columns already on the screen.
fn widths(headers: &[&str], rows: &[Row]) -> Vec<usize> {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in w.iter_mut().zip(&r.cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    w
}

fn padded(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        line.push_str(c);
        if i + 1 < cells.len() {
            let w = widths.get(i).copied().unwrap_or(0);
            line.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 3));
        }
    }
    line
}

fn render(fmt: Format, rows: &[Row], widths: &[usize]) -> String {
    let mut out = String::new();
    for r in rows {
        match fmt {
            Format::Table => out.push_str(&padded(&r.cells, widths)),
            Format::Json => out.push_str(&r.value.to_string()),
            Format::Yaml => {
                out.push_str("---\n");
                out.push_str(output::yaml(&r.value).trim_end());
            }
        }
        out.push('\n');
    }
    out
}

/// Prints `fetch()`'s list, then polls it and prints new or changed rows until
/// interrupted or stdout closes (`| head` ends the watch without an error).
pub fn watch(
    fmt: Format,
    poll: Duration,
    mut fetch: impl FnMut() -> anyhow::Result<Listing>,
) -> anyhow::Result<ExitCode> {
    let first = fetch()?;
    let widths = widths(first.headers, &first.rows);
    let mut printed = BTreeMap::new();
    let mut text = String::new();
    if fmt == Format::Table {
        let header: Vec<String> = first.headers.iter().map(|h| h.to_string()).collect();
        text = padded(&header, &widths) + "\n";
    }
    let mut rows = changed_rows(&mut printed, first.rows);
    loop {
        text.push_str(&render(fmt, &rows, &widths));
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(ExitCode::SUCCESS);
        }
        drop(stdout);
        text.clear();
        std::thread::sleep(poll);
        rows = changed_rows(&mut printed, fetch()?.rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, phase: &str, weight: u32) -> Row {
        Row {
            key: key.into(),
            cells: vec![key.into(), phase.into(), weight.to_string()],
            value: serde_json::json!({"name": key, "status": phase, "weight": weight}),
        }
    }

    #[test]
    fn only_new_and_changed_rows_print_again() {
        let mut printed = BTreeMap::new();
        let first = changed_rows(
            &mut printed,
            vec![row("a", "Initialized", 0), row("b", "Succeeded", 0)],
        );
        assert_eq!(first.len(), 2);
        assert!(changed_rows(
            &mut printed,
            vec![row("a", "Initialized", 0), row("b", "Succeeded", 0)]
        )
        .is_empty());
        let next = changed_rows(
            &mut printed,
            vec![row("a", "Progressing", 10), row("b", "Succeeded", 0)],
        );
        assert_eq!(next, vec![row("a", "Progressing", 10)]);
        // A row that goes away and comes back is new again.
        assert!(changed_rows(&mut printed, vec![row("a", "Progressing", 10)]).is_empty());
        let back = changed_rows(
            &mut printed,
            vec![row("a", "Progressing", 10), row("b", "Succeeded", 0)],
        );
        assert_eq!(back, vec![row("b", "Succeeded", 0)]);
    }

    #[test]
    fn watched_rows_keep_the_first_listings_columns() {
        let rows = vec![row("podinfo", "Initialized", 0)];
        let w = widths(&["NAME", "STATUS", "WEIGHT"], &rows);
        let later = render(Format::Table, &[row("podinfo", "Progressing", 10)], &w);
        let header = padded(&["NAME".into(), "STATUS".into(), "WEIGHT".into()], &w);
        assert_eq!(header.find("WEIGHT"), later.find("10"));
        let json = render(Format::Json, &[row("podinfo", "Progressing", 10)], &w);
        assert_eq!(
            json,
            "{\"name\":\"podinfo\",\"status\":\"Progressing\",\"weight\":10}\n"
        );
    }
}
