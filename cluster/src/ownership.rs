//! Shard ownership: which ingester owns each (group, shard), under which
//! epoch, recorded at `/canopy/shards/{group}/{shard:04}`.
//!
//! Which ingester a shard is dealt to is [`crate::placement`]'s pure
//! function of the watched state. Records change only by compare-and-swap
//! on their etcd revision; taking a shard always bumps the epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::node::{NodeInfo, Role};

/// Prefix of shard ownership records.
pub const SHARDS_PREFIX: &str = "/canopy/shards/";

/// One shard's ownership record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOwner {
    /// Node id of the owning ingester.
    pub owner: String,
    /// Bumped by every new owner; catalog commits carry it (fencing).
    pub epoch: u64,
    /// The owner flushed everything and let go: the next owner may take
    /// over without waiting for the owner's lease to expire.
    #[serde(default)]
    pub released: bool,
}

/// A shard's key under [`SHARDS_PREFIX`] (without the prefix).
pub fn shard_key(group: &str, shard: u32) -> String {
    format!("{group}/{shard:04}")
}

/// Parses a key made by [`shard_key`].
pub fn parse_shard_key(key: &str) -> Option<(String, u32)> {
    let (g, s) = key.rsplit_once('/')?;
    Some((g.to_string(), s.parse().ok()?))
}

/// Ingesters that may be dealt shards: registered as ingesters, not
/// leaving, and matching the selector. Sorted by id.
pub fn eligible_ingesters(nodes: &[NodeInfo], selector: &BTreeMap<String, String>) -> Vec<String> {
    let mut ids: Vec<String> =
        nodes.iter().filter(|n| n.has(Role::Ingester) && !n.leaving && n.matches(selector)).map(|n| n.id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The live owner of every shard whose record names one: not released,
/// and registered now. The placement keeps shards with these owners.
pub fn current_owners<'a>(
    records: impl IntoIterator<Item = (&'a (String, u32), &'a ShardOwner)>,
    live: &[String],
) -> BTreeMap<(String, u32), String> {
    records.into_iter().filter(|(_, r)| !r.released && live.contains(&r.owner)).map(|(k, r)| (k.clone(), r.owner.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, roles: &[Role], labels: &[(&str, &str)], leaving: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            roles: roles.to_vec(),
            grpc_addr: id.into(),
            http_addr: String::new(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            started_at_ms: 0,
            leaving,
            recovering: vec![],
        }
    }

    #[test]
    fn released_records_and_departed_owners_leave_a_shard_unowned() {
        let rec = |owner: &str, released: bool| ShardOwner { owner: owner.into(), epoch: 3, released };
        let records: BTreeMap<(String, u32), ShardOwner> =
            [(("g".to_string(), 0), rec("a", false)), (("g".to_string(), 1), rec("a", true)), (("g".to_string(), 2), rec("gone", false))]
                .into();
        let current = current_owners(&records, &["a".to_string()]);
        assert_eq!(current, [(("g".to_string(), 0), "a".to_string())].into());
    }

    #[test]
    fn only_live_matching_ingesters_that_are_not_leaving_are_eligible() {
        let nodes = vec![
            node("i2", &[Role::Ingester], &[("zone", "a")], false),
            node("i1", &[Role::Ingester], &[("zone", "a")], false),
            node("i3", &[Role::Ingester], &[("zone", "b")], false),
            node("i4", &[Role::Ingester], &[("zone", "a")], true),
            node("q1", &[Role::Querier], &[("zone", "a")], false),
        ];
        assert_eq!(eligible_ingesters(&nodes, &BTreeMap::new()), vec!["i1", "i2", "i3"]);
        let zone_a: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        assert_eq!(eligible_ingesters(&nodes, &zone_a), vec!["i1", "i2"]);
    }

    #[test]
    fn shard_keys_round_trip() {
        assert_eq!(shard_key("metrics-minute", 7), "metrics-minute/0007");
        assert_eq!(parse_shard_key("metrics-minute/0007"), Some(("metrics-minute".into(), 7)));
        assert_eq!(parse_shard_key("nope"), None);
    }
}
