//! Segment files, appends with fsync, rotation, truncation and recovery.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CNPYWAL1";
const HEADER: usize = 16; // len + crc + seq
/// Largest record (seq + payload); a bigger length on disk can only be
/// corruption, so appends refuse anything bigger than recovery accepts.
const RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Largest payload [`Wal::append`] accepts: a record is the sequence number
/// (8 bytes) plus the payload. Writers split batches to stay below it.
pub const PAYLOAD_BYTES_MAX: usize = RECORD_BYTES_MAX - 8;

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
    /// Highest sequence number in the segment; `first_seq - 1` when empty.
    last_seq: u64,
}

/// A shard's write-ahead log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    closed: Vec<Segment>,
    active: Segment,
    file: File,
    active_bytes: u64,
    next_seq: u64,
    segment_bytes_max: u64,
    /// Set after a failed write or fsync: the page cache can no longer be
    /// trusted, so nothing more is appended until a restart recovers.
    failed: Option<String>,
    /// Set when a failed append could not cut the file back to its last
    /// acknowledged record: the segment then ends in a partial record, which
    /// recovery accepts only at the end of the newest segment, so it must
    /// never be closed behind a new one.
    torn: bool,
    /// Truncation deleted the active segment and there was no room for a
    /// new one yet: the next append creates it (or is refused).
    needs_segment: bool,
    /// Test hook: the next write stores only this many bytes, then fails as
    /// a full disk does.
    #[cfg(test)]
    fail_write_after: Option<usize>,
}

/// What recovery found: the records to replay, in order.
#[derive(Debug)]
pub struct Recovered {
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes cut from a torn tail (0 after a clean shutdown).
    pub truncated_bytes: u64,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn corrupt(path: &Path, what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WAL {}: {what}", path.display()))
}

impl Wal {
    /// Opens the WAL in `dir`, recovering every record with a sequence
    /// number above `watermark` (those at or below are already in parts).
    /// New records are numbered after both the log and the watermark.
    pub fn open(dir: &Path, watermark: u64, segment_bytes_max: u64) -> io::Result<(Wal, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let mut firsts: Vec<u64> =
            std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".wal")?.parse().ok()).collect();
        // A file shorter than the magic was being created when the process
        // died (or the volume filled): it holds nothing, and must not count
        // as the newest segment.
        firsts.retain(|&first| {
            let path = segment_path(dir, first);
            let short = std::fs::metadata(&path).is_ok_and(|m| m.len() < MAGIC.len() as u64);
            if short {
                let _ = std::fs::remove_file(&path);
            }
            !short
        });
        firsts.sort_unstable();
        let mut records = Vec::new();
        let mut closed = Vec::new();
        let mut truncated_bytes = 0;
        let mut next_seq = watermark + 1;
        for (i, &first) in firsts.iter().enumerate() {
            let path = segment_path(dir, first);
            let newest = i + 1 == firsts.len();
            let (recs, good_len, file_len) = read_segment(&path)?;
            if good_len < file_len {
                if !newest {
                    return Err(corrupt(&path, format!("bad record at byte {good_len} of an older segment")));
                }
                tracing::warn!(path = %path.display(), good_len, file_len, "truncating torn WAL tail");
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(good_len)?;
                f.sync_all()?;
                truncated_bytes = file_len - good_len;
            }
            if recs.is_empty() {
                // Holds nothing (never written, or only a torn record): drop
                // it so its name is free for the new active segment.
                std::fs::remove_file(&path)?;
                continue;
            }
            let last = recs.last().map_or(first.saturating_sub(1), |(s, _)| *s);
            next_seq = next_seq.max(last + 1);
            records.extend(recs.into_iter().filter(|(s, _)| *s > watermark));
            closed.push(Segment { path, first_seq: first, last_seq: last });
        }
        let (active, file) = Self::create_segment(dir, next_seq)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            closed,
            active,
            file,
            active_bytes: MAGIC.len() as u64,
            next_seq,
            segment_bytes_max,
            failed: None,
            torn: false,
            needs_segment: false,
            #[cfg(test)]
            fail_write_after: None,
        };
        Ok((wal, Recovered { records, truncated_bytes }))
    }

    fn create_segment(dir: &Path, first_seq: u64) -> io::Result<(Segment, File)> {
        let path = segment_path(dir, first_seq);
        let created = (|| {
            let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
            file.write_all(MAGIC)?;
            file.sync_all()?;
            sync_dir(dir)?;
            Ok(file)
        })();
        match created {
            Ok(file) => Ok((Segment { path, first_seq, last_seq: first_seq - 1 }, file)),
            Err(e) => {
                // A half-made file (a full volume) must not sort after the
                // active segment: recovery takes only the newest one's torn tail.
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Appends payloads as consecutive records and fsyncs once for all of
    /// them (group commit). Returns the sequence number of each. A payload
    /// over [`PAYLOAD_BYTES_MAX`] is refused whole (nothing is written).
    pub fn append(&mut self, payloads: &[Vec<u8>]) -> io::Result<Vec<u64>> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(format!("WAL disabled after an earlier failure ({why}); restart to recover")));
        }
        if let Some(p) = payloads.iter().find(|p| p.len() > PAYLOAD_BYTES_MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("WAL record of {} bytes is over the limit of {PAYLOAD_BYTES_MAX}", p.len()),
            ));
        }
        // Refused whole if there is still no room for it (a full volume).
        self.open_segment_if_needed()?;
        if self.active_bytes >= self.segment_bytes_max {
            self.rotate()?;
        }
        let (good_len, next_seq) = (self.active_bytes, self.next_seq);
        let mut synced = false;
        let r = self.append_inner(payloads, &mut synced);
        if let Err(e) = &r {
            self.next_seq = next_seq;
            // Cut a partial record off so the segment ends on a record
            // boundary; if even that fails, the segment stays the newest.
            let cut =
                self.file.set_len(good_len).and_then(|()| self.file.seek(SeekFrom::Start(good_len))).and_then(|_| self.file.sync_all());
            if let Err(cut_err) = &cut {
                tracing::error!(path = %self.active.path.display(), error = %cut_err, "could not truncate a failed WAL append");
                self.torn = true;
            }
            // A full volume refused the write and the cut restored the last
            // acknowledged record: the log is whole and takes appends again
            // once a flush frees space. A failed fsync is another matter:
            // the page cache can no longer be trusted.
            if e.kind() != io::ErrorKind::StorageFull || synced || cut.is_err() {
                self.failed = Some(e.to_string());
            }
        }
        r
    }

    fn write_buf(&mut self, buf: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.fail_write_after.take() {
            self.file.write_all(&buf[..n.min(buf.len())])?;
            return Err(io::Error::new(io::ErrorKind::StorageFull, "injected: no space left on device"));
        }
        self.file.write_all(buf)
    }

    /// Writes the records and fsyncs; `synced` tells whether the fsync was
    /// reached (its failure is not a full volume's).
    fn append_inner(&mut self, payloads: &[Vec<u8>], synced: &mut bool) -> io::Result<Vec<u64>> {
        // Small records are gathered into one write; a large payload is
        // written from where it is, so a group commit of many megabytes
        // is not copied into a second buffer of the same size.
        const GATHER_BYTES_MAX: usize = 256 * 1024;
        let mut buf = Vec::with_capacity(GATHER_BYTES_MAX.min(payloads.iter().map(|p| p.len() + HEADER).sum()));
        let mut seqs = Vec::with_capacity(payloads.len());
        let mut written = 0;
        for p in payloads {
            let seq = self.next_seq;
            self.next_seq += 1;
            let len = (8 + p.len()) as u32;
            let mut h = crc32fast::Hasher::new();
            h.update(&seq.to_le_bytes());
            h.update(p);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&h.finalize().to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            if p.len() >= GATHER_BYTES_MAX {
                self.write_buf(&buf)?;
                self.write_buf(p)?;
                written += buf.len() + p.len();
                buf.clear();
            } else {
                buf.extend_from_slice(p);
                if buf.len() >= GATHER_BYTES_MAX {
                    self.write_buf(&buf)?;
                    written += buf.len();
                    buf.clear();
                }
            }
            seqs.push(seq);
        }
        self.write_buf(&buf)?;
        written += buf.len();
        *synced = true;
        self.file.sync_data()?;
        self.active_bytes += written as u64;
        if let Some(&last) = seqs.last() {
            self.active.last_seq = last;
        }
        Ok(seqs)
    }

    /// Closes the active segment and starts a new one, so the closed one can
    /// be deleted once a flush covers it. A no-op on an empty segment.
    /// Refused when a failed append left a partial record that could not
    /// be cut off: recovery tolerates one only at the very end of the log.
    pub fn rotate(&mut self) -> io::Result<()> {
        if self.active.last_seq < self.active.first_seq {
            return Ok(());
        }
        if self.torn {
            return Err(io::Error::other(format!(
                "WAL segment {} ends in a partial record after a failed append; restart to recover",
                self.active.path.display()
            )));
        }
        let (seg, file) = Self::create_segment(&self.dir, self.next_seq)?;
        let old = std::mem::replace(&mut self.active, seg);
        self.file = file;
        self.active_bytes = MAGIC.len() as u64;
        self.closed.push(old);
        Ok(())
    }

    /// Deletes closed segments whose records are all at or below
    /// `watermark`, and replaces the active segment by an empty one if its
    /// records are too (a flush whose rotation failed on a full volume:
    /// deleting first is what frees the space for the new segment).
    pub fn truncate_through(&mut self, watermark: u64) -> io::Result<usize> {
        let mut removed = 0;
        while let Some(seg) = self.closed.first() {
            if seg.last_seq > watermark {
                break;
            }
            std::fs::remove_file(&seg.path)?;
            self.closed.remove(0);
            removed += 1;
        }
        let active_covered = self.active.last_seq >= self.active.first_seq && self.active.last_seq <= watermark;
        if active_covered && self.closed.is_empty() && !self.torn && self.failed.is_none() {
            // A deleted file's space is freed when its last handle closes:
            // hold the directory instead meanwhile. The state says "no
            // active file yet" before anything can fail, so an error below
            // leaves a log the next append repairs.
            let placeholder = File::open(&self.dir)?;
            let covered = std::mem::replace(
                &mut self.active,
                Segment { path: segment_path(&self.dir, self.next_seq), first_seq: self.next_seq, last_seq: self.next_seq - 1 },
            );
            self.file = placeholder;
            self.active_bytes = MAGIC.len() as u64;
            self.needs_segment = true;
            if let Err(e) = std::fs::remove_file(&covered.path).and_then(|()| sync_dir(&self.dir)) {
                // Still on disk: deleted by a later truncation.
                self.closed.push(covered);
                return Err(e);
            }
            // Created now if there is room, else by the next append.
            if let Err(e) = self.open_segment_if_needed() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "no room for a new WAL segment yet");
            }
            removed += 1;
        } else if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Creates the active segment's file if truncation left none.
    fn open_segment_if_needed(&mut self) -> io::Result<()> {
        if self.needs_segment {
            let (seg, file) = Self::create_segment(&self.dir, self.next_seq)?;
            self.active = seg;
            self.file = file;
            self.needs_segment = false;
        }
        Ok(())
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Number of segment files, active included.
    pub fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }
}

/// A segment as read: its valid records, the length of the valid prefix
/// and the file length.
type SegmentRead = (Vec<(u64, Vec<u8>)>, u64, u64);

fn read_segment(path: &Path) -> io::Result<SegmentRead> {
    let mut f = File::open(path)?;
    let file_len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    let mut data = Vec::with_capacity(file_len as usize);
    f.read_to_end(&mut data)?;
    if data.len() < MAGIC.len() {
        // A crash while creating the segment: nothing in it was acknowledged.
        return Ok((Vec::new(), 0, file_len));
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err(corrupt(path, "bad magic".into()));
    }
    let mut pos = MAGIC.len();
    let mut records = Vec::new();
    while pos + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4"));
        if !(8..=RECORD_BYTES_MAX).contains(&len) || pos + 8 + len > data.len() {
            break;
        }
        let body = &data[pos + 8..pos + 8 + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(body[..8].try_into().expect("8"));
        records.push((seq, body[8..].to_vec()));
        pos += 8 + len;
    }
    Ok((records, pos as u64, file_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(n: usize, tag: u8) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![tag; i + 1]).collect()
    }

    /// Recovery of a damaged segment — bits flipped, bytes cut or spliced,
    /// lengths set to extremes — opens (cutting a torn tail) or fails with
    /// an error naming the file; it never panics, and what it replays was
    /// written.
    #[test]
    fn recovery_of_damaged_segments_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        let written = payloads(12, 7);
        wal.append(&written[..6]).unwrap();
        wal.append(&written[6..]).unwrap();
        drop(wal);
        let segment = segment_path(dir.path(), 1);
        let valid = std::fs::read(&segment).unwrap();
        let mut m = canopy_model::testing::Mutator::new(7);
        for case in 0..400 {
            let damaged = m.mutate(&valid);
            let copy = tempfile::tempdir().unwrap();
            std::fs::write(segment_path(copy.path(), 1), &damaged).unwrap();
            let opened = std::panic::catch_unwind(|| Wal::open(copy.path(), 0, 1 << 20));
            let Ok(opened) = opened else { panic!("case {case}: recovery panicked") };
            if let Ok((_, rec)) = opened {
                for (seq, payload) in rec.records {
                    assert!(written.contains(&payload), "case {case}: replayed a record never written (seq {seq})");
                }
            }
        }
    }

    #[test]
    fn records_survive_reopen_and_seqs_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, rec) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        assert!(rec.records.is_empty());
        assert_eq!(wal.append(&payloads(3, 1)).unwrap(), vec![1, 2, 3]);
        drop(wal);
        let (mut wal, rec) = Wal::open(dir.path(), 1, 1 << 20).unwrap();
        assert_eq!(rec.records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(rec.records[1].1, vec![1, 1, 1]);
        assert_eq!(wal.append(&payloads(1, 2)).unwrap(), vec![4]);
    }

    #[test]
    fn a_torn_tail_is_truncated_and_later_appends_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        wal.append(&payloads(2, 7)).unwrap();
        let path = wal.active.path.clone();
        drop(wal);
        // Simulate a crash mid-write: half a record at the end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        let (mut wal, rec) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(rec.records.len(), 2);
        assert_eq!(rec.truncated_bytes, 7);
        wal.append(&payloads(1, 9)).unwrap();
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(rec.records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn a_flipped_bit_in_an_old_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        wal.append(&payloads(2, 7)).unwrap();
        let old = wal.active.path.clone();
        wal.rotate().unwrap();
        wal.append(&payloads(1, 8)).unwrap();
        drop(wal);
        let mut b = std::fs::read(&old).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&old, b).unwrap();
        let err = Wal::open(dir.path(), 0, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_full_volume_refuses_the_append_and_the_cut_log_takes_the_next() {
        // Disk full mid-append: the partial record is cut off, the batch
        // refused; once there is room the log goes on where it was, and a
        // restart finds exactly the acknowledged records.
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        wal.append(&payloads(2, 1)).unwrap();
        wal.fail_write_after = Some(HEADER + 3);
        let err = wal.append(&payloads(3, 2)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(wal.append(&[vec![3; 5]]).unwrap(), vec![3], "the refused batch's numbers are reused");
        wal.rotate().unwrap();
        drop(wal);
        let (mut wal, rec) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(rec.records, vec![(1, vec![1]), (2, vec![1, 1]), (3, vec![3; 5])]);
        assert_eq!(rec.truncated_bytes, 0, "the partial record was cut at the failure");
        assert_eq!(wal.append(&payloads(1, 4)).unwrap(), vec![4]);
    }

    #[test]
    fn a_covered_active_segment_is_replaced_by_an_empty_one() {
        // A flush whose rotation failed (full volume) still frees the space
        // once its watermark covers the active segment.
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        wal.append(&payloads(3, 1)).unwrap();
        assert_eq!(wal.truncate_through(2).unwrap(), 0, "record 3 is not covered");
        assert_eq!(wal.truncate_through(3).unwrap(), 1);
        assert_eq!(wal.segment_count(), 1);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "the old segment is gone");
        assert_eq!(wal.append(&payloads(1, 2)).unwrap(), vec![4]);
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), 3, 1 << 20).unwrap();
        assert_eq!(rec.records, vec![(4, vec![2])]);
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_without_failing_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        let err = wal.append(&[vec![0; PAYLOAD_BYTES_MAX + 1]]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(wal.append(&payloads(1, 1)).unwrap(), vec![1]);
    }

    #[test]
    fn truncation_removes_only_covered_closed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 0, 1 << 20).unwrap();
        wal.append(&payloads(2, 1)).unwrap(); // 1, 2
        wal.rotate().unwrap();
        wal.append(&payloads(2, 1)).unwrap(); // 3, 4
        wal.rotate().unwrap();
        wal.append(&payloads(1, 1)).unwrap(); // 5
        assert_eq!(wal.truncate_through(3).unwrap(), 1);
        assert_eq!(wal.segment_count(), 2);
        assert_eq!(wal.truncate_through(4).unwrap(), 1);
        drop(wal);
        let (_, rec) = Wal::open(dir.path(), 4, 1 << 20).unwrap();
        assert_eq!(rec.records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![5]);
    }
}
