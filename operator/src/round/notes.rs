//! Events a round asks the controller to publish.

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning (else Normal).
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
    /// The part of the pool the Event is about (`status.operations[2]`), when not all of it.
    /// Events differing in it are not folded into one series.
    pub field_path: Option<String>,
}

/// A Note about the whole pool.
pub fn note(warning: bool, reason: &'static str, message: String) -> Note {
    Note { warning, reason, message, field_path: None }
}
