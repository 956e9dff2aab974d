//! The command line: every flag, each with a `STRONGROOM_<NAME>`
//! environment fallback, and how `serve`'s become the server's `Settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::args::{
    ClientArgs, ExportArgs, ImportArgs, KeyArgs, LsArgs, PutArgs, RunArgs, WatchArgs,
};
pub use lifecycle::{BackupArgs, KeysArgs, MigrateArgs, RestoreArgs, TenantKeysArgs};
pub use serve::ServeArgs;
pub use store::{MasterKeyArgs, StoreArgs};

mod lifecycle;
mod serve;
mod store;

#[derive(Parser, Debug)]
#[command(
    name = "strongroom",
    version,
    about = "A secrets manager server that speaks the quiva.ai Gateway secrets API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Manage API keys directly in the store (works while a server runs).
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Work with the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Rewrap every data key under the first key of the master key file,
    /// after which the other keys can leave it (works while servers run).
    Rekey(KeysArgs),
    /// Start a new data key for a tenant; new writes are sealed under it.
    RotateDek(TenantKeysArgs),
    /// Re-encrypt every retained version of a tenant under its current data
    /// key, in batches, while servers run (embedded store).
    Reseal(TenantKeysArgs),
    /// Write everything the store holds to one file (values stay sealed).
    Backup(BackupArgs),
    /// Fill an empty store from a backup, after checking all of it.
    Restore(RestoreArgs),
    /// Copy one store into another (sqlite to nats, nats to sqlite).
    Migrate(MigrateArgs),
    /// Store a secret on a server (`put KEY VALUE`, or `put KEY -` for stdin).
    Put(Client<PutArgs>),
    /// Print a secret's value on stdout, exactly.
    Get(Client<KeyArgs>),
    /// Delete a secret (soft delete; recoverable on the server).
    Rm(Client<KeyArgs>),
    /// List keys (never values) with their version and update time.
    Ls(Client<LsArgs>),
    /// Show a secret's versions (never values).
    History(Client<KeyArgs>),
    /// Write the secrets of a dotenv or JSON file, after validating all of it.
    Import(Client<ImportArgs>),
    /// Print secrets as dotenv or JSON.
    Export(Client<ExportArgs>),
    /// Run a command with secrets as environment variables (`--watch`:
    /// restart it when one changes).
    Run(Client<RunArgs>),
    /// Print each change under a prefix as it happens (never values).
    Watch(Client<WatchArgs>),
    /// Manage the tenant's login roles on a server (`auth:admin`).
    #[command(subcommand)]
    Role(RoleCommand),
    /// Manage the tenant's policies (named scope sets) on a server
    /// (`auth:admin`).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Sign in through a role's identity provider (the browser, or
    /// `--device`); the token is kept for the client commands.
    Login(Client<LoginArgs>),
    /// Revoke the kept token and remove it.
    Logout(Client<NoArgs>),
    /// Print shell completions: bash, zsh, fish, elvish, powershell.
    Completions(crate::cli::args::CompletionsArgs),
}

/// A client command's own arguments plus the connection flags.
#[derive(Args, Debug)]
pub struct Client<T: Args> {
    #[command(flatten)]
    pub args: T,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Subcommand, Debug)]
pub enum ApikeyCommand {
    /// Issue a key and print only the key on stdout.
    Create(ApikeyCreateArgs),
    /// List a tenant's keys (never the key text).
    List(ApikeyListArgs),
    /// Revoke a key by id.
    Revoke(ApikeyRevokeArgs),
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Create or replace a role, from a JSON file (`--file`, `-` for stdin)
    /// or from flags.
    Put(Box<Client<RolePutArgs>>),
    /// Print a role as JSON.
    Get(Client<NameArgs>),
    /// List the roles' names (`--json`: the roles).
    Ls(Client<NoArgs>),
    /// Delete a role; the tokens it issued stop working.
    Rm(Client<NameArgs>),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Create or replace a policy, from `--scopes` or a JSON file.
    Put(Client<PolicyPutArgs>),
    /// Print a policy as JSON.
    Get(Client<NameArgs>),
    /// List the policies' names (`--json`: the policies).
    Ls(Client<NoArgs>),
    /// Delete a policy; keys, roles and tokens naming it hold nothing of it.
    Rm(Client<NameArgs>),
}

#[derive(Args, Debug)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NoArgs {}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The tenant to sign in to.
    #[arg(long)]
    pub tenant: String,
    /// The tenant's role for people (its provider needs a client_id).
    #[arg(long)]
    pub role: String,
    /// The loopback port the provider sends the browser back to
    /// (`http://127.0.0.1:PORT/oidc/callback`, as the role allows).
    #[arg(long, default_value_t = 8250)]
    pub port: u16,
    /// Sign in on another device: show a code and a URL, and wait.
    #[arg(long)]
    pub device: bool,
}

#[derive(Args, Debug)]
pub struct PolicyPutArgs {
    pub name: String,
    /// Comma-separated scopes.
    #[arg(long, value_delimiter = ',', conflicts_with = "file")]
    pub scopes: Vec<String>,
    /// A JSON file `{"scopes":[...]}` (`-`: stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RolePutArgs {
    pub name: String,
    /// The role as JSON (`-`: stdin); the flags below are then not given.
    #[arg(long, conflicts_with_all = ["provider", "audience", "subject", "claim", "user_claim", "scopes", "policies", "ttl", "redirect_uri"])]
    pub file: Option<PathBuf>,
    /// The identity provider (a name from the server's --oidc-providers).
    #[arg(long, required_unless_present = "file")]
    pub provider: Option<String>,
    /// An audience the JWT's `aud` must hold (repeat for several).
    #[arg(long, required_unless_present = "file")]
    pub audience: Vec<String>,
    /// A glob `sub` must match (`*` matches anything).
    #[arg(long)]
    pub subject: Option<String>,
    /// A claim and an allowed value (glob), `claim=value`; repeat for
    /// several values or claims.
    #[arg(long)]
    pub claim: Vec<String>,
    /// The claim naming the subject of the tokens (default `sub`).
    #[arg(long)]
    pub user_claim: Option<String>,
    /// Comma-separated scopes the tokens hold.
    #[arg(long, value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Comma-separated policies the tokens hold.
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// The tokens' lifetime in seconds (default 900, at most 86400).
    #[arg(long)]
    pub ttl: Option<u32>,
    /// A redirect URI people's logins may use (repeat for several).
    #[arg(long)]
    pub redirect_uri: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain of the audit trail (`<data-dir>/audit.log`, or
    /// the `<bucket>_audit` stream with `--store nats`); names the first bad
    /// line.
    Verify(AuditVerifyArgs),
    /// Print the audit trail's lines on stdout, oldest first, as in
    /// audit.log (for the nats store's stream).
    Export(AuditVerifyArgs),
}

#[derive(Args, Debug)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Keyed lines verify only with the master key the server holds.
    #[command(flatten)]
    pub master: MasterKeyArgs,
    /// Verify this file (an `audit export`, say) instead of the store's
    /// trail, with the store's audit key; the store's recorded head is not
    /// compared, as a copy may end anywhere.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ApikeyListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long)]
    pub tenant: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ApikeyRevokeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long)]
    pub tenant: String,
    /// The key id (the 16 hex characters after `sr_`).
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ApikeyCreateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Tenant the key belongs to.
    #[arg(long)]
    pub tenant: String,
    /// A name to recognise the key by.
    #[arg(long)]
    pub name: String,
    /// Comma-separated scopes; every secrets:* scope when omitted.
    #[arg(long, value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Lifetime in days (default 90).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub expires_in_days: Option<u32>,
}
