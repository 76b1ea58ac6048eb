//! The CEL environment of admission expressions: JSON values bound as CEL variables, with the
//! Kubernetes CEL library (`kube-cel`) registered, and expression evaluation with the error texts
//! the apiserver reports.

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as Cel};
use kube_cel::KubeCelExt;
use serde_json::Value;

/// JSON → CEL as the apiserver binds unstructured objects: integers are `int` (`uint` only
/// beyond i64), maps keep their keys as they are.
pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => map(m.iter().map(|(k, v)| (k.clone(), to_cel(v)))),
    }
}

/// A CEL map with string keys.
pub fn map(entries: impl IntoIterator<Item = (String, Cel)>) -> Cel {
    let m: HashMap<Key, Cel> =
        entries.into_iter().map(|(k, v)| (Key::String(Arc::new(k)), v)).collect();
    Cel::Map(Map { map: Arc::new(m) })
}

/// A context with the Kubernetes CEL functions and the given variables.
pub fn context<'a>(vars: impl IntoIterator<Item = (&'a str, Cel)>) -> Context<'static> {
    let mut ctx = Context::default();
    ctx.register_all();
    for (name, v) in vars {
        ctx.add_variable_from_value(name, v);
    }
    ctx
}

/// Evaluate `expr`; a compile or runtime error reads like the apiserver's
/// `expression '<expr>' resulted in error: <why>`.
pub fn eval(ctx: &Context, expr: &str) -> Result<Cel, String> {
    let fail = |why: String| format!("expression '{expr}' resulted in error: {why}");
    let program = Program::compile(expr).map_err(|e| fail(format!("compilation failed: {e}")))?;
    program.execute(ctx).map_err(|e| fail(e.to_string()))
}

/// Evaluate an expression that must return a bool.
pub fn eval_bool(ctx: &Context, expr: &str) -> Result<bool, String> {
    match eval(ctx, expr)? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!(
            "expression '{expr}' resulted in error: expected a bool, got {}",
            other.type_of()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_binds_as_kubernetes_cel_values() {
        let obj = json!({"metadata": {"name": "n1", "labels": {"app.kubernetes.io/name": "x"}},
                         "spec": {"size": 3, "ratio": 0.5}, "list": ["a", "b"]});
        let ctx = context([("object", to_cel(&obj))]);
        for expr in [
            "object.spec.size == 3",
            "object.spec.size > 2 && object.spec.ratio < 1.0",
            "object.metadata.labels['app.kubernetes.io/name'] == 'x'",
            "'b' in object.list && size(object.list) == 2",
            "has(object.spec.size) && !has(object.spec.other)",
            "object.metadata.name.startsWith('n')",
            "quantity('1Gi').isGreaterThan(quantity('1Mi'))",
        ] {
            assert_eq!(eval_bool(&ctx, expr), Ok(true), "{expr}");
        }
        let err = eval_bool(&ctx, "object.spec.missing == 1").unwrap_err();
        assert!(
            err.starts_with("expression 'object.spec.missing == 1' resulted in error:"),
            "{err}"
        );
        let err = eval_bool(&ctx, "object.spec.size").unwrap_err();
        assert!(err.contains("expected a bool"), "{err}");
        assert!(eval_bool(&ctx, "object.(").unwrap_err().contains("compilation failed"));
    }
}
