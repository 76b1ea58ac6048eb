//! One request, parsed: what the way in (`request.rs`) hands to the handlers (`handlers.rs`) and
//! what they read, below both so neither imports the other back.

use std::collections::HashMap;
use std::sync::Mutex;

use http::Method;

use super::admission::Caller;
use super::audit::AuditRecord;
use super::authn::UserInfo;
use super::Shared;

pub type Query = HashMap<String, String>;

/// One request, parsed.
pub struct Req {
    pub method: Method,
    pub query: Query,
    pub accept: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: Vec<u8>,
    pub user: UserInfo,
    pub attrs: AuditRecord,
    /// Whether RBAC decides this request.
    pub rbac: bool,
    /// `Warning` headers for the response (admission policies with the Warn action).
    pub warnings: Mutex<Vec<String>>,
}

impl Req {
    pub fn caller<'a>(&'a self, shared: &'a Shared) -> Caller<'a> {
        Caller {
            user: &self.user,
            attrs: &self.attrs,
            rbac: self.rbac,
            audit: &shared.audit,
            warnings: &self.warnings,
        }
    }
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }
    pub fn wants_table(&self) -> bool {
        self.accept.split(',').next().is_some_and(|a| a.contains("as=Table"))
    }
    /// Field manager: the query parameter, else the user agent's program name (like the server).
    pub fn manager(&self) -> String {
        match self.q("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_string(),
        }
    }
    /// `fieldValidation=Strict` rejects unknown fields; the default (Warn) and Ignore prune them.
    pub fn strict(&self) -> bool {
        self.q("fieldValidation") == Some("Strict")
    }
}
