//! Receipts: how a listener that acknowledges messages (RELP) learns that every output it
//! routed a batch to holds the batch safely.
//!
//! A listener that wants one makes a [`Receipt`] and its [`ReceiptWait`] per batch, and the
//! dispatcher sends a clone of the receipt with the batch to each output. Each output settles
//! its clone once the events are durable against a crash of the process, or once it has
//! decided not to keep them:
//!
//! - a file or stdout output after the batch was written out with write(2) (and, with
//!   `fsync = "every_batch"`, synced);
//! - a delivering output (forward, http, elasticsearch, loki, relp) once the records were
//!   appended to its backlog: a disk backlog by write(2) (synced too with `sync = "every_batch"`);
//!   a memory backlog holds them only in memory, which a kill -9 loses;
//! - an output that dropped the events under its drop policy (`drop_newest`, `drop_oldest`)
//!   settles as kept: the operator chose dropping over waiting, and the drop is counted
//!   (`dropped_queue_full`, `dropped_oldest`). Asking the sender to resend would not change that
//!   choice.
//!
//! An output that could not keep them (a write error, a queue closed at shutdown) fails its
//! clone, and so does a clone dropped without being settled. The wait resolves when the last
//! clone is gone: `true` if none failed. Listeners that ask for no receipt send `None` with their
//! batches and pay nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

struct Shared {
    failed: AtomicBool,
    done: Option<oneshot::Sender<bool>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(!self.failed.load(Ordering::Acquire));
        }
    }
}

/// One holder's share of a batch's receipt. Dropped without [`Receipt::keep`], it counts as
/// failed.
pub struct Receipt {
    shared: Arc<Shared>,
    settled: bool,
}

/// Resolves once every [`Receipt`] of a batch is settled or dropped.
pub struct ReceiptWait(oneshot::Receiver<bool>);

impl Receipt {
    /// A receipt and the wait for it.
    pub fn new() -> (Receipt, ReceiptWait) {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            done: Some(tx),
        });
        (
            Receipt {
                shared,
                settled: false,
            },
            ReceiptWait(rx),
        )
    }

    /// This holder has the events safely (or dropped them under its policy, counted).
    pub fn keep(mut self) {
        self.settled = true;
    }

    /// This holder could not keep the events.
    pub fn fail(mut self) {
        self.shared.failed.store(true, Ordering::Release);
        self.settled = true;
    }
}

impl Clone for Receipt {
    fn clone(&self) -> Receipt {
        Receipt {
            shared: self.shared.clone(),
            settled: false,
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.failed.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

impl ReceiptWait {
    /// Whether every holder kept the events.
    pub async fn wait(self) -> bool {
        self.0.await.unwrap_or(false)
    }
}

/// Settles a list of receipts at once.
pub(crate) fn keep_all(receipts: &mut Vec<Receipt>) {
    for r in receipts.drain(..) {
        r.keep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(w: ReceiptWait) -> Option<bool> {
        let mut rx = w.0;
        rx.try_recv().ok()
    }

    #[test]
    fn kept_by_every_holder() {
        let (r, w) = Receipt::new();
        let (a, b) = (r.clone(), r.clone());
        r.keep();
        a.keep();
        let mut rx = w;
        assert!(rx.0.try_recv().is_err(), "b still holds it");
        b.keep();
        assert_eq!(resolved(rx), Some(true));
    }

    #[test]
    fn one_failure_or_drop_fails_it() {
        let (r, w) = Receipt::new();
        let a = r.clone();
        r.keep();
        a.fail();
        assert_eq!(resolved(w), Some(false));
        let (r, w) = Receipt::new();
        drop(r);
        assert_eq!(resolved(w), Some(false));
    }
}
