//! The backlog of a forward output: messages formatted for the wire, waiting for delivery, in
//! memory or on disk. It is the output's queue proper (its capacity and `when_full` policy
//! apply here); the channel in front of it only hands batches to the output thread.

pub mod disk;

use std::collections::VecDeque;
use std::io;

pub use disk::{DiskQueue, Recovery, SyncPolicy};

/// Messages waiting for delivery, oldest first.
#[derive(Debug)]
pub enum Backlog {
    /// Lost on stop after `shutdown_timeout` (and counted); bounded by the queue's limits.
    Memory {
        /// The records.
        records: VecDeque<Vec<u8>>,
        /// Their total size.
        bytes: u64,
    },
    /// Survives restarts and crashes (see [`disk`]).
    Disk(DiskQueue),
}

impl Backlog {
    /// An empty memory backlog.
    pub fn memory() -> Backlog {
        Backlog::Memory {
            records: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Records waiting.
    pub fn len(&self) -> u64 {
        match self {
            Backlog::Memory { records, .. } => records.len() as u64,
            Backlog::Disk(d) => d.len(),
        }
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        match self {
            Backlog::Memory { bytes, .. } => *bytes,
            Backlog::Disk(d) => d.bytes(),
        }
    }

    /// Appends records.
    pub fn push(&mut self, batch: Vec<Vec<u8>>) -> io::Result<()> {
        match self {
            Backlog::Memory { records, bytes } => {
                *bytes += batch.iter().map(|r| r.len() as u64).sum::<u64>();
                records.extend(batch);
                Ok(())
            }
            Backlog::Disk(d) => d.append(batch.iter().map(Vec::as_slice)),
        }
    }

    /// Up to `max` records from the head, not consumed: a memory backlog lends its own (a copy
    /// per record per attempt showed in profiles, issue 18), a disk backlog reads them into
    /// `read_buf`.
    pub fn peek<'a>(
        &'a mut self,
        max: usize,
        read_buf: &'a mut Vec<Vec<u8>>,
    ) -> io::Result<&'a [Vec<u8>]> {
        match self {
            Backlog::Memory { records, .. } => {
                let n = max.min(records.len());
                Ok(&records.make_contiguous()[..n])
            }
            Backlog::Disk(d) => {
                *read_buf = d.peek(max)?;
                Ok(read_buf)
            }
        }
    }

    /// Consumes `n` records from the head (delivered, or dropped as oldest).
    pub fn ack(&mut self, n: usize) -> io::Result<()> {
        match self {
            Backlog::Memory { records, bytes } => {
                for r in records.drain(..n.min(records.len())) {
                    *bytes -= r.len() as u64;
                }
                Ok(())
            }
            Backlog::Disk(d) => d.ack(n),
        }
    }

    /// Syncs a disk backlog when its interval has passed.
    pub fn maybe_sync(&mut self) -> io::Result<()> {
        match self {
            Backlog::Memory { .. } => Ok(()),
            Backlog::Disk(d) => d.maybe_sync(),
        }
    }

    /// Syncs a disk backlog now.
    pub fn sync_now(&mut self) -> io::Result<()> {
        match self {
            Backlog::Memory { .. } => Ok(()),
            Backlog::Disk(d) => d.sync_now(),
        }
    }
}
