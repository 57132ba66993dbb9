//! T8 (reliability case, docs/TESTING.md): rotation under load with compression. 2M messages over TCP at full
//! speed into a file rotated every 4 MiB and gzipped, while 20 logrotate-style moves, each
//! followed by SIGHUP, happen during the flood. Every `.gz` passes `gzip -t`, and the
//! decompressed, concatenated files hold exactly the sequence sent: no line split, doubled or lost.

use std::sync::atomic::Ordering;

use crate::support::*;

const MESSAGES: usize = 2_000_000;
const MOVES: usize = 20;
/// Messages per `write` by the sender.
const CHUNK_MESSAGES: usize = 5_000;

#[test]
fn t8_rotation_under_load_with_sighup_loses_splits_and_doubles_nothing() {
    let (dir, mut p) = Proc::start_toml(
        r#"
[listen.tcp]
kind = "tcp"
address = "127.0.0.1:0"

[output.all]
kind = "file"
path = "{dir}/logs/all.log"
format = "raw"
rotate = { size = "4MiB", keep = 1000, compress = "gzip" }

[[route]]
to = ["all"]
"#,
        1,
    );
    let logs = dir.path().join("logs");

    let (sender, sent) = flood_tcp(p.addr("tcp"), MESSAGES, CHUNK_MESSAGES);

    // A move at each 1/21 of the flood, as logrotate's `create` + postrotate `kill -HUP` does.
    for k in 1..=MOVES {
        let at = MESSAGES * k / (MOVES + 1);
        wait_until(&format!("{at} messages sent"), DEADLINE * 8, || {
            sent.load(Ordering::Relaxed) >= at
        });
        // The daemon may still be reading what was sent before the last move (the socket
        // buffers hold tens of thousands of messages), so all.log may not be there again yet,
        // or a size rotation may have it away for a moment: each move waits for a live one.
        let (from, to) = (logs.join("all.log"), logs.join(format!("moved-{k:02}.log")));
        wait_until("all.log written again, and moved", DEADLINE * 8, || {
            std::fs::rename(&from, &to).is_ok()
        });
        p.signal(libc::SIGHUP);
    }
    sender.join().unwrap();
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(0));

    let mut seen = vec![false; MESSAGES];
    let mut gz = 0;
    let mut moved = 0;
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp"),
            "{name}: a temporary archive left behind"
        );
        let text = read_gunzipped(&path);
        if name.ends_with(".gz") {
            gz += 1;
            // Cut by size: a segment holds at most `size` plus the write that crossed it.
            assert!(
                text.len() <= 8 * 1024 * 1024,
                "{name}: {} bytes in a 4 MiB segment",
                text.len()
            );
            let st = std::process::Command::new("gzip")
                .arg("-t")
                .arg(&path)
                .status()
                .unwrap();
            assert!(st.success(), "gzip -t {name}");
        } else if name.starts_with("moved-") {
            moved += 1;
        }
        mark_msgnums(&name, &text, &mut seen);
    }
    assert_all_seen(&seen);
    assert_eq!(moved, MOVES, "every move was of a live file");
    // ~110 MB of lines: some of it rotated by size. How much depends on where the moves fell
    // (a move takes the live file whatever its size), so only that rotation happened is sure.
    assert!(gz >= 1, "no rotated segment");
}
