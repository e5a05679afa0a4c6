//! Which ingester each shard is dealt to: a pure function of the watched
//! state (groups, eligible ingesters, current owners), so every node
//! computes the same answer, built to move as little as a membership change
//! allows while keeping the load even.
//!
//! 1. **Keep.** A shard stays with its current owner if that owner is still
//!    eligible, up to `cap = ceil(S / N)` shards per ingester (an ingester
//!    over the cap keeps its highest-scored shards).
//! 2. **Place.** Shards without an eligible owner (new groups, a leaver's or
//!    a dead node's shards, a shed surplus) go, in key order, to the
//!    ingester with the highest rendezvous score among those below
//!    `base = floor(S / N)` — or, when none is, below the cap.
//! 3. **Lift.** While an ingester is below `base` (a newcomer), it takes the
//!    shard it scores highest from the most loaded ingester.
//!
//! So a join moves only the shards the newcomer takes (its fair share), a
//! leave moves only the leaver's shards, and every ingester ends with
//! `base` or `base + 1` shards. Applying the result and computing again
//! gives the same result (a fixed point), and during a single join or leave
//! a shard in the middle of a handover (released, not yet taken) is placed
//! where the first computation sent it. (With several changes at once the
//! target can shift while shards are in flight; only ingesters above `base`
//! ever give shards up, so this costs no extra moves and ends when the views
//! agree.) The rendezvous score (xxh3 of shard and node) breaks every tie,
//! so the outcome does not depend on the order nodes joined in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A shard: (group, shard id).
pub type ShardId = (String, u32);

/// Rendezvous score of a shard on a node: higher is preferred.
fn score(shard: &ShardId, node: &str) -> u64 {
    let mut key = Vec::with_capacity(shard.0.len() + node.len() + 6);
    key.extend_from_slice(shard.0.as_bytes());
    key.push(0);
    key.extend_from_slice(&shard.1.to_le_bytes());
    key.push(0);
    key.extend_from_slice(node.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&key)
}

/// Deals every shard of every group (name → shard count) over `ingesters`
/// (the eligible ones), keeping shards with their `current` owners as far
/// as balance allows; empty if there are no ingesters.
pub fn assign(groups: &BTreeMap<String, u32>, ingesters: &[String], current: &BTreeMap<ShardId, String>) -> BTreeMap<ShardId, String> {
    let mut out = BTreeMap::new();
    let n = ingesters.len();
    if n == 0 {
        return out;
    }
    let shards: Vec<ShardId> = groups.iter().flat_map(|(g, &count)| (0..count).map(move |s| (g.clone(), s))).collect();
    let base = shards.len() / n;
    let cap = shards.len().div_ceil(n);
    let index: HashMap<&str, usize> = ingesters.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let mut held: Vec<Vec<ShardId>> = vec![Vec::new(); n];
    let mut to_place: Vec<ShardId> = Vec::new();

    // 1. Keep, up to the cap, each node's highest-scored shards.
    let mut kept: Vec<Vec<(u64, ShardId)>> = vec![Vec::new(); n];
    for shard in &shards {
        match current.get(shard).and_then(|o| index.get(o.as_str())) {
            Some(&i) => kept[i].push((score(shard, &ingesters[i]), shard.clone())),
            None => to_place.push(shard.clone()),
        }
    }
    for (i, mut mine) in kept.into_iter().enumerate() {
        mine.sort_unstable_by(|a, b| b.cmp(a));
        for (rank, (_, shard)) in mine.into_iter().enumerate() {
            if rank < cap {
                held[i].push(shard);
            } else {
                to_place.push(shard);
            }
        }
    }

    // 2. Place the rest, filling nodes below `base` first.
    to_place.sort_unstable();
    for shard in to_place {
        let under_base = held.iter().any(|h| h.len() < base);
        let room = |i: usize| if under_base { held[i].len() < base } else { held[i].len() < cap };
        let best = (0..n).filter(|&i| room(i)).max_by_key(|&i| score(&shard, &ingesters[i])).expect("n * cap >= shards");
        held[best].push(shard);
    }

    // 3. Lift nodes still below `base` with shards from the most loaded.
    while let Some(u) = (0..n).filter(|&i| held[i].len() < base).max_by_key(|&i| (std::cmp::Reverse(held[i].len()), &ingesters[i])) {
        let donor = (0..n).max_by_key(|&i| (held[i].len(), std::cmp::Reverse(&ingesters[i]))).expect("n > 0");
        let pick = (0..held[donor].len()).max_by_key(|&k| score(&held[donor][k], &ingesters[u])).expect("donor holds more than base");
        let shard = held[donor].swap_remove(pick);
        held[u].push(shard);
    }

    for (i, shards) in held.into_iter().enumerate() {
        for shard in shards {
            out.insert(shard, ingesters[i].clone());
        }
    }
    out
}

/// The handovers that may start now: the moves still pending (current
/// owner differs from `dealt`), in key order, skipping an owner that has
/// `per_owner` handovers in flight and stopping at `total` in flight
/// overall. `in_flight` counts released, not yet taken records per owner.
/// Every node computes the same set from the same view, so the bounds hold
/// across the cluster without coordination.
pub fn handovers_to_start(
    current: &BTreeMap<ShardId, String>,
    dealt: &BTreeMap<ShardId, String>,
    in_flight: &BTreeMap<String, usize>,
    per_owner: usize,
    total: usize,
) -> BTreeSet<ShardId> {
    let mut per: BTreeMap<&str, usize> = in_flight.iter().map(|(o, n)| (o.as_str(), *n)).collect();
    let mut busy: usize = in_flight.values().sum();
    let mut out = BTreeSet::new();
    for (shard, owner) in current {
        if busy >= total {
            break;
        }
        if dealt.get(shard).is_none_or(|target| target == owner) {
            continue;
        }
        let n = per.entry(owner.as_str()).or_default();
        if *n >= per_owner {
            continue;
        }
        *n += 1;
        busy += 1;
        out.insert(shard.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:17912")).collect()
    }

    fn groups(shards: u32) -> BTreeMap<String, u32> {
        [("metrics".to_string(), shards / 2), ("logs".to_string(), shards - shards / 2)].into()
    }

    fn loads(a: &BTreeMap<ShardId, String>) -> Vec<usize> {
        let mut per: BTreeMap<&String, usize> = BTreeMap::new();
        a.values().for_each(|o| *per.entry(o).or_default() += 1);
        per.into_values().collect()
    }

    fn moved(a: &BTreeMap<ShardId, String>, b: &BTreeMap<ShardId, String>) -> usize {
        a.iter().filter(|(k, o)| b.get(*k) != Some(o)).count()
    }

    #[test]
    fn every_shard_is_dealt_and_loads_differ_by_at_most_one() {
        for (n, s) in [(1, 5), (2, 3), (3, 10), (7, 100), (20, 640)] {
            let a = assign(&groups(s), &nodes(n), &BTreeMap::new());
            assert_eq!(a.len(), s as usize);
            let l = loads(&a);
            assert_eq!(l.len(), n.min(s as usize));
            assert!(l.iter().max().unwrap() - l.iter().min().unwrap() <= 1, "{n} x {s}: {l:?}");
        }
        assert!(assign(&groups(4), &[], &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_result_is_a_fixed_point() {
        let g = groups(96);
        for n in [1, 3, 4, 5] {
            let a = assign(&g, &nodes(n), &BTreeMap::new());
            assert_eq!(assign(&g, &nodes(n), &a), a);
        }
    }

    #[test]
    fn a_join_moves_only_what_the_newcomer_takes_and_a_leave_only_the_leavers_shards() {
        let g = groups(96);
        let four = assign(&g, &nodes(4), &BTreeMap::new());
        let five = assign(&g, &nodes(5), &four);
        let newcomer = &nodes(5)[4];
        assert_eq!(moved(&four, &five), five.values().filter(|o| *o == newcomer).count());
        assert!((19..=20).contains(&moved(&four, &five)), "fair share of 96 over 5: {}", moved(&four, &five));
        let leaver = &nodes(5)[2];
        let rest: Vec<String> = nodes(5).into_iter().filter(|n| n != leaver).collect();
        let after = assign(&g, &rest, &five);
        assert_eq!(moved(&five, &after), five.values().filter(|o| *o == leaver).count());
        let l = loads(&after);
        assert!(l.iter().max().unwrap() - l.iter().min().unwrap() <= 1, "{l:?}");
    }

    #[test]
    fn a_shard_released_mid_handover_is_placed_where_it_was_going() {
        // A join: every node computes the target from the old owners; the
        // shards that move are released one by one (their records then name
        // no live owner). Computing again at any step gives the same target.
        let g = groups(40);
        let three = assign(&g, &nodes(3), &BTreeMap::new());
        let target = assign(&g, &nodes(4), &three);
        let mut now = three.clone();
        for (shard, owner) in &target {
            if three[shard] != *owner {
                now.remove(shard);
                assert_eq!(assign(&g, &nodes(4), &now), target, "after releasing {shard:?}");
                now.insert(shard.clone(), owner.clone());
                assert_eq!(assign(&g, &nodes(4), &now), target, "after {owner} took {shard:?}");
            }
        }
    }

    #[test]
    fn handovers_start_a_few_at_a_time_and_the_same_on_every_node() {
        let g = groups(40);
        let five = nodes(5);
        let start = assign(&g, &five, &BTreeMap::new());
        // Five more ingesters: about half the shards must move.
        let ten = nodes(10);
        let target = assign(&g, &ten, &start);
        let pending = start.iter().filter(|(k, o)| target[*k] != **o).count();
        assert!(pending >= 15, "{pending}");
        let none = BTreeMap::new();
        let first = handovers_to_start(&start, &target, &none, 2, 6);
        assert_eq!(first.len(), 6, "the cluster-wide bound");
        let mut per: BTreeMap<&String, usize> = BTreeMap::new();
        first.iter().for_each(|k| *per.entry(&start[k]).or_default() += 1);
        assert!(per.values().all(|&n| n <= 2), "{per:?}");
        // Two handovers already in flight from node 0: it starts none more,
        // and the total counts them.
        let busy: BTreeMap<String, usize> = [(five[0].clone(), 2)].into();
        let next = handovers_to_start(&start, &target, &busy, 2, 6);
        assert_eq!(next.len(), 4);
        assert!(next.iter().all(|k| start[k] != five[0]));
        assert!(handovers_to_start(&target, &target, &none, 2, 6).is_empty(), "nothing pending, nothing starts");
    }

    #[test]
    fn the_outcome_does_not_depend_on_the_order_of_the_node_list() {
        let g = groups(50);
        let mut rev = nodes(6);
        rev.reverse();
        let mut sorted = rev.clone();
        sorted.sort();
        assert_eq!(assign(&g, &rev, &BTreeMap::new()), assign(&g, &sorted, &BTreeMap::new()));
    }
}
