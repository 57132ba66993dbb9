//! The `relp` output: messages to a RELP receiver (rsyslog's imrelp, or a sluice `relp`
//! listener), over TCP or TLS, through a memory or disk backlog exactly like `forward`'s
//! ([`super::delivery`]).
//!
//! Each attempt opens a session if there is none (`open` with `relp_version`, `commands` and
//! `relp_software`, answered `200 OK` with `commands` naming `syslog`), sends up to `window`
//! records from the head of the backlog as `syslog` commands without waiting (the window of
//! unacknowledged transactions), then reads the `rsp` answers, which come in order. Records
//! leave the backlog only as far as `200 OK` answers reach, so unlike plain TCP nothing the
//! receiver did not confirm is lost: on a broken session (connection reset, EOF, `serverclose`,
//! no answer within [`RSP_TIMEOUT`]) the records not yet confirmed are sent again on a new
//! session, and the receiver may see duplicates (at most one window), never gaps.
//!
//! A `500` answer: the receiver could not take the message now (librelp's servers answer so when
//! their own queue refuses it). It is treated as a failed attempt for that record and those
//! after it: the session is closed, and the records are sent again after the backoff, counted
//! in `retries`. They are not dead-lettered: a RELP receiver that refuses means "not now", not
//! "never" (sluice's own listener answers `500` only for a write error or a closed queue).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};
use serde::Deserialize;
use toml::Spanned;

use crate::decode::{Entry, Errors, Part, positive};
use crate::event::Event;
use crate::framing::relp::{Command, next_txnr, offer, parse_frame, rsp_code, write_frame};
use crate::metrics::{self, OutputMetrics};
use crate::output::delivery::{Attempt, Transport};
use crate::output::format::Format;
use crate::output::forward::{IO_TIMEOUT, host_of, tune};
use crate::output::{OutputConfig, OutputDescriptors, OutputKindSpec, OutputStart, RunningOutput};

/// `kind = "relp"`.
pub const KIND: &str = "relp";
/// Default `window`: librelp's default of unacknowledged transactions.
pub const DEFAULT_WINDOW: usize = 128;
/// Largest `window` accepted.
const MAX_WINDOW: usize = 100_000;
/// A receiver that answers nothing this long (omrelp's default `timeout`) has a broken session.
/// Long, because a receiver under back-pressure (sluice's `when_full = "block"`) holds its
/// answers on purpose.
pub const RSP_TIMEOUT: Duration = Duration::from_secs(90);
/// Largest answer frame read (an `open` answer with its offers, or an `rsp`).
const MAX_RSP_BYTES: usize = 64 * 1024;

/// The settings of a `relp` output.
#[derive(Debug, Clone, PartialEq)]
pub struct RelpOutputSettings {
    /// `host:port` of the receiver (resolved at each connect).
    pub address: String,
    /// Messages sent before their answers are read.
    pub window: usize,
    /// With `tls = true`: the trust and client certificate, as `forward`'s TLS.
    pub tls: Option<crate::tls::ClientSettings>,
}

#[derive(Deserialize, Default)]
struct RelpRaw {
    address: Option<Spanned<String>>,
    window: Option<Spanned<i64>>,
    tls: Option<Spanned<bool>>,
}

impl Part for RelpRaw {}

impl OutputKindSpec for RelpOutputSettings {
    const KIND: &'static str = KIND;
    const DEFAULT_FORMAT: Format = Format::Rfc5424;
    const HAS_BACKLOG: bool = true;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<RelpOutputSettings> {
        let raw = entry.part::<RelpRaw>(errs)?;
        let tls_part = entry.part::<crate::tls::ClientTlsPart>(errs)?;
        let before = errs.count();
        let address = match &raw.address {
            None => {
                entry.missing(
                    errs,
                    "address",
                    "missing: give the receiver as address = \"host:port\"",
                );
                None
            }
            Some(a) => match host_of(a.get_ref()) {
                Some(host) => Some((a.get_ref().clone(), host)),
                None => {
                    errs.at(
                        a.span(),
                        entry.key("address"),
                        format!(
                            "invalid address {:?}: expected host:port, like \"relp.example.net:2514\"",
                            a.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let window = positive(errs, &entry.key("window"), &raw.window).unwrap_or(DEFAULT_WINDOW);
        if window > MAX_WINDOW
            && let Some(w) = &raw.window
        {
            errs.at(
                w.span(),
                entry.key("window"),
                format!("at most {MAX_WINDOW}"),
            );
        }
        let on = raw.tls.as_ref().is_some_and(|t| *t.get_ref());
        let why_span = raw.tls.as_ref().map_or(entry.kind.span(), |t| t.span());
        let tls = tls_part.settings(
            entry,
            errs,
            on,
            "tls = true",
            why_span,
            address.as_ref().map(|(_, h)| h.clone()),
        );
        (errs.count() == before).then_some(())?;
        Some(RelpOutputSettings {
            address: address?.0,
            window,
            tls: if on { Some(tls?) } else { None },
        })
    }

    fn descriptors(&self) -> OutputDescriptors {
        OutputDescriptors {
            files: 0,
            connections: 1,
        }
    }

    fn check_environment(
        &self,
        key: &str,
        _problems: &mut Vec<String>,
        files: &mut crate::tls::FileCheck,
    ) {
        if let Some(c) = &self.tls {
            crate::tls::ClientTlsPart::check_environment(c, key, files);
        }
    }

    fn start(&self, output: &OutputConfig, ctx: OutputStart<'_>) -> anyhow::Result<RunningOutput> {
        let (name, settings, format) = (output.name.clone(), self.clone(), output.format);
        let metrics = ctx.metrics.clone();
        crate::output::delivery::start(
            output,
            move || RelpTransport::new(name, settings, format, metrics),
            ctx.metrics,
            ctx.give_up,
            ctx.state_dir,
            ctx.predecessor,
        )
    }
}

/// The connection of a session.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// An open RELP session.
struct Session {
    stream: Stream,
    /// The txnr of the next command.
    next_txnr: u32,
    /// Bytes read and not yet framed.
    rbuf: Vec<u8>,
}

impl Session {
    /// Reads the next frame: `(txnr, command, data)`.
    fn read_frame(&mut self) -> Result<(u32, Command, Vec<u8>), String> {
        loop {
            match parse_frame(&self.rbuf, MAX_RSP_BYTES) {
                Ok(Some((f, n))) => {
                    let data = self.rbuf[f.data.clone()].to_vec();
                    self.rbuf.drain(..n);
                    return Ok((f.txnr, f.command, data));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("the receiver sent {e}")),
            }
            // Answers come as many small writes: acknowledge them at once rather than after the
            // delayed-ACK timer, or a sender holding the rest back (Nagle) waits 40 ms a window.
            let _ = socket2::SockRef::from(self.stream.tcp()).set_tcp_quickack(true);
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the receiver closed the session".into()),
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    return Err(format!("no answer within {}s", RSP_TIMEOUT.as_secs()));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Reads the answer to `txnr`: its status code. A `serverclose` hint ends the session.
    fn read_rsp(&mut self, txnr: u32) -> Result<(u16, Vec<u8>), String> {
        let (got, command, data) = self.read_frame()?;
        match command {
            Command::Rsp if got == txnr => {
                let code = rsp_code(&data).ok_or("the receiver sent an rsp without a status")?;
                Ok((code, data))
            }
            Command::Rsp => Err(format!("answer to {got} where {txnr} was due")),
            Command::ServerClose => Err("the receiver closed the session (serverclose)".into()),
            _ => Err("the receiver sent a command where an answer was due".into()),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// How a `relp` output sends.
struct RelpTransport {
    name: Arc<str>,
    settings: RelpOutputSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    format: Format,
    session: Option<Session>,
    metrics: Arc<OutputMetrics>,
    scratch: Vec<u8>,
}

impl RelpTransport {
    fn new(
        name: Arc<str>,
        settings: RelpOutputSettings,
        format: Format,
        metrics: Arc<OutputMetrics>,
    ) -> anyhow::Result<RelpTransport> {
        let tls = match &settings.tls {
            Some(c) => Some(crate::tls::client_config(c).map_err(|e| anyhow::anyhow!(e))?),
            None => None,
        };
        Ok(RelpTransport {
            name,
            settings,
            tls,
            format,
            session: None,
            metrics,
            scratch: Vec::new(),
        })
    }

    /// Connects and opens a session.
    fn open(&self) -> Result<Session, String> {
        let address = &self.settings.address;
        let addr = address
            .to_socket_addrs()
            .map_err(|e| format!("resolving {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address} resolves to no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        tune(&tcp).map_err(|e| format!("{addr}: {e}"))?;
        let stream = match (&self.settings.tls, &self.tls) {
            (Some(c), Some(config)) => {
                let server_name = crate::tls::server_name(&c.server_name)?;
                let conn = ClientConnection::new(config.clone(), server_name)
                    .map_err(|e| e.to_string())?;
                let mut s = StreamOwned::new(conn, tcp);
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                }
                Stream::Tls(Box::new(s))
            }
            _ => Stream::Tcp(tcp),
        };
        let mut session = Session {
            stream,
            next_txnr: 1,
            rbuf: Vec::new(),
        };
        let offers = format!(
            "relp_version=0\nrelp_software=sluice,{},https://github.com/sluice\ncommands=syslog",
            env!("CARGO_PKG_VERSION")
        );
        let mut out = Vec::new();
        write_frame(&mut out, 1, "open", offers.as_bytes());
        session
            .stream
            .write_all(&out)
            .and_then(|()| session.stream.flush())
            .map_err(|e| format!("{addr}: sending open: {e}"))?;
        let (code, data) = session
            .read_rsp(1)
            .map_err(|e| format!("{addr}: open: {e}"))?;
        if code != 200 {
            return Err(format!(
                "{addr}: the receiver refused the session: {}",
                String::from_utf8_lossy(&data)
            ));
        }
        let speaks_syslog = offer(&data, "commands")
            .is_some_and(|c| c.split(|&b| b == b',').any(|c| c == b"syslog"));
        if !speaks_syslog {
            return Err(format!(
                "{addr}: the receiver does not offer the syslog command"
            ));
        }
        session.next_txnr = next_txnr(1);
        // Answers are waited for this long before the session counts as broken.
        let sock = session.stream.tcp();
        sock.set_read_timeout(Some(RSP_TIMEOUT))
            .and_then(|()| sock.set_write_timeout(Some(RSP_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        Ok(session)
    }
}

impl Transport for RelpTransport {
    fn encode(&self, ev: &Event, out: &mut Vec<u8>) {
        self.format.write_verbatim(ev, out);
    }

    fn batch_records(&self) -> usize {
        self.settings.window
    }

    fn send(&mut self, records: &[Vec<u8>]) -> Attempt {
        let mut session = match self.session.take() {
            Some(s) => s,
            None => match self.open() {
                Ok(s) => {
                    metrics::add(&self.metrics.reconnects, 1);
                    tracing::info!(output = %self.name, address = %self.settings.address, "RELP session open");
                    s
                }
                Err(error) => {
                    return Attempt::Failed {
                        error,
                        retry_after: None,
                    };
                }
            },
        };
        let first = session.next_txnr;
        self.scratch.clear();
        let mut txnr = first;
        for r in records {
            write_frame(&mut self.scratch, txnr, "syslog", r);
            txnr = next_txnr(txnr);
        }
        if let Err(e) = session
            .stream
            .write_all(&self.scratch)
            .and_then(|()| session.stream.flush())
        {
            return Attempt::Failed {
                error: format!("{}: {e}", self.settings.address),
                retry_after: None,
            };
        }
        session.next_txnr = txnr;
        // The answers, in order: records leave the backlog as far as `200 OK` reaches.
        let mut accepted = 0;
        let mut txnr = first;
        let mut broken = None;
        for _ in records {
            match session.read_rsp(txnr) {
                Ok((200, _)) => accepted += 1,
                Ok((code, data)) => {
                    broken = Some(format!(
                        "the receiver answered {code} ({}); the session is closed and the rest sent again",
                        String::from_utf8_lossy(&data)
                    ));
                    break;
                }
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
            txnr = next_txnr(txnr);
        }
        match broken {
            None => {
                self.session = Some(session);
                Attempt::Done {
                    taken: accepted,
                    accepted,
                }
            }
            // The session is dropped: answers still due on it can no longer be matched.
            Some(error) if accepted == 0 => Attempt::Failed {
                error: format!("{}: {error}", self.settings.address),
                retry_after: None,
            },
            Some(error) => {
                tracing::info!(output = %self.name, accepted, error, "RELP session broken after some answers");
                Attempt::Done {
                    taken: accepted,
                    accepted,
                }
            }
        }
    }

    fn close(&mut self) {
        if let Some(mut s) = self.session.take() {
            // An orderly `close`; its answer is waited for only briefly.
            let mut out = Vec::new();
            write_frame(&mut out, s.next_txnr, "close", b"");
            let _ = s
                .stream
                .tcp()
                .set_read_timeout(Some(Duration::from_secs(2)));
            if s.stream
                .write_all(&out)
                .and_then(|()| s.stream.flush())
                .is_ok()
            {
                let txnr = s.next_txnr;
                let _ = s.read_rsp(txnr);
            }
            if let Stream::Tls(mut t) = s.stream {
                t.conn.send_close_notify();
                let _ = t.conn.complete_io(&mut t.sock);
            }
        }
    }
}
