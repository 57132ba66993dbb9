//! The `forward` output: messages to other syslog receivers over UDP, TCP or TLS (RFC 5426,
//! 6587, 5425), octet-counted RFC 5424 by default, through a memory or disk backlog.
//!
//! One OS thread owns the backlog and the connection ([`super::delivery`]). Records are formatted
//! for the wire as they enter the backlog, and leave it only after they were written to the
//! socket without error, so a broken connection means the batch is sent again: a collector may
//! see duplicates, never gaps. The exception is plain TCP (and TLS) without acknowledgements:
//! bytes the kernel accepted shortly before the connection broke can be lost without any error.
//!
//! Delivery: connect, handshake and write deadlines; TCP keepalive and TCP_USER_TIMEOUT, so a
//! collector that vanishes without a reset is noticed; reconnection with exponential backoff and
//! jitter. With several addresses, `failover` uses the first that works and returns to the primary
//! when it answers again; `round_robin` rotates batches over all that work.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};
use serde::Deserialize;
use toml::Spanned;

use crate::decode::{Entry, Errors, OneOrMany, Part};
use crate::event::Event;
use crate::metrics::{self, OutputMetrics};
use crate::output::delivery::{Attempt, Transport};
use crate::output::format::Format;
use crate::output::{OutputConfig, RunningOutput};

/// `kind = "forward"`.
pub const KIND: &str = "forward";

/// Where and how a `forward` output sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardSettings {
    /// `host:port` of each collector (resolved at each connect); the first is the primary.
    pub addresses: Vec<String>,
    /// Failover (first that works, back to the first when it returns) or round robin.
    pub round_robin: bool,
    /// Transport.
    pub protocol: ForwardProtocol,
    /// Octet counting (RFC 5425/6587, the default on TCP and TLS) or LF.
    pub octet_counting: bool,
}

/// Forward transports.
#[derive(Debug, Clone, PartialEq)]
pub enum ForwardProtocol {
    /// One datagram per message (RFC 5426).
    Udp,
    /// Plain TCP.
    Tcp,
    /// TLS (RFC 5425).
    Tls(crate::tls::ClientSettings),
}

#[derive(Deserialize, Default)]
struct ForwardRaw {
    address: Option<Spanned<String>>,
    addresses: Option<Spanned<OneOrMany>>,
    mode: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    framing: Option<Spanned<String>>,
}

impl Part for ForwardRaw {}

impl crate::output::OutputKindSpec for ForwardSettings {
    const KIND: &'static str = KIND;
    const DEFAULT_FORMAT: Format = Format::Rfc5424;
    const HAS_BACKLOG: bool = true;

    /// Destination and transport.
    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<ForwardSettings> {
        let raw = entry.part::<ForwardRaw>(errs)?;
        let before = errs.count();
        let addresses = raw.addresses(entry, errs);
        let round_robin = crate::decode::choice(
            errs,
            &entry.key("mode"),
            &raw.mode,
            "mode",
            &[("failover", false), ("round_robin", true)],
            false,
        );
        let octet_counting = crate::decode::choice(
            errs,
            &entry.key("framing"),
            &raw.framing,
            "framing",
            &[("octet-counting", true), ("lf", false)],
            true,
        );
        let protocol = raw.protocol(
            entry,
            errs,
            addresses.as_ref().map(|(_, host, _)| host.clone()),
        );
        (errs.count() == before).then_some(())?;
        Some(ForwardSettings {
            addresses: addresses?.0,
            round_robin,
            protocol: protocol?,
            octet_counting,
        })
    }

    fn descriptors(&self) -> crate::output::OutputDescriptors {
        crate::output::OutputDescriptors {
            files: 0,
            connections: self.addresses.len(),
        }
    }

    /// The CA and the client certificate load and are valid now.
    fn check_environment(
        &self,
        key: &str,
        _problems: &mut Vec<String>,
        files: &mut crate::tls::FileCheck,
    ) {
        if let ForwardProtocol::Tls(c) = &self.protocol {
            crate::tls::ClientTlsPart::check_environment(c, key, files);
        }
    }

    fn start(
        &self,
        output: &OutputConfig,
        ctx: crate::output::OutputStart<'_>,
    ) -> anyhow::Result<RunningOutput> {
        let (name, settings, format) = (output.name.clone(), self.clone(), output.format);
        let metrics = ctx.metrics.clone();
        crate::output::delivery::start(
            output,
            move || SyslogTransport::new(name, settings, format, metrics),
            ctx.metrics,
            ctx.give_up,
            ctx.state_dir,
            ctx.predecessor,
        )
    }
}

impl ForwardRaw {
    /// The collectors, the first one's host (the default TLS server name) and where they are
    /// given.
    fn addresses(
        &self,
        entry: &Entry<'_, '_>,
        errs: &mut Errors<'_>,
    ) -> Option<(Vec<String>, String, std::ops::Range<usize>)> {
        if let (Some(_), Some(v)) = (&self.address, &self.addresses) {
            errs.at(
                v.span(),
                entry.key("addresses"),
                "give either address or addresses, not both",
            );
        }
        let (list, span, key) = match (&self.address, &self.addresses) {
            (Some(a), _) => (vec![a.get_ref().clone()], a.span(), "address"),
            (None, Some(v)) => (v.get_ref().clone().into_vec(), v.span(), "addresses"),
            (None, None) => {
                entry.missing(
                    errs,
                    "address",
                    "missing: give the collector as address = \"host:port\" (or addresses = [...])",
                );
                return None;
            }
        };
        let mut addresses = Vec::new();
        let mut first_host = None;
        for a in list {
            match host_of(&a) {
                Some(host) => {
                    first_host.get_or_insert(host);
                    addresses.push(a);
                }
                None => errs.at(
                    span.clone(),
                    entry.key(key),
                    format!(
                        "invalid address {a:?}: expected host:port, like \"siem.example.net:6514\""
                    ),
                ),
            }
        }
        Some((addresses, first_host?, span))
    }

    /// The transport, and for TLS its trust and client certificate; `host` is the default
    /// server name.
    fn protocol(
        &self,
        entry: &mut Entry<'_, '_>,
        errs: &mut Errors<'_>,
        host: Option<String>,
    ) -> Option<ForwardProtocol> {
        let protocol = self
            .protocol
            .as_ref()
            .map_or("tcp", |v| v.get_ref().as_str());
        let proto_span = self
            .protocol
            .as_ref()
            .map_or(entry.kind.span(), |v| v.span());
        let tls = entry.part::<crate::tls::ClientTlsPart>(errs)?;
        let on = protocol == "tls";
        let why = if on {
            "protocol = \"tls\"".to_string()
        } else {
            format!("protocol = \"tls\", not {protocol:?}")
        };
        let client = tls.settings(entry, errs, on, &why, proto_span.clone(), host);
        match protocol {
            "udp" => Some(ForwardProtocol::Udp),
            "tcp" => Some(ForwardProtocol::Tcp),
            "tls" => client.map(ForwardProtocol::Tls),
            other => {
                errs.at(
                    proto_span,
                    entry.key("protocol"),
                    format!("unknown protocol {other:?}: expected \"udp\", \"tcp\" or \"tls\""),
                );
                None
            }
        }
    }
}

/// The host of a `host:port` collector address (brackets of an IPv6 address removed); `None`
/// if it is not one.
pub(crate) fn host_of(address: &str) -> Option<String> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        ),
        _ => None,
    }
}

/// Connect, handshake and write deadlines: a collector that stops answering is noticed.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// With keepalive, a silent peer is declared dead after about this long.
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// While on a secondary collector, the primary is tried again this often.
const PRIMARY_RETRY: Duration = Duration::from_secs(30);
/// Records sent per write.
const SEND_BATCH: usize = 2048;

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// How a forward output sends: syslog over UDP, TCP or TLS to one of its collectors.
struct SyslogTransport {
    name: Arc<str>,
    settings: ForwardSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    format: Format,
    /// One slot per address.
    conns: Vec<Option<Conn>>,
    /// The address in use (failover) or next in turn (round robin).
    current: usize,
    last_primary_try: Instant,
    metrics: Arc<OutputMetrics>,
    scratch: Vec<u8>,
}

impl SyslogTransport {
    /// Loads the TLS files.
    fn new(
        name: Arc<str>,
        settings: ForwardSettings,
        format: Format,
        metrics: Arc<OutputMetrics>,
    ) -> anyhow::Result<SyslogTransport> {
        let tls = match &settings.protocol {
            ForwardProtocol::Tls(c) => {
                Some(crate::tls::client_config(c).map_err(|e| anyhow::anyhow!(e))?)
            }
            ForwardProtocol::Udp | ForwardProtocol::Tcp => None,
        };
        let conns = settings.addresses.iter().map(|_| None).collect();
        Ok(SyslogTransport {
            name,
            settings,
            tls,
            format,
            conns,
            current: 0,
            last_primary_try: Instant::now(),
            metrics,
            scratch: Vec::new(),
        })
    }
}

impl Transport for SyslogTransport {
    fn encode(&self, ev: &Event, out: &mut Vec<u8>) {
        match self.settings.protocol {
            ForwardProtocol::Tcp | ForwardProtocol::Tls(_) if !self.settings.octet_counting => {
                // LF framing: escaped, so an embedded LF cannot split the message.
                self.format.write_line(ev, out);
            }
            _ => self.format.write_verbatim(ev, out),
        }
    }

    fn batch_records(&self) -> usize {
        SEND_BATCH
    }

    /// Tries each collector in turn (from the current one) until one takes the records.
    fn send(&mut self, records: &[Vec<u8>]) -> Attempt {
        self.scratch.clear();
        let datagram = matches!(self.settings.protocol, ForwardProtocol::Udp);
        if !datagram {
            for r in records {
                if self.settings.octet_counting {
                    crate::output::format::push_decimal(&mut self.scratch, r.len() as u32);
                    self.scratch.push(b' ');
                }
                self.scratch.extend_from_slice(r);
            }
        }
        self.maybe_return_to_primary();
        let mut errors = Vec::new();
        for _ in 0..self.conns.len() {
            let i = self.current;
            match self.send_to(i, records) {
                Ok(()) => {
                    if self.settings.round_robin {
                        self.current = (i + 1) % self.conns.len();
                    }
                    return Attempt::Done {
                        taken: records.len(),
                        accepted: records.len(),
                    };
                }
                Err(e) => {
                    self.conns[i] = None;
                    errors.push(format!("{}: {e}", self.settings.addresses[i]));
                    self.current = (i + 1) % self.conns.len();
                }
            }
        }
        Attempt::Failed {
            error: format!("every collector failed: {}", errors.join("; ")),
            retry_after: None,
        }
    }

    fn close(&mut self) {
        for c in self.conns.iter_mut() {
            if let Some(Conn::Tls(mut s)) = c.take() {
                s.conn.send_close_notify();
                let _ = s.conn.complete_io(&mut s.sock);
            }
        }
    }
}

impl SyslogTransport {
    /// In failover mode, a secondary in use gives way to the primary once it answers again.
    fn maybe_return_to_primary(&mut self) {
        if self.settings.round_robin
            || self.current == 0
            || self.last_primary_try.elapsed() < PRIMARY_RETRY
        {
            return;
        }
        self.last_primary_try = Instant::now();
        if let Ok(c) = self.connect(0) {
            tracing::info!(output = %self.name, address = %self.settings.addresses[0], "primary collector is back");
            self.conns[0] = Some(c);
            self.current = 0;
        }
    }

    fn send_to(&mut self, i: usize, records: &[Vec<u8>]) -> Result<(), String> {
        if self.conns[i].is_none() {
            let c = self.connect(i)?;
            metrics::add(&self.metrics.reconnects, 1);
            tracing::info!(output = %self.name, address = %self.settings.addresses[i], "connected");
            if i != 0 {
                self.last_primary_try = Instant::now();
            }
            self.conns[i] = Some(c);
        }
        if self.conns[i].as_mut().is_some_and(|c| !still_open(c)) {
            // The collector closed (or half-closed) its side: writing now would only fill a
            // buffer that is never read. Reconnect instead; nothing was written, nothing lost.
            self.conns[i] = None;
            return Err("the collector closed the connection".into());
        }
        let Some(conn) = self.conns[i].as_mut() else {
            return Err("not connected".into());
        };
        let r = match conn {
            Conn::Udp(s) => records.iter().try_for_each(|r| s.send(r).map(|_| ())),
            Conn::Tcp(s) => s.write_all(&self.scratch).and_then(|()| s.flush()),
            Conn::Tls(s) => s.write_all(&self.scratch).and_then(|()| s.flush()),
        };
        r.map_err(|e| e.to_string())
    }

    fn connect(&self, i: usize) -> Result<Conn, String> {
        let address = &self.settings.addresses[i];
        let addr = address
            .to_socket_addrs()
            .map_err(|e| format!("resolving {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to no address"))?;
        if let ForwardProtocol::Udp = self.settings.protocol {
            let local = if addr.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let s = UdpSocket::bind(local).map_err(|e| e.to_string())?;
            s.connect(addr).map_err(|e| format!("{addr}: {e}"))?;
            return Ok(Conn::Udp(s));
        }
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        tune(&tcp).map_err(|e| format!("{addr}: {e}"))?;
        match (&self.settings.protocol, &self.tls) {
            (ForwardProtocol::Tls(c), Some(config)) => {
                let server_name = crate::tls::server_name(&c.server_name)?;
                let conn = ClientConnection::new(config.clone(), server_name)
                    .map_err(|e| e.to_string())?;
                let mut stream = StreamOwned::new(conn, tcp);
                // Finish the handshake now, within the socket timeouts, so a collector that never
                // answers it is noticed here (hostile-inputs C01, client role).
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
}

/// Whether a connection may still be written to. Collectors never send on a syslog connection, so
/// anything readable is the end: EOF (a graceful close) or a TLS close_notify. Checked before each
/// write, as rsyslog's omfwd does, so a collector that closes after reading everything loses
/// nothing.
fn still_open(conn: &mut Conn) -> bool {
    let sock = match conn {
        Conn::Udp(_) => return true,
        Conn::Tcp(s) => socket2::SockRef::from(&*s),
        Conn::Tls(s) => socket2::SockRef::from(&s.sock),
    };
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
        Ok(0) | Err(_) => false,
        Ok(_) => match conn {
            Conn::Tls(s) => {
                // Let rustls read what arrived: only a close_notify (or junk) ends the session.
                if s.sock.set_nonblocking(true).is_err() {
                    return false;
                }
                let open = s.conn.read_tls(&mut s.sock).is_ok_and(|n| n > 0)
                    && s.conn
                        .process_new_packets()
                        .is_ok_and(|st| !st.peer_has_closed());
                s.sock.set_nonblocking(false).is_ok() && open
            }
            _ => false,
        },
    }
}

/// Deadlines and dead-peer detection on a forward connection.
pub(crate) fn tune(tcp: &TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    let sock = socket2::SockRef::from(tcp);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5))
            .with_retries(4),
    )?;
    // Unacknowledged data older than this fails the connection (a black-holed collector).
    sock.set_tcp_user_timeout(Some(DEAD_PEER_TIMEOUT))
}
