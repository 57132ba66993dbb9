//! RELP framing (librelp's doc/relp.md): `TXNR SP COMMAND SP DATALEN [SP DATA] LF`.
//!
//! [`parse_frame`] is a pure function over the bytes read so far: it returns a complete frame
//! and how many bytes it took, `Ok(None)` while the frame is incomplete, or a [`RelpError`] as
//! soon as the bytes cannot be a valid frame, without waiting for a declared length to arrive
//! (an oversize DATALEN is refused when its digits are complete). Nothing is allocated from a
//! declared length and all arithmetic is checked. [`Session`] is the receiver's state over a
//! connection's frames: `open` first, transaction numbers in sequence (1, 2, ..., 999,999,999,
//! then 1 again).

use std::ops::Range;

/// Largest transaction number; the one after it is 1.
pub const MAX_TXNR: u32 = 999_999_999;
/// Digits of TXNR and DATALEN (`NUMBER = 1*9DIGIT`).
const MAX_DIGITS: usize = 9;
/// Longest command name (`COMMAND = 1*32ALPHA`).
const MAX_COMMAND: usize = 32;

/// The transaction number after `txnr`: 999,999,999 wraps to 1 (0 is reserved for hints).
pub fn next_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_TXNR { 1 } else { txnr + 1 }
}

/// A RELP command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Session start, with offers.
    Open,
    /// A syslog message.
    Syslog,
    /// A response.
    Rsp,
    /// Session end, asked by the client.
    Close,
    /// The server's hint that it closes (txnr 0).
    ServerClose,
    /// A well-formed command this side does not know (e.g. `starttls`).
    Other,
}

impl Command {
    fn from_name(name: &[u8]) -> Command {
        match name {
            b"open" => Command::Open,
            b"syslog" => Command::Syslog,
            b"rsp" => Command::Rsp,
            b"close" => Command::Close,
            b"serverclose" => Command::ServerClose,
            _ => Command::Other,
        }
    }
}

/// One frame, its data given as a range of the parsed buffer (so the caller can split it off
/// without copying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Transaction number.
    pub txnr: u32,
    /// Command.
    pub command: Command,
    /// DATA's bytes in the buffer (empty when DATALEN is 0).
    pub data: Range<usize>,
}

/// Why bytes are not a RELP frame. The connection cannot be resynchronised after any of them:
/// the receiver closes it (doc/relp.md, "ERROR HANDLING").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelpError {
    /// TXNR is not 1 to 9 digits followed by SP.
    BadTxnr,
    /// COMMAND is not 1 to 32 letters followed by SP.
    BadCommand,
    /// DATALEN is not 1 to 9 digits followed by SP (LF when 0).
    BadDatalen,
    /// DATALEN is over the limit.
    Oversize {
        /// The declared DATALEN.
        datalen: usize,
    },
    /// The byte after DATA is not the LF trailer.
    BadTrailer,
}

impl std::fmt::Display for RelpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelpError::BadTxnr => f.write_str("invalid RELP transaction number"),
            RelpError::BadCommand => f.write_str("invalid RELP command"),
            RelpError::BadDatalen => f.write_str("invalid RELP DATALEN"),
            RelpError::Oversize { datalen } => {
                write!(f, "RELP frame of {datalen} bytes is over the limit")
            }
            RelpError::BadTrailer => f.write_str("RELP frame does not end with LF"),
        }
    }
}

impl std::error::Error for RelpError {}

/// Reads a decimal number of 1 to 9 digits at `at`, ended by a byte in `ends`. `Ok(None)`: the
/// buffer ends inside it. Returns the number and the index of the byte that ended it.
fn number(buf: &[u8], at: usize, ends: &[u8]) -> Result<Option<(u32, usize)>, ()> {
    let mut value: u32 = 0;
    let mut i = at;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        if b.is_ascii_digit() {
            if i - at == MAX_DIGITS {
                return Err(());
            }
            // At most 9 digits: cannot overflow a u32.
            value = value * 10 + u32::from(b - b'0');
            i += 1;
        } else if i > at && ends.contains(&b) {
            return Ok(Some((value, i)));
        } else {
            return Err(());
        }
    }
}

/// A frame's header: what comes before its DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Transaction number.
    pub txnr: u32,
    /// Command.
    pub command: Command,
    /// Declared DATA length.
    pub datalen: usize,
    /// Where DATA starts in the buffer (for DATALEN 0, where the LF trailer is).
    pub data_start: usize,
}

/// Parses the header at the start of `buf`, whatever its DATALEN: `Ok(None)` while incomplete.
/// Lets a receiver keep the start of a frame longer than it takes and skip the rest.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, RelpError> {
    let Some((txnr, sp)) = number(buf, 0, b" ").map_err(|()| RelpError::BadTxnr)? else {
        return Ok(None);
    };
    let cmd_start = sp + 1;
    let mut i = cmd_start;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        if b.is_ascii_alphabetic() && i - cmd_start < MAX_COMMAND {
            i += 1;
        } else if b == b' ' && i > cmd_start {
            break;
        } else {
            return Err(RelpError::BadCommand);
        }
    }
    let command = Command::from_name(&buf[cmd_start..i]);
    let Some((datalen, end)) = number(buf, i + 1, b" \n").map_err(|()| RelpError::BadDatalen)?
    else {
        return Ok(None);
    };
    let datalen = datalen as usize;
    // `0 LF`, or `N SP DATA LF` with N > 0.
    let data_start = match (datalen, buf[end]) {
        (0, b'\n') => end,
        (0, _) | (_, b'\n') => return Err(RelpError::BadDatalen),
        _ => end + 1,
    };
    Ok(Some(Header {
        txnr,
        command,
        datalen,
        data_start,
    }))
}

/// Parses the frame at the start of `buf`, whose DATA may hold at most `max_data` bytes.
/// Returns the frame and the bytes it took (always at least one), `Ok(None)` if `buf` holds only
/// the start of a valid frame, or the error that makes it invalid.
pub fn parse_frame(buf: &[u8], max_data: usize) -> Result<Option<(Frame, usize)>, RelpError> {
    let Some(h) = parse_header(buf)? else {
        return Ok(None);
    };
    if h.datalen > max_data {
        return Err(RelpError::Oversize { datalen: h.datalen });
    }
    if h.datalen == 0 {
        return Ok(Some((
            frame(h.txnr, h.command, h.data_start..h.data_start),
            h.data_start + 1,
        )));
    }
    let data = h.data_start..h.data_start + h.datalen;
    match buf.get(data.end) {
        None => Ok(None),
        Some(b'\n') => {
            let taken = data.end + 1;
            Ok(Some((frame(h.txnr, h.command, data), taken)))
        }
        Some(_) => Err(RelpError::BadTrailer),
    }
}

fn frame(txnr: u32, command: Command, data: Range<usize>) -> Frame {
    Frame {
        txnr,
        command,
        data,
    }
}

/// Writes a frame.
pub fn write_frame(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{txnr} {command} {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// The status code of an `rsp`'s data (`200 OK`, `500 error`, followed by LF and command data
/// for `open`); `None` if it does not start with three digits.
pub fn rsp_code(data: &[u8]) -> Option<u16> {
    match data.get(..3) {
        Some(d)
            if d.iter().all(u8::is_ascii_digit)
                && !matches!(data.get(3), Some(b) if b.is_ascii_digit()) =>
        {
            Some(d.iter().fold(0u16, |v, b| v * 10 + u16::from(b - b'0')))
        }
        _ => None,
    }
}

/// The value of offer `name` in an `open`'s data (`LF`-separated `name=value` lines), if given.
pub fn offer<'a>(data: &'a [u8], name: &str) -> Option<&'a [u8]> {
    data.split(|&b| b == b'\n').find_map(|line| {
        let (k, v) = match line.iter().position(|&b| b == b'=') {
            Some(p) => (&line[..p], &line[p + 1..]),
            None => (line, &line[line.len()..]),
        };
        (k == name.as_bytes()).then_some(v)
    })
}

/// Why a session refuses a well-formed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// A command before `open`, or a second `open`.
    NotOpen,
    /// The transaction number is not the one after the previous command's.
    TxnrOutOfSequence {
        /// What was expected.
        expected: u32,
        /// What came.
        got: u32,
    },
    /// `open` without a `relp_version` offer, or with a version this side does not speak.
    BadOffer,
    /// A command a client may not send here (`rsp`, `serverclose`) or one not offered.
    UnexpectedCommand,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::NotOpen => f.write_str("RELP command before open (or open twice)"),
            SessionError::TxnrOutOfSequence { expected, got } => {
                write!(f, "RELP transaction number {got}, expected {expected}")
            }
            SessionError::BadOffer => f.write_str("RELP open without a usable relp_version"),
            SessionError::UnexpectedCommand => f.write_str("unexpected RELP command"),
        }
    }
}

impl std::error::Error for SessionError {}

/// The receiver's view of one RELP session.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The last transaction number received; `None` before `open`.
    last_txnr: Option<u32>,
    closed: bool,
}

impl Session {
    /// A session before `open`.
    pub fn new() -> Session {
        Session::default()
    }

    /// Whether `open` has been received.
    pub fn is_open(&self) -> bool {
        self.last_txnr.is_some()
    }

    /// Whether `close` has been received.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Checks a client's frame against the session: `open` first (any txnr starts the count:
    /// librelp starts at 1), then each txnr the successor of the one before.
    pub fn accept(&mut self, frame: &Frame, data: &[u8]) -> Result<(), SessionError> {
        match (self.last_txnr, frame.command) {
            (None, Command::Open) => {
                match offer(data, "relp_version") {
                    Some(b"0") | Some(b"1") => {}
                    _ => return Err(SessionError::BadOffer),
                }
                if frame.txnr == 0 {
                    return Err(SessionError::TxnrOutOfSequence {
                        expected: 1,
                        got: 0,
                    });
                }
                self.last_txnr = Some(frame.txnr);
                Ok(())
            }
            (None, _) | (Some(_), Command::Open) => Err(SessionError::NotOpen),
            (Some(_), _) if self.closed => Err(SessionError::NotOpen),
            (Some(last), command) => {
                let expected = next_txnr(last);
                if frame.txnr != expected {
                    return Err(SessionError::TxnrOutOfSequence {
                        expected,
                        got: frame.txnr,
                    });
                }
                match command {
                    Command::Syslog => {}
                    Command::Close => self.closed = true,
                    Command::Rsp | Command::ServerClose | Command::Other | Command::Open => {
                        return Err(SessionError::UnexpectedCommand);
                    }
                }
                self.last_txnr = Some(frame.txnr);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1024;

    fn one(buf: &[u8]) -> Result<Option<(Frame, usize)>, RelpError> {
        parse_frame(buf, MAX)
    }

    #[test]
    fn frames_with_and_without_data() {
        let buf = b"2 syslog 5 hello\n3 close 0\n";
        let (f, n) = one(buf).unwrap().unwrap();
        assert_eq!(
            (f.txnr, f.command, &buf[f.data.clone()]),
            (2, Command::Syslog, &b"hello"[..])
        );
        assert_eq!(n, 17);
        let (f, n) = one(&buf[n..]).unwrap().unwrap();
        assert_eq!(
            (f.txnr, f.command, f.data.len(), n),
            (3, Command::Close, 0, 10)
        );
    }

    #[test]
    fn data_may_hold_lf_and_spaces() {
        let buf = b"1 open 25 relp_version=0\ncommands=x\n";
        let (f, n) = one(buf).unwrap().unwrap();
        assert_eq!(f.command, Command::Open);
        assert_eq!(n, buf.len());
        assert_eq!(offer(&buf[f.data.clone()], "relp_version"), Some(&b"0"[..]));
        assert_eq!(offer(&buf[f.data], "commands"), Some(&b"x"[..]));
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        let buf = b"999999999 syslog 11 <13>1 - x y\n";
        for end in 0..buf.len() {
            assert_eq!(one(&buf[..end]), Ok(None), "prefix {end}");
        }
        assert!(one(buf).unwrap().is_some());
    }

    #[test]
    fn bad_txnr() {
        assert_eq!(one(b"x syslog 1 a\n"), Err(RelpError::BadTxnr));
        assert_eq!(one(b" 1 syslog 1 a\n"), Err(RelpError::BadTxnr));
        assert_eq!(one(b"1234567890 syslog 1 a\n"), Err(RelpError::BadTxnr));
        assert_eq!(one(b"-1 syslog 1 a\n"), Err(RelpError::BadTxnr));
    }

    #[test]
    fn bad_command_and_datalen() {
        assert_eq!(one(b"1 sys1og 1 a\n"), Err(RelpError::BadCommand));
        assert_eq!(one(b"1  1 a\n"), Err(RelpError::BadCommand));
        let long = format!("1 {} 0\n", "a".repeat(33));
        assert_eq!(one(long.as_bytes()), Err(RelpError::BadCommand));
        assert_eq!(one(b"1 syslog x a\n"), Err(RelpError::BadDatalen));
        assert_eq!(one(b"1 syslog 1234567890 a\n"), Err(RelpError::BadDatalen));
        assert_eq!(one(b"1 syslog 0 a\n"), Err(RelpError::BadDatalen));
        assert_eq!(one(b"1 syslog 3\nabc\n"), Err(RelpError::BadDatalen));
        assert_eq!(one(b"1 syslog 1 ab\n"), Err(RelpError::BadTrailer));
    }

    #[test]
    fn oversize_is_refused_before_its_data_arrives() {
        assert_eq!(
            one(b"1 syslog 999999999 "),
            Err(RelpError::Oversize {
                datalen: 999_999_999
            })
        );
        assert_eq!(
            one(b"1 syslog 1025 "),
            Err(RelpError::Oversize { datalen: 1025 })
        );
        assert!(matches!(one(b"1 syslog 1024 "), Ok(None)));
    }

    #[test]
    fn header_of_an_oversize_frame() {
        let h = parse_header(b"7 syslog 999999 abc").unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                txnr: 7,
                command: Command::Syslog,
                datalen: 999_999,
                data_start: 16
            }
        );
        assert_eq!(parse_header(b"7 syslog 99"), Ok(None));
        let h = parse_header(b"8 close 0\n").unwrap().unwrap();
        assert_eq!((h.datalen, h.data_start), (0, 9));
    }

    #[test]
    fn txnr_wraps_to_one() {
        assert_eq!(next_txnr(1), 2);
        assert_eq!(next_txnr(MAX_TXNR), 1);
        let mut s = Session::new();
        let open = frame(MAX_TXNR - 1, Command::Open, 0..14);
        s.accept(&open, b"relp_version=0").unwrap();
        s.accept(&frame(MAX_TXNR, Command::Syslog, 0..0), b"")
            .unwrap();
        s.accept(&frame(1, Command::Syslog, 0..0), b"").unwrap();
        assert_eq!(
            s.accept(&frame(3, Command::Syslog, 0..0), b""),
            Err(SessionError::TxnrOutOfSequence {
                expected: 2,
                got: 3
            })
        );
    }

    #[test]
    fn session_wants_open_first_and_in_sequence() {
        let mut s = Session::new();
        assert_eq!(
            s.accept(&frame(1, Command::Syslog, 0..0), b""),
            Err(SessionError::NotOpen)
        );
        assert_eq!(
            s.accept(&frame(1, Command::Open, 0..0), b"commands=syslog"),
            Err(SessionError::BadOffer)
        );
        s.accept(
            &frame(1, Command::Open, 0..0),
            b"relp_version=0\ncommands=syslog",
        )
        .unwrap();
        assert_eq!(
            s.accept(&frame(2, Command::Open, 0..0), b"relp_version=0"),
            Err(SessionError::NotOpen)
        );
        s.accept(&frame(2, Command::Syslog, 0..0), b"").unwrap();
        assert_eq!(
            s.accept(&frame(3, Command::Rsp, 0..0), b""),
            Err(SessionError::UnexpectedCommand)
        );
        s.accept(&frame(3, Command::Close, 0..0), b"").unwrap();
        assert!(s.is_closed());
        assert_eq!(
            s.accept(&frame(4, Command::Syslog, 0..0), b""),
            Err(SessionError::NotOpen)
        );
    }

    #[test]
    fn rsp_codes() {
        assert_eq!(rsp_code(b"200 OK"), Some(200));
        assert_eq!(rsp_code(b"500 error"), Some(500));
        assert_eq!(rsp_code(b"200 OK\nrelp_version=0"), Some(200));
        assert_eq!(rsp_code(b"2000"), None);
        assert_eq!(rsp_code(b"20"), None);
        assert_eq!(rsp_code(b"OK"), None);
    }

    #[test]
    fn written_frames_parse_back() {
        let mut out = Vec::new();
        write_frame(&mut out, 7, "syslog", b"a b\nc");
        write_frame(&mut out, 8, "close", b"");
        assert_eq!(out, b"7 syslog 5 a b\nc\n8 close 0\n");
        let (f, n) = one(&out).unwrap().unwrap();
        assert_eq!((f.txnr, &out[f.data]), (7, &b"a b\nc"[..]));
        assert_eq!(one(&out[n..]).unwrap().unwrap().0.command, Command::Close);
    }

    /// Valid frames, cut and spliced with garbage.
    fn hostile() -> impl Strategy<Value = Vec<u8>> {
        let frame = (
            0u32..=1_000_000_000,
            "[a-z]{0,34}",
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(t, c, d)| {
                let mut out = Vec::new();
                write_frame(&mut out, t, &c, &d);
                out
            });
        let piece = prop_oneof![
            frame,
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::collection::vec(
                prop_oneof![Just(b' '), Just(b'\n'), Just(b'9'), Just(b'0')],
                0..30
            ),
        ];
        proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
    }

    proptest! {
        /// Any bytes: never a panic; a frame takes at least one byte and no more than given, its
        /// data lies inside what it took and respects the limit; an error or `None` is stable
        /// when more bytes arrive after a complete frame.
        #[test]
        fn hostile_k07_input_never_panics(buf in hostile(), max in 0usize..64) {
            let mut at = 0;
            let mut session = Session::new();
            while at < buf.len() {
                match parse_frame(&buf[at..], max) {
                    Ok(Some((f, n))) => {
                        prop_assert!(n >= 1 && n <= buf.len() - at);
                        prop_assert!(f.data.end < n && f.data.len() <= max);
                        prop_assert!(f.txnr <= MAX_TXNR);
                        let _ = session.accept(&f, &buf[at..][f.data.clone()]);
                        at += n;
                    }
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
        }

        /// A valid frame parses back whole, whatever follows it.
        #[test]
        fn valid_frames_round_trip(t in 0u32..=MAX_TXNR, c in "[a-z]{1,32}",
                                   d in proptest::collection::vec(any::<u8>(), 0..100),
                                   tail in proptest::collection::vec(any::<u8>(), 0..10)) {
            let mut out = Vec::new();
            write_frame(&mut out, t, &c, &d);
            let len = out.len();
            out.extend_from_slice(&tail);
            let (f, n) = parse_frame(&out, 100).unwrap().unwrap();
            prop_assert_eq!(n, len);
            prop_assert_eq!(f.txnr, t);
            prop_assert_eq!(&out[f.data], &d[..]);
        }
    }
}
