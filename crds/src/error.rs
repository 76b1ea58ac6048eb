/// Errors of the API crate: bad input found while resolving settings or rendering CRDs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A label selector cannot be evaluated (unknown operator, or values where none are allowed).
    #[error("invalid label selector: {0}")]
    InvalidSelector(String),
    /// Rendering a CRD to YAML failed.
    #[error("rendering CRD YAML: {0}")]
    Render(String),
}

impl Error {
    /// A stable category for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSelector(_) => "InvalidSelector",
            Error::Render(_) => "Render",
        }
    }
}
