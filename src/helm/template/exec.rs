//! Executing parsed templates with Go `text/template` semantics: `.` and `$`,
//! variables scoped to their block, Go truthiness, `range` over lists, maps (sorted
//! keys, as Go does) and integers, and Helm's rendering of missing values as empty.

use super::funcs;
use super::parse::{parse, Arg, Node, Parsed, Pipeline, TemplateError};
use crate::helm::objects;
use serde_json::Value;
use std::collections::HashMap;

/// A set of parsed template files and every template they define.
#[derive(Default)]
pub struct Engine {
    files: HashMap<String, Parsed>,
    defines: HashMap<String, (String, Vec<Node>)>,
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

fn field(mut v: Value, path: &[String]) -> Value {
    for key in path {
        if objects::has_methods(&v) {
            if let Some(Ok(r)) = objects::method(&v, key, &[]) {
                v = r;
                continue;
            }
        }
        v = match v {
            Value::Object(mut m) => m.remove(key).unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }
    v
}

/// Execution state for one render.
pub struct Ctx<'e> {
    engine: &'e Engine,
    file: String,
    vars: Vec<(String, Value)>,
    depth: usize,
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

    /// Renders a file's body with `dot` as both `.` and `$`.
    pub fn render(&self, file: &str, dot: &Value) -> Result<String, TemplateError> {
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
            depth: 0,
        };
        let mut out = String::new();
        ctx.exec(&parsed.body, dot, &mut out)?;
        Ok(out)
    }

    /// Renders a `define`d template (Helm's `include`).
    pub fn include(&self, name: &str, dot: &Value, depth: usize) -> Result<String, String> {
        // Every file is also a template named by its path, as in Helm.
        let (file, nodes) = match self.defines.get(name) {
            Some((file, nodes)) => (file, nodes),
            None => match self.files.get_key_value(name) {
                Some((file, parsed)) => (file, &parsed.body),
                None => return Err(format!("no template {name:?} associated with template")),
            },
        };
        if depth > 100 {
            return Err(format!("template {name:?}: recursion too deep"));
        }
        let mut ctx = Ctx {
            engine: self,
            file: file.clone(),
            vars: vec![("$".into(), dot.clone())],
            depth: depth + 1,
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

    fn exec(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), TemplateError> {
        for n in nodes {
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
                    self.exec(if truthy(&v) { then } else { els }, dot, out)?;
                    self.vars.truncate(mark);
                }
                Node::With(p, then, els) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    if truthy(&v) {
                        self.exec(then, &v, out)?;
                    } else {
                        self.exec(els, dot, out)?;
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
                        Value::Number(n) if n.as_i64().is_some() => (0..n.as_i64().unwrap_or(0))
                            .map(|i| (Value::from(i), Value::from(i)))
                            .collect(),
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
                        self.exec(els, dot, out)?;
                    }
                    for (k, item) in items {
                        let inner = self.vars.len();
                        match names.as_slice() {
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [i, v] => {
                                self.vars.push((i.clone(), k));
                                self.vars.push((v.clone(), item.clone()));
                            }
                            _ => {}
                        }
                        self.exec(body, &item, out)?;
                        self.vars.truncate(inner);
                    }
                    self.vars.truncate(mark);
                }
                Node::Template(name, arg, pos) => {
                    let v = match arg {
                        Some(p) => self.pipeline(p, dot)?,
                        None => Value::Null,
                    };
                    let s =
                        self.engine
                            .include(name, &v, self.depth)
                            .map_err(|m| TemplateError {
                                file: self.file.clone(),
                                line: pos.line,
                                col: pos.col,
                                message: m,
                            })?;
                    out.push_str(&s);
                }
            }
        }
        Ok(())
    }

    fn var(&self, name: &str) -> Option<Value> {
        let key = if name.is_empty() { "$" } else { name };
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == key)
            .map(|(_, v)| v.clone())
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
            Arg::Field(path) => field(dot.clone(), path),
            Arg::Var(name, path) => field(
                self.var(name)
                    .ok_or_else(|| format!("undefined variable ${name}"))?,
                path,
            ),
            Arg::Lit(v) => v.clone(),
            Arg::Sub(p, path) => {
                let v = self.pipeline(p, dot).map_err(|e| e.message)?;
                field(v, path)
            }
            Arg::Ident(name) => self.call(name, vec![], dot)?,
        })
    }

    fn command(
        &mut self,
        args: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, String> {
        match &args[0] {
            Arg::Ident(name) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in &args[1..] {
                    vals.push(self.arg(a, dot)?);
                }
                if let Some(p) = piped {
                    vals.push(p);
                }
                self.call(name, vals, dot)
            }
            Arg::Field(path) | Arg::Var(_, path)
                if !path.is_empty() && (args.len() > 1 || piped.is_some()) =>
            {
                let (name, recv_path) = path.split_last().expect("path is not empty");
                let recv = match &args[0] {
                    Arg::Var(var, _) => field(
                        self.var(var)
                            .ok_or_else(|| format!("undefined variable ${var}"))?,
                        recv_path,
                    ),
                    _ => field(dot.clone(), recv_path),
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

    fn call(&mut self, name: &str, args: Vec<Value>, dot: &Value) -> Result<Value, String> {
        match name {
            "include" => {
                let [n, d] = <[Value; 2]>::try_from(args)
                    .map_err(|_| "include needs a name and a value".to_string())?;
                let n = n
                    .as_str()
                    .ok_or("include: the name must be a string")?
                    .to_string();
                self.engine.include(&n, &d, self.depth).map(Value::from)
            }
            "tpl" => {
                let [t, d] = <[Value; 2]>::try_from(args)
                    .map_err(|_| "tpl needs a template string and a value".to_string())?;
                let mut e = Engine::new();
                for (k, v) in &self.engine.defines {
                    e.defines.insert(k.clone(), v.clone());
                }
                e.add(&self.file, t.as_str().unwrap_or_default())
                    .map_err(|x| format!("tpl: {}", x.message))?;
                e.render(&self.file, &d)
                    .map(Value::from)
                    .map_err(|x| format!("tpl: {}", x.message))
            }
            "lookup" => Ok(Value::Object(Default::default())),
            _ => funcs::call(name, args, dot),
        }
    }
}
