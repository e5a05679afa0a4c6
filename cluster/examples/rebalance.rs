//! Rebalance simulator: runs the real shard placement (`canopy_cluster::assign`)
//! with no I/O and reports what membership changes cost.
//!
//! ```text
//! cargo run --release -p canopy-cluster --example rebalance -- --ingesters 100 --shards 10000 [--watchers 140]
//! ```
//!
//! For a join, a leave and a rolling restart (each ingester leaves, then
//! returns, one after the other) it prints the shards moved against the fair
//! share, the balance (max / avg shards per ingester) and the etcd cost:
//! every moved shard is two writes of its ownership record (the owner marks
//! it released, the next owner claims it), a membership change is one write
//! of a node record, and every write is a watch event for each node that
//! mirrors the cluster state (`--watchers`: ingesters + liaisons + queriers).

use std::collections::BTreeMap;

use canopy_cluster::assign;

type Placement = BTreeMap<(String, u32), String>;

/// Shards per group: groups hold at most 1,024 shards.
const GROUP_SHARDS: u32 = 1000;
/// Bytes of one ownership record event: key plus JSON value.
const RECORD_EVENT_BYTES: usize =
    "/canopy/shards/group-00/0000".len() + r#"{"owner":"10.0.0.100:17912","epoch":12,"released":false}"#.len();
/// Bytes of one node record event (registration, or the leaving flag).
const NODE_EVENT_BYTES: usize = 260;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

fn node(i: usize) -> String {
    format!("10.0.{}.{}:17912", i / 256, i % 256)
}

fn moved(a: &Placement, b: &Placement) -> usize {
    a.iter().filter(|(k, o)| b.get(*k) != Some(*o)).count()
}

/// max / avg shards per ingester.
fn balance(p: &Placement, ingesters: usize) -> f64 {
    let mut per: BTreeMap<&String, usize> = BTreeMap::new();
    p.values().for_each(|o| *per.entry(o).or_default() += 1);
    let max = per.values().copied().max().unwrap_or(0);
    max as f64 / (p.len() as f64 / ingesters as f64)
}

struct Cost {
    moved: usize,
    membership_writes: usize,
}

impl Cost {
    fn print(&self, what: &str, steps: &str, shards: usize, fair: f64, watchers: usize, balance: f64) {
        let writes = 2 * self.moved + self.membership_writes;
        let bytes = 2 * self.moved * RECORD_EVENT_BYTES + self.membership_writes * NODE_EVENT_BYTES;
        println!(
            "{what}: moved {} of {shards} ({:.2}%){steps}; fair share {fair:.0} ({:.2}x); balance max/avg {balance:.3}; \
             etcd: {writes} keys written, {} watch events, {} KiB fanned out",
            self.moved,
            100.0 * self.moved as f64 / shards as f64,
            self.moved as f64 / fair,
            writes * watchers,
            bytes * watchers / 1024,
        );
    }
}

fn main() {
    let n = arg("--ingesters", 100);
    let s = arg("--shards", 10_000);
    let watchers = arg("--watchers", n + 40);
    assert!(n >= 2 && s >= 1, "--ingesters >= 2 and --shards >= 1");
    let mut groups: BTreeMap<String, u32> = BTreeMap::new();
    let mut left = s as u32;
    while left > 0 {
        let take = left.min(GROUP_SHARDS);
        groups.insert(format!("group-{:02}", groups.len()), take);
        left -= take;
    }
    let nodes: Vec<String> = (0..n).map(node).collect();
    let start = assign(&groups, &nodes, &BTreeMap::new());
    println!("{n} ingesters, {s} shards in {} groups; start: balance max/avg {:.3}", groups.len(), balance(&start, n));

    // Join: one more ingester.
    let mut more = nodes.clone();
    more.push(node(n));
    let joined = assign(&groups, &more, &start);
    Cost { moved: moved(&start, &joined), membership_writes: 1 }.print(
        "join",
        "",
        s,
        s as f64 / (n + 1) as f64,
        watchers,
        balance(&joined, n + 1),
    );

    // Leave: one ingester drains (its record is marked leaving, then removed).
    let leaver = &nodes[n / 2];
    let fewer: Vec<String> = nodes.iter().filter(|x| *x != leaver).cloned().collect();
    let left_p = assign(&groups, &fewer, &start);
    let fair = start.values().filter(|o| *o == leaver).count() as f64;
    Cost { moved: moved(&start, &left_p), membership_writes: 2 }.print("leave", "", s, fair, watchers, balance(&left_p, n - 1));

    // Rolling restart: each ingester in turn drains, exits and comes back.
    let mut now = start.clone();
    let mut total = 0;
    let mut worst: f64 = 0.0;
    for i in 0..n {
        let without: Vec<String> = nodes.iter().filter(|x| **x != nodes[i]).cloned().collect();
        let drained = assign(&groups, &without, &now);
        let back = assign(&groups, &nodes, &drained);
        total += moved(&now, &drained) + moved(&drained, &back);
        worst = worst.max(balance(&back, n));
        now = back;
    }
    Cost { moved: total, membership_writes: 3 * n }.print(
        "rolling restart",
        &format!(" over {n} steps"),
        s,
        2.0 * s as f64,
        watchers,
        worst,
    );
}
