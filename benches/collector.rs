//! The forward target of benches/e2e.py's mixed cases: counts octet-counted frames (RFC 6587)
//! on every connection it accepts, and when the last one came.
//!
//! It listens on 127.0.0.1 (port 0) and prints the port on its first line. Then, for each line
//! on stdin, `get` prints `FRAMES LAST_UNIX_S` (0 0 before any frame) and `reset` zeroes both.
//! It exits when stdin closes. The Python loop it replaces took about 0.3 CPU-seconds per
//! million frames on the cores the daemons share, and read more slowly than sluice sends: a
//! daemon's forward backlog then grew to its queue's limit, and its records went cold in the
//! cache before they were sent.
//!
//! ```sh
//! cargo build --release --example collector
//! ```

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Frames counted, and when the last came (microseconds since the epoch).
#[derive(Default)]
struct Counts {
    frames: AtomicU64,
    last_us: AtomicU64,
}

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let counts = Arc::new(Counts::default());
    let accepting = counts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let counts = accepting.clone();
            std::thread::spawn(move || read_frames(conn, &counts));
        }
    });
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "get" => {
                let frames = counts.frames.load(Ordering::SeqCst);
                let last = counts.last_us.load(Ordering::SeqCst) as f64 / 1e6;
                writeln!(out, "{frames} {last:.6}")?;
                out.flush()?;
            }
            "reset" => {
                counts.frames.store(0, Ordering::SeqCst);
                counts.last_us.store(0, Ordering::SeqCst);
                writeln!(out, "ok")?;
                out.flush()?;
            }
            other => eprintln!("collector: unknown command {other:?}"),
        }
    }
    Ok(())
}

/// Counts the frames of one connection until it closes; a frame counts once all of it came.
fn read_frames(mut conn: TcpStream, counts: &Counts) {
    let mut buf = vec![0u8; 1 << 20];
    // Bytes at the start of `buf` of a MSG-LEN not finished yet; bytes of the current frame's
    // MSG still to come (the frame is counted when they have).
    let (mut kept, mut skip) = (0usize, 0usize);
    loop {
        let n = match conn.read(&mut buf[kept..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let len = kept + n;
        let mut pos = 0;
        let mut frames = 0u64;
        if skip > 0 {
            pos = skip.min(len);
            skip -= pos;
            frames += u64::from(skip == 0);
        }
        while skip == 0 && pos < len {
            // MSG-LEN SP MSG
            let head = &buf[pos..len.min(pos + 12)];
            let Some(sp) = head.iter().position(|&b| b == b' ') else {
                if head.len() < 12 {
                    break;
                }
                eprintln!("collector: not an octet count; closing the connection");
                return;
            };
            let Some(msg_len) = std::str::from_utf8(&head[..sp])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            else {
                eprintln!("collector: not an octet count; closing the connection");
                return;
            };
            let end = pos + sp + 1 + msg_len;
            if end <= len {
                frames += 1;
                pos = end;
            } else {
                skip = end - len;
                pos = len;
            }
        }
        if frames > 0 {
            counts.frames.fetch_add(frames, Ordering::SeqCst);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            counts.last_us.store(now, Ordering::SeqCst);
        }
        // An unfinished MSG-LEN goes to the front for the next read.
        buf.copy_within(pos..len, 0);
        kept = len - pos;
    }
}
