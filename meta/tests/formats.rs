//! Golden fixtures of the embedded metadata file (`meta.json`), one per
//! version, opened by today's code. `CANOPY_WRITE_FIXTURES=1 cargo test -p
//! canopy-meta --test formats -- --ignored` writes the current version's file.

use std::path::PathBuf;

use canopy_meta::{EmbeddedStore, MetadataStore, PutCondition};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

const KEYS: [(&str, &[u8]); 3] = [("/canopy/groups/g", b"\x0a\x03\x0a\x01g"), ("/canopy/measures/g/cpu", b"measure"), ("/x", &[0, 255])];

#[tokio::test]
#[ignore = "writes the current version's fixture"]
async fn write_current_fixture() {
    if std::env::var_os("CANOPY_WRITE_FIXTURES").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    for (k, v) in KEYS {
        s.put(k, v.to_vec(), PutCondition::Absent).await.unwrap();
    }
    drop(s);
    let bytes = std::fs::read(dir.path().join("meta.json")).unwrap();
    let version = if bytes.starts_with(b"{") { 1 } else { EmbeddedStore::FORMAT_VERSION };
    std::fs::write(fixture(&format!("meta-v{version}.json")), bytes).unwrap();
}

async fn open(name: &str) -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(name), dir.path().join("meta.json")).unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
    (dir, s)
}

async fn assert_keys(s: &EmbeddedStore, name: &str) {
    for (i, (k, v)) in KEYS.iter().enumerate() {
        let kv = s.get(k).await.unwrap().unwrap_or_else(|| panic!("{name}: {k} missing"));
        assert_eq!((kv.value.as_slice(), kv.mod_revision), (*v, i as i64 + 1), "{name}: {k}");
    }
}

#[tokio::test]
async fn meta_v1_opens() {
    let (_d, s) = open("meta-v1.json").await;
    assert_keys(&s, "meta-v1.json").await;
}

#[tokio::test]
async fn meta_v2_opens() {
    let (_d, s) = open("meta-v2.json").await;
    assert_keys(&s, "meta-v2.json").await;
}

/// A version 1 file is rewritten as today's version on the next change, and
/// reopens.
#[tokio::test]
async fn a_v1_file_upgrades_on_the_next_write() {
    let (dir, s) = open("meta-v1.json").await;
    s.put("/y", b"new".to_vec(), PutCondition::Absent).await.unwrap();
    drop(s);
    let bytes = std::fs::read(dir.path().join("meta.json")).unwrap();
    assert!(bytes.starts_with(format!("CANOPY-META {} ", EmbeddedStore::FORMAT_VERSION).as_bytes()));
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_keys(&s, "upgraded").await;
    assert_eq!(s.get("/y").await.unwrap().unwrap().value, b"new");
}
