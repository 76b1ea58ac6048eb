//! IAM policy evaluation for the calls the simulator serves, so that the IAM document users attach
//! to the operator's role is tested by behaviour: a grant the code needs and the document lacks
//! fails the call with `UnauthorizedOperation`, as EC2 answers.
//!
//! The subset of the policy language evaluated: `Allow` and `Deny` statements, `Action` and
//! `Resource` as a string or a list with `*`/`?` wildcards, and `Condition` blocks with the
//! operators `StringEquals`, `StringNotEquals`, `StringLike`, `ArnEquals` and `ArnLike`. A
//! document using anything else is refused when loaded, so an evaluation never quietly allows
//! what IAM would deny. As in IAM, every resource of a call needs an allowing statement whose
//! conditions hold for it, and an explicit deny wins.

use super::Error;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One resource a call touches, with the condition keys IAM knows for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    /// Its ARN; `*` for actions without resource-level permissions.
    pub arn: String,
    /// Condition keys for this resource (`ec2:Vpc`, `aws:ResourceTag/k`, ...).
    pub keys: BTreeMap<String, String>,
}

/// A call as IAM sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// `ec2:<Action>`.
    pub action: String,
    /// Every resource it touches.
    pub resources: Vec<Resource>,
    /// Keys of the request itself (`aws:RequestTag/k`, `ec2:CreateAction`).
    pub keys: BTreeMap<String, String>,
}

/// A parsed identity policy.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPolicy {
    statement: Vec<RawStatement>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawStatement {
    #[serde(default)]
    sid: String,
    effect: String,
    action: OneOrMany,
    resource: OneOrMany,
    #[serde(default)]
    condition: BTreeMap<String, BTreeMap<String, OneOrMany>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringLike,
    ArnEquals,
    ArnLike,
}

#[derive(Debug, Clone)]
struct Statement {
    sid: String,
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<(Op, String, Vec<String>)>,
}

impl Policy {
    /// Parse a policy document, replacing each placeholder (`CLUSTER_NAME`, ...) with its value.
    pub fn parse(doc: &str, vars: &[(&str, &str)]) -> Result<Policy, String> {
        let mut text = doc.to_string();
        for (k, v) in vars {
            text = text.replace(k, v);
        }
        let raw: RawPolicy = serde_json::from_str(&text).map_err(|e| format!("policy: {e}"))?;
        let mut statements = Vec::new();
        for s in raw.statement {
            let allow = match s.effect.as_str() {
                "Allow" => true,
                "Deny" => false,
                other => return Err(format!("statement {:?}: effect {other}", s.sid)),
            };
            let mut conditions = Vec::new();
            for (op, keys) in s.condition {
                let op = match op.as_str() {
                    "StringEquals" => Op::StringEquals,
                    "StringNotEquals" => Op::StringNotEquals,
                    "StringLike" => Op::StringLike,
                    "ArnEquals" => Op::ArnEquals,
                    "ArnLike" => Op::ArnLike,
                    other => {
                        return Err(format!(
                            "statement {:?}: condition operator {other} is not evaluated by the \
                             simulator",
                            s.sid
                        ))
                    }
                };
                for (key, values) in keys {
                    conditions.push((op, key, values.into_vec()));
                }
            }
            statements.push(Statement {
                sid: s.sid,
                allow,
                actions: s.action.into_vec(),
                resources: s.resource.into_vec(),
                conditions,
            });
        }
        Ok(Policy { statements })
    }

    /// Whether the policy allows `req`; the error is EC2's `UnauthorizedOperation` naming the
    /// action and the first resource no statement allows.
    pub fn authorize(&self, req: &Request) -> Result<(), Error> {
        for r in &req.resources {
            let applies = |s: &&Statement| {
                s.actions
                    .iter()
                    .any(|a| glob(&a.to_ascii_lowercase(), &req.action.to_ascii_lowercase()))
                    && s.resources.iter().any(|p| glob(p, &r.arn))
                    && s.conditions.iter().all(|(op, key, values)| {
                        let v = r.keys.get(key).or_else(|| req.keys.get(key));
                        holds(*op, v.map(String::as_str), values)
                    })
            };
            let matching: Vec<&Statement> = self.statements.iter().filter(applies).collect();
            let denied = matching.iter().find(|s| !s.allow);
            if denied.is_some() || !matching.iter().any(|s| s.allow) {
                let why = match denied {
                    Some(s) => format!("with an explicit deny in statement {:?}", s.sid),
                    None => {
                        format!("because no identity-based policy allows the {} action", req.action)
                    }
                };
                return Err(Error::Api {
                    code: "UnauthorizedOperation".into(),
                    message: format!(
                        "You are not authorized to perform this operation. User: enipool-operator \
                         is not authorized to perform: {} on resource: {} {why}",
                        req.action, r.arn
                    ),
                    status: 403,
                });
            }
        }
        Ok(())
    }
}

/// A condition on one key: a missing key satisfies only the negated operator, as in IAM.
fn holds(op: Op, value: Option<&str>, wanted: &[String]) -> bool {
    let Some(v) = value else { return op == Op::StringNotEquals };
    match op {
        Op::StringEquals => wanted.iter().any(|w| w == v),
        Op::StringNotEquals => wanted.iter().all(|w| w != v),
        // ArnEquals takes wildcards like ArnLike.
        Op::StringLike | Op::ArnEquals | Op::ArnLike => wanted.iter().any(|w| glob(w, v)),
    }
}

/// IAM's wildcard match: `*` any run of characters, `?` one. Written here because the pattern
/// language is two characters and no glob crate matches IAM's rules (no character classes, no
/// path separators).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(glob(
            "arn:aws:ec2:*:*:network-interface/*",
            "arn:aws:ec2:us-west-2:1:network-interface/eni-1"
        ));
        assert!(!glob(
            "arn:aws:ec2:*:*:network-interface/*",
            "arn:aws:ec2:us-west-2:1:subnet/subnet-1"
        ));
        assert!(glob("ec2:describe*", "ec2:describesubnets"));
        assert!(glob("*", "*") && glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(!glob("arn:aws:ec2:*:*:network-interface/*", "*"), "a resource pattern is not *");
    }

    fn doc(condition: &str) -> String {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[
              {{"Sid":"D","Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}},
              {{"Sid":"E","Effect":"Allow","Action":["ec2:DeleteNetworkInterface"],
                "Resource":"arn:aws:ec2:*:*:network-interface/*",
                "Condition":{condition}}}]}}"#
        )
    }

    fn delete(tag: Option<&str>) -> Request {
        let mut keys = BTreeMap::new();
        if let Some(t) = tag {
            keys.insert("aws:ResourceTag/enipool.io/cluster".to_string(), t.to_string());
        }
        Request {
            action: "ec2:DeleteNetworkInterface".into(),
            resources: vec![Resource {
                arn: "arn:aws:ec2:r:1:network-interface/eni-1".into(),
                keys,
            }],
            keys: BTreeMap::new(),
        }
    }

    #[test]
    fn conditions_and_placeholders() {
        let p = Policy::parse(
            &doc(r#"{"StringEquals":{"aws:ResourceTag/enipool.io/cluster":"CLUSTER_NAME"}}"#),
            &[("CLUSTER_NAME", "prod")],
        )
        .unwrap();
        assert!(p.authorize(&delete(Some("prod"))).is_ok());
        let e = p.authorize(&delete(Some("other"))).unwrap_err();
        assert_eq!(e.code(), "UnauthorizedOperation");
        assert!(e.to_string().contains("ec2:DeleteNetworkInterface"), "{e}");
        assert!(p.authorize(&delete(None)).is_err(), "a missing tag does not satisfy StringEquals");
        let describe = Request {
            action: "ec2:DescribeSubnets".into(),
            resources: vec![Resource { arn: "*".into(), ..Default::default() }],
            ..Default::default()
        };
        assert!(p.authorize(&describe).is_ok());
        let attach =
            Request { action: "ec2:AttachNetworkInterface".into(), ..delete(Some("prod")) };
        assert!(p.authorize(&attach).is_err(), "an action no statement names");
    }

    #[test]
    fn deny_wins_and_unknown_operators_are_refused() {
        let mut text = doc(r#"{"StringLike":{"aws:ResourceTag/enipool.io/cluster":"p*"}}"#);
        text = text.replace(
            "]}",
            r#",{"Sid":"No","Effect":"Deny","Action":"ec2:Delete*","Resource":"*"}]}"#,
        );
        let p = Policy::parse(&text, &[]).unwrap();
        let e = p.authorize(&Request {
            resources: vec![Resource { arn: "*".into(), ..Default::default() }],
            ..delete(Some("prod"))
        });
        assert!(e.unwrap_err().to_string().contains("explicit deny"));
        let bad = doc(r#"{"NumericLessThan":{"ec2:Foo":"1"}}"#);
        let err = Policy::parse(&bad, &[]).unwrap_err();
        assert!(err.contains("NumericLessThan"), "{err}");
    }
}
