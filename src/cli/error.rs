//! The client commands' errors and their exit codes (docs/cli.md).

/// Why a client command failed; each kind has its own exit code so scripts
/// can tell a missing secret from a bad credential from a down server.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The secret does not exist (or belongs to another tenant). Exit 3.
    #[error("{0}")]
    NotFound(String),
    /// No credential, or the server refused it. Exit 4.
    #[error("{0}")]
    Unauthorized(String),
    /// The credential lacks the scope. Exit 5.
    #[error("{0}")]
    Forbidden(String),
    /// The server could not be reached. Exit 6.
    #[error("{0}")]
    Unreachable(String),
    /// A bad argument found after clap parsed the line. Exit 2, like clap.
    #[error("{0}")]
    Usage(String),
    /// `run` could not start the command: exit 127 when it was not found,
    /// 126 otherwise, as a shell does.
    #[error("{message}")]
    Exec { message: String, code: u8 },
    /// Anything else. Exit 1.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code for this error (documented in docs/cli.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Unauthorized(_) => 4,
            CliError::Forbidden(_) => 5,
            CliError::Unreachable(_) => 6,
            CliError::Exec { code, .. } => *code,
        }
    }

    /// The same error (so the same exit code) with ` (note)` appended.
    pub fn with_note(self, note: &str) -> CliError {
        let add = |m: String| format!("{m} ({note})");
        match self {
            CliError::NotFound(m) => CliError::NotFound(add(m)),
            CliError::Unauthorized(m) => CliError::Unauthorized(add(m)),
            CliError::Forbidden(m) => CliError::Forbidden(add(m)),
            CliError::Unreachable(m) => CliError::Unreachable(add(m)),
            CliError::Usage(m) => CliError::Usage(add(m)),
            CliError::Exec { message, code } => CliError::Exec {
                message: add(message),
                code,
            },
            CliError::Other(m) => CliError::Other(add(m)),
        }
    }
}
