//! The one type that flows through sluice: [`Event`], with its [`Facility`] and [`Severity`].
//!
//! An event keeps the frame's original bytes (`raw`, a cheap `Bytes` slice of the read buffer) and
//! the header fields as [`Span`]s into them, so parsing a message allocates nothing but its
//! structured data ([`StructuredData`], two allocations). Accessors turn spans back into
//! `&str`/`&[u8]`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};

mod sd;
pub(crate) use sd::SdBuilder;
pub use sd::{SdElement, SdElementRef, StructuredData};

/// Syslog facility (RFC 5424 §6.2.1), names as syslog.conf(5) spells them (selectors and JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Facility {
    Kern = 0,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Ntp,
    Security,
    Console,
    SolarisCron,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// Every facility in code order (index = code).
    pub const ALL: [Facility; 24] = [
        Facility::Kern,
        Facility::User,
        Facility::Mail,
        Facility::Daemon,
        Facility::Auth,
        Facility::Syslog,
        Facility::Lpr,
        Facility::News,
        Facility::Uucp,
        Facility::Cron,
        Facility::Authpriv,
        Facility::Ftp,
        Facility::Ntp,
        Facility::Security,
        Facility::Console,
        Facility::SolarisCron,
        Facility::Local0,
        Facility::Local1,
        Facility::Local2,
        Facility::Local3,
        Facility::Local4,
        Facility::Local5,
        Facility::Local6,
        Facility::Local7,
    ];
    const NAMES: [&'static str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];

    /// The facility with this numeric code (0..=23), if any.
    pub fn from_code(code: u8) -> Option<Facility> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Numeric code (0..=23).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Lower-case name, as selectors and the JSON form spell it.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Parses a name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Facility> {
        Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Syslog severity (RFC 5424 §6.2.1). Lower code = more severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Severity {
    Emerg = 0,
    Alert,
    Crit,
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Severity {
    /// Every severity in code order (index = code).
    pub const ALL: [Severity; 8] = [
        Severity::Emerg,
        Severity::Alert,
        Severity::Crit,
        Severity::Err,
        Severity::Warning,
        Severity::Notice,
        Severity::Info,
        Severity::Debug,
    ];
    const NAMES: [&'static str; 8] = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];

    /// The severity with this numeric code (0..=7), if any.
    pub fn from_code(code: u8) -> Option<Severity> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Numeric code (0..=7).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Lower-case name, as selectors and the JSON form spell it.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Parses a name, also the syslog.conf aliases `panic`, `error` and `warn`.
    pub fn from_name(name: &str) -> Option<Severity> {
        let canonical = match name.to_ascii_lowercase().as_str() {
            "panic" => "emerg",
            "error" => "err",
            "warn" => "warning",
            _ => name,
        };
        Self::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(canonical))
            .and_then(|i| Self::ALL.get(i).copied())
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which syslog grammar a message was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RFC 5424, parsed strictly.
    Rfc5424,
    /// RFC 3164 (BSD syslog), parsed tolerantly; also anything that is not RFC 5424.
    Rfc3164,
}

impl Protocol {
    /// `rfc5424` or `rfc3164`, as in the JSON form.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rfc5424 => "rfc5424",
            Protocol::Rfc3164 => "rfc3164",
        }
    }
}

/// A byte range into [`Event::raw`]. `u32` keeps events small; frames are capped far below 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span over `start..end`, saturating at `u32::MAX` (frames never get that large).
    pub fn new(start: usize, end: usize) -> Span {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Span {
            start: clamp(start),
            end: clamp(end.max(start)),
        }
    }

    /// The bytes this span covers in `buf`; empty if it lies outside (never panics).
    pub fn slice(self, buf: &[u8]) -> &[u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    /// Length in bytes.
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    /// True when the span covers no bytes.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// What went wrong while parsing, and where. Rendered as `"<what> at byte <n>"`: the event's
/// `parse_error` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// The kind of fault.
    pub kind: ParseErrorKind,
    /// Byte offset into the frame where the fault was found.
    pub at: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind.name(), self.at)
    }
}

/// Kinds of parse fault; each name is the `<what>` of `parse_error` (docs/TESTING.md lists the
/// hostile inputs that give each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ParseErrorKind {
    /// PRI present but malformed or above 191.
    InvalidPri,
    /// Timestamp malformed or out of range.
    BadTimestamp,
    /// The message ended inside the header.
    TruncatedHeader,
    /// A header field has a byte outside PRINTUSASCII or is too long.
    InvalidHeaderChar,
    /// Structured data is malformed.
    SdInvalid,
    /// A required SP between header fields is missing.
    MissingSpace,
    /// An RFC 5424 MSG that starts with a BOM is not UTF-8 after it (§6.4: MSG-UTF8).
    InvalidUtf8,
    /// A `tail` listener with `parse = "json"` read a line that is not one JSON object.
    InvalidJson,
}

impl ParseErrorKind {
    /// snake_case name used in `parse_error` and counters.
    pub fn name(self) -> &'static str {
        match self {
            ParseErrorKind::InvalidPri => "invalid_pri",
            ParseErrorKind::BadTimestamp => "bad_timestamp",
            ParseErrorKind::TruncatedHeader => "truncated_header",
            ParseErrorKind::InvalidHeaderChar => "invalid_header_char",
            ParseErrorKind::SdInvalid => "sd_invalid",
            ParseErrorKind::MissingSpace => "missing_space",
            ParseErrorKind::InvalidUtf8 => "invalid_utf8",
            ParseErrorKind::InvalidJson => "invalid_json",
        }
    }
}

/// Facts about how a frame was read that are neither fields nor faults. They are not part of
/// the JSON form (its fields are fixed: see `write_json` in output/format.rs); the event carries
/// them for counters and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseFlags(u8);

impl ParseFlags {
    /// A zone-less timestamp named a local time that does not exist (DST gap) or exists twice
    /// (DST overlap) in the listener's zone, and was resolved by rule (hostile-inputs E02).
    pub const TIMESTAMP_ADJUSTED: ParseFlags = ParseFlags(1);
    /// A PARAM-VALUE was not UTF-8; it is shown with U+FFFD, the raw bytes keep it (H09).
    pub const SD_NOT_UTF8: ParseFlags = ParseFlags(2);
    /// A Cisco IOS stamp carried `*` (clock not synchronised) or `.` (clock not authoritative).
    pub const CLOCK_UNSYNCED: ParseFlags = ParseFlags(4);
    /// MSG is one JSON object (checked by a `tail` listener with `parse = "json"`): the JSON
    /// output writes it as an object, `fields`, beside `message`.
    pub const MSG_JSON: ParseFlags = ParseFlags(8);

    /// True when every flag in `other` is set.
    pub fn contains(self, other: ParseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags in `other`.
    pub fn insert(&mut self, other: ParseFlags) {
        self.0 |= other.0;
    }
}

/// The result of parsing one frame: fields as spans into that frame. Produced by
/// [`crate::parse::parse`], a pure function over bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Grammar the message was read as.
    pub protocol: Protocol,
    /// RFC 5424 VERSION (1..=999; only 1 is defined); 0 for RFC 3164.
    pub version: u16,
    /// Facility; user when the PRI is missing or invalid.
    pub facility: Facility,
    /// Severity; notice when the PRI is missing or invalid.
    pub severity: Severity,
    /// True when the frame had no PRI at all (RFC 3164 §4.3.3 default applied).
    pub pri_missing: bool,
    /// The message's own timestamp with its original offset; `None` when NIL, absent or invalid.
    pub timestamp: Option<DateTime<FixedOffset>>,
    /// HOSTNAME.
    pub hostname: Option<Span>,
    /// APP-NAME (RFC 5424) or TAG (RFC 3164).
    pub app_name: Option<Span>,
    /// PROCID, or the RFC 3164 `[pid]`.
    pub procid: Option<Span>,
    /// MSGID (RFC 5424 only).
    pub msgid: Option<Span>,
    /// Structured data elements in order.
    pub structured_data: StructuredData,
    /// MSG (without a BOM); after a fault, the unparsed rest of the frame.
    pub message: Span,
    /// False when MSG is not valid UTF-8 (it is kept as bytes and escaped on output).
    pub msg_utf8: bool,
    /// True when MSG is known to hold no control character (below 0x20, or 0x7f), so a line
    /// format copies it without looking; false when it holds one or nobody looked.
    pub msg_plain: bool,
    /// True when HOSTNAME, APP-NAME, PROCID and MSGID are known to hold only PRINTUSASCII (as
    /// the parsers read them), so a line format copies them without looking; false when nobody
    /// checked.
    pub fields_plain: bool,
    /// Set when the frame did not parse cleanly.
    pub parse_error: Option<ParseError>,
    /// How the frame was read, beyond fields and faults.
    pub flags: ParseFlags,
}

impl Parsed {
    /// Nothing read yet: this grammar and PRI, no fields, an empty MSG at the end of the frame.
    pub fn new(protocol: Protocol, facility: Facility, severity: Severity, len: usize) -> Parsed {
        Parsed {
            protocol,
            version: 0,
            facility,
            severity,
            pri_missing: false,
            timestamp: None,
            hostname: None,
            app_name: None,
            procid: None,
            msgid: None,
            structured_data: StructuredData::default(),
            message: Span::new(len, len),
            msg_utf8: true,
            msg_plain: false,
            fields_plain: false,
            parse_error: None,
            flags: ParseFlags::default(),
        }
    }

    /// A frame about which nothing is known: user.notice, the whole frame as MSG.
    pub fn unparsed(frame: &[u8]) -> Parsed {
        Parsed {
            pri_missing: true,
            message: Span::new(0, frame.len()),
            msg_utf8: std::str::from_utf8(frame).is_ok(),
            ..Parsed::new(Protocol::Rfc3164, Facility::User, Severity::Notice, 0)
        }
    }
}

/// Who a TLS peer proved to be: from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The certificate's first SAN DNS name (its CN when it has no SAN).
    pub name: Option<String>,
    /// `sha256:AB:CD:…` of the certificate.
    pub fingerprint: String,
}

/// A listener's name as events carry it: kept for the life of the process, so an event holds
/// a copy of a pointer, not a reference count that every event of the listener shares. That
/// count's cache line moved between the listener's thread, which took a reference per event,
/// and whichever thread dropped the event last: `perf` put a tenth of the alert engine's thread
/// on that decrement. Names come from the config, each distinct one kept once (a name dropped
/// by a reload stays, a few bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerName(&'static str);

impl ListenerName {
    /// `name`, kept once per distinct name.
    pub fn new(name: &str) -> ListenerName {
        static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
        let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(kept) = names.get(name) {
            return ListenerName(kept);
        }
        let kept: &'static str = Box::leak(name.into());
        names.insert(kept);
        ListenerName(kept)
    }
}

impl From<&str> for ListenerName {
    fn from(name: &str) -> ListenerName {
        ListenerName::new(name)
    }
}

impl std::ops::Deref for ListenerName {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Display for ListenerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for ListenerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// A received, parsed message and where it came from.
#[derive(Debug, Clone)]
pub struct Event {
    /// The frame exactly as received (after framing and `max_message_size` truncation).
    pub raw: Bytes,
    /// When sluice read it.
    pub received_at: DateTime<Utc>,
    /// The sender's address; `None` for unix sockets.
    pub source: Option<SocketAddr>,
    /// Name of the listener that read it (`[listen.NAME]`).
    pub listener: ListenerName,
    /// The authenticated TLS client, for events read by a `tls` listener with a client
    /// certificate.
    pub tls_peer: Option<Arc<TlsPeer>>,
    /// True when the frame was cut to `max_message_size`.
    pub truncated: bool,
    /// The parsed fields.
    pub parsed: Parsed,
}

impl Event {
    fn field(&self, span: Option<Span>) -> Option<&str> {
        // Header spans are produced only over validated ASCII/UTF-8, so this never fails in
        // practice; a failure yields None rather than a panic.
        span.and_then(|s| std::str::from_utf8(s.slice(&self.raw)).ok())
    }

    /// A header field's bytes (`self.parsed.hostname` and the like), as formats copy them: the
    /// `&str` accessors below validate UTF-8 on every call, which a line format does not need.
    pub fn span_bytes(&self, span: Option<Span>) -> Option<&[u8]> {
        span.map(|s| s.slice(&self.raw))
    }

    /// HOSTNAME, if present.
    pub fn hostname(&self) -> Option<&str> {
        self.field(self.parsed.hostname)
    }

    /// APP-NAME / TAG, if present.
    pub fn app_name(&self) -> Option<&str> {
        self.field(self.parsed.app_name)
    }

    /// PROCID / pid, if present.
    pub fn procid(&self) -> Option<&str> {
        self.field(self.parsed.procid)
    }

    /// MSGID, if present.
    pub fn msgid(&self) -> Option<&str> {
        self.field(self.parsed.msgid)
    }

    /// MSG bytes (may be invalid UTF-8, see [`Parsed::msg_utf8`]).
    pub fn message(&self) -> &[u8] {
        self.parsed.message.slice(&self.raw)
    }

    /// Facility.
    pub fn facility(&self) -> Facility {
        self.parsed.facility
    }

    /// Severity.
    pub fn severity(&self) -> Severity {
        self.parsed.severity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Facility::ALL {
            assert_eq!(Facility::from_name(f.name()), Some(f));
            assert_eq!(Facility::from_code(f.code()), Some(f));
        }
        for s in Severity::ALL {
            assert_eq!(Severity::from_name(s.name()), Some(s));
            assert_eq!(Severity::from_code(s.code()), Some(s));
        }
        assert_eq!(Facility::from_code(24), None);
        assert_eq!(Severity::from_name("warn"), Some(Severity::Warning));
        assert_eq!(Severity::from_name("PANIC"), Some(Severity::Emerg));
    }

    #[test]
    fn span_slice_never_panics() {
        let buf = b"abc";
        assert_eq!(Span::new(1, 2).slice(buf), b"b");
        assert_eq!(Span::new(2, 9).slice(buf), b"");
        assert_eq!(Span::new(5, 1).len(), 0);
    }
}
