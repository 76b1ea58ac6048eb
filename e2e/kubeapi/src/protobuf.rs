//! The one protobuf body the server reads: a TokenRequest, which `kubectl create token` sends as
//! `application/vnd.kubernetes.protobuf` (client-go's typed clients do; everything else kubectl
//! and kube-rs send is JSON). The Kubernetes envelope is the magic `k8s\0` followed by a
//! `runtime.Unknown` (1 typeMeta {1 apiVersion, 2 kind}, 2 raw); the raw TokenRequest is
//! {1 metadata {1 name, 3 namespace}, 2 spec {1 audiences, 3 boundObjectRef {1 kind,
//! 2 apiVersion, 3 name, 4 uid}, 4 expirationSeconds}}. Other fields are skipped.

use serde_json::{json, Map, Value};

/// The content type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

/// The fields of one message, in order.
fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(b, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).map_err(|e| e.to_string())?;
                let end =
                    pos.checked_add(len).filter(|e| *e <= b.len()).ok_or("truncated field")?;
                let bytes = &b[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            1 => {
                pos += 8;
                Field::Varint(0)
            }
            5 => {
                pos += 4;
                Field::Varint(0)
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

/// The string fields `names` (number, JSON key) of message `b`, non-empty ones only.
fn strings(b: &[u8], names: &[(u64, &str)]) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        if let (Some((_, key)), Field::Bytes(v)) = (names.iter().find(|(k, _)| *k == n), f) {
            let s = string(v)?;
            if !s.is_empty() {
                m.insert(key.to_string(), json!(s));
            }
        }
    }
    Ok(m)
}

/// A protobuf-encoded TokenRequest as its JSON form.
pub fn token_request(body: &[u8]) -> Result<Value, String> {
    let unknown =
        body.strip_prefix(MAGIC).ok_or("not a Kubernetes protobuf body (no k8s magic)")?;
    let (mut type_meta, mut raw) = (Map::new(), None);
    for (n, f) in fields(unknown)? {
        match (n, f) {
            (1, Field::Bytes(b)) => type_meta = strings(b, &[(1, "apiVersion"), (2, "kind")])?,
            (2, Field::Bytes(b)) => raw = Some(b),
            _ => {}
        }
    }
    let mut out = Value::Object(type_meta);
    let (mut metadata, mut spec) = (Map::new(), Map::new());
    for (n, f) in fields(raw.unwrap_or_default())? {
        match (n, f) {
            (1, Field::Bytes(b)) => metadata = strings(b, &[(1, "name"), (3, "namespace")])?,
            (2, Field::Bytes(b)) => {
                let mut audiences = Vec::new();
                for (n, f) in fields(b)? {
                    match (n, f) {
                        (1, Field::Bytes(a)) => audiences.push(json!(string(a)?)),
                        (3, Field::Bytes(r)) => {
                            let names = [(1, "kind"), (2, "apiVersion"), (3, "name"), (4, "uid")];
                            spec.insert(
                                "boundObjectRef".into(),
                                Value::Object(strings(r, &names)?),
                            );
                        }
                        (4, Field::Varint(s)) => {
                            spec.insert("expirationSeconds".into(), json!(s as i64));
                        }
                        _ => {}
                    }
                }
                spec.insert("audiences".into(), Value::Array(audiences));
            }
            _ => {}
        }
    }
    out["metadata"] = Value::Object(metadata);
    out["spec"] = Value::Object(spec);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_kubectl_create_token_sends() {
        // `kubectl create token agent --bound-object-kind Pod --bound-object-name p1
        //  --bound-object-uid abc --duration 20m --audience a1 --audience a2` (kubectl 1.32).
        let body: &[u8] = b"k8s\0\x0a\x28\x0a\x18authentication.k8s.io/v1\x12\x0cTokenRequest\
            \x12\x39\x0a\x10\x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\
            \x12\x1f\x0a\x02a1\x0a\x02a2\x1a\x12\x0a\x03Pod\x12\x02v1\x1a\x02p1\x22\x03abc\
            \x20\xb0\x09\x1a\x04\x0a\x00\x12\x00\x1a\x00\x22\x00";
        assert_eq!(
            token_request(body).unwrap(),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {},
                   "spec": {"audiences": ["a1", "a2"], "expirationSeconds": 1200,
                            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p1", "uid": "abc"}}})
        );
        assert!(token_request(b"{}").unwrap_err().contains("magic"));
        assert!(token_request(b"k8s\0\x0a\x28\x0a").is_err(), "truncated");
    }
}
