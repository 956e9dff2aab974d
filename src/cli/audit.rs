//! `strongroom audit verify` and `audit export`: a store's trail (or a
//! trail file) checked chain by chain, or printed as `audit.log` lines.

use super::flags::AuditVerifyArgs;
use crate::audit::Verdict;

async fn audit_trail(args: &AuditVerifyArgs) -> Result<crate::store::RecordedTrail, String> {
    crate::store::read_trail(&args.store.store_config())
        .await
        .map_err(|e| e.to_string())
}

/// Checks each chain, then names each change whose gateway stopped before
/// its line: the chains are intact, but an auditor must know of these.
pub async fn verify(args: AuditVerifyArgs) -> Result<(), String> {
    let (key, recorded) = audit_key_and_heads(&args).await?;
    let (trail, recorded) = match &args.file {
        Some(path) => (read_file_trail(path)?, Default::default()),
        None => (audit_trail(&args).await?, recorded),
    };
    let name = &trail.name;
    // The embedded store's file is one chain; a stream, or a file given to
    // check (an export of one), holds a chain per gateway.
    let split =
        args.file.is_some() || args.store.store_config().engine == crate::store::Engine::Nats;
    let reports = crate::audit::verify_chains(&trail.lines, key.as_ref(), &recorded, split);
    // The embedded store's trail is one unmarked chain, named as before.
    let one = reports.len() <= 1 && reports.iter().all(|r| r.chain.is_empty());
    let chain_name = |chain: &str| match chain {
        "" => "the shared chain".to_owned(),
        gateway => format!("the chain of gateway {gateway}"),
    };
    let mut total = 0;
    let mut broken = Vec::new();
    for report in &reports {
        match &report.verdict {
            Verdict::Intact { lines, .. } => {
                total += lines;
                if !one {
                    println!(
                        "{name}: {}: intact, {lines} lines",
                        chain_name(&report.chain)
                    );
                }
            }
            Verdict::Broken { line, reason } if one => {
                broken.push(match trail.line_in_file(*line) {
                    Some((file, local)) => {
                        format!("{file}: line {local} is bad (line {line} of the trail): {reason}")
                    }
                    None => format!("{name}: line {line} is bad: {reason}"),
                })
            }
            Verdict::Broken { line, reason } => {
                let place = match report.places.get(line - 1) {
                    Some(place) => format!(" (line {place} of the trail)"),
                    None => String::new(),
                };
                broken.push(format!(
                    "{name}: {}: line {line} is bad{place}: {reason}",
                    chain_name(&report.chain)
                ));
            }
        }
    }
    if !broken.is_empty() {
        return Err(broken.join("\n"));
    }
    let chains = match reports.len() {
        0 | 1 => String::new(),
        n => format!(" in {n} chains"),
    };
    println!("{name}: intact, {total} lines{chains}");
    // A pruned prefix verified above (a line records it): say so.
    if let Some(seq) = trail
        .lines
        .first()
        .and_then(|l| crate::store::chain::leading_seq(&String::from_utf8_lossy(l)))
        .filter(|&seq| seq > 1 && one)
    {
        println!(
            "{name}: lines 1 to {} were pruned, as a system.audit_prune line records",
            seq - 1
        );
    }
    for u in &trail.unfinished {
        let made = match u.made {
            Some(true) => "the change was made",
            Some(false) => "the change was not made",
            None => "whether the change was made is no longer known",
        };
        println!(
            "{name}: request {} on {} has no line (its gateway stopped before writing it): {made}",
            u.request_id, u.subject
        );
    }
    Ok(())
}

/// The lines of a trail file given to `audit verify --file`.
fn read_file_trail(path: &std::path::Path) -> Result<crate::store::RecordedTrail, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(crate::store::RecordedTrail {
        name: path.display().to_string(),
        lines: crate::store::trail::file_lines(&text),
        files: Vec::new(),
        unfinished: Vec::new(),
    })
}

/// The audit key (when a master key is at hand and the store has one) and
/// the chain heads the store recorded.
async fn audit_key_and_heads(
    args: &AuditVerifyArgs,
) -> Result<
    (
        Option<crate::store::chain::AuditKey>,
        std::collections::BTreeMap<String, crate::store::chain::ChainHead>,
    ),
    String,
> {
    let store = crate::store::Store::open(&args.store.store_config())
        .await
        .map_err(|e| e.to_string())?;
    let found = async {
        let recorded = store.audit_heads().await.map_err(|e| e.to_string())?;
        let master = crate::crypto::MasterKey::load(
            args.master.master_key.as_deref(),
            args.master.master_key_file.as_deref(),
            &args.store.data_dir,
            false,
        );
        // Without a master key, unkeyed lines still verify; a keyed line
        // then says it needs one.
        let key = match master {
            Ok((master, _)) => crate::crypto::Keyring::new(master, store.clone())
                .audit_key(false)
                .await
                .map_err(|e| e.to_string())?,
            Err(_) => None,
        };
        Ok((key, recorded))
    }
    .await;
    store.close().await;
    found
}

pub async fn export(args: AuditVerifyArgs) -> Result<(), String> {
    use std::io::Write;
    let trail = audit_trail(&args).await?;
    let mut out = std::io::stdout().lock();
    for line in trail.lines {
        out.write_all(&line)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| format!("cannot write: {e}"))?;
    }
    out.flush().map_err(|e| format!("cannot write: {e}"))
}
