//! The audit record: what one line says about one request that reached a
//! secret or an API key, allowed or refused (`AuditEntry`, rendered into the
//! `LineBody` the store chains and writes), and the check of a whole trail
//! (`verify`). Lines never hold values or credentials: the subject of a
//! refused API key is at most the key's public id.

pub mod prune;
pub mod start;
mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Principal;
use crate::clock::{now_ms, write_rfc3339};
use crate::store::LineBody;
pub use verify::{verify_chains, verify_lines, ChainReport, Verdict};

/// What one line records. The principal is shared with the request, not
/// copied, and the request id is copied once.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub request_id: Arc<str>,
    /// Who was authenticated: the line's tenant and subject.
    pub principal: Option<Arc<Principal>>,
    /// The subject of a refused credential (at most an API key's public id),
    /// when there is no principal.
    pub subject: Option<String>,
    pub action: &'static str,
    pub key: Option<String>,
    pub status: u16,
    pub client: Option<SocketAddr>,
}

/// Appends `"name":<JSON string or null>,` to `out`.
fn push_field(out: &mut String, name: &str, value: Option<&str>) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    match value {
        Some(v) => {
            let _ = crate::json::write_str(out, v);
        }
        None => out.push_str("null"),
    }
    out.push(',');
}

impl AuditEntry {
    /// `render` with a `note` field (a system line's details).
    pub fn render_with_note(&self, note: &str) -> LineBody {
        let mut body = self.render();
        push_field(&mut body.text, "note", Some(note));
        body
    }

    /// The line's text up to its chain fields, stamped with the time now.
    pub fn render(&self) -> LineBody {
        use std::fmt::Write;
        // Room for the chain fields too (the store appends about 150 bytes).
        let mut line = String::with_capacity(512);
        line.push_str("{\"time\":\"");
        let _ = write_rfc3339(&mut line, now_ms());
        line.push_str("\",");
        push_field(&mut line, "request_id", Some(&self.request_id));
        let principal = self.principal.as_deref();
        push_field(&mut line, "tenant", principal.map(|p| p.tenant.as_str()));
        push_field(
            &mut line,
            "subject",
            principal.map_or(self.subject.as_deref(), |p| Some(&p.subject)),
        );
        push_field(&mut line, "action", Some(self.action));
        push_field(&mut line, "key", self.key.as_deref());
        line.push_str("\"status\":");
        line.push_str(itoa::Buffer::new().format(self.status));
        line.push(',');
        // An address's text needs no JSON escaping.
        match self.client {
            Some(addr) => {
                let _ = write!(line, "\"client\":\"{addr}\",");
            }
            None => push_field(&mut line, "client", None),
        }
        LineBody {
            text: line,
            request_id: self.request_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chain::{link, test_key, ChainHead};

    pub(super) fn entry(i: u16) -> AuditEntry {
        AuditEntry {
            request_id: format!("r{i}").into(),
            principal: Some(Arc::new(Principal {
                tenant: crate::types::TenantId::parse("t").unwrap(),
                subject: "apikey:abc".into(),
                scopes: Vec::new(),
                expires_at: None,
                share_keys: Default::default(),
                token: None,
            })),
            subject: None,
            action: "secrets.read",
            key: Some(format!("k{i}")),
            status: 200,
            client: Some("127.0.0.1:1".parse().unwrap()),
        }
    }

    #[test]
    fn a_line_holds_the_status_and_the_client_address_as_text() {
        for (client, text, status) in [
            (Some("10.0.0.255:65535"), Some("10.0.0.255:65535"), 503),
            (Some("0.0.0.0:0"), Some("0.0.0.0:0"), 0),
            (Some("[::1]:8210"), Some("[::1]:8210"), 200),
            (None, None, 65535),
        ] {
            let mut e = entry(1);
            e.client = client.map(|c| c.parse().unwrap());
            e.status = status;
            let mut head = ChainHead::genesis();
            let mut line = Vec::new();
            link(&test_key(), &mut head, &e.render().text, &mut line);
            let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let line = String::from_utf8(line).unwrap();
            assert_eq!(parsed["client"].as_str(), text, "{line}");
            assert_eq!(parsed["status"], status, "{line}");
            assert_eq!(parsed["mac"].as_str(), Some(head.hash.as_str()));
            // The MAC covers the hand-formatted text before it.
            let verdict = verify_lines([Ok::<_, ()>(line.into_bytes())], Some(&test_key()), None);
            assert_eq!(verdict, Ok(Verdict::Intact { lines: 1, head }));
        }
    }

    #[test]
    fn a_line_body_is_json_with_its_fields_escaped() {
        let mut e = entry(1);
        e.key = Some("a\"b\u{1}".into());
        let body = e.render();
        assert_eq!(&*body.request_id, "r1");
        let line: serde_json::Value =
            serde_json::from_str(&format!("{}\"x\":0}}", body.text)).unwrap();
        assert_eq!(line["key"], "a\"b\u{1}");
        assert_eq!(line["status"], e.status);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
}
