//! The root keys (KEKs): one from `STRONGROOM_MASTER_KEY` (base64 of 32
//! bytes), one or more from a file (one a line, the first active), or one
//! generated into `<data-dir>/master.key` (mode 0600) for the zero-setup
//! embedded default. Each KEK has a public id (an HMAC, never the key).

use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::seal::{self, random_bytes, AeadKey};
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

/// A KEK's public id: the first 8 bytes of an HMAC of a fixed label under
/// it, stored beside every key it wraps and shown in messages as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KekId(pub [u8; 8]);

impl std::fmt::Display for KekId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for KekId {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        let mut id = [0u8; 8];
        hex::decode_to_slice(text, &mut id).map_err(|_| ())?;
        Ok(KekId(id))
    }
}

/// One KEK. Holds the AES key, its id, a check value that identifies it
/// without revealing it (stored at first start, so a server started with an
/// unrelated key refuses to run instead of failing later), and the root of
/// the keys that authenticate backups.
pub struct MasterKey {
    pub(crate) aead: AeadKey,
    check: [u8; 32],
    id: KekId,
    backup_root: hmac::Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let label = |text: &[u8]| hmac::sign(&hmac_key, text);
        let mut check = [0u8; 32];
        check.copy_from_slice(label(b"strongroom/master-key-check/v1").as_ref());
        let mut id = [0u8; 8];
        id.copy_from_slice(&label(b"strongroom/kek-id/v1").as_ref()[..8]);
        let backup_root = hmac::Key::new(
            hmac::HMAC_SHA256,
            label(b"strongroom/backup-mac/v1").as_ref(),
        );
        MasterKey {
            aead: AeadKey::new(bytes),
            check,
            id: KekId(id),
            backup_root,
        }
    }

    pub fn id(&self) -> KekId {
        self.id
    }

    /// The key that authenticates one backup file, from its random `salt`.
    pub fn backup_mac_key(&self, salt: &[u8]) -> hmac::Key {
        hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&self.backup_root, salt).as_ref(),
        )
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

    /// Loads the keyring: inline text first (one key), then a named file
    /// (one key a line), then `<data_dir>/master.key`, generating that file
    /// when it does not exist and `generate` is set (a server's first start;
    /// never a tool's).
    pub fn load(
        inline: Option<&str>,
        file: Option<&Path>,
        data_dir: &Path,
        generate: bool,
    ) -> Result<(MasterKeys, MasterKeyOrigin), CryptoError> {
        if let Some(text) = inline {
            let key = Self::from_base64(text)?;
            return Ok((MasterKeys::single(key), MasterKeyOrigin::Environment));
        }
        if let Some(path) = file {
            let keys = MasterKeys::read_file(path)?;
            return Ok((keys, MasterKeyOrigin::File(path.to_owned())));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let keys = MasterKeys::read_file(&path)?;
            return Ok((keys, MasterKeyOrigin::DefaultFile(path)));
        }
        if !generate {
            return Err(CryptoError::BadMasterKey(format!(
                "no master key: set STRONGROOM_MASTER_KEY or STRONGROOM_MASTER_KEY_FILE (no {} either)",
                path.display()
            )));
        }
        let (key, text) = Self::random();
        write_key_file(data_dir, &path, &text)?;
        Ok((MasterKeys::single(key), MasterKeyOrigin::Generated(path)))
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
    pub fn pending(data_dir: &Path) -> Result<(MasterKeys, PathBuf), CryptoError> {
        let path = data_dir.join(PENDING);
        if path.exists() {
            return Ok((MasterKeys::read_file(&path)?, path));
        }
        let (key, text) = Self::random();
        write_key_file(data_dir, &path, &text)?;
        Ok((MasterKeys::single(key), path))
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

    /// The value stored beside the data to recognise this key later.
    pub fn check_value(&self) -> &[u8; 32] {
        &self.check
    }

    /// Compares a stored check value in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(stored, &self.check).is_ok()
    }
}

/// The keyring of KEKs: the first wraps new keys, every one unwraps.
#[derive(Debug)]
pub struct MasterKeys {
    keys: Vec<MasterKey>,
}

impl MasterKeys {
    pub fn single(key: MasterKey) -> MasterKeys {
        MasterKeys { keys: vec![key] }
    }

    /// Parses a key file: one base64 key a line, the first active; blank
    /// lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<MasterKeys, CryptoError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = MasterKey::from_base64(line).map_err(|e| match e {
                CryptoError::BadMasterKey(why) => {
                    CryptoError::BadMasterKey(format!("line {}: {why}", n + 1))
                }
                other => other,
            })?;
            if keys.iter().all(|k: &MasterKey| k.id != key.id) {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(CryptoError::BadMasterKey(
                "the master key file holds no key".into(),
            ));
        }
        Ok(MasterKeys { keys })
    }

    pub fn read_file(path: &Path) -> Result<MasterKeys, CryptoError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            CryptoError::BadMasterKey(format!(
                "cannot read master key file {}: {e}",
                path.display()
            ))
        })?);
        Self::parse(&text).map_err(|e| match e {
            CryptoError::BadMasterKey(why) => {
                CryptoError::BadMasterKey(format!("{}: {why}", path.display()))
            }
            other => other,
        })
    }

    /// The KEK new keys are wrapped under.
    pub fn active(&self) -> &MasterKey {
        &self.keys[0]
    }

    pub fn get(&self, id: KekId) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The KEK whose check value `stored` is, if any.
    pub fn by_check(&self, stored: &[u8]) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.matches(stored))
    }

    pub fn iter(&self) -> impl Iterator<Item = &MasterKey> {
        self.keys.iter()
    }

    /// Wraps a key (a DEK, or the audit key) under the active KEK.
    pub fn wrap(&self, tenant: &str, id: u32, raw: &[u8; 32]) -> Vec<u8> {
        let kek = self.active();
        seal::wrap_key(&kek.aead, kek.id.0, tenant, id, raw)
    }

    /// Unwraps a key under the KEK it names; one from before the keyring
    /// names none, and any KEK that opens it will do.
    pub fn unwrap(
        &self,
        tenant: &str,
        id: u32,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        match seal::wrapped_kek_id(wrapped)?.0 {
            Some(kek) => {
                let kek = self
                    .get(KekId(kek))
                    .ok_or(CryptoError::MissingKek(KekId(kek)))?;
                seal::unwrap_key(&kek.aead, tenant, id, wrapped)
            }
            None => self
                .keys
                .iter()
                .find_map(|k| seal::unwrap_key(&k.aead, tenant, id, wrapped).ok())
                .ok_or(CryptoError::Tampered),
        }
    }

    /// Whether `wrapped` is already wrapped under the active KEK.
    pub fn is_active(&self, wrapped: &[u8]) -> bool {
        matches!(seal::wrapped_kek_id(wrapped), Ok((Some(id), _)) if KekId(id) == self.active().id)
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
        let first = first.active();
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
        assert!(second.active().matches(first.check_value()));
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
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn a_key_file_holds_several_keys_the_first_active() {
        let (a, b) = (
            format!("{}=", "A".repeat(43)),
            format!("{}A=", "B".repeat(42)),
        );
        let keys = MasterKeys::parse(&format!("# new first\n{b}\n\n  {a}\n{b}\n")).unwrap();
        let ids: Vec<_> = keys.iter().map(|k| k.id()).collect();
        let (ka, kb) = (
            MasterKey::from_base64(&a).unwrap(),
            MasterKey::from_base64(&b).unwrap(),
        );
        assert_eq!(ids, [kb.id(), ka.id()]);
        assert_eq!(keys.active().id(), kb.id());
        assert!(keys.by_check(ka.check_value()).is_some());
        let bad = MasterKeys::parse(&format!("{a}\nnot a key\n")).unwrap_err();
        assert!(bad.to_string().contains("line 2"), "{bad}");
        assert!(MasterKeys::parse("\n# none\n").is_err());
        assert_eq!(kb.id().to_string().parse::<KekId>(), Ok(kb.id()));
    }
}
