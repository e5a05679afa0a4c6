//! A local mirror of every key under an etcd prefix, kept current by a
//! watch: list once, then apply events from the next revision. When etcd is
//! unreachable the mirror keeps its last state (so a liaison keeps routing
//! with the ownership table it has) and re-lists once etcd is back.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;

/// A key's value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The mirror of one prefix.
#[derive(Debug)]
pub struct WatchedPrefix {
    prefix: String,
    map: RwLock<BTreeMap<String, Entry>>,
    /// Bumped after every applied change; `changed()` waits on it.
    version: watch::Sender<u64>,
}

/// How long to wait before re-listing after etcd failed.
const RETRY: Duration = Duration::from_millis(500);

impl WatchedPrefix {
    /// Starts mirroring `prefix`; returns once the first listing is in.
    pub async fn start(client: Client, prefix: &str) -> Result<Arc<WatchedPrefix>, etcd_client::Error> {
        let (version, _) = watch::channel(0);
        let w = Arc::new(WatchedPrefix { prefix: prefix.to_string(), map: RwLock::new(BTreeMap::new()), version });
        let rev = w.relist(&client).await?;
        tokio::spawn(run(Arc::downgrade(&w), client, rev));
        Ok(w)
    }

    /// The key prefix mirrored.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key (with the prefix stripped) and its entry.
    pub fn snapshot(&self) -> BTreeMap<String, Entry> {
        self.map.read().expect("mirror lock").clone()
    }

    /// One key (prefix stripped).
    pub fn get(&self, key: &str) -> Option<Entry> {
        self.map.read().expect("mirror lock").get(key).cloned()
    }

    /// A receiver that sees a new value after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    async fn relist(&self, client: &Client) -> Result<i64, etcd_client::Error> {
        let r = client.clone().get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
        let rev = r.header().map(|h| h.revision()).unwrap_or_default();
        let map: BTreeMap<String, Entry> = r
            .kvs()
            .iter()
            .map(|kv| (self.strip(kv.key()), Entry { value: kv.value().to_vec(), mod_revision: kv.mod_revision() }))
            .collect();
        *self.map.write().expect("mirror lock") = map;
        self.bump();
        Ok(rev)
    }

    fn strip(&self, key: &[u8]) -> String {
        let k = String::from_utf8_lossy(key);
        k.strip_prefix(self.prefix.as_str()).unwrap_or(&k).to_string()
    }
}

async fn run(w: std::sync::Weak<WatchedPrefix>, client: Client, mut rev: i64) {
    loop {
        let Some(me) = w.upgrade() else { return };
        match watch_from(&me, &client, rev).await {
            Ok(next) => rev = next,
            Err(e) => tracing::warn!(prefix = %me.prefix, error = %e, "etcd watch failed; keeping the last state and re-listing"),
        }
        drop(me);
        tokio::time::sleep(RETRY).await;
        let Some(me) = w.upgrade() else { return };
        match me.relist(&client).await {
            Ok(r) => rev = r,
            Err(e) => tracing::debug!(prefix = %me.prefix, error = %e, "etcd still unreachable"),
        }
    }
}

/// Applies events after `rev` until the watch ends; returns the last revision seen.
async fn watch_from(me: &WatchedPrefix, client: &Client, mut rev: i64) -> Result<i64, etcd_client::Error> {
    let opts = WatchOptions::new().with_prefix().with_start_revision(rev + 1).with_progress_notify();
    let mut stream = client.clone().watch(me.prefix.as_str(), Some(opts)).await?;
    while let Some(resp) = stream.message().await? {
        if resp.canceled() || resp.compact_revision() > 0 {
            return Ok(rev);
        }
        if let Some(h) = resp.header() {
            rev = rev.max(h.revision());
        }
        if resp.events().is_empty() {
            continue;
        }
        {
            let mut map = me.map.write().expect("mirror lock");
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = me.strip(kv.key());
                match ev.event_type() {
                    EventType::Put => {
                        map.insert(key, Entry { value: kv.value().to_vec(), mod_revision: kv.mod_revision() });
                    }
                    EventType::Delete => {
                        map.remove(&key);
                    }
                }
            }
        }
        me.bump();
    }
    Ok(rev)
}
