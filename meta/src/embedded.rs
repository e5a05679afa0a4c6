//! The standalone metadata store: a map in memory, persisted to one file
//! (`meta.json`) that is replaced atomically (write, fsync, rename, fsync dir)
//! on every change. Metadata is small and changes rarely, so rewriting the
//! whole file keeps the format trivial and crash-safe.
//!
//! File versions:
//! * **1** — the bare JSON state `{"revision": N, "keys": {key: [hex, rev]}}`.
//! * **2** — a header line `CANOPY-META 2 crc32=xxxxxxxx` (the CRC32 of the
//!   rest of the file, in hex), then the same JSON state. Still readable
//!   text; a torn or edited file is refused with a named error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::kv::{KeyValue, MetadataStore, PutCondition};
use crate::{MetaError, Result};

/// The file's header tag; the version and CRC follow on the same line.
const HEADER_TAG: &str = "CANOPY-META";

/// Why `meta.json` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaFileError {
    #[error("not a Canopy metadata file (no {HEADER_TAG} header and not JSON)")]
    BadMagic,
    #[error("malformed header line {0:?}")]
    BadHeader(String),
    #[error("unsupported metadata file version {0} (this build reads 1 and 2)")]
    UnsupportedVersion(u32),
    #[error("checksum mismatch: the file is torn or was edited")]
    Checksum,
    #[error("version {version} body: {error}")]
    Body { version: u32, error: String },
}

/// The JSON state: the body of every version so far.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    revision: i64,
    /// key -> (value as base16, mod revision); hex keeps the file readable JSON.
    keys: BTreeMap<String, (String, i64)>,
}

/// Embedded [`MetadataStore`] persisted under a directory.
#[derive(Debug)]
pub struct EmbeddedStore {
    path: PathBuf,
    state: Mutex<State>,
}

impl EmbeddedStore {
    /// The version of `meta.json` this build writes.
    pub const FORMAT_VERSION: u32 = 2;

    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore> {
        std::fs::create_dir_all(dir).map_err(|e| MetaError::Storage(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("meta.json");
        let state = match std::fs::read(&path) {
            Ok(b) => decode_file(&b).map_err(|e| MetaError::Storage(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(MetaError::Storage(format!("{}: {e}", path.display()))),
        };
        Ok(EmbeddedStore { path, state: Mutex::new(state) })
    }

    fn persist(&self, state: &State) -> Result<()> {
        let err = |e: std::io::Error| MetaError::Storage(format!("{}: {e}", self.path.display()));
        let tmp = self.path.with_extension("json.tmp");
        let body = encode_file(state);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&body).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(())
    }
}

/// Today's file: the version 2 header line, then the JSON state.
fn encode_file(state: &State) -> Vec<u8> {
    let body = serde_json::to_vec(state).expect("state serializes");
    let mut out = format!("{HEADER_TAG} {} crc32={:08x}\n", EmbeddedStore::FORMAT_VERSION, crc32fast::hash(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Reads a file of any known version.
fn decode_file(b: &[u8]) -> std::result::Result<State, MetaFileError> {
    let body_err = |version| move |e: serde_json::Error| MetaFileError::Body { version, error: e.to_string() };
    if b.first() == Some(&b'{') {
        return serde_json::from_slice(b).map_err(body_err(1));
    }
    if !b.starts_with(HEADER_TAG.as_bytes()) {
        return Err(MetaFileError::BadMagic);
    }
    let nl = b
        .iter()
        .position(|&c| c == b'\n')
        .ok_or_else(|| MetaFileError::BadHeader(String::from_utf8_lossy(b).chars().take(64).collect()))?;
    let line = std::str::from_utf8(&b[..nl]).map_err(|_| MetaFileError::BadHeader(String::from_utf8_lossy(&b[..nl]).into()))?;
    let bad = || MetaFileError::BadHeader(line.to_string());
    let mut words = line.split(' ');
    let (_tag, version, crc) = (words.next(), words.next().ok_or_else(bad)?, words.next().ok_or_else(bad)?);
    let version: u32 = version.parse().map_err(|_| bad())?;
    if version != 2 {
        return Err(MetaFileError::UnsupportedVersion(version));
    }
    let crc = crc.strip_prefix("crc32=").and_then(|h| u32::from_str_radix(h, 16).ok()).ok_or_else(bad)?;
    let body = &b[nl + 1..];
    if crc32fast::hash(body) != crc {
        return Err(MetaFileError::Checksum);
    }
    serde_json::from_slice(body).map_err(body_err(2))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()).collect()
}

#[async_trait]
impl MetadataStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let st = self.state.lock().await;
        Ok(st.keys.get(key).map(|(v, r)| KeyValue { key: key.into(), value: unhex(v), mod_revision: *r }))
    }

    async fn put(&self, key: &str, value: Vec<u8>, cond: PutCondition) -> Result<i64> {
        let mut st = self.state.lock().await;
        let current = st.keys.get(key).map(|(_, r)| *r);
        match (cond, current) {
            (PutCondition::Absent, Some(_)) => return Err(MetaError::AlreadyExists(key.into())),
            (PutCondition::Revision(want), cur) if cur != Some(want) => {
                return Err(MetaError::Conflict(key.into()));
            }
            _ => {}
        }
        st.revision += 1;
        let rev = st.revision;
        st.keys.insert(key.into(), (hex(&value), rev));
        self.persist(&st)?;
        Ok(rev)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut st = self.state.lock().await;
        if st.keys.remove(key).is_none() {
            return Ok(false);
        }
        st.revision += 1;
        self.persist(&st)?;
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let st = self.state.lock().await;
        Ok(st
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, r))| KeyValue { key: k.clone(), value: unhex(v), mod_revision: *r })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditions_hold_and_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let r1 = s.put("/a/1", b"x".to_vec(), PutCondition::Absent).await.unwrap();
        assert!(matches!(s.put("/a/1", b"y".to_vec(), PutCondition::Absent).await, Err(MetaError::AlreadyExists(_))));
        assert!(matches!(s.put("/a/1", b"y".to_vec(), PutCondition::Revision(r1 + 5)).await, Err(MetaError::Conflict(_))));
        let r2 = s.put("/a/1", b"y".to_vec(), PutCondition::Revision(r1)).await.unwrap();
        assert!(r2 > r1);
        s.put("/a/2", b"z".to_vec(), PutCondition::Any).await.unwrap();
        s.put("/b/1", vec![0, 255], PutCondition::Any).await.unwrap();
        drop(s);
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let listed: Vec<_> = s.list("/a/").await.unwrap().into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(listed, vec![("/a/1".into(), b"y".to_vec()), ("/a/2".into(), b"z".to_vec())]);
        assert_eq!(s.get("/b/1").await.unwrap().unwrap().value, vec![0, 255]);
        assert!(s.delete("/a/1").await.unwrap());
        assert!(!s.delete("/a/1").await.unwrap());
    }

    #[test]
    fn a_damaged_file_is_refused_with_a_named_error() {
        let state = State { revision: 1, keys: BTreeMap::from([("/k".to_string(), ("00".to_string(), 1))]) };
        let good = encode_file(&state);
        assert!(good.starts_with(b"CANOPY-META 2 crc32="));
        assert_eq!(decode_file(&good).unwrap().revision, 1);
        let mut edited = good.clone();
        let n = edited.len();
        edited[n - 3] = b'7';
        assert_eq!(decode_file(&edited).unwrap_err(), MetaFileError::Checksum);
        let future = String::from_utf8(good.clone()).unwrap().replacen("META 2", "META 3", 1);
        assert_eq!(decode_file(future.as_bytes()).unwrap_err(), MetaFileError::UnsupportedVersion(3));
        assert_eq!(decode_file(b"garbage").unwrap_err(), MetaFileError::BadMagic);
        assert!(matches!(decode_file(&good[..good.len() - 4]), Err(MetaFileError::Checksum)));
    }
}
