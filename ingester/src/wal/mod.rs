//! The write-ahead log of one shard: numbered records in segment files on
//! local disk, each fsync'd before the writes it holds are acknowledged.
//!
//! Segment file `{first_seq:020}.wal`: the 8-byte magic `CNPYWAL1`, then
//! records `[len u32 LE][crc32 u32 LE][seq u64 LE][payload]` where `len`
//! counts seq + payload and the CRC covers the same bytes. On recovery a
//! record that is cut short or fails its CRC at the end of the newest
//! segment is a torn tail from a crash and is truncated away; the same in an
//! older segment is corruption and stops recovery.

mod batch;
mod log;

pub use batch::{BatchDecodeError, WalBatch, decode_batch, encode_batch, encode_batch_v1, is_unknown_format, split_to_fit};
pub use log::{PAYLOAD_BYTES_MAX, Recovered, Wal};
