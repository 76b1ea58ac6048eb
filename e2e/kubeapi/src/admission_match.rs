//! Which requests a ValidatingAdmissionPolicy (`spec.matchConstraints`) or its binding
//! (`spec.matchResources`) applies to, as the apiserver's admission rule matcher
//! (k8s.io/apiserver `admission/plugin/webhook/predicates`) decides it.
//!
//! Rules (`resourceRules`, `excludeResourceRules`) match by operation, apiGroup, apiVersion,
//! resource (`*` is every resource without subresources, `x/*` is x and its subresources,
//! `*/status` every status subresource, `*/*` everything), scope and resourceNames.
//! `namespaceSelector` matches the labels of the request's namespace (of the object itself for a
//! Namespace; other cluster-scoped objects always match); `objectSelector` matches the labels of
//! the new or the old object. Departure: `matchPolicy: Equivalent` matches only the requested
//! version's resource (the server serves each resource in one storage, mostly one version).

use serde_json::Value;

use super::admission_request::AdmissionRequest;
use super::selectors::LabelSelector;

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn any_or(v: &Value, want: &str) -> bool {
    strs(v).any(|x| x == "*" || x == want)
}

/// Whether one `NamedRuleWithOperations` matches the request.
pub fn rule_matches(rule: &Value, req: &AdmissionRequest) -> bool {
    let resource_ok = strs(&rule["resources"]).any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == req.resource.resource) && (sub == "*" || sub == req.sub_resource)
    });
    let scope_ok = match rule["scope"].as_str() {
        Some("Cluster") => req.namespace.is_empty(),
        Some("Namespaced") => !req.namespace.is_empty(),
        _ => true,
    };
    let names: Vec<&str> = strs(&rule["resourceNames"]).collect();
    any_or(&rule["operations"], req.operation.as_str())
        && any_or(&rule["apiGroups"], &req.resource.group)
        && any_or(&rule["apiVersions"], &req.resource.version)
        && resource_ok
        && scope_ok
        && (names.is_empty() || names.contains(&req.name.as_str()))
}

fn selector(v: &Value) -> Result<LabelSelector, String> {
    LabelSelector::from_json(v).map_err(|e| format!("invalid label selector: {e}"))
}

/// Whether `m` (matchConstraints or matchResources) selects the request. With `rules_required`
/// (a policy's constraints) an empty `resourceRules` matches nothing; in a binding's
/// `matchResources` it means "whatever the policy matches". An invalid selector is an error.
pub fn matches(m: &Value, req: &AdmissionRequest, rules_required: bool) -> Result<bool, String> {
    let rules: Vec<&Value> = m["resourceRules"].as_array().into_iter().flatten().collect();
    if (rules_required || !rules.is_empty()) && !rules.iter().any(|r| rule_matches(r, req)) {
        return Ok(false);
    }
    if m["excludeResourceRules"].as_array().into_iter().flatten().any(|r| rule_matches(r, req)) {
        return Ok(false);
    }
    let objects = [req.object.as_ref(), req.old_object.as_ref()];
    let ns_sel = selector(&m["namespaceSelector"])?;
    if !ns_sel.is_empty() {
        let ok = if !req.namespace.is_empty() {
            let empty = Value::Null;
            ns_sel.matches(req.namespace_object.as_ref().unwrap_or(&empty))
        } else if req.resource.group.is_empty() && req.resource.resource == "namespaces" {
            objects.iter().flatten().any(|o| ns_sel.matches(o))
        } else {
            true
        };
        if !ok {
            return Ok(false);
        }
    }
    let obj_sel = selector(&m["objectSelector"])?;
    if !obj_sel.is_empty() && !objects.iter().flatten().any(|o| obj_sel.matches(o)) {
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::admission_request::{AdmissionRequest, Gvr, Operation};
    use super::*;
    use serde_json::json;

    fn req(op: Operation, resource: &str, sub: &str, ns: &str) -> AdmissionRequest {
        AdmissionRequest {
            operation: op,
            resource: Gvr {
                group: "enipool.io".into(),
                version: "v1alpha1".into(),
                resource: resource.into(),
            },
            sub_resource: sub.into(),
            name: "n1".into(),
            namespace: ns.into(),
            object: Some(json!({"metadata": {"name": "n1", "labels": {"a": "1"}}})),
            ..Default::default()
        }
    }

    #[test]
    fn resource_rules_follow_the_admission_matcher() {
        let rule = |resources: Value| {
            json!({"apiGroups": ["enipool.io"], "apiVersions": ["*"],
                   "operations": ["CREATE", "UPDATE"], "resources": resources})
        };
        let update = |r: &str, s: &str| req(Operation::Update, r, s, "");
        let cases = [
            (rule(json!(["enipools"])), update("enipools", ""), true),
            (rule(json!(["enipools"])), update("enipools", "status"), false),
            (rule(json!(["enipools/status"])), update("enipools", "status"), true),
            (rule(json!(["*"])), update("enipools", ""), true),
            (rule(json!(["*"])), update("enipools", "status"), false),
            (rule(json!(["*/status"])), update("enipools", "status"), true),
            (rule(json!(["enipools/*"])), update("enipools", "status"), true),
            (rule(json!(["*/*"])), update("other", "scale"), true),
            (rule(json!(["enipools"])), req(Operation::Delete, "enipools", "", ""), false),
            (rule(json!(["enipools"])), update("enipoolpolicies", ""), false),
        ];
        for (i, (rule, r, want)) in cases.iter().enumerate() {
            assert_eq!(rule_matches(rule, r), *want, "case {i}: {rule}");
        }
        let mut named = rule(json!(["enipools"]));
        named["resourceNames"] = json!(["n2"]);
        assert!(!rule_matches(&named, &update("enipools", "")));
        named["resourceNames"] = json!(["n1"]);
        assert!(rule_matches(&named, &update("enipools", "")));
        named["scope"] = json!("Namespaced");
        assert!(!rule_matches(&named, &update("enipools", "")));
    }

    #[test]
    fn constraints_exclusions_and_selectors() {
        let r = req(Operation::Create, "enipools", "", "");
        let rule = json!({"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]});
        assert!(!matches(&json!({}), &r, true).unwrap(), "a policy without rules matches nothing");
        assert!(matches(&json!({}), &r, false).unwrap(), "a binding without rules narrows nothing");
        assert!(matches(&json!({"resourceRules": [rule]}), &r, true).unwrap());
        let excluded = json!({"resourceRules": [rule], "excludeResourceRules": [rule]});
        assert!(!matches(&excluded, &r, true).unwrap());
        let sel = |s: Value| json!({"resourceRules": [rule], "objectSelector": s});
        assert!(matches(&sel(json!({"matchLabels": {"a": "1"}})), &r, true).unwrap());
        assert!(!matches(&sel(json!({"matchLabels": {"a": "2"}})), &r, true).unwrap());
        let expr =
            json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]});
        assert!(!matches(&sel(expr), &r, true).unwrap());
        assert!(matches(
            &sel(json!({"matchExpressions": [{"key": "a", "operator": "Bad"}]})),
            &r,
            true
        )
        .is_err());
        // namespaceSelector: the namespace's labels; cluster-scoped objects are not filtered.
        let nsel =
            json!({"resourceRules": [rule], "namespaceSelector": {"matchLabels": {"team": "x"}}});
        assert!(matches(&nsel, &r, true).unwrap());
        let mut namespaced = req(Operation::Create, "enipools", "", "ns1");
        assert!(!matches(&nsel, &namespaced, true).unwrap());
        namespaced.namespace_object = Some(json!({"metadata": {"labels": {"team": "x"}}}));
        assert!(matches(&nsel, &namespaced, true).unwrap());
    }
}
