//! A YAML tree that remembers where every node came from.
//!
//! Why not serde_yaml: it reports a position only for the first error of a document and
//! gives no spans for values. Validation here reports every error with file:line:column
//! and field path, and the image rewrite replaces the exact bytes of one scalar, so we
//! build our own tree from saphyr-parser's spanned event stream (a maintained YAML 1.2
//! parser). Plain scalars resolve by the YAML 1.2 core schema, as Flux's kyaml does:
//! `yes`/`on` stay strings.

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span};
use std::collections::HashMap;
use std::fmt;

/// A place in a source file: 1-based line and column, and the byte offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
    /// 0-based byte offset.
    pub offset: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// How a scalar was written; kept so the rewrite can preserve quoting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A collection, or a value made up by the loader.
    None,
    /// `value`
    Plain,
    /// `'value'`
    SingleQuoted,
    /// `"value"`
    DoubleQuoted,
    /// `|` or `>`
    Block,
}

/// A YAML value with its source span.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the node starts.
    pub pos: Pos,
    /// Byte offset just past the node.
    pub end: usize,
    /// Scalar style.
    pub style: Style,
}

/// The value of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Node, Node)>),
}

/// One YAML document of a multi-document file.
#[derive(Clone, Debug)]
pub struct Document {
    /// The root node; `Null` for an empty document.
    pub root: Node,
}

/// A syntax error with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it found.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl Node {
    /// A node made by code rather than read from a file.
    pub fn synthetic(value: Value) -> Node {
        Node {
            value,
            pos: Pos::default(),
            end: 0,
            style: Style::None,
        }
    }

    /// The value under `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a dotted path of mapping keys.
    pub fn path(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, k| n.get(k))
    }

    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The YAML type name used in error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }

    /// The scalar as text, as a mapping key would be read (`1` becomes `"1"`).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// Converts to JSON; non-string mapping keys become their text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Converts the parser's character positions to byte offsets.
struct Offsets {
    /// Byte offset of each char index; empty when the text is ASCII.
    table: Vec<usize>,
    len: usize,
}

impl Offsets {
    fn new(text: &str) -> Self {
        let table = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices().map(|(b, _)| b).collect()
        };
        Offsets {
            table,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.table.is_empty() {
            char_index.min(self.len)
        } else {
            self.table.get(char_index).copied().unwrap_or(self.len)
        }
    }

    fn pos(&self, m: &Marker) -> Pos {
        Pos {
            line: m.line() as u32,
            col: m.col() as u32 + 1,
            offset: self.byte(m.index()),
        }
    }
}

/// Records a finished node under its anchor (if any) and returns it.
fn anchored(anchors: &mut HashMap<usize, Node>, anchor: usize, node: Node) -> Node {
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
    node
}

enum Frame {
    Seq {
        start: Pos,
        items: Vec<Node>,
        anchor: usize,
    },
    Map {
        start: Pos,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        anchor: usize,
    },
}

/// How deep collections may nest. Everything that reads a tree (JSON conversion, the
/// typed deserializer, patches, dropping it) recurses through it, and a stack overflow
/// aborts the process; serde_json stops at the same depth.
pub const MAX_DEPTH: usize = 128;

/// How many nodes aliases may copy in one file: a few lines of anchors referring to
/// anchors ("billion laughs") would otherwise expand to gigabytes. go-yaml refuses
/// such input too.
pub const MAX_ALIASED_NODES: usize = 400_000;

/// Counts the nodes of a tree.
fn size(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(size).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
        _ => 0,
    }
}

/// Parses every document of a (multi-document) YAML text.
pub fn parse_documents(source: &str) -> Result<Vec<Document>, SyntaxError> {
    let offsets = Offsets::new(source);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut aliased = 0usize;
    let mut root: Option<Node> = None;
    for item in Parser::new_from_str(source) {
        let (event, span): (Event, Span) = item.map_err(|e| SyntaxError {
            pos: offsets.pos(e.marker()),
            message: e.info().to_string(),
        })?;
        let start = offsets.pos(&span.start);
        let end = offsets.byte(span.end.index());
        let done = match event {
            Event::DocumentStart(_) => {
                anchors.clear();
                root = None;
                None
            }
            Event::DocumentEnd => {
                let root = root.take().unwrap_or(Node {
                    value: Value::Null,
                    pos: start,
                    end,
                    style: Style::None,
                });
                docs.push(Document { root });
                None
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced = tag.as_ref().map(|t| t.suffix.as_str());
                let (value, style) = match style {
                    ScalarStyle::Plain => (resolve_plain(&text, forced), Style::Plain),
                    ScalarStyle::SingleQuoted => {
                        (resolve_quoted(&text, forced), Style::SingleQuoted)
                    }
                    ScalarStyle::DoubleQuoted => {
                        (resolve_quoted(&text, forced), Style::DoubleQuoted)
                    }
                    _ => (resolve_quoted(&text, forced), Style::Block),
                };
                let end = scalar_end(source, start.offset, end, style);
                let node = Node {
                    value,
                    pos: start,
                    end,
                    style,
                };
                if anchor != 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            Event::Alias(id) => {
                let node = anchors.get(&id).ok_or_else(|| SyntaxError {
                    pos: start,
                    message: "alias refers to an unknown anchor".into(),
                })?;
                aliased += size(node);
                if aliased > MAX_ALIASED_NODES {
                    return Err(SyntaxError {
                        pos: start,
                        message: format!(
                            "document contains excessive aliasing (more than {MAX_ALIASED_NODES} nodes copied)"
                        ),
                    });
                }
                Some(node.clone())
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                return Err(SyntaxError {
                    pos: start,
                    message: format!("collections nest deeper than {MAX_DEPTH}"),
                });
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    start,
                    items: Vec::new(),
                    anchor,
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    start,
                    entries: Vec::new(),
                    key: None,
                    anchor,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    start,
                    items,
                    anchor,
                }) => Some(anchored(
                    &mut anchors,
                    anchor,
                    Node {
                        value: Value::Seq(items),
                        pos: start,
                        end,
                        style: Style::None,
                    },
                )),
                _ => {
                    return Err(SyntaxError {
                        pos: start,
                        message: "unbalanced sequence end".into(),
                    })
                }
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    start,
                    entries,
                    anchor,
                    ..
                }) => {
                    let entries = merge_keys(entries)?;
                    check_duplicate_keys(&entries)?;
                    Some(anchored(
                        &mut anchors,
                        anchor,
                        Node {
                            value: Value::Map(entries),
                            pos: start,
                            end,
                            style: Style::None,
                        },
                    ))
                }
                _ => {
                    return Err(SyntaxError {
                        pos: start,
                        message: "unbalanced mapping end".into(),
                    })
                }
            },
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
        };
        if let Some(node) = done {
            match stack.last_mut() {
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map { entries, key, .. }) => match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                },
                None => root = Some(node),
            }
        }
    }
    Ok(docs)
}

/// The parser's span for a scalar can run on over a trailing comment; find where the
/// scalar's own characters end, so a rewrite replaces exactly them.
fn scalar_end(text: &str, start: usize, end: usize, style: Style) -> usize {
    let bytes = text.as_bytes();
    match style {
        Style::SingleQuoted => {
            let mut i = start + 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return i + 1;
                }
                i += 1;
            }
            end
        }
        Style::DoubleQuoted => {
            let mut i = start + 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'"' => return i + 1,
                    _ => i += 1,
                }
            }
            end
        }
        Style::Plain => {
            let slice = &text[start..end.max(start)];
            let mut last = start;
            let mut offset = start;
            for line in slice.split_inclusive('\n') {
                let content = match line.find(" #").or_else(|| line.find("\t#")) {
                    Some(i) => &line[..i],
                    None => line,
                };
                let trimmed = content.trim_end();
                let lead = trimmed.len() - trimmed.trim_start().len();
                if trimmed.len() > lead {
                    last = offset + trimmed.len();
                }
                offset += line.len();
            }
            last.max(start)
        }
        Style::Block | Style::None => end,
    }
}

/// Applies YAML merge keys (`<<: *base`): explicit keys win over merged ones.
fn merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, SyntaxError> {
    if !entries
        .iter()
        .any(|(k, _)| k.style == Style::Plain && k.as_str() == Some("<<"))
    {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut merged: Vec<(Node, Node)> = Vec::new();
    for (k, v) in entries {
        if k.style == Style::Plain && k.as_str() == Some("<<") {
            let sources: Vec<&Node> = match &v.value {
                Value::Map(_) => vec![&v],
                Value::Seq(items) => items.iter().collect(),
                _ => {
                    return Err(SyntaxError {
                        pos: v.pos,
                        message: "merge key `<<` needs a mapping or a list of mappings".into(),
                    })
                }
            };
            for src in sources {
                let Some(map) = src.as_map() else {
                    return Err(SyntaxError {
                        pos: src.pos,
                        message: "merge key `<<` needs a mapping".into(),
                    });
                };
                for (mk, mv) in map {
                    if !merged.iter().any(|(e, _)| e.value == mk.value) {
                        merged.push((mk.clone(), mv.clone()));
                    }
                }
            }
        } else {
            own.push((k, v));
        }
    }
    merged.retain(|(mk, _)| !own.iter().any(|(k, _)| k.value == mk.value));
    own.extend(merged);
    Ok(own)
}

fn check_duplicate_keys(entries: &[(Node, Node)]) -> Result<(), SyntaxError> {
    if entries.len() < 2 {
        return Ok(());
    }
    let mut seen: HashMap<String, Pos> = HashMap::with_capacity(entries.len());
    for (k, _) in entries {
        if let Some(text) = k.scalar_text() {
            if let Some(first) = seen.insert(text.clone(), k.pos) {
                return Err(SyntaxError {
                    pos: k.pos,
                    message: format!(
                        "duplicate key {text:?} (first defined at line {})",
                        first.line
                    ),
                });
            }
        }
    }
    Ok(())
}

fn resolve_quoted(text: &str, tag: Option<&str>) -> Value {
    match tag {
        Some("int" | "float" | "bool" | "null") => resolve_plain(text, None),
        _ => Value::Str(text.to_string()),
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str, tag: Option<&str>) -> Value {
    if tag == Some("str") {
        return Value::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    let first = bytes[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return Value::Str(text.to_string());
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => text
                .parse::<f64>()
                .map(Value::Float)
                .unwrap_or_else(|_| Value::Str(text.to_string())),
        };
    }
    if is_core_float(digits) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_core_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        }
    };
    mantissa_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        parse_documents(text).unwrap().remove(0).root
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let n = one(
            "a: 1\nb: '1'\nc: yes\nd: true\ne: 1.5\nf: ~\ng: 0x1f\nh: 1e3\ni: v1.2\nj: !!str 3\n",
        );
        let j = n.to_json();
        assert_eq!(j["a"], 1);
        assert_eq!(j["b"], "1");
        assert_eq!(j["c"], "yes");
        assert_eq!(j["d"], true);
        assert_eq!(j["e"], 1.5);
        assert!(j["f"].is_null());
        assert_eq!(j["g"], 31);
        assert_eq!(j["h"], 1000.0);
        assert_eq!(j["i"], "v1.2");
        assert_eq!(j["j"], "3");
    }

    #[test]
    fn records_positions_and_byte_spans() {
        let text = "# héllo\nspec:\n  image: 'repo:1.0' # c\n";
        let n = one(text);
        let img = n.path(&["spec", "image"]).unwrap();
        assert_eq!((img.pos.line, img.pos.col), (3, 10));
        assert_eq!(&text[img.pos.offset..img.end], "'repo:1.0'");
        assert_eq!(img.style, Style::SingleQuoted);
    }

    #[test]
    fn splits_documents_and_keeps_empty_ones() {
        let docs = parse_documents("a: 1\n---\n# only a comment\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert!(docs[1].root.is_null());
        assert_eq!(docs[2].root.pos.line, 5);
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err}");
        let err = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.pos.line, 2);
        assert!(err.message.contains("duplicate key"), "{err}");
    }

    #[test]
    fn deep_nesting_is_an_error_with_its_position() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_documents(&ok).is_ok());
        let deep = format!(
            "a:\n  b: {}{}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        let err = parse_documents(&deep).unwrap_err();
        assert_eq!(err.to_string(), "2:132: collections nest deeper than 128");
        // Far deeper than any stack, on a thread with tokio's 2 MiB blocking stack.
        let err = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let text = "[".repeat(1_000_000) + &"{a: ".repeat(1_000_000);
                parse_documents(&text).unwrap_err()
            })
            .unwrap()
            .join()
            .unwrap();
        // saphyr-parser's own recursion limit may stop it first.
        assert!(
            err.message.contains("nest deeper than 128")
                || err.message.contains("recursion limit exceeded"),
            "{err}"
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_string();
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            text += &format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", "));
        }
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.contains("excessive aliasing"), "{err}");
        // Ordinary reuse stays fine.
        let ok = "base: &b {x: 1}\none: *b\ntwo: {<<: *b, y: 2}\n";
        assert!(parse_documents(ok).is_ok());
    }

    #[test]
    fn anchors_and_merge_keys() {
        let n = one("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n");
        assert_eq!(n.to_json()["other"], serde_json::json!({"x": 1, "y": 3}));
    }
}
