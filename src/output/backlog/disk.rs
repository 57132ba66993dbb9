//! A segmented on-disk FIFO of records, owned by one output thread.
//!
//! Layout under the output's directory (`[daemon] state_dir/<output>/`):
//! - `NNNNNNNNNNNNNNNN.seg`: segments of records, appended in order; a new segment starts when
//!   the current one passes [`SEGMENT_BYTES`].
//! - `head`: the segment and offset of the first record not yet delivered (written with a
//!   rename, so it is always whole).
//!
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`. On open, every segment from the
//! head is scanned: a record whose length runs past the end of the file or whose checksum fails
//! ends the valid data of that segment (a torn write from a crash). Everything after it is moved
//! to `NNNN.seg.bad` (quarantined, kept for inspection, never replayed) and counted.
//!
//! Durability: appends are written at once (`write`), and `fsync`ed per [`SyncPolicy`]; the head
//! is advanced after delivery. After kill -9, records appended but not yet synced may be lost
//! (at most one sync interval), and records delivered but not yet acknowledged in `head` are
//! delivered again (duplicates, not loss).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Record header: length and CRC-32.
const HEADER_BYTES: u64 = 8;
/// Largest record accepted (a message is far smaller; this bounds a corrupt length).
const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;

/// When appended records are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// After every appended batch: nothing accepted is lost on power failure; slowest.
    EveryBatch,
    /// At most this long after an append.
    Interval(Duration),
}

/// What opening a queue found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting for delivery.
    pub records: u64,
    /// Bytes of corrupt or torn data moved to `.bad` files.
    pub quarantined_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    id: u64,
    /// Bytes of valid records in it.
    bytes: u64,
    /// Records in it (from offset 0).
    records: u64,
}

/// A disk-backed FIFO of byte records.
#[derive(Debug)]
pub struct DiskQueue {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// The segment being appended to (always the last in `segments`).
    writer: Option<File>,
    /// Read position: offset into the first segment, and how many of its records are behind it.
    head_offset: u64,
    head_records: u64,
    /// Records and bytes not yet delivered.
    len: u64,
    bytes: u64,
    sync: SyncPolicy,
    unsynced_since: Option<Instant>,
}

fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

fn seg_name(id: u64) -> String {
    format!("{id:016}.seg")
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir`, recovering what a previous run left.
    pub fn open(dir: &Path, sync: SyncPolicy) -> io::Result<(DiskQueue, Recovery)> {
        fs::create_dir_all(dir)?;
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let (head_id, head_offset) =
            read_head(dir).unwrap_or((ids.first().copied().unwrap_or(0), 0));
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut head_records = 0;
        for id in ids {
            let path = dir.join(seg_name(id));
            if id < head_id {
                // Fully delivered before the last stop.
                fs::remove_file(&path)?;
                continue;
            }
            let (bytes, records, records_before_head, bad) =
                scan(&path, if id == head_id { head_offset } else { 0 })?;
            if bad > 0 {
                quarantine(&path, bytes)?;
                recovery.quarantined_bytes += bad;
            }
            if id == head_id {
                head_records = records_before_head;
            }
            segments.push_back(Segment { id, bytes, records });
        }
        let (head_offset, head_records) = match segments.front() {
            Some(s) if s.id == head_id => (head_offset.min(s.bytes), head_records),
            _ => (0, 0),
        };
        let len = segments.iter().map(|s| s.records).sum::<u64>() - head_records;
        let bytes = segments.iter().map(|s| s.bytes).sum::<u64>() - head_offset;
        recovery.records = len;
        let q = DiskQueue {
            dir: dir.to_path_buf(),
            segments,
            writer: None,
            head_offset,
            head_records,
            len,
            bytes,
            sync,
            unsynced_since: None,
        };
        q.write_head()?;
        Ok((q, recovery))
    }

    /// Records waiting.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes waiting (headers included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends records in order.
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut count = 0u64;
        for r in records {
            let len = u32::try_from(r.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD_BYTES)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32(r).to_le_bytes());
            buf.extend_from_slice(r);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        // A new segment when there is none or the last is full; otherwise append to the last
        // (also after a restart, when no writer is open yet).
        let needs_new = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= SEGMENT_BYTES);
        if needs_new || self.writer.is_none() {
            self.open_writer(needs_new)?;
        }
        let Some(w) = self.writer.as_mut() else {
            return Err(io::Error::other("no segment open"));
        };
        w.write_all(&buf)?;
        if let Some(s) = self.segments.back_mut() {
            s.bytes += buf.len() as u64;
            s.records += count;
        }
        self.len += count;
        self.bytes += buf.len() as u64;
        match self.sync {
            SyncPolicy::EveryBatch => w.sync_data()?,
            SyncPolicy::Interval(_) => {
                self.unsynced_since.get_or_insert_with(Instant::now);
            }
        }
        Ok(())
    }

    /// Syncs appended data if the interval has passed (call periodically).
    pub fn maybe_sync(&mut self) -> io::Result<()> {
        if let (SyncPolicy::Interval(every), Some(since)) = (self.sync, self.unsynced_since)
            && since.elapsed() >= every
        {
            self.sync_now()?;
        }
        Ok(())
    }

    /// Syncs appended data and the head now.
    pub fn sync_now(&mut self) -> io::Result<()> {
        if let Some(w) = &self.writer {
            w.sync_data()?;
        }
        self.unsynced_since = None;
        Ok(())
    }

    fn open_writer(&mut self, new_segment: bool) -> io::Result<()> {
        if let Some(w) = self.writer.take() {
            w.sync_data()?;
        }
        if new_segment {
            let id = self.segments.back().map_or(0, |s| s.id + 1);
            self.segments.push_back(Segment {
                id,
                bytes: 0,
                records: 0,
            });
        }
        let Some(seg) = self.segments.back() else {
            return Err(io::Error::other("no segment"));
        };
        let path = self.dir.join(seg_name(seg.id));
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        if new_segment {
            // Make the new file's directory entry durable too.
            File::open(&self.dir)?.sync_all()?;
        }
        self.writer = Some(f);
        Ok(())
    }

    /// Reads up to `max` records from the head without consuming them.
    pub fn peek(&self, max: usize) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut offset = self.head_offset;
        for (i, seg) in self.segments.iter().enumerate() {
            if out.len() >= max {
                break;
            }
            let start = if i == 0 { offset } else { 0 };
            if start >= seg.bytes {
                continue;
            }
            let mut f = BufReader::new(File::open(self.dir.join(seg_name(seg.id)))?);
            f.seek(SeekFrom::Start(start))?;
            let mut pos = start;
            while pos < seg.bytes && out.len() < max {
                let mut header = [0u8; HEADER_BYTES as usize];
                f.read_exact(&mut header)?;
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                let mut payload = vec![0u8; len as usize];
                f.read_exact(&mut payload)?;
                pos += HEADER_BYTES + u64::from(len);
                out.push(payload);
            }
            offset = 0;
        }
        Ok(out)
    }

    /// Consumes `n` records from the head (after they were delivered) and records the new head.
    pub fn ack(&mut self, n: usize) -> io::Result<()> {
        let mut left = n as u64;
        while left > 0 {
            let Some(seg) = self.segments.front().copied() else {
                break;
            };
            let in_seg = seg.records - self.head_records;
            if left >= in_seg && !(self.segments.len() == 1 && self.writer.is_some()) {
                // The whole rest of this segment was delivered: drop it.
                left -= in_seg;
                self.len -= in_seg;
                self.bytes -= seg.bytes - self.head_offset;
                self.segments.pop_front();
                self.head_offset = 0;
                self.head_records = 0;
                fs::remove_file(self.dir.join(seg_name(seg.id)))?;
                continue;
            }
            // Advance within the segment, record by record.
            let take = left.min(in_seg);
            let mut f = BufReader::new(File::open(self.dir.join(seg_name(seg.id)))?);
            f.seek(SeekFrom::Start(self.head_offset))?;
            let mut advanced = 0;
            for _ in 0..take {
                let mut header = [0u8; 4];
                f.read_exact(&mut header)?;
                let len = u64::from(u32::from_le_bytes(header));
                f.seek(SeekFrom::Current(4 + len as i64))?;
                advanced += HEADER_BYTES + len;
            }
            self.head_offset += advanced;
            self.head_records += take;
            self.len -= take;
            self.bytes -= advanced;
            left -= take;
            if left > 0 {
                break;
            }
        }
        // An empty queue starts its next append in a fresh segment.
        if self.len == 0 && !self.segments.is_empty() {
            self.writer = None;
            for seg in self.segments.drain(..) {
                fs::remove_file(self.dir.join(seg_name(seg.id)))?;
            }
            self.head_offset = 0;
            self.head_records = 0;
        }
        self.write_head()
    }

    /// Drops the oldest `n` records without delivering them (`when_full = "drop_oldest"`).
    pub fn drop_oldest(&mut self, n: usize) -> io::Result<()> {
        self.ack(n)
    }

    fn write_head(&self) -> io::Result<()> {
        let (id, offset) = match self.segments.front() {
            Some(s) => (s.id, self.head_offset),
            None => (self.segments.back().map_or(0, |s| s.id), 0),
        };
        let tmp = self.dir.join("head.tmp");
        fs::write(&tmp, format!("{id} {offset}\n"))?;
        fs::rename(&tmp, self.dir.join("head"))
    }
}

fn read_head(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join("head")).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Scans a segment: returns (valid bytes, valid records, records before `head_offset`, bytes
/// after the last valid record).
fn scan(path: &Path, head_offset: u64) -> io::Result<(u64, u64, u64, u64)> {
    let total = fs::metadata(path)?.len();
    let mut f = BufReader::new(File::open(path)?);
    let (mut pos, mut records, mut before_head) = (0u64, 0u64, 0u64);
    loop {
        if pos == total {
            break;
        }
        let mut header = [0u8; HEADER_BYTES as usize];
        if total - pos < HEADER_BYTES || f.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_BYTES || total - pos - HEADER_BYTES < u64::from(len) {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        if f.read_exact(&mut payload).is_err() || crc32(&payload) != crc {
            break;
        }
        pos += HEADER_BYTES + u64::from(len);
        records += 1;
        if pos <= head_offset {
            before_head += 1;
        }
    }
    Ok((pos, records, before_head, total - pos))
}

/// Moves everything after `valid` bytes of a segment into `<segment>.bad`, then truncates it.
fn quarantine(path: &Path, valid: u64) -> io::Result<()> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    f.seek(SeekFrom::Start(valid))?;
    let mut rest = Vec::new();
    f.read_to_end(&mut rest)?;
    let mut bad_name = path.as_os_str().to_owned();
    bad_name.push(".bad");
    let mut bad = OpenOptions::new()
        .create(true)
        .append(true)
        .open(PathBuf::from(bad_name))?;
    bad.write_all(&rest)?;
    bad.sync_all()?;
    f.set_len(valid)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(q: &DiskQueue, n: usize) -> Vec<String> {
        q.peek(n)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect()
    }

    #[test]
    fn fifo_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, rec) = DiskQueue::open(dir.path(), SyncPolicy::EveryBatch).unwrap();
        assert_eq!(rec, Recovery::default());
        q.append(["a", "b", "c"].iter().map(|s| s.as_bytes()))
            .unwrap();
        assert_eq!(recs(&q, 2), vec!["a", "b"]);
        q.ack(1).unwrap();
        assert_eq!(q.len(), 2);
        drop(q);
        let (mut q, rec) = DiskQueue::open(dir.path(), SyncPolicy::EveryBatch).unwrap();
        assert_eq!(rec.records, 2);
        assert_eq!(recs(&q, 10), vec!["b", "c"]);
        q.append([b"d".as_slice()]).unwrap();
        q.ack(2).unwrap();
        assert_eq!(recs(&q, 10), vec!["d"]);
        q.ack(1).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn many_segments_stay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) =
            DiskQueue::open(dir.path(), SyncPolicy::Interval(Duration::from_secs(1))).unwrap();
        let big = vec![b'x'; 1 << 20];
        for i in 0..20u8 {
            let mut r = big.clone();
            r[0] = i;
            q.append([r.as_slice()]).unwrap();
        }
        assert!(q.segments.len() >= 2);
        for i in 0..20u8 {
            assert_eq!(q.peek(1).unwrap()[0][0], i);
            q.ack(1).unwrap();
        }
        assert!(q.is_empty());
    }

    #[test]
    fn torn_tail_is_quarantined_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = DiskQueue::open(dir.path(), SyncPolicy::EveryBatch).unwrap();
        q.append(["one", "two", "three"].iter().map(|s| s.as_bytes()))
            .unwrap();
        drop(q);
        let seg = dir.path().join(seg_name(0));
        // A torn last record: cut it in the middle.
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        let (q, rec) = DiskQueue::open(dir.path(), SyncPolicy::EveryBatch).unwrap();
        assert_eq!(rec.records, 2);
        assert_eq!(rec.quarantined_bytes, HEADER_BYTES + 5 - 2);
        assert_eq!(recs(&q, 10), vec!["one", "two"]);
        assert!(dir.path().join(format!("{}.bad", seg_name(0))).exists());
    }

    #[test]
    fn flipped_bytes_end_the_valid_data() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = DiskQueue::open(dir.path(), SyncPolicy::EveryBatch).unwrap();
        q.append(["one", "two", "three"].iter().map(|s| s.as_bytes()))
            .unwrap();
        drop(q);
        let seg = dir.path().join(seg_name(0));
        let mut data = fs::read(&seg).unwrap();
        let second_payload = (HEADER_BYTES + 3 + HEADER_BYTES) as usize;
        data[second_payload] ^= 0xff;
        fs::write(&seg, data).unwrap();
        let (q, rec) = DiskQueue::open(dir.path(), SyncPolicy::EveryBatch).unwrap();
        assert_eq!(recs(&q, 10), vec!["one"]);
        assert_eq!(rec.quarantined_bytes, 2 * HEADER_BYTES + 3 + 5);
    }

    /// T13 (reliability case, docs/TESTING.md; after Vector's disk_v2 model test): random appends,
    /// deliveries, drops, reopens and crashes that tear the newest segment's tail, checked
    /// against a plain in-memory FIFO after every step.
    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Append(Vec<Vec<u8>>),
            /// One record large enough to push the queue into its next segment.
            AppendBig(u8),
            Deliver(usize),
            DropOldest(usize),
            Reopen,
            /// Reopen after cutting this share (per mille) of the undelivered bytes off the
            /// newest segment, as a write torn by a crash leaves it.
            Crash(u16),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..20)
                    .prop_map(Op::Append),
                1 => any::<u8>().prop_map(Op::AppendBig),
                4 => (0usize..30).prop_map(Op::Deliver),
                1 => (0usize..10).prop_map(Op::DropOldest),
                2 => Just(Op::Reopen),
                2 => (0u16..=1000).prop_map(Op::Crash),
            ]
        }

        fn on_disk(r: &[u8]) -> u64 {
            HEADER_BYTES + r.len() as u64
        }

        fn newest_segment(dir: &Path) -> Option<PathBuf> {
            fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .max()
        }

        fn check(q: &DiskQueue, model: &VecDeque<Vec<u8>>) -> Result<(), TestCaseError> {
            prop_assert_eq!(q.len(), model.len() as u64);
            prop_assert_eq!(q.bytes(), model.iter().map(|r| on_disk(r)).sum::<u64>());
            let all = q.peek(usize::MAX).unwrap();
            prop_assert!(all.iter().eq(model.iter()), "queue and model differ");
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

            #[test]
            fn disk_queue_agrees_with_a_fifo(ops in prop::collection::vec(op(), 1..60)) {
                let dir = tempfile::tempdir().unwrap();
                let sync = SyncPolicy::Interval(Duration::from_secs(3600));
                let (mut q, _) = DiskQueue::open(dir.path(), sync).unwrap();
                let mut model: VecDeque<Vec<u8>> = VecDeque::new();
                for op in ops {
                    match op {
                        Op::Append(recs) => {
                            q.append(recs.iter().map(Vec::as_slice)).unwrap();
                            model.extend(recs);
                        }
                        Op::AppendBig(fill) => {
                            let big = vec![fill; (SEGMENT_BYTES / 2 + 1) as usize];
                            q.append([big.as_slice()]).unwrap();
                            model.push_back(big);
                        }
                        Op::Deliver(n) => {
                            let got = q.peek(n).unwrap();
                            prop_assert!(got.iter().eq(model.iter().take(n)));
                            q.ack(got.len()).unwrap();
                            model.drain(..got.len());
                        }
                        Op::DropOldest(n) => {
                            let n = n.min(model.len());
                            q.drop_oldest(n).unwrap();
                            model.drain(..n);
                        }
                        Op::Reopen => {
                            drop(q);
                            let (q2, rec) = DiskQueue::open(dir.path(), sync).unwrap();
                            prop_assert_eq!(rec.records, model.len() as u64);
                            prop_assert_eq!(rec.quarantined_bytes, 0);
                            q = q2;
                        }
                        Op::Crash(per_mille) => {
                            drop(q);
                            // Only undelivered records at the end of the newest segment can be
                            // torn: cap the cut at what they occupy there.
                            let seg_len = newest_segment(dir.path())
                                .map_or(0, |p| fs::metadata(p).unwrap().len());
                            let undelivered: u64 = model.iter().map(|r| on_disk(r)).sum();
                            let cut = undelivered.min(seg_len) * u64::from(per_mille) / 1000;
                            if cut > 0 {
                                let p = newest_segment(dir.path()).unwrap();
                                let f = OpenOptions::new().write(true).open(&p).unwrap();
                                f.set_len(seg_len - cut).unwrap();
                            }
                            // The records the cut reached are lost; the first of them leaves
                            // a torn remnant, which is quarantined.
                            let mut lost_bytes = 0;
                            while lost_bytes < cut {
                                lost_bytes += on_disk(&model.pop_back().unwrap());
                            }
                            let (q2, rec) = DiskQueue::open(dir.path(), sync).unwrap();
                            prop_assert_eq!(rec.records, model.len() as u64);
                            prop_assert_eq!(rec.quarantined_bytes, lost_bytes - cut);
                            q = q2;
                        }
                    }
                    check(&q, &model)?;
                }
            }
        }
    }
}
