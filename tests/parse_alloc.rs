//! Parsing allocates nothing for a message without structured data, and two allocations for one
//! with it however many elements it has (three when a value needs unescaping): a counting global
//! allocator around the parser. Counts are kept per thread, so what the test harness does on
//! other threads is not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chrono::{DateTime, Utc};
use sluice::parse::{ParseOptions, Zone, parse};

#[path = "../benches/mix.rs"]
mod mix;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches only a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while parsing `frame` with `opts` 100 times, per parse.
fn allocations(frame: &[u8], opts: &ParseOptions) -> usize {
    std::hint::black_box(parse(frame, opts));
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..100 {
        std::hint::black_box(parse(std::hint::black_box(frame), opts));
    }
    (ALLOCATIONS.with(Cell::get) - before) / 100
}

/// Frames without structured data: the benchmark's, and odd ones that take other paths.
fn frames_without_sd() -> Vec<&'static [u8]> {
    let odd: [&[u8]; 12] = [
        b"<13>hello",
        b"hello, no PRI",
        b"<999>invalid PRI",
        b"<13>1 - - - - - - all NIL",
        b"<13>1 2003-10-11T22:14:15.003Z h a p m - \xEF\xBB\xBFBOM then UTF-8",
        b"<13>1 2003-10-11T22:14:15.003Z h a p m - \xEF\xBB\xBF\xff not UTF-8",
        b"<13>1 2003-13-45T99:00:00Z h a - - - bad stamp",
        b"<34>Feb 30 22:14:15 host tag: impossible date",
        b"<13>Feb 29 14:07:19 host sshd: leap day",
        b"<38>Sep 22 10:11:56 Message forwarded from cdaix66: sshd[679960]: AIX",
        b"<13>Nov 22 10:00:00 host app: trailing newline\n",
        b"<13>Nov 22 10:00:00 host app: \xff\xfe not UTF-8",
    ];
    let mix = mix::MIX.iter().map(|m| m.as_bytes());
    mix.filter(|m| !m.windows(2).any(|w| w == b"\"]"))
        .chain(odd)
        .collect()
}

#[test]
fn no_allocation_without_structured_data() {
    let received_at: DateTime<Utc> = "2026-11-22T10:00:05Z".parse().unwrap_or_default();
    for zone in [
        Zone::Named(chrono_tz::UTC),
        Zone::Named(chrono_tz::Europe::Berlin),
    ] {
        let opts = ParseOptions::new(received_at, zone);
        for frame in frames_without_sd() {
            let shown = String::from_utf8_lossy(frame);
            assert_eq!(allocations(frame, &opts), 0, "{zone:?}: {shown}");
        }
    }
    // The host's zone, for stamps near the receive time (far ones ask chrono's `Local`, which
    // re-reads `TZ` once a second).
    let opts = ParseOptions::new(received_at, Zone::Local);
    assert_eq!(allocations(b"<13>Nov 22 10:00:00 host app: m", &opts), 0);
}

#[test]
fn structured_data_costs_two_allocations() {
    let opts = ParseOptions::new(Utc::now(), Zone::Named(chrono_tz::UTC));
    let sd: Vec<_> = mix::MIX.iter().filter(|m| m.contains("\"]")).collect();
    assert_eq!(sd.len(), 2);
    for frame in sd {
        assert_eq!(allocations(frame.as_bytes(), &opts), 2, "{frame}");
    }
    // An escaped value is stored unescaped, beside the frame's bytes.
    let escaped = br#"<13>1 - h a - - [a@1 x="\"q\"" y="2"][b@2 z="3"] escaped"#;
    assert_eq!(allocations(escaped, &opts), 3);
}
