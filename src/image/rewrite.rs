//! `rewrite(text, changes)`: replaces exactly the bytes of each changed scalar and
//! nothing else, so comments, quoting, key order, indentation and document separators
//! stay byte for byte.

use crate::manifest::yaml::{parse_documents, Style, Value};

/// One scalar to replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// Byte range of the scalar as written (quotes included).
    pub start: usize,
    /// End of that range.
    pub end: usize,
    /// How it was written.
    pub style: Style,
    /// The new value (unquoted).
    pub value: String,
}

/// Encodes `value` in the scalar's own style. A plain scalar that would stop reading
/// as a string (a tag `2.1` would become a number) is double-quoted instead.
fn encode(style: Style, value: &str) -> Result<String, String> {
    match style {
        Style::Plain => {
            let as_doc = format!("k: {value}\n");
            let reads_back = parse_documents(&as_doc)
                .ok()
                .and_then(|d| d.into_iter().next())
                .and_then(|d| d.root.get("k").map(|n| n.value.clone()));
            if reads_back == Some(Value::Str(value.to_string())) {
                Ok(value.to_string())
            } else {
                Ok(serde_json::to_string(value).expect("strings serialize"))
            }
        }
        Style::SingleQuoted => Ok(format!("'{}'", value.replace('\'', "''"))),
        Style::DoubleQuoted => Ok(serde_json::to_string(value).expect("strings serialize")),
        Style::Block | Style::None => Err("block scalars cannot be rewritten in place".into()),
    }
}

/// Applies non-overlapping edits to `text`.
pub fn rewrite(text: &str, edits: &[Edit]) -> Result<String, String> {
    let encoded = edits
        .iter()
        .map(|e| Ok((e.start, e.end, encode(e.style, &e.value)?)))
        .collect::<Result<Vec<_>, String>>()?;
    splice(text, &encoded)
}

/// Replaces each byte range `start..end` of `text` with its bytes as given; the ranges
/// must not overlap. The rollback uses it to put back a scalar exactly as it was written.
pub fn splice(text: &str, replacements: &[(usize, usize, String)]) -> Result<String, String> {
    let mut sorted: Vec<&(usize, usize, String)> = replacements.iter().collect();
    sorted.sort_by_key(|r| r.0);
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    for (start, end, bytes) in sorted {
        if *start < at
            || *end > text.len()
            || start > end
            || !text.is_char_boundary(*start)
            || !text.is_char_boundary(*end)
        {
            return Err(format!("overlapping or out-of-range edit at byte {start}"));
        }
        out.push_str(&text[at..*start]);
        out.push_str(bytes);
        at = *end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit_of(text: &str, path: &[&str], value: &str) -> Edit {
        let doc = parse_documents(text).unwrap().remove(0);
        let n = doc.root.path(path).unwrap();
        Edit {
            start: n.pos.offset,
            end: n.end,
            style: n.style,
            value: value.into(),
        }
    }

    /// Golden check: the only differing bytes are the scalar's.
    fn assert_only_changed(before: &str, after: &str, old: &str, new: &str) {
        let prefix = before
            .bytes()
            .zip(after.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let suffix = before
            .bytes()
            .rev()
            .zip(after.bytes().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let suffix = suffix.min(before.len() - prefix).min(after.len() - prefix);
        assert_eq!(&before[prefix..before.len() - suffix], old, "removed bytes");
        assert_eq!(&after[prefix..after.len() - suffix], new, "added bytes");
    }

    #[test]
    fn golden_plain_quoted_and_commented() {
        let before = "---\n# release\nspec:\n  values:\n    image:\n      repository: stefanprodan/podinfo  # repo\n      tag: 2.0.0 # pinned\n    other: 'x'\n---\nkind: X\n";
        let after = rewrite(
            before,
            &[edit_of(
                before,
                &["spec", "values", "image", "tag"],
                "2.0.1",
            )],
        )
        .unwrap();
        assert_eq!(
            after,
            before.replace("tag: 2.0.0 # pinned", "tag: 2.0.1 # pinned")
        );
        assert_only_changed(before, &after, "0", "1");

        let before = "image: 'ghcr.io/x/app:1.0'   # {\"$imagepolicy\": \"ns:app\"}\n";
        let after = rewrite(before, &[edit_of(before, &["image"], "ghcr.io/x/app:1.1")]).unwrap();
        assert_eq!(
            after,
            "image: 'ghcr.io/x/app:1.1'   # {\"$imagepolicy\": \"ns:app\"}\n"
        );

        let before = "tag: \"1.0\"\n";
        assert_eq!(
            rewrite(before, &[edit_of(before, &["tag"], "1.1")]).unwrap(),
            "tag: \"1.1\"\n"
        );
    }

    #[test]
    fn plain_values_that_would_change_type_get_quoted() {
        let before = "tag: v1\n";
        assert_eq!(
            rewrite(before, &[edit_of(before, &["tag"], "2.1")]).unwrap(),
            "tag: \"2.1\"\n"
        );
        let before = "tag: 1.0.0\n";
        assert_eq!(
            rewrite(before, &[edit_of(before, &["tag"], "1.0.1")]).unwrap(),
            "tag: 1.0.1\n"
        );
    }
}
