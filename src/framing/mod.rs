//! RFC 6587 TCP framing: octet counting and non-transparent (LF) framing.
//!
//! [`Framer`] is a pure state machine over a caller-owned [`BytesMut`]: the caller appends what
//! `read()` returned and calls [`Framer::decode`] until it returns `Ok(None)`. Frames are split off
//! the buffer without copying, nothing is allocated from a declared length, length arithmetic is
//! checked, and every call makes progress (hostile inputs A01-A16 and B01-B08, docs/TESTING.md).
//!
//! Framing is detected per frame (RFC 6587 §3.4): a frame that starts with a digit is octet-counted
//! (`MSG-LEN SP SYSLOG-MSG`); anything else is a line ended by LF, or by NUL while
//! [`FramerOptions::nul_trailer`] is set (the default: Python's `SysLogHandler` and glibc's
//! syslog(3) end stream messages with a NUL and no LF), with a trailing CR stripped (and, with
//! `nul_trailer` off, a trailing NUL). A NUL inside an octet-counted frame is always data.
//!
//! - An invalid MSG-LEN (leading `0`, more than 10 digits, overflow, not followed by exactly one SP)
//!   is [`FrameError::FrameLenInvalid`]: the stream cannot be resynchronised safely, so the caller
//!   closes the connection. Errors are sticky: later calls return the same error.
//! - A frame longer than `max_message_size` is delivered cut to that size (`truncated = true`) as
//!   soon as that many bytes are there; the rest of it (the declared length, or up to the next LF)
//!   is discarded exactly and counted in [`FramerStats::discarded_bytes`].
//! - Empty lines and NUL/CR-only lines between frames count one [`FramerStats::empty_frames`] each
//!   (with `nul_trailer`, every NUL ends a line);
//!   one LF or CRLF right after an octet-counted frame, or right after a NUL that ended a line
//!   (`msg NUL LF` is one frame, `NUL LF` one empty line), is tolerated silently.
//!
//! Known hazard (A16): an LF-framed message that starts with a digit (no PRI, e.g.
//! `2024-01-01T00:00:00Z host app: msg`) is read as octet counting and normally fails with
//! `FrameLenInvalid`, closing the connection. Senders must send a PRI.

pub mod relp;

use bytes::{Buf, Bytes, BytesMut};
use std::fmt;

/// Most MSG-LEN digits accepted (10 digits cover any sane frame; more is an attack or garbage).
const MAX_LEN_DIGITS: usize = 10;
/// Most SP bytes skipped in front of a `<` at a frame start (Cisco ASA, B06).
const MAX_LEADING_SP: usize = 16;
/// Default [`FramerOptions::max_message_size`]: 64 KiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Configuration of a [`Framer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerOptions {
    /// Largest payload delivered per frame; longer frames are truncated. 0 is treated as 1.
    pub max_message_size: usize,
    /// Also end non-transparent frames at NUL (RFC 6587 §3.4.2 names it as a trailer senders
    /// use, B05). On by default; off, a NUL is data unless it comes right before the LF.
    pub nul_trailer: bool,
}

impl Default for FramerOptions {
    fn default() -> Self {
        FramerOptions {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            nul_trailer: true,
        }
    }
}

/// How a frame was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `MSG-LEN SP SYSLOG-MSG` (RFC 6587 §3.4.1).
    OctetCounting,
    /// Ended by a trailer: LF, or NUL when configured (RFC 6587 §3.4.2).
    NonTransparent,
}

/// One message cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The payload, without MSG-LEN header or trailer. Never empty, at most `max_message_size`.
    pub data: Bytes,
    /// The frame was longer than `max_message_size` (or cut short by EOF); `data` is its start.
    pub truncated: bool,
    /// How the frame was delimited.
    pub framing: Framing,
    /// The peer closed the stream before this octet-counted frame was complete.
    pub incomplete_at_eof: bool,
}

/// Counters accumulated by a [`Framer`] since its creation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FramerStats {
    /// Empty lines (or NUL/CR-only lines) skipped between frames, one per line.
    pub empty_frames: u64,
    /// Payload bytes thrown away after truncating oversize frames (trailers not included).
    pub discarded_bytes: u64,
    /// Oversize octet-counted frames, delivered cut to `max_message_size` before their end
    /// arrived, that the peer then closed the stream in: cut short by the peer like an
    /// `incomplete_at_eof` frame, but known only once the stream ends.
    pub oversize_cut_at_eof: u64,
    /// Non-transparent frames whose trailer was a NUL rather than an LF (`nul_trailer`),
    /// truncated ones included.
    pub nul_terminated: u64,
}

/// A framing error after which the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// MSG-LEN is not `NONZERO-DIGIT *DIGIT` (at most 10 digits) followed by exactly one SP.
    FrameLenInvalid,
    /// The stream starts with a TLS record header: a TLS client on a plain TCP port (B08).
    TlsOnPlainPort,
}

impl FrameError {
    /// Snake-case name, used as the metrics counter name.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameError::FrameLenInvalid => "frame_len_invalid",
            FrameError::TlsOnPlainPort => "tls_on_plain_port",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FrameError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames.
    Idle,
    /// Header consumed; `len` payload bytes expected.
    OctetBody { len: usize },
    /// A line starts at `buf[0]`; `buf[..scanned]` holds no trailer.
    Line { scanned: usize },
    /// After a truncated octet frame: drop exactly `remaining` more bytes.
    DiscardOctets { remaining: usize },
    /// After a truncated line: drop up to and including the next trailer.
    DiscardLine,
}

/// CR/NUL bytes skipped since the last LF while between frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blank {
    None,
    Cr,
    Other,
}

enum Step {
    Emit(Frame),
    NeedMore,
    Continue,
}

/// RFC 6587 framer for one TCP connection.
#[derive(Debug)]
pub struct Framer {
    max: usize,
    nul_trailer: bool,
    state: State,
    blank: Blank,
    /// The last frame was octet-counted (A15), or a NUL ended the last (empty or not) line: one
    /// LF or CRLF after it is not an empty frame.
    lf_tolerated: bool,
    tls_checked: bool,
    /// `buf` holds the undecided start of a frame (partial header, TLS prefix, SP run).
    start_pending: bool,
    failed: Option<FrameError>,
    stats: FramerStats,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new(opts: FramerOptions) -> Framer {
        Framer {
            max: opts.max_message_size.max(1),
            nul_trailer: opts.nul_trailer,
            state: State::Idle,
            blank: Blank::None,
            lf_tolerated: false,
            tls_checked: false,
            start_pending: false,
            failed: None,
            stats: FramerStats::default(),
        }
    }

    /// Next complete frame from the front of `buf`, consuming what it used. `Ok(None)` means more
    /// bytes are needed; `buf` then holds only an incomplete frame prefix of at most
    /// `max_message_size + 16` bytes (bytes being discarded are removed at once).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.run(buf, false)
    }

    /// Like [`decode`](Self::decode), once the peer has closed the stream: a final line without
    /// trailer is delivered, and an incomplete octet-counted frame is delivered with
    /// `truncated` and `incomplete_at_eof` set; an oversize one already delivered counts in
    /// [`FramerStats::oversize_cut_at_eof`]. An unfinished MSG-LEN is `FrameLenInvalid`.
    /// Returns `Ok(None)` once `buf` is exhausted.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let out = self.run(buf, true);
        if let Ok(None) = out {
            if let State::DiscardOctets { remaining } = self.state
                && remaining > 0
            {
                self.stats.oversize_cut_at_eof = self.stats.oversize_cut_at_eof.saturating_add(1);
            }
            self.state = State::Idle;
            self.start_pending = false;
        }
        out
    }

    /// True while a frame has started but not completed (including discarding the rest of an
    /// oversize frame), for a per-frame completion deadline (C03).
    pub fn in_frame(&self) -> bool {
        self.start_pending || self.state != State::Idle
    }

    /// Counters accumulated since creation.
    pub fn stats(&self) -> &FramerStats {
        &self.stats
    }

    fn run(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let out = self.step(buf, eof);
        if let Err(err) = out {
            self.failed = Some(err);
        }
        out
    }

    fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Frame>, FrameError> {
        loop {
            let step = match self.state {
                State::Idle => {
                    let started = self.start_frame(buf, eof)?;
                    self.start_pending = !started && !buf.is_empty();
                    if started {
                        Step::Continue
                    } else {
                        Step::NeedMore
                    }
                }
                State::OctetBody { len } => self.octet_body(buf, len, eof),
                State::Line { scanned } => self.line(buf, scanned, eof),
                State::DiscardOctets { remaining } => {
                    let n = remaining.min(buf.len());
                    buf.advance(n);
                    self.add_discarded(n);
                    let left = remaining.saturating_sub(n);
                    if left == 0 {
                        self.state = State::Idle;
                        self.lf_tolerated = true;
                        Step::Continue
                    } else {
                        self.state = State::DiscardOctets { remaining: left };
                        Step::NeedMore
                    }
                }
                State::DiscardLine => match self.find_trailer(buf) {
                    Some(i) => {
                        if buf.get(i) == Some(&0) {
                            self.ended_by_nul();
                        }
                        buf.advance(i.saturating_add(1));
                        self.add_discarded(i);
                        self.state = State::Idle;
                        Step::Continue
                    }
                    None => {
                        let n = buf.len();
                        buf.advance(n);
                        self.add_discarded(n);
                        Step::NeedMore
                    }
                },
            };
            match step {
                Step::Emit(frame) => return Ok(Some(frame)),
                Step::NeedMore => return Ok(None),
                Step::Continue => {}
            }
        }
    }

    /// Skips blank bytes and decides how the next frame is framed. `Ok(true)` once the state has
    /// left `Idle`; `Ok(false)` when `buf` is empty or holds only an undecided frame start.
    fn start_frame(&mut self, buf: &mut BytesMut, eof: bool) -> Result<bool, FrameError> {
        let skip = self.skip_blank(buf);
        buf.advance(skip);
        let Some(&first) = buf.first() else {
            if eof {
                self.end_blank_run();
            }
            return Ok(false);
        };
        self.end_blank_run();
        if !self.tls_checked {
            match tls_prefix(buf) {
                Some(true) => return Err(FrameError::TlsOnPlainPort),
                None if !eof => return Ok(false),
                _ => self.tls_checked = true,
            }
        }
        if first == b' ' {
            let run = buf
                .iter()
                .take(MAX_LEADING_SP.saturating_add(1))
                .take_while(|&&b| b == b' ')
                .count();
            match buf.get(run) {
                Some(b'<') if run <= MAX_LEADING_SP => buf.advance(run),
                None if run <= MAX_LEADING_SP && !eof => return Ok(false),
                _ => {} // the spaces are data of a line
            }
        }
        if let Some(b'0'..=b'9') = buf.first() {
            let Some((len, header)) = parse_msg_len(buf, eof)? else {
                return Ok(false);
            };
            buf.advance(header);
            self.state = State::OctetBody { len };
        } else {
            self.state = State::Line { scanned: 0 };
        }
        Ok(true)
    }

    /// Number of leading LF/CR/NUL bytes to skip before a frame, updating the empty-line counts.
    fn skip_blank(&mut self, buf: &[u8]) -> usize {
        let mut n = 0;
        for &c in buf {
            match c {
                b'\n' => self.end_blank_line(),
                0 if self.nul_trailer => {
                    self.blank = Blank::Other;
                    self.end_blank_line();
                    // NUL LF (or NUL CR LF) is one trailer.
                    self.lf_tolerated = true;
                }
                b'\r' if self.blank == Blank::None => self.blank = Blank::Cr,
                b'\r' | 0 => self.blank = Blank::Other,
                _ => break,
            }
            n += 1;
        }
        n
    }

    /// A trailer ended an empty line: count it unless it is the LF/CRLF after an octet frame.
    fn end_blank_line(&mut self) {
        if !(self.lf_tolerated && self.blank != Blank::Other) {
            self.add_empty();
        }
        self.blank = Blank::None;
        self.lf_tolerated = false;
    }

    /// A frame start (or EOF) ended a run of skipped CR/NUL bytes without LF: one empty frame.
    fn end_blank_run(&mut self) {
        if self.blank != Blank::None {
            self.add_empty();
        }
        self.blank = Blank::None;
        self.lf_tolerated = false;
    }

    fn octet_body(&mut self, buf: &mut BytesMut, len: usize, eof: bool) -> Step {
        let want = len.min(self.max);
        if buf.len() >= want {
            let data = buf.split_to(want).freeze();
            let truncated = len > want;
            self.state = if truncated {
                State::DiscardOctets {
                    remaining: len.saturating_sub(want),
                }
            } else {
                self.lf_tolerated = true;
                State::Idle
            };
            return self.emit(data, truncated, Framing::OctetCounting, false);
        }
        if !eof {
            return Step::NeedMore;
        }
        self.state = State::Idle;
        let data = buf.split_to(buf.len()).freeze();
        self.emit(data, true, Framing::OctetCounting, true)
    }

    fn line(&mut self, buf: &mut BytesMut, scanned: usize, eof: bool) -> Step {
        let max = self.max;
        // A line of up to max bytes plus a strippable CR/NUL suffix (2 bytes) fits.
        let window = buf.len().min(max.saturating_add(3));
        let from = scanned.min(window);
        let found = buf.get(from..window).and_then(|w| self.find_trailer(w));
        let Some(end) = found.map(|i| from.saturating_add(i)) else {
            let tail = buf.get(max..window).unwrap_or_default();
            if !tail.is_empty() && !self.could_fit(tail) {
                return self.truncate_line(buf);
            }
            if !eof {
                self.state = State::Line { scanned: window };
                return Step::NeedMore;
            }
            let keep = self.stripped_len(buf);
            if keep > max {
                return self.truncate_line(buf);
            }
            self.state = State::Idle;
            let data = buf.split_to(buf.len()).freeze().slice(..keep);
            return self.emit(data, false, Framing::NonTransparent, false);
        };
        let keep = self.stripped_len(buf.get(..end).unwrap_or_default());
        if keep > max {
            return self.truncate_line(buf);
        }
        self.state = State::Idle;
        if buf.get(end) == Some(&0) {
            // `keep` > 0: a line starts with a byte that is not blank.
            self.ended_by_nul();
        }
        let data = buf.split_to(end.saturating_add(1)).freeze().slice(..keep);
        self.emit(data, false, Framing::NonTransparent, false)
    }

    fn truncate_line(&mut self, buf: &mut BytesMut) -> Step {
        let data = buf.split_to(self.max.min(buf.len())).freeze();
        self.state = State::DiscardLine;
        self.emit(data, true, Framing::NonTransparent, false)
    }

    fn emit(&mut self, data: Bytes, truncated: bool, framing: Framing, at_eof: bool) -> Step {
        if data.is_empty() {
            self.add_empty();
            return Step::Continue;
        }
        Step::Emit(Frame {
            data,
            truncated,
            framing,
            incomplete_at_eof: at_eof,
        })
    }

    fn find_trailer(&self, hay: &[u8]) -> Option<usize> {
        if self.nul_trailer {
            memchr::memchr2(b'\n', 0, hay)
        } else {
            memchr::memchr(b'\n', hay)
        }
    }

    /// Length of a line's content once a trailing CR, then (LF mode) a trailing NUL are removed.
    fn stripped_len(&self, content: &[u8]) -> usize {
        let c = content.strip_suffix(b"\r").unwrap_or(content);
        let c = match self.nul_trailer {
            true => c,
            false => c.strip_suffix(b"\0").unwrap_or(c),
        };
        c.len()
    }

    /// Whether `tail` (the bytes past `max`, no trailer among them) may still be stripped away.
    fn could_fit(&self, tail: &[u8]) -> bool {
        match tail {
            b"\r" => true,
            b"\0" | b"\0\r" => !self.nul_trailer,
            _ => false,
        }
    }

    /// A line (delivered whole, or the rest of a truncated one) ended at a NUL.
    fn ended_by_nul(&mut self) {
        self.stats.nul_terminated = self.stats.nul_terminated.saturating_add(1);
        self.lf_tolerated = true;
    }

    fn add_empty(&mut self) {
        self.stats.empty_frames = self.stats.empty_frames.saturating_add(1);
    }

    fn add_discarded(&mut self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.stats.discarded_bytes = self.stats.discarded_bytes.saturating_add(n);
    }
}

/// `Some(true)`: a TLS record header (0x16, 0x03, 0x00..=0x04); `Some(false)`: not one;
/// `None`: the bytes so far match but fewer than 3 are there.
fn tls_prefix(b: &[u8]) -> Option<bool> {
    for (i, &v) in b.iter().take(3).enumerate() {
        let ok = match i {
            0 => v == 0x16,
            1 => v == 0x03,
            _ => v <= 0x04,
        };
        if !ok {
            return Some(false);
        }
    }
    if b.len() >= 3 { Some(true) } else { None }
}

/// Parses `MSG-LEN SP` at the start of `b`: `Ok(Some((len, header_bytes)))`, or `Ok(None)` when
/// more bytes are needed. The byte after the SP must be there and must not be another SP.
fn parse_msg_len(b: &[u8], eof: bool) -> Result<Option<(usize, usize)>, FrameError> {
    const INVALID: FrameError = FrameError::FrameLenInvalid;
    let mut len: usize = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'0' if i == 0 => return Err(INVALID),
            b'0'..=b'9' => {
                if i >= MAX_LEN_DIGITS {
                    return Err(INVALID);
                }
                len = len
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(usize::from(c - b'0')))
                    .ok_or(INVALID)?;
            }
            b' ' if i > 0 => {
                let header = i.saturating_add(1);
                return match b.get(header) {
                    Some(b' ') => Err(INVALID),
                    Some(_) => Ok(Some((len, header))),
                    None if eof => Ok(Some((len, header))),
                    None => Ok(None),
                };
            }
            _ => return Err(INVALID),
        }
    }
    if eof { Err(INVALID) } else { Ok(None) }
}

#[cfg(test)]
mod tests;
