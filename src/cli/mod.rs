//! The `strongroom` command: parses flags and runs a subcommand. Server-side
//! commands (`serve`, `apikey`) work on the store directly; client commands
//! (`put`, `get`, `rm`, `ls`, `history`, `import`, `export`, `run`) talk HTTP
//! to a server.

pub mod args;
mod audit;
pub mod client;
pub mod commands;
pub mod dotenv;
pub mod error;
pub mod flags;
mod identity;
pub mod lifecycle;
pub mod login;
pub mod run;
pub mod watch;

use std::process::ExitCode;

use clap::Parser;

use crate::auth::{apikeys, parse_scopes, Scope};
use crate::cli::client::CliError;
use crate::clock::{now_ms, rfc3339};
use crate::server::{self, Application};
use crate::store::{Store, StoreError};
use crate::types::TenantId;
use flags::{
    ApikeyCommand, ApikeyCreateArgs, ApikeyListArgs, ApikeyRevokeArgs, AuditCommand, Cli, Command,
    ServeArgs,
};

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => server_outcome(serve(*args).await),
            Command::Apikey(ApikeyCommand::Create(args)) => {
                server_outcome(apikey_create(args).await)
            }
            Command::Apikey(ApikeyCommand::List(args)) => server_outcome(apikey_list(args).await),
            Command::Apikey(ApikeyCommand::Revoke(args)) => {
                server_outcome(apikey_revoke(args).await)
            }
            Command::Audit(AuditCommand::Verify(args)) => server_outcome(audit::verify(args).await),
            Command::Audit(AuditCommand::Export(args)) => server_outcome(audit::export(args).await),
            Command::Rekey(args) => server_outcome(lifecycle::rekey(args).await),
            Command::RotateDek(args) => server_outcome(lifecycle::rotate_dek(args).await),
            Command::Reseal(args) => server_outcome(lifecycle::reseal(args).await),
            Command::Backup(args) => server_outcome(lifecycle::backup(args).await),
            Command::Restore(args) => server_outcome(lifecycle::restore(args).await),
            Command::Migrate(args) => server_outcome(lifecycle::migrate(args).await),
            Command::Put(c) => client_outcome(commands::put(&c.client, c.args).await),
            Command::Get(c) => client_outcome(commands::get(&c.client, c.args).await),
            Command::Rm(c) => client_outcome(commands::rm(&c.client, c.args).await),
            Command::Ls(c) => client_outcome(commands::ls(&c.client, c.args).await),
            Command::History(c) => client_outcome(commands::history(&c.client, c.args).await),
            Command::Import(c) => client_outcome(commands::import(&c.client, c.args).await),
            Command::Export(c) => client_outcome(commands::export(&c.client, c.args).await),
            Command::Watch(c) => client_outcome(watch::watch(&c.client, c.args).await),
            Command::Login(c) => client_outcome(login::login(&c.client, c.args).await),
            Command::Logout(c) => client_outcome(login::logout(&c.client).await),
            Command::Role(command) => client_outcome(identity::role(command).await),
            Command::Policy(command) => client_outcome(identity::policy(command).await),
            Command::Completions(args) => completions(args),
            Command::Run(c) => match run::run(&c.client, c.args).await {
                Ok(code) => ExitCode::from(code),
                Err(e) => client_outcome(Err(e)),
            },
        }
    })
}

/// `completions SHELL`: the shell's completion script on stdout.
fn completions(args: crate::cli::args::CompletionsArgs) -> ExitCode {
    use clap::CommandFactory;
    let mut command = flags::Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "strongroom",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

fn server_outcome(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// One line on stderr and the error's own exit code (docs/cli.md).
fn client_outcome(outcome: Result<(), CliError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("strongroom: error: {message}");
    ExitCode::FAILURE
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let _log_guard = crate::log::init(&args.log_format);
    crate::clock::note_test_clock();
    // At once: SIGHUP's default action would end the process.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    if let Some(dir) = &args.backup_dir {
        crate::fsutil::refuse_in_data_dir(dir, &args.store.data_dir, "--backup-dir")?;
    }
    let app = Application::build(&args.settings())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(key) = &app.bootstrap_key {
        server::print_bootstrap_key(key);
    }
    let addr = app.listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(addr = %addr, "listening");
    let fd_limit = crate::http::raise_fd_limit();
    let settings = crate::http::Settings {
        grace: std::time::Duration::from_secs(args.shutdown_grace),
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
        write_timeout: std::time::Duration::from_secs(args.write_timeout),
        max_connections: match args.max_connections {
            0 => crate::http::default_max_connections(fd_limit),
            n => n,
        },
        tls: app.tls.clone(),
        rewrite: crate::vault::list_as_get,
    };
    reload_on_hangup(
        hangups,
        app.tls.clone(),
        app.ready.clone(),
        (args.master.clone(), args.store.data_dir.clone()),
    );
    if let Some(dir) = &args.backup_dir {
        let schedule = crate::backup::schedule::Schedule {
            dir: dir.clone(),
            every: args.backup_interval,
            keep: args.backup_keep as usize,
        };
        let ready = app.ready.clone();
        let source = move || {
            let state = ready.get()?;
            Some((state.ops.store.clone(), state.ops.keyring.keks()))
        };
        crate::backup::schedule::start(schedule, Box::new(source));
    }
    crate::expiry::start(app.store.clone(), args.expiry_sweep_interval);
    crate::fsutil::watch_free_space(
        args.store.data_dir.clone(),
        args.disk_warn_bytes,
        std::time::Duration::from_secs(30),
    );
    if args.audit_keep_files > 0 && args.store.store == crate::store::Engine::Sqlite {
        let (ready, keep) = (app.ready.clone(), args.audit_keep_files as usize);
        let (current, every) = (
            args.store.data_dir.join("audit.log"),
            args.audit_prune_interval,
        );
        tokio::spawn(async move {
            // The trail exists once the store answers.
            let state = loop {
                if let Some(state) = ready.get() {
                    break state.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            crate::audit::prune::start(
                state.ops.store.clone(),
                state.ops.trail.clone(),
                current,
                keep,
                every,
            );
        });
    }
    server::run(app.listener, app.ready, shutdown_signal(), settings)
        .await
        .map_err(|e| e.to_string())?;
    app.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Reads the TLS certificate and key and the master keys again on every
/// SIGHUP; open connections keep the certificate they began with, and a
/// keyring that fails its checks leaves the one in use.
fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    tls: Option<std::sync::Arc<crate::http::tls::Tls>>,
    ready: crate::api::Ready,
    (master, data_dir): (flags::MasterKeyArgs, std::path::PathBuf),
) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match tls.as_ref().map(|tls| tls.reload()) {
                None => {}
                Some(Ok(())) => tracing::info!("TLS certificate and key reloaded"),
                Some(Err(e)) => tracing::error!(
                    error = %e,
                    "TLS reload failed; still serving the previous certificate"
                ),
            }
            let Some(state) = ready.get() else { continue };
            let loaded = crate::crypto::MasterKey::load(
                master.master_key.as_deref(),
                master.master_key_file.as_deref(),
                &data_dir,
                false,
            );
            let replaced = match loaded {
                Ok((keys, _)) => {
                    let count = keys.iter().count();
                    let active = keys.active().id();
                    state
                        .ops
                        .keyring
                        .replace_keks(keys)
                        .await
                        .map(|()| (count, active))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match replaced {
                Ok((count, active)) => {
                    tracing::info!(keys = count, active = %active, "master keys reloaded")
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "master key reload failed; still using the previous keys"
                ),
            }
        }
    });
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}

async fn apikey_create(args: ApikeyCreateArgs) -> Result<(), String> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| e.to_string())?;
    let scopes = if args.scopes.is_empty() {
        Scope::all_secrets()
    } else {
        parse_scopes(&args.scopes)?
    };
    if !apikeys::valid_name(&args.name) {
        return Err(format!("name {}", apikeys::NAME_RULE));
    }
    let store = Store::open(&args.store.store_config())
        .await
        .map_err(|e| e.to_string())?;
    let key = apikeys::create(
        &store,
        tenant,
        apikeys::KeySpec {
            name: args.name,
            scopes,
            policies: Vec::new(),
            lifetime_days: args.expires_in_days,
        },
        None,
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    store.close().await;
    println!("{}", key.text.as_str());
    Ok(())
}

async fn apikey_list(args: ApikeyListArgs) -> Result<(), String> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| e.to_string())?;
    let store = Store::open(&args.store.store_config())
        .await
        .map_err(|e| e.to_string())?;
    let keys = store
        .apikey_list(&tenant)
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    let time = |t: Option<i64>| t.map(rfc3339).unwrap_or_else(|| "-".into());
    if args.json {
        let rows: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "id": k.id, "name": k.name, "scopes": k.scopes,
                    "created_at": rfc3339(k.created_at), "expires_at": k.expires_at.map(rfc3339),
                    "last_used_at": k.last_used_at.map(rfc3339),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "apikeys": rows }));
    } else {
        println!("ID                NAME                 CREATED                  EXPIRES                  LAST USED                SCOPES");
        for k in &keys {
            println!(
                "{:<17} {:<20} {:<24} {:<24} {:<24} {}",
                k.id,
                k.name,
                rfc3339(k.created_at),
                time(k.expires_at),
                time(k.last_used_at),
                k.scopes.join(",")
            );
        }
    }
    Ok(())
}

async fn apikey_revoke(args: ApikeyRevokeArgs) -> Result<(), String> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| e.to_string())?;
    let store = Store::open(&args.store.store_config())
        .await
        .map_err(|e| e.to_string())?;
    let result = store.apikey_revoke(&tenant, &args.id, now_ms(), None).await;
    store.close().await;
    match result {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => {
            Err(format!("tenant {tenant} has no live api key {}", args.id))
        }
        Err(e) => Err(e.to_string()),
    }
}
