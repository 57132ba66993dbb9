//! sluice: a syslog receiver and router daemon.
//!
//! It takes RFC 5424 and RFC 3164 messages over UDP, TCP, TLS, RELP and local unix sockets, and
//! the kernel's log (/dev/kmsg), parses them,
//! matches them against an ordered rule table, and writes them to files or stdout. Nothing read
//! from a socket is dropped silently: malformed messages are kept with a flag, and every drop is
//! counted.
//!
//! # Layout
//!
//! In data-flow order:
//!
//! - [`config`]: TOML text to a validated [`config::Config`], every error with its line;
//!   [`decode`] is how it and every kind read their tables.
//! - [`listen`]: UDP, TCP, TLS, RELP and unix sockets, and /dev/kmsg; each task frames, parses
//!   and routes inline.
//! - [`framing`]: RFC 6587 octet counting and LF framing, a pure state machine; RELP frames.
//! - [`parse`]: RFC 5424 (strict) and RFC 3164 (tolerant) into an [`event::Event`]; kernel
//!   records rewritten as RFC 5424.
//! - [`event`]: the one type that flows through.
//! - [`route`]: the rule table and the syslog.conf selector language.
//! - [`alert`]: `[[alert]]` rules judged on the stream, on the alert engine's thread.
//! - [`output`]: bounded queues, the receipts an acknowledging listener waits on, and the
//!   outputs (file, stdout, forward, http, elasticsearch, loki, relp) with their formats.
//! - [`explain`]: `--explain`, one message through the rule table, in words.
//! - [`metrics`]: counters per listener and output; [`exporter`] serves them to Prometheus.
//! - [`daemon`]: `bind` every socket, then `run` until shutdown and drain.
//! - [`systemd`]: readiness notification and socket activation.
//! - [`privileges`]: dropping root after binding, user and group lookups.
//! - [`sys`]: the system calls std does not wrap.
//! - [`backoff`]: how every loop that retries a failing operation waits and logs.
//! - [`limits`]: the descriptor limit, raised at start and checked against the configuration.

#![deny(missing_docs)]
// System calls live in `sys`, the one module allowed `unsafe` (see its documentation).
#![deny(unsafe_code)]

pub mod alert;
pub mod backoff;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod event;
pub mod explain;
pub mod exporter;
pub mod framing;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod output;
pub mod parse;
pub mod privileges;
pub mod route;
#[allow(unsafe_code)]
pub mod sys;
pub mod systemd;
pub mod tls;
