//! Schema fixtures for tests across the workspace (feature `testsuite`).

use std::sync::Arc;

use canopy_api::v1::*;

use crate::schema::{GroupSpec, MeasureSchema};

/// A measure group with one-hour (or `segment_hours`) segments.
pub fn group(name: &str, shard_num: u32, segment_hours: u32, ttl_days: u32) -> Group {
    Group {
        metadata: Some(Metadata { name: name.into(), ..Default::default() }),
        catalog: Catalog::Measure as i32,
        resource_opts: Some(ResourceOpts {
            shard_num,
            segment_interval: Some(IntervalRule { unit: interval_rule::Unit::Hour as i32, num: segment_hours }),
            ttl: Some(IntervalRule { unit: interval_rule::Unit::Day as i32, num: ttl_days }),
        }),
        updated_at: None,
    }
}

/// A measure with one tag family `d`.
pub fn measure(group: &str, name: &str, tags: &[(&str, TagType)], fields: &[(&str, FieldType)], entity: &[&str]) -> Measure {
    Measure {
        metadata: Some(Metadata { group: group.into(), name: name.into(), mod_revision: 1 }),
        tag_families: vec![TagFamilySpec {
            name: "d".into(),
            tags: tags.iter().map(|(n, t)| TagSpec { name: n.to_string(), r#type: *t as i32 }).collect(),
        }],
        fields: fields.iter().map(|(n, t)| FieldSpec { name: n.to_string(), field_type: *t as i32 }).collect(),
        entity: Some(Entity { tag_names: entity.iter().map(|e| e.to_string()).collect() }),
        interval: String::new(),
        updated_at: None,
        tags_follow_entity: false,
    }
}

/// Compiles a group and measure fixture.
pub fn compile(group: &Group, measure: &Measure) -> MeasureSchema {
    MeasureSchema::compile(Arc::new(GroupSpec::compile(group).expect("valid group")), measure).expect("valid measure")
}

/// A seed for a randomized test, printed so a failure can be replayed:
/// `CANOPY_TEST_SEED=<seed>` replays that run, else the clock picks one.
pub fn seed() -> u64 {
    let seed = std::env::var("CANOPY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(crate::now_nanos() as u64 | 1);
    println!("seed {seed} (CANOPY_TEST_SEED={seed} replays this run)");
    seed
}

/// Deterministic inputs for decoder property tests: random bytes, and
/// damaged copies of valid encodings (flipped bits, truncations, spliced
/// garbage, length-like fields set to extremes), which reach deeper into a
/// decoder than noise does.
#[derive(Debug, Clone)]
pub struct Mutator(u64);

impl Mutator {
    /// A generator from a seed (the same seed, the same inputs).
    pub fn new(seed: u64) -> Mutator {
        Mutator(seed)
    }

    /// The next pseudo-random number (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// Up to `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A damaged copy of `valid`.
    pub fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut b = valid.to_vec();
        for _ in 0..1 + self.below(3) {
            let at = self.below(b.len());
            match self.below(7) {
                0 if !b.is_empty() => b[at] ^= 1 << self.below(8),
                1 if !b.is_empty() => b[at] = self.next_u64() as u8,
                2 => b.truncate(at),
                3 => {
                    let junk = self.bytes(16);
                    b.splice(at..at, junk);
                }
                4 if b.len() >= at + 4 => {
                    // A length or count field claiming far more than there is.
                    let extreme: [u32; 4] = [u32::MAX, i32::MAX as u32, 0x0100_0000, 0xffff];
                    b[at..at + 4].copy_from_slice(&extreme[self.below(4)].to_le_bytes());
                }
                5 if !b.is_empty() => {
                    // A varint that never ends.
                    let end = (at + 1 + self.below(12)).min(b.len());
                    b[at..end].iter_mut().for_each(|x| *x |= 0x80);
                }
                _ if !b.is_empty() => {
                    let from = self.below(b.len());
                    let len = self.below(b.len() - from + 1).min(64);
                    let piece = b[from..from + len].to_vec();
                    b.splice(at..at, piece);
                }
                _ => b.extend(self.bytes(8)),
            }
        }
        b
    }
}

/// A global allocator for test binaries that remembers the largest single
/// allocation made by the calling thread since [`LargestAlloc::reset`]:
/// decoder property tests install it (`#[global_allocator]`) to check that
/// hostile input cannot make a decoder reserve memory out of proportion to
/// the input. Other threads (other tests) are not counted.
#[derive(Debug)]
pub struct LargestAlloc;

thread_local! {
    static TRACKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts an allocation of `size` bytes if this thread is tracking. The
/// thread-locals are const-initialized without destructors: reading them
/// never allocates.
fn note(size: usize) {
    if TRACKING.try_with(std::cell::Cell::get).unwrap_or(false) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl std::alloc::GlobalAlloc for LargestAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

impl LargestAlloc {
    /// Starts counting this thread's allocations afresh.
    pub fn reset() {
        TRACKING.with(|t| t.set(true));
        LARGEST.with(|l| l.set(0));
    }

    /// The largest single allocation of this thread since the last reset.
    pub fn largest() -> usize {
        LARGEST.with(std::cell::Cell::get)
    }
}

/// Largest single allocation a decoder may make for an input of `len`
/// bytes: proportional to the input (a decoded value is larger than its
/// encoding, by a bounded factor), never to a count the input claims.
pub fn allocation_bound(len: usize) -> usize {
    256 * len + (1 << 20)
}

/// Runs `decode` over `cases` inputs — damaged copies of the `valid`
/// encodings and random bytes — checking that it never panics and never
/// makes one allocation beyond [`allocation_bound`]. The test binary must
/// install [`LargestAlloc`]; this checks that it did.
pub fn fuzz_decoder<T>(name: &str, valid: &[Vec<u8>], cases: usize, decode: impl Fn(&[u8]) -> T) {
    fuzz_decoder_within(name, valid, cases, |input| allocation_bound(input.len()), decode)
}

/// [`fuzz_decoder`] with another allocation bound per input: for decoders
/// told a count by their caller (a block's rows), whose output may rightly
/// be that large whatever the input.
pub fn fuzz_decoder_within<T>(name: &str, valid: &[Vec<u8>], cases: usize, bound: impl Fn(&[u8]) -> usize, decode: impl Fn(&[u8]) -> T) {
    assert!(!valid.is_empty(), "{name}: give at least one valid encoding to damage");
    LargestAlloc::reset();
    drop(decode(&valid[0]));
    assert!(LargestAlloc::largest() > 0 || valid[0].is_empty(), "{name}: the test binary does not install LargestAlloc");
    let mut m = Mutator::new(0x5eed ^ name.len() as u64);
    for case in 0..cases {
        let input = if case % 4 == 3 { m.bytes(256) } else { m.mutate(&valid[case % valid.len()]) };
        LargestAlloc::reset();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(decode(&input))));
        let head: String = input.iter().take(64).map(|b| format!("{b:02x}")).collect();
        assert!(outcome.is_ok(), "{name}: the decoder panicked on case {case} ({} bytes: {head}…)", input.len());
        let largest = LargestAlloc::largest();
        assert!(largest <= bound(&input), "{name}: case {case} ({} bytes: {head}…) made an allocation of {largest} bytes", input.len());
    }
}
