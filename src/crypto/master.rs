//! The root key (KEK): loaded from `STRONGROOM_MASTER_KEY` (base64 of 32
//! bytes), from a file holding the same text, or generated once into
//! `<data-dir>/master.key` (mode 0600) for the zero-setup embedded default.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::Zeroizing;

use super::seal::{random_bytes, AeadKey};
use super::CryptoError;

/// Where a key generated for a shared store waits until the store took it.
const PENDING: &str = "master.key.pending";

/// Where the master key came from; `Generated` earns a warning at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeyOrigin {
    Environment,
    File(PathBuf),
    Generated(PathBuf),
    DefaultFile(PathBuf),
}

/// The KEK. Holds the AES key and a check value that identifies it without
/// revealing it (HMAC of a fixed label), stored in the store at first start so
/// a server started with another key refuses to run instead of failing later.
pub struct MasterKey {
    pub(crate) aead: AeadKey,
    check: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes);
        let tag = aws_lc_rs::hmac::sign(&hmac_key, b"strongroom/master-key-check/v1");
        let mut check = [0u8; 32];
        check.copy_from_slice(tag.as_ref());
        MasterKey {
            aead: AeadKey::new(bytes),
            check,
        }
    }

    /// Parses the base64 text form (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| CryptoError::BadMasterKey("master key is not valid base64".into()))?,
        );
        let bytes: Zeroizing<[u8; 32]> =
            Zeroizing::new(decoded.as_slice().try_into().map_err(|_| {
                CryptoError::BadMasterKey(format!(
                    "master key must decode to 32 bytes, got {}",
                    decoded.len()
                ))
            })?);
        Ok(Self::from_bytes(&bytes))
    }

    /// Loads the key: inline text first, then a named file, then
    /// `<data_dir>/master.key`, generating that file when it does not exist
    /// and `generate` is set (a server's first start; never a tool's).
    pub fn load(
        inline: Option<&str>,
        file: Option<&Path>,
        data_dir: &Path,
        generate: bool,
    ) -> Result<(Self, MasterKeyOrigin), CryptoError> {
        if let Some(text) = inline {
            return Ok((Self::from_base64(text)?, MasterKeyOrigin::Environment));
        }
        if let Some(path) = file {
            let key = Self::read_file(path)?;
            return Ok((key, MasterKeyOrigin::File(path.to_owned())));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let key = Self::read_file(&path)?;
            return Ok((key, MasterKeyOrigin::DefaultFile(path)));
        }
        if !generate {
            return Err(CryptoError::BadMasterKey(format!(
                "no master key: set STRONGROOM_MASTER_KEY or STRONGROOM_MASTER_KEY_FILE (no {} either)",
                path.display()
            )));
        }
        let (key, text) = Self::random();
        write_key_file(data_dir, &path, &text)?;
        Ok((key, MasterKeyOrigin::Generated(path)))
    }

    /// A new random key and its base64 text.
    fn random() -> (Self, Zeroizing<String>) {
        let bytes = random_bytes::<32>();
        let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()));
        (Self::from_bytes(&bytes), text)
    }

    /// For a shared store no key was given for: the key an earlier start
    /// generated but could not yet confirm, else a new one, kept in
    /// `<data_dir>/master.key.pending` until the store took it
    /// (`confirm_pending`) or refused it (`discard_pending`). Kept on disk
    /// before the store records it, so a crash in between loses nothing.
    pub fn pending(data_dir: &Path) -> Result<(Self, PathBuf), CryptoError> {
        let path = data_dir.join(PENDING);
        if path.exists() {
            return Ok((Self::read_file(&path)?, path));
        }
        let (key, text) = Self::random();
        write_key_file(data_dir, &path, &text)?;
        Ok((key, path))
    }

    /// The store took the pending key: it becomes `master.key`.
    pub fn confirm_pending(data_dir: &Path) -> Result<(), CryptoError> {
        let renamed = std::fs::rename(data_dir.join(PENDING), data_dir.join("master.key"))
            .and_then(|()| std::fs::File::open(data_dir)?.sync_all());
        renamed.map_err(|e| {
            CryptoError::BadMasterKey(format!(
                "cannot keep the generated master key in {}: {e}",
                data_dir.display()
            ))
        })
    }

    /// The store holds another key: the pending one is not its.
    pub fn discard_pending(data_dir: &Path) {
        let _ = std::fs::remove_file(data_dir.join(PENDING));
    }

    fn read_file(path: &Path) -> Result<Self, CryptoError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            CryptoError::BadMasterKey(format!(
                "cannot read master key file {}: {e}",
                path.display()
            ))
        })?);
        Self::from_base64(&text)
    }

    /// The value stored beside the data to recognise this key later.
    pub fn check_value(&self) -> &[u8; 32] {
        &self.check
    }

    /// Compares a stored check value in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(stored, &self.check).is_ok()
    }
}

/// Writes a generated key's text to `path` in `data_dir` (created if need
/// be), owner-only and synced.
fn write_key_file(data_dir: &Path, path: &Path, text: &str) -> Result<(), CryptoError> {
    crate::fsutil::create_private_dir(data_dir)
        .and_then(|()| crate::fsutil::write_private_file(path, text.as_bytes()))
        .map_err(|e| {
            CryptoError::BadMasterKey(format!(
                "cannot create master key file {}: {e}",
                path.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_mode_0600_then_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = MasterKey::load(None, None, dir.path(), true).unwrap();
        assert!(matches!(origin, MasterKeyOrigin::Generated(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, origin) = MasterKey::load(None, None, dir.path(), true).unwrap();
        assert!(matches!(origin, MasterKeyOrigin::DefaultFile(_)));
        assert!(second.matches(first.check_value()));
    }

    #[test]
    fn refuses_short_or_non_base64_keys() {
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(MasterKey::from_base64("AAAA").is_err());
        // 32 zero bytes in base64, with the whitespace a file usually has.
        let padded = format!("  {}=\n", "A".repeat(43));
        assert!(MasterKey::from_base64(&padded).is_ok());
        let too_long = format!("{}=", "A".repeat(47));
        assert!(MasterKey::from_base64(&too_long).is_err());
    }

    #[test]
    fn different_keys_have_different_checks() {
        let a = MasterKey::from_bytes(&[1; 32]);
        let b = MasterKey::from_bytes(&[2; 32]);
        assert!(!a.matches(b.check_value()));
        assert!(a.matches(a.check_value()));
    }
}
