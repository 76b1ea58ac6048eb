/// Errors of the API crate: bad input found while resolving settings or rendering CRDs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A label selector cannot be evaluated (unknown operator, or values where none are allowed).
    #[error("invalid label selector: {0}")]
    InvalidSelector(String),
    /// A setting is out of range after merging policy and overrides.
    #[error("invalid setting {field}: {reason}")]
    InvalidSetting {
        /// The field path, e.g. `sizing.batch`.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Rendering a CRD to YAML failed.
    #[error("rendering CRD YAML: {0}")]
    Render(String),
}

impl Error {
    /// A stable category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSelector(_) => "InvalidSelector",
            Error::InvalidSetting { .. } => "InvalidSetting",
            Error::Render(_) => "Render",
        }
    }
}
