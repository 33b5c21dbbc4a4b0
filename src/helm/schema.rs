//! `values.schema.json` validation: the JSON Schema keywords charts use — `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `enum`, `const`,
//! `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`, `minItems`/`maxItems`,
//! and `allOf`/`anyOf`/`oneOf`/`not`. Errors name the value's path, e.g. `image.tag`.

use serde_json::Value;

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => true,
    }
}

fn at(path: &str) -> &str {
    if path.is_empty() {
        "(root)"
    } else {
        path
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks `value` against `schema`; the first violation found, with its path.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "")
}

fn check(s: &Value, v: &Value, path: &str) -> Result<(), String> {
    let Value::Object(s) = s else { return Ok(()) };
    match s.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => {
            return Err(format!("{}: invalid type, expected {t}", at(path)))
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| t.as_str().is_some_and(|t| type_ok(t, v))) => {
            return Err(format!(
                "{}: invalid type, expected one of {}",
                at(path),
                Value::Array(ts.clone())
            ))
        }
        _ => {}
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(v) {
            return Err(format!(
                "{}: must be one of {}",
                at(path),
                Value::Array(options.clone())
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return Err(format!("{}: must be {c}", at(path)));
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if n < min {
                return Err(format!("{}: must be >= {min}", at(path)));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if n > max {
                return Err(format!("{}: must be <= {max}", at(path)));
            }
        }
    }
    if let Some(text) = v.as_str() {
        let len = text.chars().count() as u64;
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            return Err(format!("{}: string too short", at(path)));
        }
        if s.get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            return Err(format!("{}: string too long", at(path)));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            let re = regex::Regex::new(p).map_err(|e| {
                format!(
                    "{}: bad pattern in schema: {}",
                    at(path),
                    crate::image::policy::regex_error(&e)
                )
            })?;
            if !re.is_match(text) {
                return Err(format!("{}: does not match pattern {p:?}", at(path)));
            }
        }
    }
    if let Value::Object(obj) = v {
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{}: missing property {r:?}", at(path)));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(ps, val, &join(path, k))?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!(
                            "{}: additional property {k:?} is not allowed",
                            at(path)
                        ))
                    }
                    Some(extra @ Value::Object(_)) => check(extra, val, &join(path, k))?,
                    _ => {}
                },
            }
        }
    }
    if let Value::Array(items) = v {
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| (items.len() as u64) < m)
        {
            return Err(format!("{}: too few items", at(path)));
        }
        if s.get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| (items.len() as u64) > m)
        {
            return Err(format!("{}: too many items", at(path)));
        }
        if let Some(is) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(is, item, &format!("{}[{i}]", path))?;
            }
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            check(sub, v, path)?;
        }
    }
    if let Some(Value::Array(any)) = s.get("anyOf") {
        if !any.iter().any(|sub| check(sub, v, path).is_ok()) {
            return Err(format!("{}: matches none of anyOf", at(path)));
        }
    }
    if let Some(Value::Array(one)) = s.get("oneOf") {
        if one.iter().filter(|sub| check(sub, v, path).is_ok()).count() != 1 {
            return Err(format!("{}: must match exactly one of oneOf", at(path)));
        }
    }
    if let Some(not) = s.get("not") {
        if check(not, v, path).is_ok() {
            return Err(format!("{}: must not match the schema in not", at(path)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;
    use serde_json::json;

    #[test]
    fn names_the_failing_path() {
        let schema = json!({
            "type": "object", "required": ["image"],
            "properties": {
                "replicaCount": {"type": "integer", "minimum": 1},
                "image": {"type": "object", "required": ["repository"], "additionalProperties": false,
                    "properties": {"repository": {"type": "string", "minLength": 1}, "tag": {"type": "string", "pattern": "^[0-9.]+$"},
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}},
                "ports": {"type": "array", "items": {"type": "integer"}}
            }
        });
        let good = json!({"replicaCount": 2, "image": {"repository": "podinfo", "tag": "6.0.1", "pullPolicy": "Always"}, "ports": [80]});
        assert_eq!(validate(&schema, &good), Ok(()));
        let cases = [
            (json!({}), "(root): missing property \"image\""),
            (
                json!({"image": {"repository": "x"}, "replicaCount": 0}),
                "replicaCount: must be >= 1",
            ),
            (
                json!({"image": {"repository": "x", "tag": "latest"}}),
                "image.tag: does not match pattern",
            ),
            (
                json!({"image": {"repository": "x", "pullPolicy": "Sometimes"}}),
                "image.pullPolicy: must be one of",
            ),
            (
                json!({"image": {"repository": "x", "extra": 1}}),
                "image: additional property \"extra\"",
            ),
            (
                json!({"image": {"repository": "x"}, "ports": [80, "http"]}),
                "ports[1]: invalid type, expected integer",
            ),
            (
                json!({"image": {"repository": 5}}),
                "image.repository: invalid type, expected string",
            ),
        ];
        for (v, want) in cases {
            let err = validate(&schema, &v).unwrap_err();
            assert!(err.starts_with(want), "{err} vs {want}");
        }
    }
}
