//! Helm's built-in objects that have methods: `.Files` (`Get`, `GetBytes`, `Glob`,
//! `Lines`, `AsConfig`, `AsSecrets`) and `.Capabilities.APIVersions.Has`. They travel
//! through the template engine as JSON objects carrying a marker key, and the engine
//! asks [`method`] when a template calls one.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The marker key of a `.Files` object; it holds the file map.
pub const FILES: &str = "\u{0}files";
/// The marker key of `.Capabilities.APIVersions`; it holds the list of versions.
pub const API_VERSIONS: &str = "\u{0}apiVersions";

/// A `.Files` object over the chart's non-template files.
pub fn files(map: &BTreeMap<String, String>) -> Value {
    let inner: Map<String, Value> = map
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    json!({ FILES: inner })
}

/// An `APIVersions` object listing `group/version` and `group/version/Kind` entries.
pub fn api_versions(list: &[String]) -> Value {
    json!({ API_VERSIONS: list })
}

/// Whether `v` is an object with methods, and so a method name is a call, not a field.
pub fn has_methods(v: &Value) -> bool {
    v.get(FILES).is_some() || v.get(API_VERSIONS).is_some()
}

/// `*` matches within a path segment, `**` across segments, `?` one character.
pub fn glob(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) if p.get(1) == Some(&b'*') => {
                let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
                (0..=t.len()).any(|i| go(rest, &t[i..]) || go(&p[2..], &t[i..]))
            }
            (Some(b'*'), _) => {
                go(&p[1..], t) || (t.first().is_some_and(|c| *c != b'/') && go(p, &t[1..]))
            }
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

fn str_arg(args: &[Value], method: &str) -> Result<String, String> {
    match args {
        [Value::String(s)] => Ok(s.clone()),
        _ => Err(format!("{method} needs one string argument")),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Calls `name` on `recv` with `args`. `None` when `recv` has no such method.
pub fn method(recv: &Value, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
    if let Some(Value::Object(files)) = recv.get(FILES) {
        let text = |p: &str| {
            files
                .get(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Some(match name {
            "Get" => str_arg(args, name).map(|p| Value::from(text(&p))),
            "GetBytes" => str_arg(args, name).map(|p| Value::from(text(&p))),
            "Lines" => str_arg(args, name).map(|p| {
                let t = text(&p);
                let t = t.strip_suffix('\n').unwrap_or(&t);
                Value::from(if t.is_empty() {
                    vec![]
                } else {
                    t.split('\n').map(String::from).collect::<Vec<_>>()
                })
            }),
            "Glob" => str_arg(args, name).map(|pat| {
                let picked: Map<String, Value> = files
                    .iter()
                    .filter(|(k, _)| glob(&pat, k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                json!({ FILES: picked })
            }),
            "AsConfig" | "AsSecrets" if args.is_empty() => {
                let mut out = Map::new();
                for (path, v) in files {
                    let body = v.as_str().unwrap_or_default();
                    let value = if name == "AsSecrets" {
                        base64::engine::general_purpose::STANDARD.encode(body)
                    } else {
                        body.to_string()
                    };
                    out.insert(basename(path).to_string(), Value::from(value));
                }
                let yaml = crate::util::yaml::yaml(&Value::Object(out));
                Ok(Value::from(if yaml.trim() == "{}" {
                    String::new()
                } else {
                    yaml.trim_end_matches('\n').to_string()
                }))
            }
            _ => return None,
        });
    }
    if let Some(Value::Array(list)) = recv.get(API_VERSIONS) {
        return match name {
            "Has" => Some(
                str_arg(args, name)
                    .map(|v| Value::from(list.iter().any(|x| x.as_str() == Some(v.as_str())))),
            ),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_path_segments() {
        assert!(glob("files/*.conf", "files/a.conf"));
        assert!(!glob("files/*.conf", "files/sub/a.conf"));
        assert!(glob("files/**.conf", "files/sub/a.conf"));
        assert!(glob("**/*.json", "a/b/c.json"));
        assert!(glob("conf?.ini", "conf1.ini"));
    }

    #[test]
    fn files_methods() {
        let mut m = BTreeMap::new();
        m.insert("config/app.ini".to_string(), "a=1\nb=2\n".to_string());
        m.insert("config/db.ini".to_string(), "url=x".to_string());
        m.insert("README.md".to_string(), "hi".to_string());
        let f = files(&m);
        assert_eq!(
            method(&f, "Get", &[json!("README.md")]).unwrap().unwrap(),
            json!("hi")
        );
        assert_eq!(
            method(&f, "Lines", &[json!("config/app.ini")])
                .unwrap()
                .unwrap(),
            json!(["a=1", "b=2"])
        );
        let g = method(&f, "Glob", &[json!("config/*")]).unwrap().unwrap();
        let cfg = method(&g, "AsConfig", &[]).unwrap().unwrap();
        assert_eq!(
            cfg,
            Value::from(r#"app.ini: "a=1\nb=2\n""#.to_string() + "\ndb.ini: url=x")
        );
        let sec = method(&g, "AsSecrets", &[]).unwrap().unwrap();
        assert_eq!(sec, json!("app.ini: YT0xCmI9Mgo=\ndb.ini: dXJsPXg="));
        assert!(method(&f, "Nope", &[]).is_none());
        let api = api_versions(&["apps/v1".to_string()]);
        assert_eq!(
            method(&api, "Has", &[json!("apps/v1")]).unwrap().unwrap(),
            json!(true)
        );
        assert_eq!(
            method(&api, "Has", &[json!("batch/v9")]).unwrap().unwrap(),
            json!(false)
        );
    }
}
