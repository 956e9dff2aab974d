//! `audit verify`: checks a whole trail, line by line. An edited line is
//! named by its own hash, and a removed or reordered line by the first
//! `prev` that no longer matches.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::store::trail::{hash_field, sha256_hex, GENESIS};

/// The outcome of `verify`: the 1-based number of the first bad line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact { lines: usize },
    Broken { line: usize, reason: &'static str },
}

/// Checks the whole chain of the trail at `path`.
pub fn verify(path: &Path) -> std::io::Result<Verdict> {
    let reader = BufReader::new(File::open(path)?);
    verify_lines(reader.split(b'\n'))
}

/// Checks the chain of `lines` (each without its newline), in order.
pub fn verify_lines<E>(lines: impl IntoIterator<Item = Result<Vec<u8>, E>>) -> Result<Verdict, E> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    for (i, line) in lines.into_iter().enumerate() {
        let line = line?;
        let n = i + 1;
        let broken = |reason| Ok(Verdict::Broken { line: n, reason });
        let Ok(text) = std::str::from_utf8(&line) else {
            return broken("not UTF-8");
        };
        let Some((claimed, at)) = hash_field(text) else {
            return broken("no hash field");
        };
        if sha256_hex(&text.as_bytes()[..at]) != claimed {
            return broken("line was edited");
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return broken("not JSON");
        };
        if value.get("prev").and_then(|p| p.as_str()) != Some(prev.as_str()) {
            return broken("previous line is missing or out of order");
        }
        prev = claimed.to_owned();
        count = n;
    }
    Ok(Verdict::Intact { lines: count })
}
