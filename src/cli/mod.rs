//! The `strongroom` command: parses flags and runs a subcommand. Server-side
//! commands (`serve`, `apikey`) work on the store directly.

use std::process::ExitCode;

use clap::Parser;

use crate::auth::{apikeys, parse_scopes, Scope};
use crate::config::{ApikeyCommand, ApikeyCreateArgs, Cli, Command, ServeArgs};
use crate::server::{self, Application};
use crate::store::Store;
use crate::types::TenantId;

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
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Apikey(ApikeyCommand::Create(args)) => apikey_create(args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("strongroom: error: {message}");
    ExitCode::FAILURE
}

fn init_logging(format: &str) {
    // The NATS client logs every reconnect attempt at info; the store's own
    // warnings say what matters.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRONGROOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(&args.log_format);
    let app = Application::build(&args).await.map_err(|e| e.to_string())?;
    if let Some(key) = &app.bootstrap_key {
        // Printed once, straight to stderr and never through the logger.
        eprintln!(
            "\nstrongroom: created the bootstrap admin API key for tenant 'default'.\n\
             It is shown only this once; store it now:\n\n{}\n",
            key.as_str()
        );
    }
    let addr = app.listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(addr = %addr, "listening");
    let store = app.state.store.clone();
    server::run(app.listener, app.state, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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
    if args.name.trim().is_empty() || args.name.len() > 128 {
        return Err("name must be 1 to 128 characters".into());
    }
    let store = Store::open(&args.store.store_config())
        .await
        .map_err(|e| e.to_string())?;
    let key = apikeys::create(&store, tenant, args.name, scopes, args.expires_in_days)
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    println!("{}", key.text.as_str());
    Ok(())
}
