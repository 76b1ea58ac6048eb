//! Host networking behind one trait with domain verbs. The rest of the agent never sees netlink.

/// A host networking failure.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A netlink request failed.
    #[error("netlink {op}: {msg}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The kernel's or the library's message.
        msg: String,
    },
    /// Something that must exist does not (a link by MAC, a netns).
    #[error("not found: {0}")]
    NotFound(String),
    /// nft failed.
    #[error("nft: {0}")]
    Nft(String),
    /// Local I/O.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Host side veth name: `eni` + the first 11 hex characters of sha256(netns path + ifname), 14
/// characters (Linux allows 15). Deterministic, so DEL and restart find the link without state.
pub fn host_veth_name(netns: &str, if_name: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(netns.as_bytes());
    h.update(if_name.as_bytes());
    let hex = hex::encode(h.finalize());
    format!("eni{}", &hex[..11])
}
