//! `strongroom role …` and `strongroom policy …`: client commands over the
//! server's `/auth/roles` and `/policies` routes, taking a record as JSON
//! from a file (or stdin) or from flags.

use std::io::{Read, Write};
use std::path::Path;

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::{CliError, Client};
use super::flags::{PolicyCommand, PolicyPutArgs, RoleCommand, RolePutArgs};

/// A JSON object from `path` (`-`: stdin).
fn read_json(path: &Path) -> Result<Value, CliError> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Other(format!("cannot read stdin: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    }
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", path.display())))?;
    if !value.is_object() {
        return Err(CliError::Usage(format!(
            "{} must hold a JSON object",
            path.display()
        )));
    }
    Ok(value)
}

fn print(value: &Value) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).expect("a JSON value")
    )
    .map_err(|e| CliError::Other(format!("cannot write to stdout: {e}")))
}

/// The names in `listed[field]`, one per line, or the whole answer with
/// `--json`.
fn print_names(listed: &Value, field: &str, json: bool) -> Result<(), CliError> {
    if json {
        return print(listed);
    }
    let mut out = String::new();
    for item in listed[field].as_array().into_iter().flatten() {
        out.push_str(item["name"].as_str().unwrap_or(""));
        out.push('\n');
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| CliError::Other(format!("cannot write to stdout: {e}")))
}

/// A role's JSON from the flags.
fn role_from_flags(args: &RolePutArgs) -> Result<Value, CliError> {
    let mut claims: Map<String, Value> = Map::new();
    for pair in &args.claim {
        let (claim, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--claim {pair:?} is not claim=value")))?;
        let values = claims
            .entry(claim.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = values {
            list.push(Value::String(value.to_owned()));
        }
    }
    let mut role = json!({
        "provider": args.provider,
        "bound_audiences": args.audience,
        "bound_claims": claims,
        "scopes": args.scopes,
        "policies": args.policies,
        "allowed_redirect_uris": args.redirect_uri,
    });
    if let Some(subject) = &args.subject {
        role["bound_subject"] = json!(subject);
    }
    if let Some(claim) = &args.user_claim {
        role["user_claim"] = json!(claim);
    }
    if let Some(ttl) = args.ttl {
        role["token_ttl_seconds"] = json!(ttl);
    }
    Ok(role)
}

/// Prints the record at `path`.
async fn show(client: &Client, path: &[&str], what: &str) -> Result<(), CliError> {
    print(&client.json(Method::GET, path, None, what).await?)
}

/// Deletes the record at `path`.
async fn remove(client: &Client, path: &[&str], what: &str) -> Result<(), CliError> {
    client.json(Method::DELETE, path, None, what).await?;
    Ok(())
}

pub async fn role(command: RoleCommand) -> Result<(), CliError> {
    match command {
        RoleCommand::Put(c) => {
            let client = Client::new(&c.client)?;
            let body = match &c.args.file {
                Some(path) => read_json(path)?,
                None => role_from_flags(&c.args)?,
            };
            let what = format!("role put {}", c.args.name);
            let stored = client
                .json(
                    Method::PUT,
                    &["auth", "roles", &c.args.name],
                    Some(body),
                    &what,
                )
                .await?;
            if c.client.json {
                print(&stored)
            } else {
                println!("{}", c.args.name);
                Ok(())
            }
        }
        RoleCommand::Get(c) => {
            let (client, name) = (Client::new(&c.client)?, &c.args.name);
            let what = format!("role get {name}");
            show(&client, &["auth", "roles", name], &what).await
        }
        RoleCommand::Ls(c) => {
            let client = Client::new(&c.client)?;
            let listed = client
                .json(Method::GET, &["auth", "roles"], None, "role ls")
                .await?;
            print_names(&listed, "roles", c.client.json)
        }
        RoleCommand::Rm(c) => {
            let (client, name) = (Client::new(&c.client)?, &c.args.name);
            remove(
                &client,
                &["auth", "roles", name],
                &format!("role rm {name}"),
            )
            .await
        }
    }
}

pub async fn policy(command: PolicyCommand) -> Result<(), CliError> {
    match command {
        PolicyCommand::Put(c) => {
            let client = Client::new(&c.client)?;
            let body = policy_body(&c.args)?;
            let what = format!("policy put {}", c.args.name);
            let stored = client
                .json(Method::PUT, &["policies", &c.args.name], Some(body), &what)
                .await?;
            if c.client.json {
                print(&stored)
            } else {
                println!("{}", c.args.name);
                Ok(())
            }
        }
        PolicyCommand::Get(c) => {
            let (client, name) = (Client::new(&c.client)?, &c.args.name);
            let what = format!("policy get {name}");
            show(&client, &["policies", name], &what).await
        }
        PolicyCommand::Ls(c) => {
            let client = Client::new(&c.client)?;
            let listed = client
                .json(Method::GET, &["policies"], None, "policy ls")
                .await?;
            print_names(&listed, "policies", c.client.json)
        }
        PolicyCommand::Rm(c) => {
            let (client, name) = (Client::new(&c.client)?, &c.args.name);
            remove(&client, &["policies", name], &format!("policy rm {name}")).await
        }
    }
}

fn policy_body(args: &PolicyPutArgs) -> Result<Value, CliError> {
    match &args.file {
        Some(path) => read_json(path),
        None if args.scopes.is_empty() => Err(CliError::Usage(
            "give the policy's scopes: --scopes a,b or --file policy.json".into(),
        )),
        None => Ok(json!({ "scopes": args.scopes })),
    }
}
