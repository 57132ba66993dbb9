//! A syslog load generator for benchmarks (benches/e2e.py) and reliability tests.
//!
//! Every message carries `seq=` (a sequence number unique across connections, so a receiver's
//! output shows what was lost or repeated) and `t=` (microseconds since the epoch when it was
//! built, for latency). Both are fixed-width, so every message has the length `--size` asks for.
//!
//! ```sh
//! cargo run --release --example loadgen -- --proto tcp --format 5424 --count 1000000 127.0.0.1:5514
//! cargo run --release --example loadgen -- --proto udp --rate 200000 --duration 10 127.0.0.1:5514
//! cargo run --release --example loadgen -- --proto tls --ca ca.pem --server-name localhost 127.0.0.1:6514
//! ```
//!
//! It prints one JSON line: `sent` (messages built and handed to the socket), `acked` (for TCP
//! and TLS: messages whose last byte the kernel accepted; for UDP: datagrams `send` accepted),
//! `started_unix_s` (when sending began, after building the messages and connecting: the clock
//! of a receiver's wall time), `elapsed_s`, `rate` and, with `--latency-file`, percentiles of the delay between building a
//! message and its line appearing in that file. Sending stops at `--count` or `--duration`,
//! whichever comes first, so a run is always bounded.

use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};

mod mixed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Uniform,
    Mixed,
    Site,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// RFC 3164, LF-terminated on streams.
    #[value(name = "3164")]
    Rfc3164,
    /// RFC 5424, octet-counted on streams (RFC 6587).
    #[value(name = "5424")]
    Rfc5424,
}

#[derive(Debug, Parser)]
#[command(about = "syslog load generator: sequence-numbered messages over TCP, UDP or TLS")]
struct Args {
    /// Where to send.
    address: SocketAddr,
    #[arg(long, value_enum, default_value = "tcp")]
    proto: Proto,
    #[arg(long, value_enum, default_value = "3164")]
    format: Format,
    /// Connections (UDP: sockets), each on its own thread.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Total messages over all connections.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Stop after this many seconds even if `--count` is not reached.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Total messages per second over all connections; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bytes per message, without the framing (LF or octet count).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// TLS: CA certificate (PEM) the server's certificate must chain to.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// TLS: accept any server certificate (benchmarks only).
    #[arg(long)]
    insecure: bool,
    /// TLS: name to verify and send as SNI.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Open the connections, hold them idle this many seconds, then close (memory per
    /// connection); sends nothing.
    #[arg(long)]
    idle_secs: Option<f64>,
    /// Follow this file (the receiver's output) and report send-to-written latency.
    #[arg(long)]
    latency_file: Option<std::path::PathBuf>,
    /// Lines stamped in this many first seconds of sending are reported apart from the
    /// percentiles (as `warmup_max_us`): a new connection's receive window and buffers grow
    /// first, and the target is the delay at a steady rate. Like wrk2's calibration period.
    #[arg(long, default_value_t = 1.0)]
    latency_warmup_secs: f64,
    /// `uniform`: one template per connection (one host, program and PRI; `seq=` and `t=`).
    /// `mixed`: a collector's day, built before sending (see benches/mixed.rs); streams only,
    /// no rate limit; the summary adds `expected`, the lines each file of the e2e rule set
    /// must hold. `site`: the mixed workload with templates that repeat (each program's
    /// padding one of a few phrases, values drawn anew), as in a site's logs.
    #[arg(long, value_enum, default_value = "uniform")]
    workload: Workload,
    /// Seed of the mixed workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `cargo bench` passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Width of the `seq=` and `t=` fields.
const SEQ_DIGITS: usize = 10;
const STAMP_DIGITS: usize = 16;
/// Bytes handed to each stream write.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;
/// How far ahead of schedule a rate-limited sender builds messages.
const PACING_SLICE: Duration = Duration::from_millis(1);

/// One message's bytes with its variable fields' offsets, patched per message.
struct Template {
    format: Format,
    bytes: Vec<u8>,
    time_at: usize,
    seq_at: usize,
    stamp_at: usize,
    /// The header timestamp of the second in `time_secs`, as this format writes it.
    time_text: Vec<u8>,
    time_secs: u64,
}

/// `Mmm dd hh:mm:ss` (local time, day space-padded) and `yyyy-mm-ddThh:mm:ss.ffffffZ`: fixed
/// widths, so patching keeps the message length.
const TIME_3164: &str = "%b %e %H:%M:%S";
const TIME_5424: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

impl Template {
    fn new(format: Format, size: usize, conn: usize) -> Template {
        let pri = 8 + 6; // user.info
        let host = format!("host{:02}", conn % 100);
        let mut bytes = match format {
            Format::Rfc3164 => format!("<{pri}>"),
            Format::Rfc5424 => format!("<{pri}>1 "),
        }
        .into_bytes();
        let time_at = bytes.len();
        let time_len = match format {
            Format::Rfc3164 => 15,
            Format::Rfc5424 => 27,
        };
        bytes.resize(time_at + time_len, b'0');
        let rest = match format {
            Format::Rfc3164 => format!(" {host} loadgen[{conn}]: "),
            Format::Rfc5424 => format!(" {host} loadgen {conn} ID1 - "),
        };
        bytes.extend_from_slice(rest.as_bytes());
        bytes.extend_from_slice(b"seq=");
        let seq_at = bytes.len();
        bytes.extend_from_slice(&[b'0'; SEQ_DIGITS]);
        bytes.extend_from_slice(b" t=");
        let stamp_at = bytes.len();
        bytes.extend_from_slice(&[b'0'; STAMP_DIGITS]);
        bytes.push(b' ');
        while bytes.len() < size {
            bytes.push(b'x');
        }
        Template {
            format,
            bytes,
            time_at,
            seq_at,
            stamp_at,
            time_text: Vec::new(),
            time_secs: u64::MAX,
        }
    }

    /// Puts the current time into the header, as a real sender does (a stamp far from the
    /// receive time would make receivers take their slow path for every message).
    fn set_time(&mut self, micros: u64) {
        let secs = micros / 1_000_000;
        if secs != self.time_secs {
            let t = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap_or_default();
            self.time_text = match self.format {
                Format::Rfc3164 => t
                    .with_timezone(&chrono::Local)
                    .format(TIME_3164)
                    .to_string(),
                Format::Rfc5424 => t.format(TIME_5424).to_string(),
            }
            .into_bytes();
            self.time_secs = secs;
        }
        let field = &mut self.bytes[self.time_at..];
        if self.time_text.len() <= field.len() {
            field[..self.time_text.len()].copy_from_slice(&self.time_text);
        }
    }

    /// Appends message `seq` stamped `micros`, framed for `framing`.
    fn append(&self, seq: u64, micros: u64, framing: Option<Format>, out: &mut Vec<u8>) {
        if framing == Some(Format::Rfc5424) {
            out.extend_from_slice(self.bytes.len().to_string().as_bytes());
            out.push(b' ');
        }
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        put_digits(&mut out[start + self.seq_at..][..SEQ_DIGITS], seq);
        put_digits(&mut out[start + self.stamp_at..][..STAMP_DIGITS], micros);
        if framing == Some(Format::Rfc3164) {
            out.push(b'\n');
        }
    }
}

fn put_digits(field: &mut [u8], mut n: u64) {
    for b in field.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A stream to write to: plain TCP or TLS over it.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(b),
            Stream::Tls(s) => s.write_all(b),
        }
    }

    /// Closes the sending side and waits (up to [`CLOSE_WAIT`]) for the receiver to close its
    /// own. Closing with unread bytes in our receive buffer (a TLS 1.3 session ticket) would
    /// send a reset, and a reset makes the receiver's kernel discard what it had not yet read.
    fn finish(self) {
        let mut sock = match self {
            Stream::Tcp(s) => s,
            Stream::Tls(mut s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                while s.conn.wants_write() {
                    if s.conn.write_tls(&mut s.sock).is_err() {
                        break;
                    }
                }
                s.sock
            }
        };
        let _ = sock.shutdown(std::net::Shutdown::Write);
        let _ = sock.set_read_timeout(Some(CLOSE_WAIT));
        let mut sink = [0u8; 4096];
        while matches!(sock.read(&mut sink), Ok(n) if n > 0) {}
    }
}

/// How long a finished connection waits for the receiver to close it.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Accepts any certificate: `--insecure`, for benchmarks against a self-signed listener.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(args: &Args) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    if args.insecure {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        return Ok(Arc::new(config));
    }
    let settings = sluice::tls::ClientSettings {
        ca_file: Some(
            args.ca
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--proto tls needs --ca or --insecure"))?,
        ),
        fingerprints: Vec::new(),
        server_name: args.server_name.clone(),
        cert_file: None,
        key_file: None,
    };
    sluice::tls::client_config(&settings).map_err(|e| anyhow::anyhow!(e))
}

fn connect(args: &Args, tls: &Option<Arc<rustls::ClientConfig>>) -> anyhow::Result<Stream> {
    let tcp = TcpStream::connect(args.address)?;
    tcp.set_nodelay(true)?;
    Ok(match tls {
        None => Stream::Tcp(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(args.server_name.clone())?;
            let conn = rustls::ClientConnection::new(config.clone(), name)?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            Stream::Tls(Box::new(s))
        }
    })
}

/// Counters shared by the sending threads.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
}

/// What one sending thread does: its share of the count and the rate.
struct Share {
    conn: usize,
    first_seq: u64,
    count: u64,
    rate: f64,
}

fn send_stream(
    args: &Args,
    mut stream: Stream,
    share: Share,
    deadline: Instant,
    totals: &Totals,
) -> anyhow::Result<()> {
    let mut template = Template::new(args.format, args.size, share.conn);
    let mut buf = Vec::with_capacity(WRITE_CHUNK_BYTES + args.size + 16);
    let start = Instant::now();
    let mut done = 0u64;
    while done < share.count && Instant::now() < deadline {
        let allowed = if share.rate > 0.0 {
            let due = ((start.elapsed() + PACING_SLICE).as_secs_f64() * share.rate) as u64;
            if due <= done {
                std::thread::sleep(PACING_SLICE);
                continue;
            }
            due.min(share.count)
        } else {
            share.count
        };
        let micros = now_micros();
        template.set_time(micros);
        let mut in_buf = 0u64;
        while done + in_buf < allowed && buf.len() < WRITE_CHUNK_BYTES {
            template.append(
                share.first_seq + done + in_buf,
                micros,
                Some(args.format),
                &mut buf,
            );
            in_buf += 1;
        }
        totals.sent.fetch_add(in_buf, Ordering::Relaxed);
        if let Err(e) = stream.write_all(&buf) {
            totals.errors.fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
        totals.acked.fetch_add(in_buf, Ordering::Relaxed);
        done += in_buf;
        buf.clear();
    }
    stream.finish();
    Ok(())
}

/// Sends the mixed workload: one thread per connection writes its pre-built messages in
/// [`WRITE_CHUNK_BYTES`] pieces, cut at message boundaries only by the receiver's framing.
fn send_mixed(
    args: &Args,
    tls: &Option<Arc<rustls::ClientConfig>>,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        args.proto != Proto::Udp,
        "--workload mixed and site send over streams only"
    );
    let templates = match args.workload {
        Workload::Site => mixed::Templates::Repeating,
        Workload::Mixed | Workload::Uniform => mixed::Templates::Fresh,
    };
    let syntax = match args.format {
        Format::Rfc3164 => mixed::Syntax::Rfc3164,
        Format::Rfc5424 => mixed::Syntax::Rfc5424,
    };
    let work = mixed::build(
        syntax,
        templates,
        args.count,
        connections,
        args.seed,
        chrono::Utc::now(),
    );
    let mut streams = Vec::new();
    for _ in 0..connections {
        streams.push(connect(args, tls)?);
    }
    let start = Instant::now();
    let started_unix_s = now_micros() as f64 / 1e6;
    let threads: Vec<_> = streams
        .into_iter()
        .zip(work.per_conn)
        .map(|(mut stream, bytes)| {
            std::thread::spawn(move || -> std::io::Result<()> {
                for chunk in bytes.chunks(WRITE_CHUNK_BYTES) {
                    stream.write_all(chunk)?;
                }
                stream.finish();
                Ok(())
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("sender thread panicked".into()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent: u64 = work.counts.iter().sum();
    anyhow::ensure!(failures.is_empty(), "sending failed: {failures:?}");
    Ok(serde_json::json!({
        "proto": format!("{:?}", args.proto).to_lowercase(),
        "workload": format!("{:?}", args.workload).to_lowercase(),
        "connections": connections,
        "sent": sent,
        "acked": sent,
        "started_unix_s": started_unix_s,
        "elapsed_s": elapsed,
        "rate": sent as f64 / elapsed.max(1e-9),
        "expected": work.expected,
    }))
}

fn send_udp(args: &Args, share: Share, deadline: Instant, totals: &Totals) -> anyhow::Result<()> {
    let local: SocketAddr = if args.address.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(args.address)?;
    let mut template = Template::new(args.format, args.size, share.conn);
    let mut buf = Vec::with_capacity((args.size + 16) * DATAGRAMS_PER_SEND);
    let start = Instant::now();
    let mut done = 0u64;
    while done < share.count && Instant::now() < deadline {
        let allowed = if share.rate > 0.0 {
            let due = ((start.elapsed() + PACING_SLICE).as_secs_f64() * share.rate) as u64;
            if due <= done {
                std::thread::sleep(PACING_SLICE);
                continue;
            }
            due.min(share.count)
        } else {
            (done + 1024).min(share.count)
        };
        let micros = now_micros();
        template.set_time(micros);
        while done < allowed {
            let n = (allowed - done).min(DATAGRAMS_PER_SEND as u64);
            buf.clear();
            for i in 0..n {
                template.append(share.first_seq + done + i, micros, None, &mut buf);
            }
            totals.sent.fetch_add(n, Ordering::Relaxed);
            // ECONNREFUSED from an earlier ICMP, or a full send buffer: counted, not fatal.
            match send_datagrams(&socket, &buf, n as usize) {
                Ok(k) => {
                    totals.acked.fetch_add(k as u64, Ordering::Relaxed);
                    totals.errors.fetch_add(n - k as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    totals.errors.fetch_add(n, Ordering::Relaxed);
                }
            }
            done += n;
        }
    }
    Ok(())
}

/// Datagrams per sendmmsg(2): one system call per datagram capped a sending thread near the
/// rates the receivers take.
const DATAGRAMS_PER_SEND: usize = 64;

/// Sends `buf`, `n` datagrams of equal length back to back, with sendmmsg on a connected
/// socket; returns how many the kernel took.
fn send_datagrams(socket: &UdpSocket, buf: &[u8], n: usize) -> std::io::Result<usize> {
    use std::os::unix::io::AsRawFd;
    let n = n.min(DATAGRAMS_PER_SEND);
    let len = buf.len() / n.max(1);
    // SAFETY: plain C structs for which all-zero bytes are a valid value.
    let mut iovs: [libc::iovec; DATAGRAMS_PER_SEND] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; DATAGRAMS_PER_SEND] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: buf[i * len..].as_ptr() as *mut libc::c_void,
            iov_len: len,
        };
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < n {
        // SAFETY: the headers point into `buf` and `iovs`, alive for the call; the kernel only
        // reads the buffers.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                hdrs[sent..].as_mut_ptr(),
                (n - sent) as libc::c_uint,
                0,
            )
        };
        if rc <= 0 {
            return if sent > 0 {
                Ok(sent)
            } else {
                Err(std::io::Error::last_os_error())
            };
        }
        sent += rc as usize;
    }
    Ok(sent)
}

/// Latency samples in microseconds, one per line carrying `t=`.
struct Latency {
    samples_us: Vec<u64>,
    /// The largest delay among lines stamped during the warm-up.
    warmup_max_us: u64,
    /// The largest delay seen in each `LATENCY_WINDOW` from the first line: shows whether a
    /// tail is a steady backlog or a few stalls.
    window_max_us: Vec<u64>,
}

const LATENCY_WINDOW: Duration = Duration::from_millis(250);

/// Follows `path` from its current end until `stop` is set and nothing more arrived for a
/// second, recording for each line with a `t=` stamp how long ago that stamp was. Polls every
/// `TAIL_POLL`, so that much is added to the measured delay at worst.
fn tail(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    max_lines: u64,
    warmup_until_us: u64,
) -> Latency {
    const TAIL_POLL: Duration = Duration::from_micros(200);
    const QUIET_POLLS_AFTER_STOP: u32 = 5000;
    let mut samples_us = Vec::new();
    let mut window_max_us: Vec<u64> = Vec::new();
    let mut warmup_max_us = 0;
    let mut warmup_lines = 0u64;
    let mut first_line_at = None;
    let wait_until = Instant::now() + Duration::from_secs(30);
    let file = loop {
        // Non-blocking, so that a named pipe whose writer has nothing more (or has not opened
        // it yet) reads as empty instead of blocking past `stop`.
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => break Some(f),
            Err(_) if Instant::now() < wait_until && !stop.load(Ordering::Relaxed) => {
                std::thread::sleep(TAIL_POLL)
            }
            Err(_) => break None,
        }
    };
    let Some(mut file) = file else {
        return Latency {
            samples_us,
            warmup_max_us,
            window_max_us,
        };
    };
    let _ = file.seek(std::io::SeekFrom::End(0));
    // A named pipe as the output keeps the page cache out of the measure; a larger pipe means
    // fewer wake-ups of the writer.
    use std::os::unix::fs::FileTypeExt;
    if file.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: fcntl on a descriptor this function owns; failure only leaves the default.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    }
    let mut chunk = vec![0u8; 1 << 20];
    // Bytes after the last complete line: its rest comes with a later read.
    let mut pending = Vec::new();
    let mut quiet = 0;
    while samples_us.len() as u64 + warmup_lines < max_lines {
        // EAGAIN from an empty pipe counts as nothing new, like the end of a file.
        let n = file.read(&mut chunk).unwrap_or_default();
        if n == 0 {
            if stop.load(Ordering::Relaxed) {
                quiet += 1;
                if quiet > QUIET_POLLS_AFTER_STOP {
                    break;
                }
            }
            std::thread::sleep(TAIL_POLL);
            continue;
        }
        quiet = 0;
        let now = now_micros();
        let window = (first_line_at
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_micros()
            / LATENCY_WINDOW.as_micros()) as usize;
        if window_max_us.len() <= window {
            window_max_us.resize(window + 1, 0);
        }
        pending.extend_from_slice(&chunk[..n]);
        let Some(end) = memchr::memrchr(b'\n', &pending) else {
            continue;
        };
        for i in memchr::memmem::find_iter(&pending[..end], b" t=") {
            let stamp = pending[i + 3..]
                .iter()
                .take(STAMP_DIGITS)
                .take_while(|b| b.is_ascii_digit())
                .fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
            let delay_us = now.saturating_sub(stamp);
            window_max_us[window] = window_max_us[window].max(delay_us);
            if stamp < warmup_until_us {
                warmup_max_us = warmup_max_us.max(delay_us);
                warmup_lines += 1;
            } else {
                samples_us.push(delay_us);
            }
        }
        pending.drain(..=end);
    }
    Latency {
        samples_us,
        warmup_max_us,
        window_max_us,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn hold_idle(args: &Args, secs: f64) -> anyhow::Result<serde_json::Value> {
    let tls = match args.proto {
        Proto::Tls => Some(tls_config(args)?),
        _ => None,
    };
    let mut conns = Vec::with_capacity(args.connections);
    let mut failed = 0u64;
    for _ in 0..args.connections {
        match connect(args, &tls) {
            Ok(s) => conns.push(s),
            Err(_) => failed += 1,
        }
    }
    println!(
        "{}",
        serde_json::json!({"event": "connected", "connections": conns.len(), "failed": failed})
    );
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let held = conns.len();
    for c in conns {
        c.finish();
    }
    Ok(
        serde_json::json!({"proto": format!("{:?}", args.proto).to_lowercase(),
        "connections": held, "failed": failed, "idle_s": secs}),
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(secs) = args.idle_secs {
        println!("{}", hold_idle(&args, secs)?);
        return Ok(());
    }
    let tls = match args.proto {
        Proto::Tls => Some(tls_config(&args)?),
        _ => None,
    };
    let connections = args.connections.max(1);
    if args.workload != Workload::Uniform {
        println!("{}", send_mixed(&args, &tls, connections)?);
        return Ok(());
    }
    let totals = Arc::new(Totals::default());
    let stop_tail = Arc::new(AtomicBool::new(false));
    let tailer = args.latency_file.clone().map(|p| {
        let stop = stop_tail.clone();
        let max = args.count;
        let warmup_until_us = now_micros() + (args.latency_warmup_secs * 1e6) as u64;
        std::thread::spawn(move || tail(p, stop, max, warmup_until_us))
    });
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let args = Arc::new(args);
    // Streams are opened before the clock matters, so a handshake is not counted as sending.
    let mut streams = Vec::new();
    if args.proto != Proto::Udp {
        for _ in 0..connections {
            streams.push(Some(connect(&args, &tls)?));
        }
    }
    let start = Instant::now();
    let started_unix_s = now_micros() as f64 / 1e6;
    let mut threads = Vec::new();
    let per_conn = args.count / connections as u64;
    for conn in 0..connections {
        let count = if conn + 1 == connections {
            args.count - per_conn * (connections as u64 - 1)
        } else {
            per_conn
        };
        let share = Share {
            conn,
            first_seq: per_conn * conn as u64,
            count,
            rate: args.rate as f64 / connections as f64,
        };
        let (args, totals) = (args.clone(), totals.clone());
        let stream = streams.get_mut(conn).and_then(Option::take);
        threads.push(std::thread::spawn(move || match stream {
            Some(s) => send_stream(&args, s, share, deadline, &totals),
            None => send_udp(&args, share, deadline, &totals),
        }));
    }
    let mut failures = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("sender thread panicked".into()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop_tail.store(true, Ordering::Relaxed);
    let sent = totals.sent.load(Ordering::Relaxed);
    let acked = totals.acked.load(Ordering::Relaxed);
    let mut summary = serde_json::json!({
        "proto": format!("{:?}", args.proto).to_lowercase(),
        "format": if args.format == Format::Rfc3164 { "3164" } else { "5424" },
        "connections": connections,
        "sent": sent,
        "acked": acked,
        "errors": totals.errors.load(Ordering::Relaxed),
        "started_unix_s": started_unix_s,
        "elapsed_s": elapsed,
        "rate": acked as f64 / elapsed.max(1e-9),
    });
    if !failures.is_empty() {
        summary["failures"] = serde_json::json!(failures);
    }
    if let Some(t) = tailer {
        let mut lat = t
            .join()
            .map_err(|_| anyhow::anyhow!("tail thread panicked"))?;
        lat.samples_us.sort_unstable();
        let s = &lat.samples_us;
        summary["latency"] = serde_json::json!({
            "lines": s.len(),
            "p50_us": percentile(s, 0.50),
            "p99_us": percentile(s, 0.99),
            "max_us": s.last().copied().unwrap_or(0),
            "warmup_secs": args.latency_warmup_secs,
            "warmup_max_us": lat.warmup_max_us,
            "window_ms": LATENCY_WINDOW.as_millis() as u64,
            "window_max_us": lat.window_max_us,
        });
    }
    println!("{summary}");
    Ok(())
}
