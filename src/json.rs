//! JSON string literals written straight into a buffer, for the lines that
//! are formatted by hand on every request (the access log and the audit
//! trail) rather than through serde.

use std::fmt::{self, Write};

/// Writes `s` as a JSON string literal.
pub fn write_str(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string: quotes,
/// backslashes and control characters.
pub struct Escaped<'a, W: Write>(pub &'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Most text has nothing to escape: one pass without an early exit
        // (so the compiler vectorises it), then one copy.
        let special = s.bytes().fold(false, |any, b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if !special {
            return self.0.write_str(s);
        }
        let mut plain = 0;
        // Every byte that needs escaping is ASCII, so slicing at it keeps
        // to character boundaries.
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        for value in ["plain/key", "tab\t cr\r bell\u{7} nul\0", "ключ/🔑", ""] {
            let mut out = String::new();
            write_str(&mut out, value).unwrap();
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), value);
        }
    }
}
