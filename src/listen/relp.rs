//! The `relp` listener: RELP (librelp's doc/relp.md), the protocol rsyslog's omrelp sends with,
//! over TCP or, with `tls = true`, over TLS as rsyslog's `tls="on"` does.
//!
//! Connections are accepted, limited and (for TLS) shaken hands with by the stream server
//! ([`super::stream`]); this module owns the settings and the session loop. Each read is framed
//! by the pure parser in [`crate::framing::relp`], its `syslog` messages are dispatched like any
//! stream's, and then handed to the outputs with a [`Receipt`]: the `rsp` answers of that read,
//! in order, are written only once every output the messages were routed to holds them (see
//! [`crate::output::receipt`]). So a sender that saw `200 OK` never needs to resend, and under
//! `when_full = "block"` the answers stop and the sender's window fills. When an output could
//! not keep a message the answer is `500 error`, and the sender resends it.
//!
//! A frame that is not RELP (bad TXNR, command, DATALEN or trailer) and a command out of place
//! (before `open`, after `close`, out of sequence) close the connection, counted; the answers
//! due for the messages before it are written first, so the sender does not resend them. A
//! message whose DATALEN is over `max_message_size` is kept cut to it and flagged `truncated`,
//! as the tcp listener does, and the rest of it is discarded as it arrives (counted in
//! `relp_oversize`): closing would only make the sender resend it for ever. Idle and slow
//! connections meet the tcp listener's `idle_timeout` and `frame_timeout`.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use chrono::Utc;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use toml::Spanned;

use super::kind::{BoundSocket, ListenerKindSpec, StartContext, log_listening, wrong_socket};
use super::stream::{
    Connection, End, INITIAL_READ_CHUNK_BYTES, READ_CHUNK_BYTES, Speech, StreamListener,
    sleep_until_opt,
};
use super::tcp::TcpSettings;
use super::tls::TlsServer;
use crate::decode::{Entry, Errors, Part};
use crate::framing::relp::{
    Command, Frame, RelpError, Session, SessionError, offer, parse_frame, parse_header, write_frame,
};
use crate::metrics::{self, ListenerMetrics};
use crate::output::Receipt;
use crate::tls::ServerSettings;

/// `kind = "relp"`.
pub const KIND: &str = "relp";
/// The smallest DATALEN accepted whatever `max_message_size` says, so an `open` and its offers
/// always fit.
const MIN_DATA_BYTES: usize = 4096;
/// Answers that cannot be written within this (a sender that does not read) close the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of a `relp` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct RelpSettings {
    /// Address, sender filter, connection limits and timeouts: a TCP listener's.
    pub tcp: TcpSettings,
    /// With `tls = true`: the certificates and client authentication of a `tls` listener, and
    /// its `handshake_timeout`.
    pub tls: Option<(ServerSettings, Duration)>,
}

#[derive(Deserialize, Default)]
struct RelpRaw {
    tls: Option<Spanned<bool>>,
}

impl Part for RelpRaw {}

impl ListenerKindSpec for RelpSettings {
    const KIND: &'static str = KIND;

    fn decode(entry: &mut Entry<'_, '_>, errs: &mut Errors<'_>) -> Option<RelpSettings> {
        let tcp = TcpSettings::decode(entry, errs);
        let raw = entry.part::<RelpRaw>(errs)?;
        let on = raw.tls.as_ref().is_some_and(|t| *t.get_ref());
        let tls = super::tls::decode_server(entry, errs, on)?;
        Some(RelpSettings { tcp: tcp?, tls })
    }

    super::kind::tcp_socket_methods!();

    fn check_environment(
        &self,
        key: &str,
        _problems: &mut Vec<String>,
        files: &mut crate::tls::FileCheck,
    ) {
        if let Some((server, _)) = &self.tls {
            super::tls::check_server_files(key, server, files);
        }
    }

    fn start(
        &self,
        socket: BoundSocket,
        ctx: StartContext<'_>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let BoundSocket::Tcp(listener) = socket else {
            return Err(wrong_socket(KIND, &socket));
        };
        let name = ctx.config.name.clone();
        log_listening(&name, KIND, listener.local_addr());
        let server = match &self.tls {
            Some((settings, handshake_timeout)) => {
                let server =
                    TlsServer::new(settings, *handshake_timeout).map_err(|e| anyhow::anyhow!(e))?;
                tokio::spawn(super::tls::reload_on_hangup(
                    name,
                    settings.clone(),
                    server.clone(),
                    ctx.hangup.clone(),
                    ctx.stop.clone(),
                ));
                Some(server)
            }
            None => None,
        };
        let listener = StreamListener::tcp(listener)?;
        Ok(super::stream::serve(
            listener,
            &self.tcp.connections,
            self.tcp.network.allowed_sources.clone(),
            server,
            Speech::Relp,
            ctx,
        ))
    }
}

/// Why a RELP connection was closed.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Not a RELP frame.
    Frame(RelpError),
    /// A command other than `syslog` (an `open`) longer than the receiver takes.
    Oversize,
    /// A frame, but not one the session allows now.
    Session(SessionError),
}

impl Fault {
    /// Adds it to its counter.
    pub(super) fn count(&self, m: &ListenerMetrics) {
        let counter = match self {
            Fault::Frame(_) | Fault::Oversize => &m.relp_frame_invalid,
            Fault::Session(_) => &m.relp_session_errors,
        };
        metrics::add(counter, 1);
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Frame(e) => e.fmt(f),
            Fault::Oversize => f.write_str("RELP command other than syslog over the size limit"),
            Fault::Session(e) => e.fmt(f),
        }
    }
}

/// An answer due, in the order of the commands.
enum Answer {
    /// `rsp` to `open`, with the offers this side takes.
    Open(u32, Vec<u8>),
    /// `rsp` to a `syslog`: `200 OK` once the outputs hold it.
    Syslog(u32),
    /// `rsp` to `close`.
    Close(u32),
}

/// The offers answered to an `open`: the client's `relp_version` and the one command spoken.
fn open_reply(data: &[u8]) -> Vec<u8> {
    let version = offer(data, "relp_version").unwrap_or(b"0");
    let mut out = b"200 OK\nrelp_version=".to_vec();
    out.extend_from_slice(version);
    out.extend_from_slice(
        format!(
            "\nrelp_software=sluice,{},https://github.com/sluice\ncommands=syslog",
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    );
    out
}

/// Serves one RELP session until the peer closes, a fault, a timeout or the hard stop.
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<S>) -> End {
    let max_data = conn.settings.max_message_size.max(MIN_DATA_BYTES);
    let mut read_chunk = INITIAL_READ_CHUNK_BYTES;
    let mut buf = BytesMut::with_capacity(read_chunk);
    let mut session = Session::new();
    let mut last_data = Instant::now();
    let mut frame_started: Option<Instant> = None;
    let mut answers: Vec<Answer> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    // Bytes still to discard of a message cut to `max_message_size`, then its trailer.
    let mut skip: Option<usize> = None;
    let limit = conn.settings.rate_limit.clone().map(|l| {
        let bucket = l.bucket(conn.peer.0.map(|a| a.ip()));
        (l, bucket)
    });
    loop {
        // While a frame is under way its completion deadline applies (slowloris); between
        // frames the idle timeout does.
        let (deadline, frame_deadline) = match (
            frame_started,
            conn.settings.frame_timeout,
            conn.settings.idle_timeout,
        ) {
            (Some(t), Some(ft), _) => (Some(t + ft), true),
            (_, _, Some(it)) => (Some(last_data + it), false),
            _ => (None, false),
        };
        if buf.capacity() - buf.len() < read_chunk / 4 {
            buf.reserve(read_chunk);
        }
        let room = buf.capacity() - buf.len();
        let read = tokio::select! {
            _ = conn.hard_stop.cancelled() => {
                server_close(&mut conn.stream).await;
                return End::Cut;
            }
            r = conn.stream.read_buf(&mut buf) => r,
            // Stopping (shutdown or a reload that replaces the listener): what was read is
            // answered; the rest the sender resends to whoever listens next.
            _ = conn.stop.cancelled() => {
                server_close(&mut conn.stream).await;
                return End::Stopped;
            }
            _ = sleep_until_opt(deadline) => {
                server_close(&mut conn.stream).await;
                return if frame_deadline { End::FrameTimeout } else { End::Idle };
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => return End::ReadError(e),
        };
        if n == 0 {
            // A frame cut by the close was never answered: the sender resends it.
            return End::Eof;
        }
        if n == room {
            read_chunk = (read_chunk * 2).min(READ_CHUNK_BYTES);
        }
        metrics::add(&conn.metrics.bytes, n as u64);
        last_data = Instant::now();
        let now = Utc::now();
        let mut fault = None;
        let mut completed = 0;
        loop {
            // The rest of a message cut to `max_message_size` is discarded as it arrives, then
            // its LF trailer; nothing of it is buffered.
            if let Some(left) = skip {
                let n = left.min(buf.len());
                buf.advance(n);
                if left > n {
                    skip = Some(left - n);
                    break;
                }
                match buf.first() {
                    None => {
                        skip = Some(0);
                        break;
                    }
                    Some(b'\n') => {
                        buf.advance(1);
                        skip = None;
                    }
                    Some(_) => {
                        fault = Some(Fault::Frame(RelpError::BadTrailer));
                        break;
                    }
                }
            }
            let (frame, bytes, cut) = match parse_frame(&buf, max_data) {
                Ok(Some((frame, taken))) => (frame, buf.split_to(taken).freeze(), None),
                Ok(None) => break,
                Err(RelpError::Oversize { .. }) => {
                    // A message longer than the limit is kept cut to it and flagged, as the tcp
                    // listener does (closing would make the sender resend it for ever).
                    let header = match parse_header(&buf) {
                        Ok(Some(h)) if h.command == Command::Syslog => h,
                        _ => {
                            fault = Some(Fault::Oversize);
                            break;
                        }
                    };
                    let keep = conn.settings.max_message_size;
                    if buf.len() < header.data_start + keep {
                        break;
                    }
                    let bytes = buf.split_to(header.data_start + keep).freeze();
                    let frame = Frame {
                        txnr: header.txnr,
                        command: header.command,
                        data: header.data_start..header.data_start + keep,
                    };
                    (frame, bytes, Some(header.datalen - keep))
                }
                Err(e) => {
                    fault = Some(Fault::Frame(e));
                    break;
                }
            };
            completed += 1;
            let mut data = bytes.slice(frame.data.clone());
            if let Err(e) = session.accept(&frame, &data) {
                fault = Some(Fault::Session(e));
                break;
            }
            match frame.command {
                Command::Open => answers.push(Answer::Open(frame.txnr, open_reply(&data))),
                Command::Close => answers.push(Answer::Close(frame.txnr)),
                // The session refuses these before they get here.
                Command::Rsp | Command::ServerClose | Command::Other => {
                    fault = Some(Fault::Session(SessionError::UnexpectedCommand));
                    break;
                }
                Command::Syslog => {
                    // Cut: the rest is being skipped, or (a limit under the smallest frame
                    // taken whole) is cut here.
                    let truncated = cut.is_some() || data.len() > conn.settings.max_message_size;
                    if truncated {
                        data.truncate(conn.settings.max_message_size);
                        metrics::add(&conn.metrics.relp_oversize, 1);
                    }
                    skip = cut;
                    let admitted = match &limit {
                        Some((limiter, bucket)) => {
                            limiter.admit_in(bucket, conn.peer.0.map(|a| a.ip()))
                        }
                        None => true,
                    };
                    // One rate limited is counted there, and answered `200 OK`: dropping it is
                    // the configured policy, and a resend would meet the same limit.
                    if admitted {
                        conn.dispatcher.push(data, truncated, conn.peer.0, now);
                    }
                    answers.push(Answer::Syslog(frame.txnr));
                }
            }
        }
        let held_since = Instant::now();
        if !answers.is_empty() {
            let kept = if answers.iter().any(|a| matches!(a, Answer::Syslog(_))) {
                let (receipt, wait) = Receipt::new();
                conn.dispatcher
                    .flush_with_receipt(&conn.hard_stop, receipt)
                    .await;
                tokio::select! {
                    kept = wait.wait() => kept,
                    _ = conn.hard_stop.cancelled() => {
                        server_close(&mut conn.stream).await;
                        return End::Cut;
                    }
                }
            } else {
                true
            };
            out.clear();
            let (mut acked, mut refused) = (0, 0);
            for a in answers.drain(..) {
                match a {
                    Answer::Open(txnr, offers) => write_frame(&mut out, txnr, "rsp", &offers),
                    Answer::Syslog(txnr) if kept => {
                        acked += 1;
                        write_frame(&mut out, txnr, "rsp", b"200 OK");
                    }
                    Answer::Syslog(txnr) => {
                        refused += 1;
                        write_frame(&mut out, txnr, "rsp", b"500 error");
                    }
                    Answer::Close(txnr) => write_frame(&mut out, txnr, "rsp", b"200 OK"),
                }
            }
            metrics::add(&conn.metrics.relp_acked, acked);
            metrics::add(&conn.metrics.relp_refused, refused);
            if let Err(e) = write_timed(&mut conn.stream, &out).await {
                return End::ReadError(e);
            }
        }
        if let Some(f) = fault {
            server_close(&mut conn.stream).await;
            return End::Relp(f);
        }
        if session.is_closed() {
            let _ = conn.stream.shutdown().await;
            return End::Eof;
        }
        // Time spent waiting for our own outputs is not the sender's delay.
        let held = held_since.elapsed();
        last_data += held;
        frame_started = match (buf.is_empty() && skip.is_none(), completed) {
            (true, _) => None,
            (false, 0) => Some(frame_started.map_or(last_data, |t| t + held)),
            (false, _) => Some(last_data),
        };
    }
}

async fn write_timed<S: AsyncWrite + Unpin>(stream: &mut S, out: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the sender does not read its answers",
        )),
    }
}

/// The `serverclose` hint (txnr 0), written without waiting long: the connection closes anyway.
async fn server_close<S: AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(b"0 serverclose 0\n").await?;
        stream.shutdown().await
    })
    .await;
}
