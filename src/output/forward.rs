//! The `forward` output: messages to another syslog receiver over UDP, TCP or TLS (RFC 5426,
//! 6587, 5425), octet-counted RFC 5424 by default.
//!
//! It runs on the output's own thread with blocking sockets, so a slow or absent collector
//! stalls only this output: its queue fills and its policy applies (`block` slows the senders
//! that feed it). A batch that could not be written is sent again after reconnecting, so a
//! collector may see duplicates but not gaps. The exception is plain TCP: bytes the kernel
//! accepted before the connection broke are gone without any error (RFC 6587 has no
//! acknowledgements). The disk queue and delivery policies of the relay issue build on this.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};
use tokio_util::sync::CancellationToken;

use crate::config::{ForwardProtocol, ForwardSettings};
use crate::event::Event;
use crate::metrics::{self, LogLimiter, OutputMetrics};
use crate::output::Sink;
use crate::output::format::Format;

/// Connect, handshake and write deadlines: a collector that stops answering is noticed.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Write out once this much is buffered, even mid-batch.
const SEND_THRESHOLD_BYTES: usize = 256 * 1024;

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// Owns the connection to one collector.
pub struct ForwardSink {
    name: Arc<str>,
    settings: ForwardSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    format: Format,
    conn: Option<Conn>,
    /// Framed messages not yet written (for UDP: one datagram per entry in `datagrams`).
    buf: Vec<u8>,
    datagrams: Vec<std::ops::Range<usize>>,
    buffered_events: u64,
    scratch: Vec<u8>,
    metrics: Arc<OutputMetrics>,
    /// Cancelled when `shutdown_timeout` has passed: stop retrying.
    give_up: CancellationToken,
    backoff: Duration,
    error_log: LogLimiter,
}

impl ForwardSink {
    /// A sink for one `[output.NAME]` of kind `forward`. TLS files are loaded here, so a bad
    /// file fails the start with its reason.
    pub fn new(
        name: Arc<str>,
        settings: ForwardSettings,
        format: Format,
        metrics: Arc<OutputMetrics>,
        give_up: CancellationToken,
    ) -> Result<ForwardSink, String> {
        let tls = match &settings.protocol {
            ForwardProtocol::Tls(c) => Some(crate::tls::client_config(c)?),
            _ => None,
        };
        Ok(ForwardSink {
            name,
            settings,
            tls,
            format,
            conn: None,
            buf: Vec::with_capacity(SEND_THRESHOLD_BYTES),
            datagrams: Vec::new(),
            buffered_events: 0,
            scratch: Vec::new(),
            metrics,
            give_up,
            backoff: BACKOFF_MIN,
            error_log: LogLimiter::new(Duration::from_secs(10)),
        })
    }

    fn connect(&self) -> Result<Conn, String> {
        let addrs: Vec<_> = self
            .settings
            .address
            .to_socket_addrs()
            .map_err(|e| format!("resolving {}: {e}", self.settings.address))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| format!("{} resolves to no address", self.settings.address))?;
        if let ForwardProtocol::Udp = self.settings.protocol {
            let local: std::net::SocketAddr = if addr.is_ipv6() {
                "[::]:0".parse().map_err(|e| format!("{e}"))?
            } else {
                "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?
            };
            let s = UdpSocket::bind(local).map_err(|e| e.to_string())?;
            s.connect(addr).map_err(|e| format!("{addr}: {e}"))?;
            return Ok(Conn::Udp(s));
        }
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        match (&self.settings.protocol, &self.tls) {
            (ForwardProtocol::Tls(c), Some(config)) => {
                let server_name = crate::tls::server_name(&c.server_name)?;
                let conn = ClientConnection::new(config.clone(), server_name)
                    .map_err(|e| e.to_string())?;
                let mut stream = StreamOwned::new(conn, tcp);
                // Finish the handshake now, within the read/write timeouts, so a collector that
                // never answers it is noticed here (hostile-inputs C01, client role).
                while stream.conn.is_handshaking() {
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                }
                Ok(Conn::Tls(Box::new(stream)))
            }
            _ => Ok(Conn::Tcp(tcp)),
        }
    }

    fn send(&mut self, conn: &mut Conn) -> std::io::Result<()> {
        match conn {
            Conn::Udp(s) => {
                for r in &self.datagrams {
                    s.send(&self.buf[r.clone()])?;
                }
                Ok(())
            }
            Conn::Tcp(s) => s.write_all(&self.buf).and_then(|()| s.flush()),
            Conn::Tls(s) => s.write_all(&self.buf).and_then(|()| s.flush()),
        }
    }

    /// Writes the buffer, reconnecting with backoff until it is written or the shutdown
    /// deadline passes.
    fn deliver(&mut self) {
        if self.buffered_events == 0 {
            return;
        }
        loop {
            let result = match self.conn.take() {
                Some(mut c) => self.send(&mut c).map(|()| c).map_err(|e| e.to_string()),
                None => self.connect().and_then(|mut c| {
                    tracing::info!(output = %self.name, address = %self.settings.address, "connected");
                    self.send(&mut c).map(|()| c).map_err(|e| e.to_string())
                }),
            };
            match result {
                Ok(c) => {
                    self.conn = Some(c);
                    self.backoff = BACKOFF_MIN;
                    metrics::add(&self.metrics.written, self.buffered_events);
                    break;
                }
                Err(e) => {
                    if let Some(suppressed) = self.error_log.allow() {
                        tracing::warn!(output = %self.name, address = %self.settings.address, error = %e,
                            pending = self.buffered_events, suppressed, "forwarding failed; will retry");
                    }
                    if self.give_up.is_cancelled() {
                        metrics::add(&self.metrics.write_errors, self.buffered_events);
                        tracing::error!(output = %self.name, lost = self.buffered_events,
                            "shutdown_timeout passed: events not delivered");
                        break;
                    }
                    self.sleep_backoff();
                }
            }
        }
        self.buf.clear();
        self.datagrams.clear();
        self.buffered_events = 0;
    }

    /// Waits before the next attempt: exponential, with jitter so many relays do not reconnect
    /// in step; cut short when the shutdown deadline passes.
    fn sleep_backoff(&mut self) {
        let jitter = u64::from(std::process::id() ^ (self.buf.len() as u32)) % 100;
        let wait = self.backoff + Duration::from_millis(jitter);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline && !self.give_up.is_cancelled() {
            std::thread::sleep(Duration::from_millis(50).min(wait));
        }
    }
}

impl Sink for ForwardSink {
    fn write_batch(&mut self, batch: &[Arc<Event>]) {
        for ev in batch {
            let start = self.buf.len();
            match self.settings.protocol {
                ForwardProtocol::Udp => {
                    self.format.write_verbatim(ev, &mut self.buf);
                    self.datagrams.push(start..self.buf.len());
                }
                _ if self.settings.octet_counting => {
                    self.scratch.clear();
                    self.format.write_verbatim(ev, &mut self.scratch);
                    let _ = write!(self.buf, "{} ", self.scratch.len());
                    self.buf.extend_from_slice(&self.scratch);
                }
                // LF framing: escaped, so an embedded LF cannot split the message.
                _ => self.format.write_line(ev, &mut self.buf),
            }
            self.buffered_events += 1;
            if self.buf.len() >= SEND_THRESHOLD_BYTES {
                self.deliver();
            }
        }
    }

    fn flush(&mut self) {
        self.deliver();
    }

    fn close(&mut self) {
        self.deliver();
        if let Some(Conn::Tls(mut s)) = self.conn.take() {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
    }
}
