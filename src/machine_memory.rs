//! How much memory this process may use: the machine's, or less when a
//! cgroup (a container, a systemd unit) limits it. Defaults that are a
//! fraction of memory start from here.

/// Bytes of memory available to this process, if the platform tells.
pub(crate) fn available_bytes() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| mem_total(&s));
    // cgroup v2, then v1; "max" or a huge v1 number means no limit.
    let limit = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok()));
    match (total, limit) {
        (Some(t), Some(l)) => Some(t.min(l)),
        (t, l) => t.or(l),
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A quarter of the available memory (2 GiB where it is unknown): the
/// default memory budget of an ingester, leaving the rest to the querier's
/// cache, the liaison and the page cache of its WAL.
pub(crate) fn default_ingest_budget() -> usize {
    available_bytes().map_or(2 << 30, |b| usize::try_from(b / 4).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total_in_kib() {
        let m = "MemTotal:       24567890 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(m), Some(24567890 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn this_machine_has_some_memory() {
        let b = available_bytes().expect("Linux tells");
        assert!(b > 64 << 20, "{b}");
        assert_eq!(default_ingest_budget() as u64, b / 4);
    }
}
