//! `${VAR}` and `${VAR:-default}` in string values.

use serde_json::Value;

use crate::problem::Problem;

/// Replaces variables in every string of the tree; records each unset variable that has
/// no default, with the dotted path of the value that references it.
pub(super) fn walk(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<Problem>,
) {
    match value {
        Value::String(s) if s.contains('$') => {
            *s = substitute(s, path, lookup, missing);
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, lookup, missing);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(item, path, lookup, missing);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn substitute(
    text: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<Problem>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body_start) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            missing.push(Problem::InvalidConfig {
                path: path.to_owned(),
                message: "unterminated `${` (write `$${` for a literal `${`)".into(),
            });
            out.push_str(tail);
            return out;
        };
        let body = &body_start[..end];
        let (var, default) = match body.split_once(":-") {
            Some((var, default)) => (var, Some(default)),
            None => (body, None),
        };
        match (lookup(var), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => missing.push(Problem::MissingEnvVar {
                var: var.to_owned(),
                path: path.to_owned(),
            }),
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(mut value: Value) -> (Value, Vec<Problem>) {
        let lookup = |v: &str| (v == "HOST").then(|| "db.local".to_owned());
        let mut missing = Vec::new();
        walk(&mut value, &mut String::new(), &lookup, &mut missing);
        (value, missing)
    }

    #[test]
    fn replaces_defaults_and_escapes() {
        let (value, missing) = run(json!({
            "a": "postgres://${HOST}:${PORT:-5432}/db",
            "b": ["$${HOST}", "$5"],
        }));
        assert!(missing.is_empty());
        assert_eq!(value["a"], "postgres://db.local:5432/db");
        assert_eq!(value["b"], json!(["${HOST}", "$5"]));
    }

    #[test]
    fn unset_variables_are_reported_with_their_path() {
        let (_, missing) =
            run(json!({"plugins": {"cache-plugin": {"redis": {"port": "${REDIS_PORT}"}}}}));
        assert_eq!(
            missing,
            vec![Problem::MissingEnvVar {
                var: "REDIS_PORT".into(),
                path: "plugins.cache-plugin.redis.port".into()
            }]
        );
    }
}
