//! What a store reports when it cannot give the answer asked for.

/// Errors a store reports. "Not found" and "precondition failed" are
/// answers, not failures; `Unavailable` means the store could not do its job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("version mismatch")]
    VersionMismatch,
    /// A change breaks one of the model's rules (custom metadata past its
    /// limits): the detail names the rule, never a value.
    #[error("{0}")]
    Invalid(String),
    /// The key takes only writes that name the version they replace.
    #[error("check-and-set parameter required for this call")]
    CasRequired,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Too many writes queued: refused at once rather than queued.
    #[error("the write queue is full")]
    Busy,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// An operator's request the store will not carry out (a restore into
    /// a store that holds data, a backup that fails its check).
    #[error("{0}")]
    Refused(String),
    /// Events a watcher asked to resume from are no longer kept.
    #[error("events after that id are no longer kept")]
    Gone,
}
