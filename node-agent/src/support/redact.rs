//! Credentials never leave the node in a support bundle: values of credential-looking keys (JSON,
//! YAML, `key=value`, HTTP headers) and bearer tokens are replaced, and files whose name suggests
//! credentials are not read at all.

use std::sync::LazyLock;

pub const REDACTED: &str = "<redacted>";

/// Key names whose values are credentials (matched case-insensitively, as substrings).
const SECRET_KEYS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "secret",
    "authorization",
    "credential",
    "private",
    "key-data",
    "apikey",
    "api_key",
    "cookie",
];

static KEY_VALUE: LazyLock<regex::Regex> = LazyLock::new(|| {
    let keys = SECRET_KEYS.iter().map(|k| regex::escape(k)).collect::<Vec<_>>().join("|");
    // A key containing one of the words, then `:` or `=`, then the value up to the end of the
    // token (a quoted string or a run of non-separators).
    regex::Regex::new(&format!(
        r#"(?i)("?[\w.-]*(?:{keys})[\w.-]*"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|[^\s,;}}\]]+)"#
    ))
    .expect("static regex")
});

static BEARER: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+").expect("static regex")
});

/// Replace credential values in any text.
pub fn text(s: &str) -> String {
    let s = BEARER.replace_all(s, format!("$1 {REDACTED}"));
    KEY_VALUE
        .replace_all(&s, |c: &regex::Captures| {
            let quoted = c[2].starts_with('"');
            if quoted {
                format!("{}\"{REDACTED}\"", &c[1])
            } else {
                format!("{}{REDACTED}", &c[1])
            }
        })
        .into_owned()
}

/// Whether a file with this name may hold credentials and must not be read.
pub fn is_credential_file(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["kubeconfig", "token", "secret", "credential", "password"].iter().any(|w| n.contains(w))
        || [".key", ".pem", ".crt", ".p12"].iter().any(|e| n.ends_with(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_values_are_replaced_in_json_yaml_and_headers() {
        let cases = [
            (r#"{"name":"k8s","token":"eyJhbGciOi.abc","mtu":9001}"#, "eyJhbGciOi"),
            ("users:\n- user:\n    token: s3cr3t-value\n", "s3cr3t-value"),
            ("client-key-data: LS0tLS1CRUdJTg==\n", "LS0tLS1CRUdJTg"),
            ("Authorization: Bearer abc.def.ghi\n", "abc.def.ghi"),
            ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\n", "wJalrXUtnFEMI"),
            (r#"{"Password": "hunter2"}"#, "hunter2"),
        ];
        for (input, secret) in cases {
            let out = text(input);
            assert!(!out.contains(secret), "{input:?} -> {out:?}");
            assert!(out.contains(REDACTED), "{input:?} -> {out:?}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for s in [
            r#"{"cniVersion":"1.1.0","name":"enipool","plugins":[{"type":"enipool-cni","mtu":9001}]}"#,
            "0:\tfrom all lookup local\n32766:\tfrom all lookup main\n",
            "net.ipv4.ip_forward = 1\n",
        ] {
            assert_eq!(text(s), s);
        }
    }

    #[test]
    fn credential_files_are_recognised_by_name() {
        for n in ["calico-kubeconfig", "multus.kubeconfig", "token", "ca.crt", "client.key"] {
            assert!(is_credential_file(n), "{n}");
        }
        for n in ["05-enipool.conflist", "10-aws.conflist.enipool-bak", "87-podman.conf"] {
            assert!(!is_credential_file(n), "{n}");
        }
    }
}
