//! Flags of the client commands (`put`, `get`, `rm`, `ls`, `history`,
//! `import`, `export`, `run`), which talk HTTP to a running server.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Where the server is and how to authenticate; flattened into every client
/// command (`strongroom get KEY --addr URL`), and not shown on `serve`.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Base URL of the server (http:// or https://).
    #[arg(long, env = "STRONGROOM_ADDR", default_value = "http://127.0.0.1:8210")]
    pub addr: String,
    /// API key, sent as X-Api-Key. Prefer the environment over the flag.
    #[arg(long, env = "STRONGROOM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// JWT, sent as `Authorization: Bearer`. Prefer the environment over the flag.
    #[arg(long, env = "STRONGROOM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of a private CA to trust for https (added to the system roots).
    #[arg(long, env = "STRONGROOM_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `strongroom put KEY VALUE|-`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// The secret's key.
    pub key: String,
    /// The value, or `-` to read it from stdin byte for byte (no newline is
    /// stripped).
    pub value: OsString,
    /// Let this version lapse after this long: 90s, 30m, 1h, 7d (at most
    /// ten years).
    #[arg(long, value_parser = crate::backup::schedule::parse_interval)]
    pub ttl: Option<std::time::Duration>,
}

/// `strongroom get KEY`, `rm KEY`, `history KEY`.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// The secret's key.
    pub key: String,
}

/// `strongroom ls [PREFIX]`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only keys starting with this prefix.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Keys asked for per request (1 to 1000).
    #[arg(long, default_value_t = 1000, hide = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// Only keys that lapse within this long: 1h, 7d; each line then ends
    /// with the time it lapses.
    #[arg(long, value_parser = crate::backup::schedule::parse_interval)]
    pub expiring_within: Option<std::time::Duration>,
}

/// File formats of `import` and `export`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `NAME=value` lines, quoted where needed.
    Dotenv,
    /// A flat JSON object `{"NAME": "value"}`.
    Json,
}

/// `strongroom import FILE`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// File to read (`-` for stdin).
    pub file: PathBuf,
    /// Prefix put before every name to make the key.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// File format; json when FILE ends in `.json`, dotenv otherwise.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

/// `strongroom export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Only keys under this prefix, which is stripped from the names.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "dotenv")]
    pub format: Format,
    /// Keys asked for per request (1 to 1000).
    #[arg(long, default_value_t = 1000, hide = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
}

/// `strongroom run [--prefix P] -- CMD ARGS...`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Only keys under this prefix, which is stripped from the variable names.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Keys asked for per request (1 to 1000).
    #[arg(long, default_value_t = 1000, hide = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// Restart the command when a secret under the prefix changes: SIGTERM,
    /// `--restart-grace`, SIGKILL, then start it with the new environment.
    #[arg(long)]
    pub watch: bool,
    /// How long a restart waits after SIGTERM before SIGKILL: 10s.
    #[arg(long, default_value = "10s", value_parser = crate::backup::schedule::parse_interval)]
    pub restart_grace: std::time::Duration,
    /// The command to start, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `strongroom watch [PREFIX]`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only changes of keys starting with this prefix.
    #[arg(default_value = "")]
    pub prefix: String,
}

/// `strongroom completions SHELL`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}
