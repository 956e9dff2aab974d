//! `audit verify`: checks a whole trail, line by line. A keyed (v2) line
//! must carry the MAC of its text under the audit key, the next number, and
//! the MAC of the line before it; so an edit is named by the edited line,
//! and a removed or reordered line by the first line after the gap. Lines
//! written before keyed lines (v1) are checked by their SHA-256 as before.
//! The store's recorded head catches lines cut off the end.
//!
//! A nats trail holds one chain per gateway, its lines marked
//! `"gateway":"<id>"`; `verify_chains` checks each on its own (the lines of
//! the embedded store and of older nats trails carry no mark: chain "").

use std::collections::{BTreeMap, HashMap};

use crate::store::chain::{field_at_end, sha256_hex, v2_fields, AuditKey, ChainHead, V2_PREFIX};

/// The outcome of `verify_lines`: the 1-based number of the first bad line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact { lines: usize, head: ChainHead },
    Broken { line: usize, reason: String },
}

/// One chain's verdict; its line numbers are the chain's own, `places`
/// maps them (1-based) to the trail's.
#[derive(Debug)]
pub struct ChainReport {
    pub chain: String,
    pub verdict: Verdict,
    pub places: Vec<usize>,
}

/// The gateway whose chain `line` is on ("" when unmarked).
fn chain_of(line: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Mark {
        gateway: Option<String>,
    }
    serde_json::from_slice::<Mark>(line)
        .ok()
        .and_then(|m| m.gateway)
        .unwrap_or_default()
}

/// Checks every chain of a trail's `lines` (in trail order), each against
/// the head the store recorded for it; a chain recorded but with no line
/// left is reported too. Chains come in the order their first lines do.
/// Without `split` (the embedded store's file) the lines are one chain,
/// whatever they carry.
///
/// An unkeyed line needs no key to make, so one is refused wherever keyed
/// lines are expected: anywhere in a gateway's chain, and anywhere after
/// the trail's first keyed line (only a trail begun before keyed lines
/// starts with unkeyed ones).
pub fn verify_chains(
    lines: &[Vec<u8>],
    key: Option<&AuditKey>,
    recorded: &BTreeMap<String, ChainHead>,
    split: bool,
) -> Vec<ChainReport> {
    let keyed = |p: usize| lines[p - 1].starts_with(V2_PREFIX.as_bytes());
    let first_keyed = (1..=lines.len()).find(|&p| keyed(p));
    let mut index = HashMap::new();
    let mut chains: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let chain = if split { chain_of(line) } else { String::new() };
        let at = *index.entry(chain.clone()).or_insert_with(|| {
            chains.push((chain, Vec::new()));
            chains.len() - 1
        });
        chains[at].1.push(i + 1);
    }
    for chain in recorded.keys() {
        if !index.contains_key(chain) {
            chains.push((chain.clone(), Vec::new()));
        }
    }
    chains
        .into_iter()
        .map(|(chain, places)| {
            let forgeable = places.iter().position(|&p| {
                !keyed(p) && (!chain.is_empty() || first_keyed.is_some_and(|k| p > k))
            });
            let verdict = match forgeable {
                Some(n) => Verdict::Broken {
                    line: n + 1,
                    reason: "an unkeyed line where lines are keyed".into(),
                },
                None => {
                    let own: Vec<Vec<u8>> = places.iter().map(|&p| lines[p - 1].clone()).collect();
                    match pruned_prefix(&own) {
                        Err(reason) => Verdict::Broken { line: 1, reason },
                        Ok(start) => {
                            let own = own.into_iter().map(Ok::<_, ()>);
                            verify_lines_from(own, key, recorded.get(&chain), start)
                                .expect("lines in memory")
                        }
                    }
                }
            };
            ChainReport {
                chain,
                verdict,
                places,
            }
        })
        .collect()
}

/// Where a chain whose first lines were pruned resumes: the number and MAC
/// its pruned prefix ended with, when a line of the chain records pruning
/// exactly that prefix (that line's MAC is checked with the rest, so only
/// the server could have written it). A chain that starts past line 1
/// with no such line has lost lines: refused, named as such.
fn pruned_prefix(lines: &[Vec<u8>]) -> Result<ChainHead, String> {
    let genesis = ChainHead::genesis();
    let Some(first) = lines.first() else {
        return Ok(genesis);
    };
    let text = String::from_utf8_lossy(first);
    let Some((seq, _)) = v2_fields(&text) else {
        return Ok(genesis);
    };
    if seq <= 1 {
        return Ok(genesis);
    }
    let prev = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| Some(v.get("prev")?.as_str()?.to_owned()))
        .unwrap_or_default();
    let note = super::prune::note(seq - 1, &prev);
    let recorded = lines.iter().any(|line| {
        serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| {
            v["action"] == "system.audit_prune" && v["note"].as_str() == Some(note.as_str())
        })
    });
    if !recorded {
        return Err(format!(
            "the trail begins at line {seq} and no line records pruning lines 1 to {}: they were removed",
            seq - 1
        ));
    }
    Ok(ChainHead {
        seq: seq - 1,
        hash: prev,
    })
}

/// Checks the chain of `lines` (each without its newline), in order, with
/// `key` for keyed lines, against the head the store recorded, if any.
pub fn verify_lines<E>(
    lines: impl IntoIterator<Item = Result<Vec<u8>, E>>,
    key: Option<&AuditKey>,
    recorded: Option<&ChainHead>,
) -> Result<Verdict, E> {
    verify_lines_from(lines, key, recorded, ChainHead::genesis())
}

/// `verify_lines` for a chain whose lines before `start` were pruned.
fn verify_lines_from<E>(
    lines: impl IntoIterator<Item = Result<Vec<u8>, E>>,
    key: Option<&AuditKey>,
    recorded: Option<&ChainHead>,
    start: ChainHead,
) -> Result<Verdict, E> {
    let mut head = start;
    let mut keyed = false;
    let mut count = 0;
    for (i, line) in lines.into_iter().enumerate() {
        let line = line?;
        let n = i + 1;
        let checked = std::str::from_utf8(&line)
            .map_err(|_| "not UTF-8".to_owned())
            .and_then(|text| check_line(text, n as u64, key, &mut keyed, &mut head));
        if let Err(reason) = checked {
            return Ok(Verdict::Broken { line: n, reason });
        }
        if let Some(r) = recorded.filter(|r| r.seq == head.seq) {
            if r.hash != head.hash {
                return Ok(Verdict::Broken {
                    line: n,
                    reason: "line differs from the one the store recorded".into(),
                });
            }
        }
        count = n;
    }
    if let Some(r) = recorded.filter(|r| r.seq > head.seq) {
        return Ok(Verdict::Broken {
            line: count + 1,
            reason: format!(
                "the trail ends at line {} but the store recorded line {}: lines were removed from the end",
                head.seq, r.seq
            ),
        });
    }
    Ok(Verdict::Intact { lines: count, head })
}

/// Checks one line, the `n`th, against the head before it; moves the head
/// on.
fn check_line(
    text: &str,
    n: u64,
    key: Option<&AuditKey>,
    keyed: &mut bool,
    head: &mut ChainHead,
) -> Result<(), String> {
    let (claimed, seq) = if text.starts_with(V2_PREFIX) {
        let Some(key) = key else {
            return Err("the line is keyed: verify needs the master key".into());
        };
        let (seq, mac) = v2_fields(text).ok_or("no mac field")?;
        let (_, at) = field_at_end(text, "mac").ok_or("no mac field")?;
        if !key.verifies(&text.as_bytes()[..at], mac) {
            return Err("line was edited (its MAC does not verify)".into());
        }
        *keyed = true;
        (mac, seq)
    } else {
        if *keyed {
            return Err("an unkeyed line after keyed lines".into());
        }
        let (hash, at) = field_at_end(text, "hash").ok_or("no hash field")?;
        if sha256_hex(&text.as_bytes()[..at]) != hash {
            return Err("line was edited".into());
        }
        (hash, n)
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| "not JSON".to_owned())?;
    if seq != head.seq + 1 || value.get("prev").and_then(|p| p.as_str()) != Some(&head.hash) {
        return Err("previous line is missing or out of order".into());
    }
    *head = ChainHead {
        seq,
        hash: claimed.to_owned(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chain::{link, test_key, GENESIS};

    fn keyed(bodies: &[&str], head: &mut ChainHead) -> Vec<Vec<u8>> {
        bodies
            .iter()
            .map(|body| {
                let mut line = Vec::new();
                link(&test_key(), head, body, &mut line);
                line
            })
            .collect()
    }

    /// A v1 line as the old code wrote it.
    fn v1(body: &str, prev: &str) -> (Vec<u8>, String) {
        let text = format!("{body}\"prev\":\"{prev}\"");
        let hash = sha256_hex(text.as_bytes());
        (format!("{text},\"hash\":\"{hash}\"}}").into_bytes(), hash)
    }

    fn check(lines: &[Vec<u8>], recorded: Option<&ChainHead>) -> Verdict {
        verify_lines(
            lines.iter().cloned().map(Ok::<_, ()>),
            Some(&test_key()),
            recorded,
        )
        .unwrap()
    }

    fn broken_at(verdict: Verdict) -> usize {
        match verdict {
            Verdict::Broken { line, .. } => line,
            intact => panic!("expected a broken chain, got {intact:?}"),
        }
    }

    #[test]
    fn unkeyed_lines_continue_into_keyed_ones() {
        let (a, h1) = v1("{\"n\":1,", GENESIS);
        let (b, h2) = v1("{\"n\":2,", &h1);
        let mut head = ChainHead { seq: 2, hash: h2 };
        let mut lines = vec![a, b];
        lines.extend(keyed(&["{\"n\":3,", "{\"n\":4,"], &mut head));
        assert_eq!(check(&lines, None), Verdict::Intact { lines: 4, head });
        // Without the key, a keyed line cannot be checked.
        let without = verify_lines(lines.iter().cloned().map(Ok::<_, ()>), None, None).unwrap();
        assert_eq!(broken_at(without), 3);
        // An unkeyed line may not follow keyed ones.
        let (late, _) = v1("{\"n\":5,", &lines_head(&lines));
        lines.push(late);
        assert_eq!(broken_at(check(&lines, None)), 5);
    }

    fn lines_head(lines: &[Vec<u8>]) -> String {
        let text = String::from_utf8(lines.last().unwrap().clone()).unwrap();
        field_at_end(&text, "mac").unwrap().0.to_owned()
    }

    #[test]
    fn an_edit_with_every_later_hash_recomputed_is_named() {
        let mut head = ChainHead::genesis();
        let mut lines = keyed(&["{\"n\":1,", "{\"n\":2,", "{\"n\":3,"], &mut head);
        // Without the key the attacker can only recompute plain hashes.
        let text = String::from_utf8(lines[1].clone())
            .unwrap()
            .replace("\"n\":2", "\"n\":9");
        let (mac, at) = field_at_end(&text, "mac").unwrap();
        let forged = format!(
            "{},\"mac\":\"{}\"}}",
            &text[..at],
            sha256_hex(&text.as_bytes()[..at])
        );
        assert_ne!(mac, "");
        lines[1] = forged.into_bytes();
        assert_eq!(broken_at(check(&lines, None)), 2);
    }

    #[test]
    fn removed_and_reordered_lines_are_named() {
        let mut head = ChainHead::genesis();
        let lines = keyed(&["{\"n\":1,", "{\"n\":2,", "{\"n\":3,"], &mut head);
        let removed = vec![lines[0].clone(), lines[2].clone()];
        assert_eq!(broken_at(check(&removed, None)), 2);
        let swapped = vec![lines[1].clone(), lines[0].clone()];
        assert_eq!(broken_at(check(&swapped, None)), 1);
    }

    #[test]
    fn chains_of_several_gateways_are_checked_each_on_its_own() {
        let marked = |gateway: &str, bodies: &[&str], head: &mut ChainHead| {
            let bodies: Vec<String> = bodies
                .iter()
                .map(|b| format!("\"gateway\":\"{gateway}\",{b}"))
                .collect();
            let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
            keyed(&bodies, head)
        };
        let (mut a, mut b) = (ChainHead::genesis(), ChainHead::genesis());
        let a_lines = marked("a", &["\"n\":1,", "\"n\":2,", "\"n\":3,"], &mut a);
        let b_lines = marked("b", &["\"n\":1,", "\"n\":2,"], &mut b);
        let merged = vec![
            a_lines[0].clone(),
            b_lines[0].clone(),
            a_lines[1].clone(),
            b_lines[1].clone(),
            a_lines[2].clone(),
        ];
        let key = test_key();
        let heads = BTreeMap::from([("a".to_owned(), a.clone()), ("b".to_owned(), b)]);
        let reports = verify_chains(&merged, Some(&key), &heads, true);
        assert_eq!(reports.len(), 2);
        assert!(reports
            .iter()
            .all(|r| matches!(r.verdict, Verdict::Intact { .. })));
        assert_eq!(reports[1].places, vec![2, 4]);

        // A line gone from b's chain: b is broken at its second line (the
        // trail's fourth), a is intact.
        let mut gap = merged.clone();
        gap.remove(1);
        let reports = verify_chains(&gap, Some(&key), &heads, true);
        assert!(matches!(
            reports[0].verdict,
            Verdict::Intact { lines: 3, .. }
        ));
        assert!(matches!(
            reports[1].verdict,
            Verdict::Broken { line: 1, .. }
        ));
        assert_eq!(reports[1].places, vec![3]);

        // a's lines swapped: a is broken, b intact.
        let mut swapped = merged.clone();
        swapped.swap(0, 2);
        let reports = verify_chains(&swapped, Some(&key), &heads, true);
        assert!(matches!(
            reports[0].verdict,
            Verdict::Broken { line: 1, .. }
        ));
        assert!(matches!(reports[1].verdict, Verdict::Intact { .. }));

        // A recorded chain with no line left is reported.
        let mut more = heads.clone();
        more.insert("c".into(), a);
        let reports = verify_chains(&merged, Some(&key), &more, true);
        assert!(matches!(
            reports[2].verdict,
            Verdict::Broken { line: 1, .. }
        ));

        // An unkeyed line needs no key: as a chain of its own, or unmarked
        // after keyed lines, it is refused; in a file trail it is one more
        // line of the one chain, which it breaks.
        for forged in [
            v1("{\"gateway\":\"x\",\"n\":1,", GENESIS).0,
            v1("{\"n\":1,", GENESIS).0,
        ] {
            let mut with = merged.clone();
            with.push(forged);
            let reports = verify_chains(&with, Some(&key), &heads, true);
            assert!(
                reports
                    .iter()
                    .any(|r| matches!(r.verdict, Verdict::Broken { .. })),
                "{reports:?}"
            );
            let reports = verify_chains(&with, Some(&key), &BTreeMap::new(), false);
            assert_eq!(reports.len(), 1);
            assert!(matches!(reports[0].verdict, Verdict::Broken { .. }));
        }
    }

    #[test]
    fn the_recorded_head_catches_lines_cut_off_the_end() {
        let mut head = ChainHead::genesis();
        let lines = keyed(&["{\"n\":1,", "{\"n\":2,", "{\"n\":3,"], &mut head);
        assert!(matches!(
            check(&lines, Some(&head)),
            Verdict::Intact { lines: 3, .. }
        ));
        assert_eq!(broken_at(check(&lines[..2], Some(&head))), 3);
        assert_eq!(broken_at(check(&[], Some(&head))), 1);
        // Lines after the recorded head (the last second's) are fine.
        let early = ChainHead::after(&lines[0], || 1);
        assert!(matches!(
            check(&lines, Some(&early)),
            Verdict::Intact { lines: 3, .. }
        ));
        let wrong = ChainHead {
            seq: 2,
            hash: GENESIS.into(),
        };
        assert_eq!(broken_at(check(&lines, Some(&wrong))), 2);
    }
}
