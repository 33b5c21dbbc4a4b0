//! Executing parsed templates with Go `text/template` semantics: `.` and `$`,
//! variables scoped to their block, Go truthiness, `range` over lists, maps (sorted
//! keys, as Go does) and integers, and Helm's rendering of missing values as empty.
//! Execution stays within [`limits`](super::limits): nesting, steps and text size.

use super::funcs;
use super::limits::{MAX_DEPTH, MAX_ITEMS, MAX_STEPS, MAX_TEXT, RENDER_STACK};
use super::parse::{parse, Arg, Node, Parsed, Pipeline, Pos, TemplateError};
use crate::helm::objects;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A set of parsed template files and every template they define.
#[derive(Default)]
pub struct Engine {
    files: HashMap<String, Parsed>,
    defines: HashMap<String, (String, Vec<Node>)>,
    /// Steps taken by every render of this engine, against [`MAX_STEPS`].
    steps: AtomicU64,
}

/// Go's truthiness: false, 0, "", nil and empty collections are false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How Go's `{{ }}` prints a value (Helm prints a missing value as nothing).
pub fn print(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => funcs::go_number(n),
        Value::Array(a) => format!("[{}]", a.iter().map(print).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Follows `.a.b` from `v`, copying only the value reached: a loop reading
/// `.Values.x` must not copy all the values each time.
fn field(v: &Value, path: &[String]) -> Value {
    let mut cur = Cow::Borrowed(v);
    for key in path {
        if objects::has_methods(&cur) {
            if let Some(Ok(r)) = objects::method(&cur, key, &[]) {
                cur = Cow::Owned(r);
                continue;
            }
        }
        cur = match cur {
            Cow::Borrowed(Value::Object(m)) => {
                m.get(key).map_or(Cow::Owned(Value::Null), Cow::Borrowed)
            }
            Cow::Owned(Value::Object(mut m)) => Cow::Owned(m.remove(key).unwrap_or(Value::Null)),
            _ => Cow::Owned(Value::Null),
        };
    }
    cur.into_owned()
}

/// Execution state for one render.
pub struct Ctx<'e> {
    engine: &'e Engine,
    file: String,
    vars: Vec<(String, Value)>,
    /// Nesting so far, against [`MAX_DEPTH`], carried into included templates.
    depth: usize,
    /// The steps counter of the outermost engine (`tpl` renders with its own engine).
    steps: &'e AtomicU64,
}

/// Go's text/template wording for too deep a nesting.
fn too_deep() -> String {
    format!("exceeded maximum template depth ({MAX_DEPTH})")
}

impl Engine {
    /// An empty engine.
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Parses and adds a file; its `define`s become available to every file.
    pub fn add(&mut self, file: &str, src: &str) -> Result<(), TemplateError> {
        let parsed = parse(file, src)?;
        for (name, nodes) in &parsed.defines {
            self.defines
                .insert(name.clone(), (file.to_string(), nodes.clone()));
        }
        self.files.insert(file.to_string(), parsed);
        Ok(())
    }

    /// Renders a file's body with `dot` as both `.` and `$`, on a thread of its own
    /// with a stack sized for [`MAX_DEPTH`] (whatever stack the caller has).
    pub fn render(&self, file: &str, dot: &Value) -> Result<String, TemplateError> {
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("render".into())
                .stack_size(RENDER_STACK)
                .spawn_scoped(scope, || self.render_nested(file, dot, 0, &self.steps))
                .map_err(|e| TemplateError {
                    file: file.into(),
                    line: 0,
                    col: 0,
                    message: format!("cannot start a render thread: {e}"),
                })?;
            // A panic stays a panic, for the caller's catch_unwind to report.
            thread
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    fn render_nested(
        &self,
        file: &str,
        dot: &Value,
        depth: usize,
        steps: &AtomicU64,
    ) -> Result<String, TemplateError> {
        let parsed = self.files.get(file).ok_or_else(|| TemplateError {
            file: file.into(),
            line: 0,
            col: 0,
            message: "no such template file".into(),
        })?;
        let mut ctx = Ctx {
            engine: self,
            file: file.to_string(),
            vars: vec![("$".into(), dot.clone())],
            depth,
            steps,
        };
        let mut out = String::new();
        ctx.exec(&parsed.body, dot, &mut out)?;
        Ok(out)
    }

    /// Renders a `define`d template (Helm's `include`) at nesting `depth`.
    fn include(
        &self,
        name: &str,
        dot: &Value,
        depth: usize,
        steps: &AtomicU64,
    ) -> Result<String, String> {
        // Every file is also a template named by its path, as in Helm.
        let (file, nodes) = match self.defines.get(name) {
            Some((file, nodes)) => (file, nodes),
            None => match self.files.get_key_value(name) {
                Some((file, parsed)) => (file, &parsed.body),
                None => return Err(format!("no template {name:?} associated with template")),
            },
        };
        if depth >= MAX_DEPTH {
            // Helm's wording for a template including itself.
            return Err(format!(
                "rendering template has a nested reference name: {name}: exceeded max depth {MAX_DEPTH}"
            ));
        }
        let mut ctx = Ctx {
            engine: self,
            file: file.clone(),
            vars: vec![("$".into(), dot.clone())],
            depth: depth + 1,
            steps,
        };
        let mut out = String::new();
        ctx.exec(nodes, dot, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }
}

impl Ctx<'_> {
    fn err(&self, p: &Pipeline, m: String) -> TemplateError {
        TemplateError {
            file: self.file.clone(),
            line: p.pos.line,
            col: p.pos.col,
            message: m,
        }
    }

    fn at(&self, pos: Pos, message: String) -> TemplateError {
        TemplateError {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
            message,
        }
    }

    /// Counts one step against [`MAX_STEPS`].
    fn step(&self) -> Result<(), String> {
        let n = self.steps.fetch_add(1, Ordering::Relaxed) + 1;
        if n > MAX_STEPS {
            return Err(format!(
                "rendering took more than {MAX_STEPS} steps; is a range looping too long?"
            ));
        }
        Ok(())
    }

    /// Executes a nested block one level deeper.
    fn nested(
        &mut self,
        p: &Pipeline,
        nodes: &[Node],
        dot: &Value,
        out: &mut String,
    ) -> Result<(), TemplateError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err(p, too_deep()));
        }
        self.depth += 1;
        let r = self.exec(nodes, dot, out);
        self.depth -= 1;
        r
    }

    fn exec(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), TemplateError> {
        for n in nodes {
            self.node(n, dot, out)?;
            if out.len() > MAX_TEXT {
                let pos = match n {
                    Node::Action(p) | Node::If(p, ..) | Node::With(p, ..) | Node::Range(p, ..) => {
                        p.pos
                    }
                    Node::Template(_, _, pos) => *pos,
                    Node::Text(_) => Pos::default(),
                };
                return Err(self.at(
                    pos,
                    format!("rendered text exceeds the limit of {MAX_TEXT} bytes"),
                ));
            }
        }
        Ok(())
    }

    fn node(&mut self, n: &Node, dot: &Value, out: &mut String) -> Result<(), TemplateError> {
        if let Err(m) = self.step() {
            let pos = match n {
                Node::Action(p) | Node::If(p, ..) | Node::With(p, ..) | Node::Range(p, ..) => p.pos,
                Node::Template(_, _, pos) => *pos,
                Node::Text(_) => Pos::default(),
            };
            return Err(self.at(pos, m));
        }
        {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        out.push_str(&print(&v));
                    }
                }
                Node::If(p, then, els) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    self.nested(p, if truthy(&v) { then } else { els }, dot, out)?;
                    self.vars.truncate(mark);
                }
                Node::With(p, then, els) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    if truthy(&v) {
                        self.nested(p, then, &v, out)?;
                    } else {
                        self.nested(p, els, dot, out)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range(p, body, els) => {
                    let mark = self.vars.len();
                    let mut vp = p.clone();
                    let names = std::mem::take(&mut vp.vars);
                    let v = self.pipeline(&vp, dot)?;
                    let items: Vec<(Value, Value)> = match v {
                        Value::Array(a) => a
                            .into_iter()
                            .enumerate()
                            .map(|(i, x)| (Value::from(i), x))
                            .collect(),
                        Value::Object(o) => {
                            o.into_iter().map(|(k, x)| (Value::from(k), x)).collect()
                        }
                        Value::Number(n) if n.as_i64().is_some() => {
                            let n = n.as_i64().unwrap_or(0);
                            if n > MAX_ITEMS as i64 {
                                return Err(self.err(
                                    p,
                                    format!(
                                        "range over {n} exceeds the limit of {MAX_ITEMS} items"
                                    ),
                                ));
                            }
                            (0..n).map(|i| (Value::from(i), Value::from(i))).collect()
                        }
                        Value::Null => vec![],
                        other => {
                            return Err(self.err(
                                p,
                                format!(
                                    "range can't iterate over {} in {{{{ {} }}}}",
                                    print(&other),
                                    p.text
                                ),
                            ))
                        }
                    };
                    if items.is_empty() {
                        self.nested(p, els, dot, out)?;
                    }
                    for (k, item) in items {
                        // An empty body executes no node; the iteration still counts.
                        self.step().map_err(|m| self.err(p, m))?;
                        let inner = self.vars.len();
                        match names.as_slice() {
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [i, v] => {
                                self.vars.push((i.clone(), k));
                                self.vars.push((v.clone(), item.clone()));
                            }
                            _ => {}
                        }
                        self.nested(p, body, &item, out)?;
                        self.vars.truncate(inner);
                    }
                    self.vars.truncate(mark);
                }
                Node::Template(name, arg, pos) => {
                    let v = match arg {
                        Some(p) => self.pipeline(p, dot)?,
                        None => Value::Null,
                    };
                    let s = self
                        .engine
                        .include(name, &v, self.depth, self.steps)
                        .map_err(|m| self.at(*pos, m))?;
                    out.push_str(&s);
                }
            }
        }
        Ok(())
    }

    fn var(&self, name: &str) -> Result<&Value, String> {
        let key = if name.is_empty() { "$" } else { name };
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == key)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("undefined variable ${name}"))
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut val: Option<Value> = None;
        for cmd in &p.cmds {
            val = Some(
                self.command(cmd, dot, val)
                    .map_err(|m| self.err(p, format!("{m} in {{{{ {} }}}}", p.text)))?,
            );
        }
        let v = val.unwrap_or(Value::Null);
        match (p.vars.as_slice(), p.declare) {
            ([name], true) => self.vars.push((name.clone(), v.clone())),
            ([name], false) => {
                let Some(i) = self.vars.iter().rposition(|(n, _)| n == name) else {
                    return Err(self.err(p, format!("undefined variable ${name}")));
                };
                self.vars[i].1 = v.clone();
            }
            _ => {}
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &Value) -> Result<Value, String> {
        Ok(match a {
            Arg::Field(path) => field(dot, path),
            Arg::Var(name, path) => field(self.var(name)?, path),
            Arg::Lit(v) => v.clone(),
            Arg::Sub(p, path) => {
                if self.depth >= MAX_DEPTH {
                    return Err(too_deep());
                }
                self.depth += 1;
                let v = self.pipeline(p, dot).map_err(|e| e.message);
                self.depth -= 1;
                field(&v?, path)
            }
            Arg::Ident(name) => self.call(name, vec![])?,
        })
    }

    fn command(
        &mut self,
        args: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, String> {
        let Some(first) = args.first() else {
            return Err("missing value in pipeline".into());
        };
        match first {
            Arg::Ident(name) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in &args[1..] {
                    vals.push(self.arg(a, dot)?);
                }
                if let Some(p) = piped {
                    vals.push(p);
                }
                self.call(name, vals)
            }
            Arg::Field(path) | Arg::Var(_, path)
                if !path.is_empty() && (args.len() > 1 || piped.is_some()) =>
            {
                let (name, recv_path) = path.split_last().expect("path is not empty");
                let recv = match first {
                    Arg::Var(var, _) => field(self.var(var)?, recv_path),
                    _ => field(dot, recv_path),
                };
                let mut vals = Vec::with_capacity(args.len());
                for a in &args[1..] {
                    vals.push(self.arg(a, dot)?);
                }
                vals.extend(piped);
                objects::method(&recv, name, &vals).unwrap_or_else(|| {
                    Err(format!("can't give an argument to non-function {name}"))
                })
            }
            first => {
                if args.len() > 1 || piped.is_some() {
                    return Err("can't give an argument to a non-function".into());
                }
                self.arg(first, dot)
            }
        }
    }

    /// Calls a function; `include`, `tpl` and `lookup` need the engine, the rest are
    /// pure.
    fn call(&mut self, name: &str, args: Vec<Value>) -> Result<Value, String> {
        self.step()?;
        match name {
            "include" => {
                funcs::check_arity(name, args.len(), 2, 2)?;
                let [n, d] = <[Value; 2]>::try_from(args).map_err(|_| "include: arity")?;
                let n = n
                    .as_str()
                    .ok_or("include: the name must be a string")?
                    .to_string();
                let s = self.engine.include(&n, &d, self.depth, self.steps)?;
                Ok(Value::from(s))
            }
            "tpl" => {
                funcs::check_arity(name, args.len(), 2, 2)?;
                let [t, d] = <[Value; 2]>::try_from(args).map_err(|_| "tpl: arity")?;
                if self.depth >= MAX_DEPTH {
                    return Err(format!("tpl: {}", too_deep()));
                }
                let mut e = Engine::new();
                for (k, v) in &self.engine.defines {
                    e.defines.insert(k.clone(), v.clone());
                }
                e.add(&self.file, t.as_str().unwrap_or_default())
                    .map_err(|x| format!("tpl: {}", x.message))?;
                e.render_nested(&self.file, &d, self.depth + 1, self.steps)
                    .map(Value::from)
                    .map_err(|x| format!("tpl: {}", x.message))
            }
            "lookup" => {
                funcs::check_arity(name, args.len(), 4, 4)?;
                Ok(Value::Object(Default::default()))
            }
            _ => funcs::call(name, args),
        }
    }
}
