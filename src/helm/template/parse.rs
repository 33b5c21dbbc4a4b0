//! Lexing and parsing Go `text/template` source into a tree: text, actions with
//! pipelines and variables, `if`/`else if`/`else`, `range` (with index/key and `else`),
//! `with`, `define`, `template`, `block`, comments and `{{-`/`-}}` trimming. Every node
//! keeps its line and column, so errors name `file:line:col` and the expression.

use super::limits;
use std::fmt;

/// A parse or execution error, pinned to a template position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// Template file.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// What went wrong, naming the expression.
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl std::error::Error for TemplateError {}

/// A position in a template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    /// Line.
    pub line: u32,
    /// Column.
    pub col: u32,
}

/// An argument of a command.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// `.` or `.A.b`
    Field(Vec<String>),
    /// `$` or `$x.a`
    Var(String, Vec<String>),
    /// A function or method name.
    Ident(String),
    /// A string, number, bool or nil.
    Lit(serde_json::Value),
    /// `( pipeline )`, optionally followed by `.field` accesses.
    Sub(Box<Pipeline>, Vec<String>),
}

/// A pipeline: optional variable declarations, then commands joined by `|`.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// Variables declared (`$x :=`) or assigned (`$x =`).
    pub vars: Vec<String>,
    /// Whether `vars` are declared (`:=`) rather than assigned.
    pub declare: bool,
    /// Commands; each is a list of arguments.
    pub cmds: Vec<Vec<Arg>>,
    /// Where it starts.
    pub pos: Pos,
    /// The source text, for messages.
    pub text: String,
}

/// A template node.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// Literal text.
    Text(String),
    /// `{{ pipeline }}`
    Action(Pipeline),
    /// `{{ if }}` … `{{ else }}` … `{{ end }}`
    If(Pipeline, Vec<Node>, Vec<Node>),
    /// `{{ range }}` … `{{ else }}` … `{{ end }}`
    Range(Pipeline, Vec<Node>, Vec<Node>),
    /// `{{ with }}` … `{{ else }}` … `{{ end }}`
    With(Pipeline, Vec<Node>, Vec<Node>),
    /// `{{ template "name" pipeline }}`
    Template(String, Option<Pipeline>, Pos),
}

/// A parsed file: its body and the templates it defines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    /// Top-level nodes.
    pub body: Vec<Node>,
    /// `define`d (and `block`) templates.
    pub defines: Vec<(String, Vec<Node>)>,
}

enum Piece {
    Text(String),
    Action(String, Pos),
}

fn pos_at(src: &str, byte: usize) -> Pos {
    let before = &src[..byte];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0) as u32
        + 1;
    Pos { line, col }
}

/// Positions of increasing byte offsets, counted from the last one: a file of a
/// million actions must not rescan its text for each.
struct Cursor {
    byte: usize,
    pos: Pos,
}

impl Cursor {
    fn at(&mut self, src: &str, byte: usize) -> Pos {
        let step = &src[self.byte..byte];
        match step.rfind('\n') {
            Some(nl) => {
                self.pos.line += step.matches('\n').count() as u32;
                self.pos.col = step[nl + 1..].chars().count() as u32 + 1;
            }
            None => self.pos.col += step.chars().count() as u32,
        }
        self.byte = byte;
        self.pos
    }
}

fn split(file: &str, src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut cursor = Cursor {
        byte: 0,
        pos: Pos { line: 1, col: 1 },
    };
    let mut at = 0;
    let mut trim_next = false;
    while let Some(rel) = src[at..].find("{{") {
        let start = at + rel;
        let mut text = &src[at..start];
        if trim_next {
            text = text.trim_start();
        }
        let inner_start = start + 2;
        let left_trim = src[inner_start..].starts_with("- ")
            || src[inner_start..].starts_with("-\t")
            || src[inner_start..].starts_with("-\n");
        if left_trim {
            text = text.trim_end();
        }
        out.push(Piece::Text(text.to_string()));
        let body_start = if left_trim {
            inner_start + 1
        } else {
            inner_start
        };
        // Find the closing delimiter outside string literals.
        let bytes = src.as_bytes();
        let mut i = body_start;
        let mut quote: Option<u8> = None;
        let end = loop {
            if i + 1 >= bytes.len() {
                let p = pos_at(src, start);
                return Err(TemplateError {
                    file: file.into(),
                    line: p.line,
                    col: p.col,
                    message: "unclosed action: missing }}".into(),
                });
            }
            match quote {
                Some(q) => {
                    if bytes[i] == b'\\' && q == b'"' {
                        i += 1;
                    } else if bytes[i] == q {
                        quote = None;
                    }
                }
                None => {
                    if bytes[i] == b'"' || bytes[i] == b'`' {
                        quote = Some(bytes[i]);
                    } else if bytes[i] == b'}' && bytes[i + 1] == b'}' {
                        break i;
                    }
                }
            }
            i += 1;
        };
        let right_trim = end > body_start && src[..end].ends_with(" -")
            || src[..end].ends_with("\t-")
            || src[..end].ends_with("\n-");
        let body_end = if right_trim { end - 1 } else { end };
        let body = src[body_start..body_end].trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push(Piece::Action(body.to_string(), cursor.at(src, start)));
        }
        trim_next = right_trim;
        at = end + 2;
    }
    let mut tail = &src[at..];
    if trim_next {
        tail = tail.trim_start();
    }
    out.push(Piece::Text(tail.to_string()));
    Ok(out)
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(serde_json::Value),
    LParen,
    RParen(Vec<String>),
    Pipe,
    Declare,
    Assign,
    Comma,
}

fn fields_after(s: &[u8], i: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    while *i < s.len()
        && s[*i] == b'.'
        && s.get(*i + 1)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
    {
        *i += 1;
        let st = *i;
        while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
            *i += 1;
        }
        out.push(String::from_utf8_lossy(&s[st..*i]).into_owned());
    }
    out
}

impl Lexer<'_> {
    fn tokens(&mut self) -> Result<Vec<Tok>, String> {
        let mut out = Vec::new();
        let s = self.s;
        while self.i < s.len() {
            let c = s[self.i];
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => self.i += 1,
                b'(' => {
                    out.push(Tok::LParen);
                    self.i += 1;
                }
                b')' => {
                    self.i += 1;
                    let f = fields_after(s, &mut self.i);
                    out.push(Tok::RParen(f));
                }
                b'|' => {
                    out.push(Tok::Pipe);
                    self.i += 1;
                }
                b',' => {
                    out.push(Tok::Comma);
                    self.i += 1;
                }
                b':' if s.get(self.i + 1) == Some(&b'=') => {
                    out.push(Tok::Declare);
                    self.i += 2;
                }
                b'=' => {
                    out.push(Tok::Assign);
                    self.i += 1;
                }
                b'.' => {
                    let f = fields_after(s, &mut self.i);
                    if f.is_empty() {
                        self.i += 1;
                    }
                    out.push(Tok::Field(f));
                }
                b'$' => {
                    self.i += 1;
                    let st = self.i;
                    while self.i < s.len()
                        && (s[self.i].is_ascii_alphanumeric() || s[self.i] == b'_')
                    {
                        self.i += 1;
                    }
                    let name = String::from_utf8_lossy(&s[st..self.i]).into_owned();
                    let f = fields_after(s, &mut self.i);
                    out.push(Tok::Var(name, f));
                }
                b'"' => {
                    let st = self.i;
                    self.i += 1;
                    while self.i < s.len() && s[self.i] != b'"' {
                        if s[self.i] == b'\\' {
                            self.i += 1;
                        }
                        self.i += 1;
                    }
                    self.i += 1;
                    let raw = String::from_utf8_lossy(&s[st..self.i.min(s.len())]).into_owned();
                    let v: String = serde_json::from_str(&raw)
                        .map_err(|_| format!("bad string literal {raw}"))?;
                    out.push(Tok::Lit(v.into()));
                }
                b'`' => {
                    let st = self.i + 1;
                    self.i += 1;
                    while self.i < s.len() && s[self.i] != b'`' {
                        self.i += 1;
                    }
                    out.push(Tok::Lit(
                        String::from_utf8_lossy(&s[st..self.i]).into_owned().into(),
                    ));
                    self.i += 1;
                }
                c if c.is_ascii_digit()
                    || (c == b'-' && s.get(self.i + 1).is_some_and(|d| d.is_ascii_digit())) =>
                {
                    let st = self.i;
                    self.i += 1;
                    while self.i < s.len()
                        && (s[self.i].is_ascii_alphanumeric() || s[self.i] == b'.')
                    {
                        self.i += 1;
                    }
                    let t = std::str::from_utf8(&s[st..self.i]).unwrap_or_default();
                    let v = if let Ok(i) = t.parse::<i64>() {
                        serde_json::Value::from(i)
                    } else if let Ok(f) = t.parse::<f64>() {
                        serde_json::Value::from(f)
                    } else {
                        return Err(format!("bad number {t}"));
                    };
                    out.push(Tok::Lit(v));
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let st = self.i;
                    while self.i < s.len()
                        && (s[self.i].is_ascii_alphanumeric() || s[self.i] == b'_')
                    {
                        self.i += 1;
                    }
                    let w = String::from_utf8_lossy(&s[st..self.i]).into_owned();
                    out.push(match w.as_str() {
                        "true" => Tok::Lit(true.into()),
                        "false" => Tok::Lit(false.into()),
                        "nil" => Tok::Lit(serde_json::Value::Null),
                        _ => Tok::Ident(w),
                    });
                }
                other => return Err(format!("unexpected character {:?}", other as char)),
            }
        }
        Ok(out)
    }
}

fn pipeline(text: &str, pos: Pos) -> Result<Pipeline, String> {
    let toks = Lexer {
        s: text.as_bytes(),
        i: 0,
    }
    .tokens()?;
    let mut p = Pipeline {
        vars: vec![],
        declare: false,
        cmds: vec![],
        pos,
        text: text.to_string(),
    };
    let mut i = 0;
    // `$x :=` / `$i, $v :=` / `$x =`
    let mut j = 0;
    let mut names = Vec::new();
    while let Some(Tok::Var(n, f)) = toks.get(j) {
        if !f.is_empty() {
            break;
        }
        names.push(n.clone());
        j += 1;
        if toks.get(j) == Some(&Tok::Comma) {
            j += 1;
            continue;
        }
        break;
    }
    if !names.is_empty() && matches!(toks.get(j), Some(Tok::Declare | Tok::Assign)) {
        p.declare = toks[j] == Tok::Declare;
        p.vars = names;
        i = j + 1;
    }
    let (cmds, rest) = commands(&toks[i..], 0)?;
    if !rest.is_empty() {
        return Err("unexpected ) in pipeline".into());
    }
    p.cmds = cmds;
    if p.cmds.is_empty() || p.cmds.iter().any(|c| c.is_empty()) {
        return Err("missing value in pipeline".into());
    }
    Ok(p)
}

/// Parses commands until the end or an unmatched `)`; returns the rest. `depth` counts
/// the enclosing parentheses: the recursion follows the input, so it is bounded.
fn commands(toks: &[Tok], depth: usize) -> Result<(Vec<Vec<Arg>>, &[Tok]), String> {
    let mut cmds = vec![Vec::new()];
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Pipe => cmds.push(Vec::new()),
            Tok::RParen(_) => return Ok((cmds, &toks[i..])),
            Tok::LParen => {
                if depth >= limits::MAX_PARENS {
                    return Err(format!(
                        "parentheses nest deeper than {}",
                        limits::MAX_PARENS
                    ));
                }
                let (sub, rest) = commands(&toks[i + 1..], depth + 1)?;
                let Some(Tok::RParen(fields)) = rest.first() else {
                    return Err("unclosed (".into());
                };
                if sub.iter().any(Vec::is_empty) {
                    return Err("missing value in parenthesized pipeline".into());
                }
                let inner = Pipeline {
                    vars: vec![],
                    declare: false,
                    cmds: sub,
                    pos: Pos::default(),
                    text: String::new(),
                };
                cmds.last_mut()
                    .expect("one command")
                    .push(Arg::Sub(Box::new(inner), fields.clone()));
                i = toks.len() - rest.len() + 1;
                continue;
            }
            Tok::Field(f) => cmds
                .last_mut()
                .expect("one command")
                .push(Arg::Field(f.clone())),
            Tok::Var(n, f) => cmds
                .last_mut()
                .expect("one command")
                .push(Arg::Var(n.clone(), f.clone())),
            Tok::Ident(n) => cmds
                .last_mut()
                .expect("one command")
                .push(Arg::Ident(n.clone())),
            Tok::Lit(v) => cmds
                .last_mut()
                .expect("one command")
                .push(Arg::Lit(v.clone())),
            Tok::Declare | Tok::Assign | Tok::Comma => {
                return Err("unexpected := or , in pipeline".into())
            }
        }
        i += 1;
    }
    Ok((cmds, &[]))
}

enum Frame {
    Root,
    If(Pipeline, Vec<Node>, bool),
    Range(Pipeline, Vec<Node>, bool),
    With(Pipeline, Vec<Node>, bool),
    Define(String),
    Block(String, Option<Pipeline>, Pos),
}

/// Parses a template file.
pub fn parse(file: &str, src: &str) -> Result<Parsed, TemplateError> {
    let err = |p: Pos, m: String| TemplateError {
        file: file.into(),
        line: p.line,
        col: p.col,
        message: m,
    };
    let mut out = Parsed::default();
    // Stack of (frame, nodes being collected, else-branch nodes).
    let mut stack: Vec<(Frame, Vec<Node>, Vec<Node>)> = vec![(Frame::Root, vec![], vec![])];
    let push = |stack: &mut Vec<(Frame, Vec<Node>, Vec<Node>)>, n: Node| {
        let top = stack.last_mut().expect("root");
        let in_else = matches!(
            top.0,
            Frame::If(_, _, true) | Frame::Range(_, _, true) | Frame::With(_, _, true)
        );
        if in_else {
            top.2.push(n)
        } else {
            top.1.push(n)
        }
    };
    for piece in split(file, src)? {
        let (body, pos) = match piece {
            Piece::Text(t) => {
                if !t.is_empty() {
                    push(&mut stack, Node::Text(t));
                }
                continue;
            }
            Piece::Action(b, p) => (b, p),
        };
        let (word, rest) = body
            .split_once(char::is_whitespace)
            .map(|(w, r)| (w, r.trim()))
            .unwrap_or((body.as_str(), ""));
        let pipe =
            |t: &str| pipeline(t, pos).map_err(|m| err(pos, format!("{m} in {{{{ {body} }}}}")));
        // Nodes nest as deep as the blocks; executing and dropping them recurses.
        if stack.len() > limits::MAX_BLOCKS
            && matches!(word, "if" | "range" | "with" | "define" | "block" | "else")
        {
            return Err(err(
                pos,
                format!("blocks nest deeper than {}", limits::MAX_BLOCKS),
            ));
        }
        match word {
            "if" => stack.push((Frame::If(pipe(rest)?, vec![], false), vec![], vec![])),
            "range" => stack.push((Frame::Range(pipe(rest)?, vec![], false), vec![], vec![])),
            "with" => stack.push((Frame::With(pipe(rest)?, vec![], false), vec![], vec![])),
            "define" => {
                let name: String = serde_json::from_str(rest).map_err(|_| {
                    err(
                        pos,
                        format!("define needs a quoted name in {{{{ {body} }}}}"),
                    )
                })?;
                stack.push((Frame::Define(name), vec![], vec![]));
            }
            "block" | "template" => {
                let (name_lit, arg) = match rest
                    .find(['"', '`'])
                    .and_then(|s| rest[s + 1..].find(['"', '`']).map(|e| s + e + 2))
                {
                    Some(end) => (&rest[..end], rest[end..].trim()),
                    None => {
                        return Err(err(
                            pos,
                            format!("{word} needs a quoted name in {{{{ {body} }}}}"),
                        ))
                    }
                };
                let name = name_lit.trim_matches(['"', '`']).to_string();
                let arg = if arg.is_empty() {
                    None
                } else {
                    Some(pipe(arg)?)
                };
                if word == "template" {
                    push(&mut stack, Node::Template(name, arg, pos));
                } else {
                    stack.push((Frame::Block(name, arg, pos), vec![], vec![]));
                }
            }
            "else" => {
                let top = stack.last_mut().expect("root");
                let (nodes, else_nodes) = (std::mem::take(&mut top.1), std::mem::take(&mut top.2));
                match &mut top.0 {
                    Frame::If(_, saved, in_else)
                    | Frame::Range(_, saved, in_else)
                    | Frame::With(_, saved, in_else)
                        if !*in_else =>
                    {
                        *saved = nodes;
                        *in_else = true;
                        top.2 = else_nodes;
                    }
                    _ => return Err(err(pos, "unexpected {{ else }}".into())),
                }
                // `else if` / `else with`: an implicit nested block closed by the same end.
                if let Some(cond) = rest.strip_prefix("if ") {
                    stack.push((Frame::If(pipe(cond)?, vec![], false), vec![], vec![]));
                    stack.last_mut().expect("pushed").2 = vec![Node::Text("\u{0}chained".into())];
                } else if let Some(cond) = rest.strip_prefix("with ") {
                    stack.push((Frame::With(pipe(cond)?, vec![], false), vec![], vec![]));
                    stack.last_mut().expect("pushed").2 = vec![Node::Text("\u{0}chained".into())];
                }
            }
            "end" => loop {
                let (frame, nodes, else_nodes) = stack.pop().expect("root");
                let chained = else_nodes.first() == Some(&Node::Text("\u{0}chained".into()));
                let else_nodes: Vec<Node> = if chained {
                    else_nodes[1..].to_vec()
                } else {
                    else_nodes
                };
                let node = match frame {
                    Frame::Root => return Err(err(pos, "unexpected {{ end }}".into())),
                    Frame::If(p, saved, in_else) => {
                        if in_else {
                            Node::If(p, saved, nodes_or(else_nodes, nodes))
                        } else {
                            Node::If(p, nodes, vec![])
                        }
                    }
                    Frame::Range(p, saved, in_else) => {
                        if in_else {
                            Node::Range(p, saved, nodes_or(else_nodes, nodes))
                        } else {
                            Node::Range(p, nodes, vec![])
                        }
                    }
                    Frame::With(p, saved, in_else) => {
                        if in_else {
                            Node::With(p, saved, nodes_or(else_nodes, nodes))
                        } else {
                            Node::With(p, nodes, vec![])
                        }
                    }
                    Frame::Define(name) => {
                        out.defines.push((name, nodes));
                        break;
                    }
                    Frame::Block(name, arg, bpos) => {
                        out.defines.push((name.clone(), nodes));
                        push(&mut stack, Node::Template(name, arg, bpos));
                        break;
                    }
                };
                push(&mut stack, node);
                if !chained {
                    break;
                }
            },
            _ => push(&mut stack, Node::Action(pipe(&body)?)),
        }
    }
    if stack.len() != 1 {
        return Err(err(
            pos_at(src, src.len()),
            "unexpected end of template: missing {{ end }}".into(),
        ));
    }
    out.body = stack.pop().expect("root").1;
    Ok(out)
}

/// While in an else branch, nodes collect in the else slot; whichever is non-empty wins.
fn nodes_or(else_nodes: Vec<Node>, nodes: Vec<Node>) -> Vec<Node> {
    if else_nodes.is_empty() {
        nodes
    } else {
        else_nodes
    }
}
