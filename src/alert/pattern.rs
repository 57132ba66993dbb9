//! Message templates for `kind = "new_pattern"`: [`mask`] turns a message into its template (a
//! pure function over bytes), and [`PatternTable`] remembers the templates seen, bounded, with
//! a count each, and can be saved to and loaded from a file.
//!
//! Masking, token by token (a token starts where the previous byte is not a letter, digit,
//! `_`, `.`, `-` or `:`):
//! - a quoted value `"..."` or `'...'` (closed on the same message) becomes `"<*>"`;
//! - a UUID becomes `<UUID>`, `0x` hex becomes `<HEX>`, a run of 8 or more hex digits holding
//!   both a digit and a letter (a hash, a container id) becomes `<HEX>`;
//! - an IPv4 address (with an optional `:port`) becomes `<IP>`, an IPv6 address (hex groups
//!   with two or more `:`, or `::`) becomes `<IP>`;
//! - an id becomes `<ID>`, wherever it starts: a run of letters and digits holding both
//!   (`7d9f8c6b5` and `x2x4q` in the pod name `web-7d9f8c6b5-x2x4q`, and names such as `ssh2`
//!   or `eth0`: as in Drain, a word with a digit is a value), or a run of 16 or more base64
//!   bytes (letters, digits, `+`, `/`, and its `=` padding) with capitals and small letters
//!   whose letters and digits change 3 times or more (an SSH key's `SHA256:` fingerprint, a
//!   token, which `+` and `/` would otherwise cut into words);
//! - every other run of digits (`3.14`, the `1` of `HTTP/1`) becomes `<N>`.
//!
//! Plain masking rather than a Drain-style miner: on the syslog traffic sluice sees, the
//! variable parts are these values, which masking removes exactly, while Drain also merges
//! templates that differ in one word (`session opened` and `session closed`), which is the
//! difference `new_pattern` is meant to report.

use std::hash::BuildHasher;
use std::io::{BufRead, Write};
use std::num::NonZeroU64;
use std::path::Path;

use hashbrown::HashTable;

use super::{same_bytes, word};

/// Bytes of a template kept: longer messages are cut (their tail rarely decides the template).
pub const MAX_TEMPLATE_BYTES: usize = 512;

/// Byte classes for the scanner: one table lookup per byte instead of a chain of tests.
const WORD: u8 = 1;
/// Starts a value at a token's start: a hex digit or ':'.
const STARTS_TOKEN: u8 = 2;
/// Can be part of a value other than a plain number: a hex digit, `-`, `.`, `:` or the `x` of
/// `0x`.
const IN_VALUE: u8 = 4;
const DIGIT: u8 = 8;
const HEX: u8 = 16;
const ALNUM: u8 = 32;
/// In a base64 id: a letter, a digit, `+` or `/`.
const BASE64: u8 = 64;
/// A base64 run whose letters and digits change between them this many times is an id (with
/// [`BASE64_ID_BYTES`] and both cases): random bytes, not a name.
const BASE64_ID_CHANGES: usize = 3;
/// A base64 run this long (with a digit, a capital and a small letter) is an id.
const BASE64_ID_BYTES: usize = 16;

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut k = 0;
        if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b':') {
            k |= WORD;
        }
        if c.is_ascii_hexdigit() || c == b':' {
            k |= STARTS_TOKEN;
        }
        if c.is_ascii_hexdigit() || matches!(c, b'-' | b'.' | b':' | b'x' | b'X') {
            k |= IN_VALUE;
        }
        if c.is_ascii_digit() {
            k |= DIGIT;
        }
        if c.is_ascii_hexdigit() {
            k |= HEX;
        }
        if c.is_ascii_alphanumeric() {
            k |= ALNUM;
        }
        if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/') {
            k |= BASE64;
        }
        t[b] = k;
        b += 1;
    }
    t
};

fn class(b: u8) -> u8 {
    CLASS[usize::from(b)]
}

/// Where the run of bytes of class `k` that starts at `from` ends.
fn run_end(s: &[u8], from: usize, k: u8) -> usize {
    let mut i = from;
    while s.get(i).is_some_and(|&b| class(b) & k != 0) {
        i += 1;
    }
    i
}

/// [`run_end`] for digits, 8 bytes at a time: a number's digits in one step instead of a
/// lookup and a branch per digit (the runs masking reads most).
fn digits_end(s: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(w) = s.get(i..i + 8) {
        let other = !bytes_within(word(w, 0), b'0', b'9') & HI;
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while s.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Whether a byte is a "mark": a digit, a quote, `:` or `-`. A token without one is never
/// masked: every value holds a digit (numbers, IPv4, `0x` hex, hashes), a `:` (IPv6) or a `-`
/// (a UUID, whose 32 hex digits may all be letters); a quoted value starts at its quote.
fn is_mark(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'"' | b'\'' | b':' | b'-')
}

/// The marks among 16 bytes, a bit per byte (bit `k` for `chunk[k]`), with SSE2 (part of every
/// x86-64), through safe_arch's safe wrappers: 16 bytes in about a dozen instructions, where
/// the same test 8 bytes at a time in a `u64` took about 40 per 8 bytes.
#[cfg(target_arch = "x86_64")]
fn marks16(chunk: &[u8; 16]) -> u32 {
    use safe_arch::{
        add_i8_m128i, bitor_m128i, cmp_eq_mask_i8_m128i, cmp_lt_mask_i8_m128i,
        load_unaligned_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let splat = |b: u8| set_splat_i8_m128i(i8::from_le_bytes([b]));
    let v = load_unaligned_m128i(chunk);
    // '0'..=':' moved to the 11 smallest signed bytes (adding wraps: one-to-one).
    let moved = add_i8_m128i(v, splat(0x80u8.wrapping_sub(b'0')));
    let digit_or_colon = cmp_lt_mask_i8_m128i(moved, splat(0x80 + 11));
    let quotes = bitor_m128i(
        cmp_eq_mask_i8_m128i(v, splat(b'"')),
        cmp_eq_mask_i8_m128i(v, splat(b'\'')),
    );
    let dash = cmp_eq_mask_i8_m128i(v, splat(b'-'));
    let all = bitor_m128i(digit_or_colon, bitor_m128i(quotes, dash));
    u32::from_le_bytes(move_mask_i8_m128i(all).to_le_bytes())
}

/// Byte-wise tests on a word's 8 bytes at once: each gives the high bit of every byte that
/// passes, and no other bit. On the low 7 bits of each byte no sum carries into the next byte;
/// bytes of 0x80 or more (none of them ASCII) are taken out at the end.
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The bytes of `w` equal to `c` (ASCII): their difference is 0, and 0 + 0x7f alone keeps the
/// high bit clear.
fn bytes_equal(w: u64, c: u8) -> u64 {
    !((w & !HI) ^ (u64::from(c) * LO)).wrapping_add(!HI) & !w & HI
}

/// The bytes of `w` within `first..=last` (ASCII): at least `first` and not beyond `last`.
fn bytes_within(w: u64, first: u8, last: u8) -> u64 {
    let low = w & !HI;
    low.wrapping_add((0x80 - u64::from(first)) * LO)
        & !low.wrapping_add((0x80 - u64::from(last) - 1) * LO)
        & !w
        & HI
}

/// [`marks16`] without SSE2: 8 bytes at a time in a `u64`.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn marks16_by_words(chunk: &[u8; 16]) -> u32 {
    let half = |at: usize| {
        let m = marks(word(chunk, at));
        // The high bit of byte j moves to bit j: the product gathers them in its top byte.
        ((m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    };
    half(0) | half(8) << 8
}

#[cfg(not(target_arch = "x86_64"))]
fn marks16(chunk: &[u8; 16]) -> u32 {
    marks16_by_words(chunk)
}

/// The marks among the 8 bytes of `x` (in memory order, from `u64::from_le_bytes`): the high
/// bit of each byte that [`is_mark`], and no other bit.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn marks(x: u64) -> u64 {
    // '0'..=':' is one range.
    bytes_within(x, b'0', b':')
        | bytes_equal(x, b'"')
        | bytes_equal(x, b'\'')
        | bytes_equal(x, b'-')
}

/// Finds marks 16 bytes at a time, keeping the last chunk's marks: on lines dense with values
/// the next mark is often in the chunk already read.
struct Marks<'a> {
    msg: &'a [u8],
    /// Where the last chunk read starts (`usize::MAX`: none yet), and its marks.
    chunk_at: usize,
    chunk: u32,
}

impl<'a> Marks<'a> {
    fn new(msg: &'a [u8]) -> Marks<'a> {
        Marks {
            msg,
            chunk_at: usize::MAX,
            chunk: 0,
        }
    }

    /// The first mark at or after `from`.
    fn next(&mut self, from: usize) -> Option<usize> {
        let mut i = from;
        if self.chunk_at <= from && from < self.chunk_at + 16 {
            let left = self.chunk & (!0u32 << (from - self.chunk_at));
            if left != 0 {
                return Some(self.chunk_at + left.trailing_zeros() as usize);
            }
            i = self.chunk_at + 16;
        }
        while let Some(chunk) = self.msg.get(i..i + 16) {
            let m = marks16(chunk.try_into().unwrap_or(&[0; 16]));
            if m != 0 {
                self.chunk_at = i;
                self.chunk = m;
                return Some(i + m.trailing_zeros() as usize);
            }
            i += 16;
        }
        self.msg
            .get(i..)?
            .iter()
            .position(|&b| is_mark(b))
            .map(|k| i + k)
    }
}

/// The template of `msg`: its variable values masked (see the module documentation). At most
/// [`MAX_TEMPLATE_BYTES`] of the message are read, and the template is cut to as many: a tag
/// can be longer than what it masks (`<N>` for one digit), and the table's memory is bounded
/// by templates of that size.
pub fn mask(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    mask_into(msg, &mut out);
    out
}

/// [`mask`] into `out` (cleared first), so a caller can reuse one buffer.
///
/// Finds the marks ([`is_mark`]) 16 bytes at a time: only a token holding a mark can be masked.
/// Of such a token, only its start and the mark can begin a value ([`masked_at`]); the bytes
/// between two masked values are copied at once. (A scanner that looked at every byte and
/// copied each run of bytes as it went spent about 13 instructions a byte on the mixed
/// stream's short words, 4,000 a message: the alert engine's largest cost, issue 17. Looking
/// at each byte from the token's start to the mark, reading a value's bytes once per kind of
/// value tried and calling `memcpy` for each tag, it was 2,370; then about 1,980, and 2,700
/// once ids were masked.)
pub fn mask_into(msg: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let msg = &msg[..msg.len().min(MAX_TEMPLATE_BYTES)];
    // A tag is at most 3 times what it masks (`<N>` for one digit): no reallocation.
    out.reserve(msg.len() * 3);
    let mut marks = Marks::new(msg);
    // `msg[copied..]` is not in `out` yet; `msg[..at]` has been looked at. Masking depends only
    // on the position it resumes at, since whether a token starts is read from the byte before.
    let mut copied = 0;
    let mut at = 0;
    while let Some(mark) = marks.next(at) {
        // A value that starts before the mark holds it (every value holds a mark, and there is
        // none between), so it starts where a run of the bytes it is made of reaches the mark:
        // the token's start (a value of `value_at`), or, when the mark is a digit, the start
        // of the letters and digits before it, or of the base64 bytes (ids). Each is found
        // walking back from the mark; no other byte before the mark is looked at.
        let back = |from: usize, k: u8| {
            let mut j = from;
            while j > at && class(msg[j - 1]) & k != 0 {
                j -= 1;
            }
            j
        };
        let before = if mark > at { class(msg[mark - 1]) } else { 0 };
        let (token, alnum, base64) = if before & (WORD | BASE64) == 0 {
            // The usual value, after a space or `=`: nothing to walk back over.
            (mark, mark, mark)
        } else {
            // Letters and digits are word bytes and base64's: the longest walk is made once.
            let alnum = back(mark, ALNUM);
            let token = back(alnum, WORD);
            if class(msg[mark]) & DIGIT != 0 {
                (token, alnum, back(alnum, BASE64))
            } else {
                (token, mark, mark)
            }
        };
        let mut i = mark;
        if token.min(base64) < mark {
            // In order (`base64 <= alnum`).
            let starts = if token <= base64 {
                [token, base64, alnum]
            } else if token <= alnum {
                [base64, token, alnum]
            } else {
                [base64, alnum, token]
            };
            let mut last = usize::MAX;
            for start in starts {
                if start == mark || start == last {
                    continue;
                }
                last = start;
                let ids = start == alnum || start == base64;
                if let Some(value) = masked_at(msg, start, ids) {
                    i = emit(out, msg, copied, start, value);
                    copied = i;
                    break;
                }
            }
        }
        while i <= mark {
            match masked_at(msg, i, true) {
                Some(value) => {
                    i = emit(out, msg, copied, i, value);
                    copied = i;
                }
                None => i += 1,
            }
        }
        at = i;
    }
    out.extend_from_slice(&msg[copied..]);
    out.truncate(MAX_TEMPLATE_BYTES);
}

/// Appends `msg[copied..at]` and the tag of the value found at `at`; returns where the value
/// ends.
#[inline(always)]
fn emit(
    out: &mut Vec<u8>,
    msg: &[u8],
    copied: usize,
    at: usize,
    (len, tag): (usize, Tag),
) -> usize {
    out.extend_from_slice(&msg[copied..at]);
    tag.write(out);
    at + len
}

/// What masks as a whole from `msg[i]`, its length and tag; `None` when that byte is kept.
/// Ids are looked for only with `ids` (the caller knows when none can start here).
#[inline(always)]
fn masked_at(msg: &[u8], i: usize, ids: bool) -> Option<(usize, Tag)> {
    let b = msg[i];
    if b == b'"' || b == b'\'' {
        let close = memchr::memchr(b, &msg[i + 1..])?;
        let tag = if b == b'"' {
            Tag::Quoted
        } else {
            Tag::SingleQuoted
        };
        return Some((close + 2, tag));
    }
    let c = class(b);
    // Most values are plain numbers: digits followed by a byte no other value holds (a space,
    // '=', ','), whichever byte came before. Taken here, they are read once.
    let first_run_end = if c & DIGIT != 0 {
        let end = digits_end(msg, i + 1);
        if msg
            .get(end)
            .is_none_or(|&c| class(c) & (IN_VALUE | BASE64) == 0)
        {
            return Some((end - i, Tag::Number));
        }
        end
    } else {
        i
    };
    // The class of the byte before: which kinds of value can start here.
    let before = i.checked_sub(1).map_or(0, |k| class(msg[k]));
    if ids
        && before & BASE64 == 0
        && c & BASE64 != 0
        && let Some(n) = base64_id_len(&msg[i..])
    {
        return Some((n, Tag::Id));
    }
    // A value starts with a hex digit (UUIDs, hex, addresses) or ':' (IPv6's `::1`).
    if before & WORD == 0
        && c & STARTS_TOKEN != 0
        && let Some(value) = value_at(&msg[i..])
    {
        return Some(value);
    }
    if ids
        && before & ALNUM == 0
        && c & ALNUM != 0
        && let Some(n) = alnum_id_len(&msg[i..])
    {
        return Some((n, Tag::Id));
    }
    if c & DIGIT == 0 {
        return None;
    }
    // Digits, with decimal points between them (the first run is read already).
    let mut j = first_run_end;
    while msg.get(j) == Some(&b'.') && msg.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j = digits_end(msg, j + 1);
    }
    Some((j - i, Tag::Number))
}

/// A base64 id at the start of `s`: a run of [`BASE64_ID_BYTES`] or more base64 bytes holding
/// a digit, a capital and a small letter, whose letters and digits change between them
/// [`BASE64_ID_CHANGES`] times or more (`GigabitEthernet0/1` is a name). Its length with its `=`
/// padding.
fn base64_id_len(s: &[u8]) -> Option<usize> {
    // Most runs are words, far shorter: told at once from the first 16 bytes.
    if !s.first_chunk::<16>().is_some_and(all_base64) {
        return None;
    }
    let run = run_end(s, 16, BASE64);
    if run < BASE64_ID_BYTES {
        return None;
    }
    let id = &s[..run];
    let kinds = id.iter().any(u8::is_ascii_uppercase) && id.iter().any(u8::is_ascii_lowercase);
    let mut digits = id
        .iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(u8::is_ascii_digit);
    let first = digits.next().unwrap_or(false);
    let changes = digits
        .scan(first, |last, d| Some(std::mem::replace(last, d) != d))
        .filter(|&c| c)
        .count();
    (kinds && changes >= BASE64_ID_CHANGES)
        .then(|| run + s[run..].iter().take_while(|&&b| b == b'=').count())
}

/// Whether all 16 bytes are of [`BASE64`] (letters, digits, `+`, `/`), with SSE2.
#[cfg(target_arch = "x86_64")]
fn all_base64(chunk: &[u8; 16]) -> bool {
    use safe_arch::{
        add_i8_m128i, bitor_m128i, cmp_eq_mask_i8_m128i, cmp_lt_mask_i8_m128i,
        load_unaligned_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let splat = |b: u8| set_splat_i8_m128i(i8::from_le_bytes([b]));
    // `first..first + n` moved to the n smallest signed bytes (adding wraps: one-to-one).
    let within = |v, first: u8, n: u8| {
        cmp_lt_mask_i8_m128i(
            add_i8_m128i(v, splat(0x80u8.wrapping_sub(first))),
            splat(0x80 + n),
        )
    };
    let v = load_unaligned_m128i(chunk);
    // Setting bit 5 makes capitals small and leaves digits, `+` and `/` as they are.
    let small = bitor_m128i(v, splat(0x20));
    let ok = bitor_m128i(
        bitor_m128i(within(v, b'0', 10), within(small, b'a', 26)),
        bitor_m128i(
            cmp_eq_mask_i8_m128i(v, splat(b'+')),
            cmp_eq_mask_i8_m128i(v, splat(b'/')),
        ),
    );
    move_mask_i8_m128i(ok) == 0xffff
}

#[cfg(not(target_arch = "x86_64"))]
fn all_base64(chunk: &[u8; 16]) -> bool {
    chunk.iter().all(|&b| class(b) & BASE64 != 0)
}

/// An id of letters and digits at the start of `s` (which starts with one): a run of them
/// holding both. Its length.
fn alnum_id_len(s: &[u8]) -> Option<usize> {
    let (mut n, mut kinds) = (0, 0);
    while let Some(&b) = s.get(n) {
        let c = class(b);
        if c & ALNUM == 0 {
            break;
        }
        kinds |= if c & DIGIT != 0 { 1 } else { 2 };
        n += 1;
    }
    (kinds == 3).then_some(n)
}

/// What a masked value becomes.
#[derive(Clone, Copy)]
enum Tag {
    Number,
    Id,
    Ip,
    Hex,
    Uuid,
    Quoted,
    SingleQuoted,
}

impl Tag {
    /// Appends the tag. Each arm copies a constant number of bytes, in line: one `&[u8]` of
    /// any length was a call to `memcpy`, for every masked value.
    fn write(self, out: &mut Vec<u8>) {
        match self {
            Tag::Number => out.extend_from_slice(b"<N>"),
            Tag::Id => out.extend_from_slice(b"<ID>"),
            Tag::Ip => out.extend_from_slice(b"<IP>"),
            Tag::Hex => out.extend_from_slice(b"<HEX>"),
            Tag::Uuid => out.extend_from_slice(b"<UUID>"),
            Tag::Quoted => out.extend_from_slice(b"\"<*>\""),
            Tag::SingleQuoted => out.extend_from_slice(b"'<*>'"),
        }
    }
}

/// A value at the start of `s` that masks as a whole: its length and tag. Called by
/// [`masked_at`] once it has taken plain numbers (digits not followed by a byte of a value).
fn value_at(s: &[u8]) -> Option<(usize, Tag)> {
    // The token: up to the next byte that cannot be part of a value.
    let end = run_end(s, 0, IN_VALUE);
    let tok = &s[..end];
    // A token glued to letters beyond hex (`0xfoo`, `deadbeefzz`) is a word, not a value.
    let glued = s
        .get(end)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if glued {
        return None;
    }
    if let Some(n) = uuid_len(tok) {
        return Some((n, Tag::Uuid));
    }
    if (tok.starts_with(b"0x") || tok.starts_with(b"0X")) && tok.len() > 2 {
        let n = 2 + tok[2..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if n > 2 && !tok.get(n).is_some_and(u8::is_ascii_alphanumeric) {
            return Some((n, Tag::Hex));
        }
    }
    if let Some(n) = ipv4_len(tok) {
        return Some((n, Tag::Ip));
    }
    // The last two tests read the token once: the run of hex digits from its start, then
    // hex digits and colons on from there.
    let mut hex = 0;
    let (mut digit, mut letter) = (false, false);
    while let Some(&b) = tok.get(hex) {
        let c = class(b);
        if c & HEX == 0 {
            break;
        }
        digit |= c & DIGIT != 0;
        letter |= c & DIGIT == 0;
        hex += 1;
    }
    if let Some(n) = ipv6_len(tok, hex) {
        return Some((n, Tag::Ip));
    }
    let word_ends = !tok.get(hex).is_some_and(|b| b.is_ascii_alphanumeric());
    if hex >= 8 && word_ends && digit && letter {
        return Some((hex, Tag::Hex));
    }
    None
}

/// 8-4-4-4-12 hex digits.
fn uuid_len(s: &[u8]) -> Option<usize> {
    if s.len() < 36 {
        return None;
    }
    let ok = s[..36].iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    ok.then_some(36)
}

/// Four dotted decimal octets, and an optional `:port`.
fn ipv4_len(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    for part in 0..4 {
        let end = digits_end(s, i);
        if end == i || end - i > 3 {
            return None;
        }
        i = end;
        if part < 3 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    if s.get(i) == Some(&b':') {
        let end = digits_end(s, i + 1);
        if end > i + 1 {
            i = end;
        }
    }
    Some(i)
}

/// Hex groups and colons: at least two colons, or `::`, and at least one hex digit, each group
/// of at most 4. `s` starts with `hex` hex digits (known to the caller).
fn ipv6_len(s: &[u8], hex: usize) -> Option<usize> {
    let (mut n, mut colons, mut group, mut has_hex) = (hex, 0, hex, hex > 0);
    let mut groups_ok = hex <= 4;
    while let Some(&b) = s.get(n) {
        if b == b':' {
            colons += 1;
            group = 0;
        } else if class(b) & HEX != 0 {
            group += 1;
            groups_ok &= group <= 4;
            has_hex = true;
        } else {
            break;
        }
        n += 1;
    }
    // `::` is two colons: fewer is never an address. A time (12:34:56) is two colons too: it
    // is variable, so masking it is right either way.
    (colons >= 2 && groups_ok && has_hex).then_some(n)
}

/// Whether `a` and `b` mask to one template, known without masking either: they are of one
/// length, and where they differ both hold a digit that is not the `0` of `0x`. Masking reads
/// a digit only as a digit (every run of digits is masked, and no rule looks at a digit's
/// value: an IPv4 octet is one to three digits), except for `0x`; so two such messages take
/// every decision alike.
///
/// 64 bytes a step while they are equal, a differing 16 tested at once ([`alike16`]; a byte
/// at a time, it was about 500 instructions for two of loadgen's lines, as much as half their
/// masking).
pub fn same_shape(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let x_at = |k: usize| matches!(a.get(k), Some(b'x' | b'X'));
    // 64 bytes at a time while they are equal (most of two lines of one kind), then 16.
    let (a16, _) = a.as_chunks::<16>();
    let (b16, _) = b.as_chunks::<16>();
    let (a64, a_rest) = a16.as_chunks::<4>();
    let (b64, b_rest) = b16.as_chunks::<4>();
    for (k, (qa, qb)) in a64.iter().zip(b64).enumerate() {
        if !same64(qa, qb)
            && !(0..4).all(|j| alike16(&qa[j], &qb[j], || x_at((k * 4 + j + 1) * 16)))
        {
            return false;
        }
    }
    for (j, (ca, cb)) in a_rest.iter().zip(b_rest).enumerate() {
        if !alike16(ca, cb, || x_at((a64.len() * 4 + j + 1) * 16)) {
            return false;
        }
    }
    if n.is_multiple_of(16) {
        return true;
    }
    // The last 16 bytes again, when there are 16: the test is a byte's, so bytes tested twice
    // get one answer.
    if let (Some(ta), Some(tb)) = (a.last_chunk::<16>(), b.last_chunk::<16>()) {
        return alike16(ta, tb, || false);
    }
    // Fewer than 16 bytes: a word, then a byte at a time.
    let mut at = 0;
    if at + 8 <= n {
        let (wa, wb) = (word(a, at), word(b, at));
        if wa != wb && !word_alike(wa, wb, x_at(at + 8)) {
            return false;
        }
        at += 8;
    }
    (at..n)
        .all(|k| a[k] == b[k] || (a[k].is_ascii_digit() && b[k].is_ascii_digit() && !x_at(k + 1)))
}

/// [`same_shape`] on one word of each: where they differ, digits in both, and no `x` after in
/// `wa` (`x_after`: the byte after the word is one).
fn word_alike(wa: u64, wb: u64, x_after: bool) -> bool {
    let digits = |w| bytes_within(w, b'0', b'9');
    let z = wa ^ wb;
    let differ = ((z & !HI).wrapping_add(!HI) | z) & HI;
    let x_next = (bytes_equal(wa, b'x') | bytes_equal(wa, b'X')) >> 8;
    differ & !(digits(wa) & digits(wb)) == 0
        && differ & x_next == 0
        // The last byte's next is the next word's first.
        && (differ >> 63 == 0 || !x_after)
}

/// [`same_shape`] on 16 bytes of each, with SSE2 (about 15 instructions, where two
/// [`word_alike`] took about 80: on loadgen's line, the chunks holding its counters);
/// `x_after()`: whether the byte after them is an `x`, asked only when the last bytes differ.
/// Equal chunks return after the compare: most of a block of 64 that [`same64`] found unequal.
#[cfg(target_arch = "x86_64")]
#[inline]
fn alike16(a: &[u8; 16], b: &[u8; 16], x_after: impl FnOnce() -> bool) -> bool {
    use safe_arch::{
        add_i8_m128i, bitand_m128i, bitandnot_m128i, bitor_m128i, byte_shr_imm_u128_m128i,
        cmp_eq_mask_i8_m128i, cmp_lt_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let splat = |b: u8| set_splat_i8_m128i(i8::from_le_bytes([b]));
    // '0'..='9' moved to the 10 smallest signed bytes (adding wraps: one-to-one).
    let digits = |v| {
        cmp_lt_mask_i8_m128i(
            add_i8_m128i(v, splat(0x80u8.wrapping_sub(b'0'))),
            splat(0x80 + 10),
        )
    };
    let (va, vb) = (load_unaligned_m128i(a), load_unaligned_m128i(b));
    let eq = cmp_eq_mask_i8_m128i(va, vb);
    let eq_bits = move_mask_i8_m128i(eq);
    if eq_bits == 0xffff {
        return true;
    }
    let x = bitor_m128i(
        cmp_eq_mask_i8_m128i(va, splat(b'x')),
        cmp_eq_mask_i8_m128i(va, splat(b'X')),
    );
    // Byte k gets byte k + 1's: whether an `x` follows (the last byte's is `x_after`).
    let x_next = byte_shr_imm_u128_m128i::<1>(x);
    let ok = bitor_m128i(
        eq,
        bitandnot_m128i(x_next, bitand_m128i(digits(va), digits(vb))),
    );
    let ok = move_mask_i8_m128i(ok);
    ok == 0xffff && (eq_bits & 0x8000 != 0 || !x_after())
}

/// [`alike16`] without SSE2: two words.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn alike16_by_words(a: &[u8; 16], b: &[u8; 16], x_after: bool) -> bool {
    word_alike(word(a, 0), word(b, 0), matches!(a[8], b'x' | b'X'))
        && word_alike(word(a, 8), word(b, 8), x_after)
}

#[cfg(not(target_arch = "x86_64"))]
fn alike16(a: &[u8; 16], b: &[u8; 16], x_after: impl FnOnce() -> bool) -> bool {
    a == b || alike16_by_words(a, b, x_after())
}

/// Whether 64 bytes are equal, with SSE2: four compares and one mask.
#[cfg(target_arch = "x86_64")]
fn same64(a: &[[u8; 16]; 4], b: &[[u8; 16]; 4]) -> bool {
    use safe_arch::{bitand_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i};
    let eq =
        |k: usize| cmp_eq_mask_i8_m128i(load_unaligned_m128i(&a[k]), load_unaligned_m128i(&b[k]));
    let all = bitand_m128i(bitand_m128i(eq(0), eq(1)), bitand_m128i(eq(2), eq(3)));
    move_mask_i8_m128i(all) == 0xffff
}

/// [`same64`] without SSE2.
#[cfg(not(target_arch = "x86_64"))]
fn same64(a: &[[u8; 16]; 4], b: &[[u8; 16]; 4]) -> bool {
    a == b
}

/// Messages a new-pattern table saw last, one per message length modulo this (the last of
/// those lengths), each with the slot its template went to: see
/// [`PatternTable::observe_same_shape`].
const RECENT_MESSAGES: usize = 64;
/// Longer messages are not kept there: at most `RECENT_MESSAGES` * this many bytes per table.
const RECENT_MAX_BYTES: usize = MAX_TEMPLATE_BYTES;

/// A message masked lately, and where its template is.
#[derive(Debug, Clone)]
struct Recent {
    message: Vec<u8>,
    slot: u32,
    /// The slot's `reuse` then: when the slot was given to another template since, the entry
    /// is stale.
    reuse: u32,
    /// The table's `recent_generation` when `message` was kept.
    generation: u64,
}

/// Which kept message ([`PatternTable::remember`]) a message has the shape of: two messages
/// with the same `Shape` differ only where both hold digits ([`same_shape`]), so anything
/// decided on their bytes outside digits is decided alike (the alert engine's message
/// matchers whose values hold no digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The kept message's place, below [`SHAPES`].
    pub entry: usize,
    /// Its generation: a later message kept in that place has another. Not zero, so that an
    /// `Option<Shape>` is two words, returned in registers: returned through the stack, the
    /// caller's 16-byte copy of it read stores of other widths, and the failed store
    /// forwarding was a ninth of `Engine::count`'s samples (perf, issue 17).
    pub generation: NonZeroU64,
}

/// Places for kept messages: [`Shape::entry`] is below this.
pub const SHAPES: usize = RECENT_MESSAGES;

/// The templates seen, with a count each, bounded: when full, the least recently seen
/// template is forgotten (and would alert again if it came back).
///
/// Looked up by a fast hash of the template (foldhash, with this table's random seed) and a
/// comparison of the template's bytes: no copy of the template per message, and two templates
/// are never taken for one. Senders choose the messages, but not the seed: colliding templates
/// would only make lookups slower, within the `max_patterns` bound. Two shortcuts come first:
/// a template equal to the most recent one, and a message of the same shape as a recent one
/// of its length ([`same_shape`], [`PatternTable::observe_same_shape`]), which is not masked.
///
/// The templates live in a slab, linked from the least to the most recently seen, so that
/// forgetting one costs the same however full the table is. (It was a scan of the whole
/// table: on a stream of ever new templates, 10,000 comparisons a message, and the alert
/// engine fell behind by 86% of the messages, issue 17.)
#[derive(Clone)]
pub struct PatternTable {
    /// Indices into `slots`, by the template's hash.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// Slots of forgotten templates, for the next ones.
    free: Vec<u32>,
    /// The least and the most recently seen template (`NONE`: empty).
    oldest: u32,
    newest: u32,
    hasher: foldhash::fast::RandomState,
    max: usize,
    /// Events looked up since the table was created (or as loaded).
    pub events: u64,
    /// Templates forgotten to stay within the bound.
    pub evicted: u64,
    /// By message length modulo [`RECENT_MESSAGES`] (empty until a message of that length).
    recent: Vec<Recent>,
    /// Messages kept in `recent` so far.
    recent_generation: u64,
}

/// No slot.
const NONE: u32 = u32::MAX;

impl std::fmt::Debug for PatternTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternTable")
            .field("len", &self.index.len())
            .field("max", &self.max)
            .field("events", &self.events)
            .field("evicted", &self.evicted)
            .finish()
    }
}

/// One template, and its neighbours in the recency list.
#[derive(Debug, Clone)]
struct Slot {
    hash: u64,
    count: u64,
    /// Kept when the template is forgotten, for the next one to reuse: a stream of new
    /// templates does not allocate and free one per message.
    text: Vec<u8>,
    /// Seen just before and just after it (`NONE` at the ends).
    older: u32,
    newer: u32,
    /// Bumped when the template is forgotten: [`Recent`] entries pointing here are stale.
    reuse: u32,
}

impl PatternTable {
    /// An empty table holding at most `max` templates.
    pub fn new(max: usize) -> PatternTable {
        PatternTable {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            oldest: NONE,
            newest: NONE,
            hasher: foldhash::fast::RandomState::default(),
            // Slot numbers are u32, NONE reserved.
            max: max.clamp(1, NONE as usize - 1),
            events: 0,
            evicted: 0,
            recent: Vec::new(),
            recent_generation: 0,
        }
    }

    /// Counts one sight of `message`'s template when a message that differs from it only in
    /// digits ([`same_shape`]) was the last of its length to be seen, and its template is still
    /// held: no masking, hashing or lookup; then the kept message's [`Shape`]. `None` when it
    /// cannot tell: then the caller masks the message, [`observe`](Self::observe)s the
    /// template and [`remember`](Self::remember)s the message.
    ///
    /// Lines of one kind often keep their length (zero-padded counters, stamps, fixed-width
    /// ids): loadgen's line then costs about 300 instructions instead of about 1,100 (masking
    /// and a lookup). Where values change length, a line misses and costs a copy of itself.
    pub fn observe_same_shape(&mut self, message: &[u8]) -> Option<Shape> {
        let entry = message.len() % RECENT_MESSAGES;
        let r = self.recent.get(entry)?;
        let i = r.slot;
        let held = self
            .slots
            .get(i as usize)
            .is_some_and(|s| s.reuse == r.reuse);
        if !held || !same_shape(&r.message, message) {
            return None;
        }
        let generation = NonZeroU64::new(r.generation)?;
        self.events += 1;
        self.slots[i as usize].count += 1;
        if self.newest != i {
            self.unlink(i);
            self.link_newest(i);
        }
        Some(Shape { entry, generation })
    }

    /// Keeps `message`, whose template was just [`observe`](Self::observe)d, for
    /// [`observe_same_shape`](Self::observe_same_shape): its [`Shape`], or `None` when it is
    /// not kept (too long).
    pub fn remember(&mut self, message: &[u8]) -> Option<Shape> {
        let i = self.newest;
        if i == NONE || message.len() > RECENT_MAX_BYTES {
            return None;
        }
        if self.recent.is_empty() {
            self.recent = (0..RECENT_MESSAGES)
                .map(|_| Recent {
                    message: Vec::new(),
                    slot: NONE,
                    reuse: 0,
                    generation: 0,
                })
                .collect();
        }
        let reuse = self.slots[i as usize].reuse;
        self.recent_generation += 1;
        let entry = message.len() % RECENT_MESSAGES;
        let r = &mut self.recent[entry];
        r.message.clear();
        r.message.extend_from_slice(message);
        r.slot = i;
        r.reuse = reuse;
        r.generation = self.recent_generation;
        Some(Shape {
            entry,
            generation: NonZeroU64::new(self.recent_generation)?,
        })
    }

    /// Templates held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn hash(&self, template: &[u8]) -> u64 {
        self.hasher.hash_one(template)
    }

    fn find(&self, hash: u64, template: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| same_bytes(&slots[i as usize].text, template))
            .copied()
    }

    /// How often `template` was seen (0: never, or forgotten).
    pub fn count(&self, template: &[u8]) -> u64 {
        self.find(self.hash(template), template)
            .map_or(0, |i| self.slots[i as usize].count)
    }

    /// Counts one sight of `template`; true when it was not in the table.
    pub fn observe(&mut self, template: &[u8]) -> bool {
        self.events += 1;
        // The template seen last, seen again (a program's burst of one kind of line): it is
        // already the most recent, so neither hashed nor looked up.
        if let Some(last) = self.slots.get_mut(self.newest as usize)
            && same_bytes(&last.text, template)
        {
            last.count += 1;
            return false;
        }
        let hash = self.hash(template);
        if let Some(i) = self.find(hash, template) {
            self.slots[i as usize].count += 1;
            self.unlink(i);
            self.link_newest(i);
            return false;
        }
        self.insert(hash, template, 1);
        true
    }

    /// Takes slot `i` out of the recency list.
    fn unlink(&mut self, i: u32) {
        let (older, newer) = {
            let s = &self.slots[i as usize];
            (s.older, s.newer)
        };
        match older {
            NONE => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        match newer {
            NONE => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
    }

    /// Puts slot `i` at the recent end of the list.
    fn link_newest(&mut self, i: u32) {
        let newest = self.newest;
        {
            let s = &mut self.slots[i as usize];
            s.older = newest;
            s.newer = NONE;
        }
        match newest {
            NONE => self.oldest = i,
            n => self.slots[n as usize].newer = i,
        }
        self.newest = i;
    }

    /// Adds a template known not to be in the table, as the most recently seen, forgetting
    /// the least recently seen one when full.
    fn insert(&mut self, hash: u64, text: &[u8], count: u64) {
        if self.index.len() >= self.max && self.oldest != NONE {
            let i = self.oldest;
            self.unlink(i);
            let old_hash = self.slots[i as usize].hash;
            if let Ok(entry) = self.index.find_entry(old_hash, |&j| j == i) {
                entry.remove();
            }
            self.slots[i as usize].reuse = self.slots[i as usize].reuse.wrapping_add(1);
            self.free.push(i);
            self.evicted += 1;
        }
        let i = match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                slot.hash = hash;
                slot.count = count;
                slot.text.clear();
                slot.text.extend_from_slice(text);
                i
            }
            None => {
                self.slots.push(Slot {
                    hash,
                    count,
                    text: text.to_vec(),
                    older: NONE,
                    newer: NONE,
                    reuse: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.link_newest(i);
        let slots = &self.slots;
        self.index
            .insert_unique(hash, i, |&j| slots[j as usize].hash);
    }

    /// Every template with its count, most frequent first.
    pub fn frequencies(&self) -> Vec<(&[u8], u64)> {
        let mut v: Vec<(&[u8], u64)> = self
            .index
            .iter()
            .map(|&i| (&*self.slots[i as usize].text, self.slots[i as usize].count))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    /// Writes the table: a header line `events N`, then `COUNT<TAB>TEMPLATE` per line, the
    /// template's backslashes, tabs and line ends escaped. Written to a temporary file and
    /// renamed, so a crash leaves the old file or the new one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            writeln!(f, "events {}", self.events)?;
            for (t, count) in self.frequencies() {
                write!(f, "{count}\t")?;
                f.write_all(&escape(t))?;
                f.write_all(b"\n")?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// Reads a table [`save`](Self::save) wrote, keeping at most `max` templates (the most
    /// frequent). Lines that do not parse are skipped.
    pub fn load(path: &Path, max: usize) -> std::io::Result<PatternTable> {
        let f = std::io::BufReader::new(std::fs::File::open(path)?);
        let mut table = PatternTable::new(max);
        for line in f.split(b'\n') {
            let line = line?;
            if let Some(n) = line.strip_prefix(b"events ") {
                table.events = std::str::from_utf8(n)
                    .ok()
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                continue;
            }
            let Some(tab) = line.iter().position(|b| *b == b'\t') else {
                continue;
            };
            let Some(count) = std::str::from_utf8(&line[..tab])
                .ok()
                .and_then(|c| c.parse::<u64>().ok())
            else {
                continue;
            };
            if table.index.len() >= table.max {
                break;
            }
            let mut text = unescape(&line[tab + 1..]);
            text.truncate(MAX_TEMPLATE_BYTES);
            let hash = table.hash(&text);
            // A template listed twice takes its last count, as before.
            if let Some(i) = table.find(hash, &text) {
                table.slots[i as usize].count = count;
                continue;
            }
            table.insert(hash, &text, count);
        }
        // The file lists the most frequent first: they are the last to be forgotten, so the
        // list is turned around.
        for s in &mut table.slots {
            std::mem::swap(&mut s.older, &mut s.newer);
        }
        std::mem::swap(&mut table.oldest, &mut table.newest);
        Ok(table)
    }
}

fn escape(t: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len());
    for &b in t {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out
}

fn unescape(t: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len());
    let mut it = t.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(&o) => out.push(o),
            None => out.push(b'\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The masking as first written (one test chain per byte), kept to check that the
    /// table-driven scanner gives the same templates.
    mod reference {
        use super::super::MAX_TEMPLATE_BYTES;

        fn is_word(b: u8) -> bool {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':')
        }

        /// The template of `msg`: its variable values masked (see the module documentation). At most
        /// [`MAX_TEMPLATE_BYTES`] of the message are read.
        pub fn mask(msg: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            mask_into(msg, &mut out);
            out
        }

        /// [`mask`] into `out` (cleared first), so a caller can reuse one buffer.
        pub fn mask_into(msg: &[u8], out: &mut Vec<u8>) {
            out.clear();
            let msg = &msg[..msg.len().min(MAX_TEMPLATE_BYTES)];
            let mut i = 0;
            while i < msg.len() {
                match value(msg, i) {
                    Some((len, tag)) => {
                        out.extend_from_slice(tag);
                        i += len;
                    }
                    None => {
                        out.push(msg[i]);
                        i += 1;
                    }
                }
            }
            out.truncate(MAX_TEMPLATE_BYTES);
        }

        fn is_base64(b: u8) -> bool {
            b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
        }

        /// What masks from `msg[i]`, in the order the kinds are tried.
        fn value(msg: &[u8], i: usize) -> Option<(usize, &'static [u8])> {
            let b = msg[i];
            let before = |test: fn(u8) -> bool| i > 0 && test(msg[i - 1]);
            if (b == b'"' || b == b'\'')
                && let Some(close) = msg[i + 1..].iter().position(|&c| c == b)
            {
                let tag: &'static [u8] = if b == b'"' { b"\"<*>\"" } else { b"'<*>'" };
                return Some((close + 2, tag));
            }
            // A base64 id: 16 or more base64 bytes with a capital and a small letter, whose
            // letters and digits change between them 3 times or more.
            if !before(is_base64) && is_base64(b) {
                let run = msg[i..].iter().take_while(|&&c| is_base64(c)).count();
                let id = &msg[i..i + run];
                let alnum: Vec<&u8> = id.iter().filter(|c| c.is_ascii_alphanumeric()).collect();
                let changes = alnum
                    .windows(2)
                    .filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit())
                    .count();
                if run >= 16
                    && changes >= 3
                    && id.iter().any(u8::is_ascii_uppercase)
                    && id.iter().any(u8::is_ascii_lowercase)
                {
                    let pad = msg[i + run..].iter().take_while(|&&c| c == b'=').count();
                    return Some((run + pad, b"<ID>"));
                }
            }
            // A value starts with a hex digit (UUIDs, hex, addresses) or ':' (IPv6's `::1`).
            if !before(is_word)
                && (b.is_ascii_hexdigit() || b == b':')
                && let Some(found) = value_at(&msg[i..])
            {
                return Some(found);
            }
            // Letters and digits, holding both.
            if !before(|c| c.is_ascii_alphanumeric()) && b.is_ascii_alphanumeric() {
                let run = msg[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .count();
                let id = &msg[i..i + run];
                if id.iter().any(u8::is_ascii_digit) && id.iter().any(u8::is_ascii_alphabetic) {
                    return Some((run, b"<ID>"));
                }
            }
            if b.is_ascii_digit() {
                // Digits, with decimal points between them.
                let mut j = i;
                while j < msg.len()
                    && (msg[j].is_ascii_digit()
                        || (msg[j] == b'.' && msg.get(j + 1).is_some_and(u8::is_ascii_digit)))
                {
                    j += 1;
                }
                return Some((j - i, b"<N>"));
            }
            None
        }

        /// A value at the start of `s` that masks as a whole: its length and tag.
        fn value_at(s: &[u8]) -> Option<(usize, &'static [u8])> {
            // The token: up to the next byte that cannot be part of a value.
            let end = s
                .iter()
                .position(|&b| {
                    !(b.is_ascii_hexdigit() || matches!(b, b'-' | b'.' | b':' | b'x' | b'X'))
                })
                .unwrap_or(s.len());
            let tok = &s[..end];
            // A token glued to letters beyond hex (`0xfoo`, `deadbeefzz`) is a word, not a value.
            let glued = s
                .get(end)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
            if glued {
                return None;
            }
            if let Some(n) = uuid_len(tok) {
                return Some((n, b"<UUID>"));
            }
            if (tok.starts_with(b"0x") || tok.starts_with(b"0X")) && tok.len() > 2 {
                let n = 2 + tok[2..]
                    .iter()
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                if n > 2 && !tok.get(n).is_some_and(u8::is_ascii_alphanumeric) {
                    return Some((n, b"<HEX>"));
                }
            }
            if let Some(n) = ipv4_len(tok) {
                return Some((n, b"<IP>"));
            }
            if let Some(n) = ipv6_len(tok) {
                return Some((n, b"<IP>"));
            }
            let hex = tok.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let word_ends = !tok.get(hex).is_some_and(|b| b.is_ascii_alphanumeric());
            if hex >= 8
                && word_ends
                && tok[..hex].iter().any(u8::is_ascii_digit)
                && tok[..hex].iter().any(u8::is_ascii_alphabetic)
            {
                return Some((hex, b"<HEX>"));
            }
            None
        }

        /// 8-4-4-4-12 hex digits.
        fn uuid_len(s: &[u8]) -> Option<usize> {
            if s.len() < 36 {
                return None;
            }
            let ok = s[..36].iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
            ok.then_some(36)
        }

        /// Four dotted decimal octets, and an optional `:port`.
        fn ipv4_len(s: &[u8]) -> Option<usize> {
            let mut i = 0;
            for part in 0..4 {
                let digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                if digits == 0 || digits > 3 {
                    return None;
                }
                i += digits;
                if part < 3 {
                    if s.get(i) != Some(&b'.') {
                        return None;
                    }
                    i += 1;
                }
            }
            if s.get(i) == Some(&b':') {
                let port = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                if port > 0 {
                    i += 1 + port;
                }
            }
            Some(i)
        }

        /// Hex groups and colons: at least two colons, or `::`, and at least one hex digit.
        fn ipv6_len(s: &[u8]) -> Option<usize> {
            let n = s
                .iter()
                .take_while(|b| b.is_ascii_hexdigit() || **b == b':')
                .count();
            let tok = &s[..n];
            let colons = tok.iter().filter(|b| **b == b':').count();
            let groups_ok = tok.split(|b| *b == b':').all(|g| g.len() <= 4);
            let has_hex = tok.iter().any(u8::is_ascii_hexdigit);
            // A time (12:34:56) is two colons too: it is variable, so masking it is right either way.
            (groups_ok && has_hex && (colons >= 2 || memchr::memmem::find(tok, b"::").is_some()))
                .then_some(n)
        }
    }

    fn m(s: &str) -> String {
        String::from_utf8(mask(s.as_bytes())).unwrap()
    }

    #[test]
    fn masks_each_kind_of_value() {
        assert_eq!(
            m("Accepted password for root from 10.0.0.7 port 52144 ssh2"),
            "Accepted password for root from <IP> port <N> <ID>"
        );
        assert_eq!(
            m("request 6f1c2a9e-03b4-4c1d-9e2f-0a1b2c3d4e5f took 12.5 ms"),
            "request <UUID> took <N> ms"
        );
        assert_eq!(m("fault at 0xdeadBEEF in mod"), "fault at <HEX> in mod");
        assert_eq!(m("peer 2001:db8::8a2e:370:7334 up"), "peer <IP> up");
        assert_eq!(m("peer fe80::1 up"), "peer <IP> up");
        assert_eq!(
            m("connect to 192.168.1.20:8080 failed"),
            "connect to <IP> failed"
        );
        assert_eq!(m(r#"user "alice" not found"#), r#"user "<*>" not found"#);
        assert_eq!(m("file 'a b.txt' missing"), "file '<*>' missing");
        assert_eq!(m("image sha 3f9a0c1bd2e4 pulled"), "image sha <HEX> pulled");
        // Ids, wherever they start: base64 (an SSH key's fingerprint, with `+` and `/`), and
        // letters with digits (a Kubernetes pod's name).
        assert_eq!(
            m(
                "Accepted publickey for alice from 10.0.0.5 port 52311 ssh2: RSA \
               SHA256:kR3hXq0W2f1E9Yt8Zb4L+mN7cP6sD5aV0uJ1gH2i/K3lM"
            ),
            "Accepted publickey for alice from <IP> port <N> <ID>: RSA <ID>:<ID>"
        );
        assert_eq!(m("token=Zm9vYmFyMTIzNDU2Nzg5MA== ok"), "token=<ID> ok");
        assert_eq!(m("key ab/CDefGH1jk2LMnoPQ+r done"), "key <ID> done");
        assert_eq!(
            m("pod web-7d9f8c6b5-x2x4q restarted"),
            "pod web-<ID>-<ID> restarted"
        );
        // A word with a digit is a value, as in Drain; digits alone are a number.
        assert_eq!(
            m("ssh2 ED25519 md5sum eth0 HTTP/1.1 x86_64 0xfoo"),
            "<ID> <ID> <ID> <ID> HTTP/<N> <ID>_<N> <ID>"
        );
        // Base64 needs both cases, 16 bytes at least, and 3 changes between letters and
        // digits: a name with a `/` is two words.
        assert_eq!(
            m("Interface GigabitEthernet0/1, changed state to up"),
            "Interface <ID>/<N>, changed state to up"
        );
        // Words stay words: hex letters alone are not values.
        assert_eq!(m("deadbeef cafe added"), "deadbeef cafe added");
        // Eight digits or more are hex only with a letter among them.
        assert_eq!(m("batch 12345678-9 done"), "batch <N>-<N> done");
        // An unclosed quote is kept.
        assert_eq!(m("it's 5"), "it's <N>");
        // Values without a digit: a UUID of hex letters, an IPv6 address of them.
        assert_eq!(
            m("id abcdefab-cdef-abcd-efab-cdefabcdefab up"),
            "id <UUID> up"
        );
        assert_eq!(m("peer fe::ab up"), "peer <IP> up");
        // Tags longer than their values: the template is cut where the message would be.
        let numbers = "7 ".repeat(MAX_TEMPLATE_BYTES);
        assert_eq!(
            m(&numbers),
            "<N> ".repeat(MAX_TEMPLATE_BYTES)[..MAX_TEMPLATE_BYTES]
        );
    }

    /// Every byte value inside and beside a run of letters, at each offset (so on each side of
    /// the 8-byte steps' edges): the reference's template.
    #[test]
    fn letter_runs_with_any_byte_match_the_reference() {
        for c in 0..=255u8 {
            for at in 0..20 {
                let mut msg = b"id zyxwvutsrqponmlkjihgfedcba 42 Xylophone".to_vec();
                msg.insert(3 + at, c);
                assert_eq!(mask(&msg), reference::mask(&msg), "{:?}", msg);
            }
        }
    }

    #[test]
    fn table_is_bounded_lru_with_counts() {
        let mut t = PatternTable::new(2);
        assert!(t.observe(b"a"));
        assert!(t.observe(b"b"));
        assert!(!t.observe(b"a"));
        // "b" is the least recently seen: it goes.
        assert!(t.observe(b"c"));
        assert_eq!(t.len(), 2);
        assert_eq!(t.count(b"a"), 2);
        assert_eq!(t.count(b"b"), 0);
        assert_eq!(t.evicted, 1);
        assert_eq!(t.events, 4);
    }

    #[test]
    fn a_loaded_table_forgets_the_least_frequent_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut t = PatternTable::new(3);
        for tpl in [&b"c"[..], b"a", b"b", b"a", b"b", b"a"] {
            t.observe(tpl);
        }
        t.save(&path).unwrap();
        let mut back = PatternTable::load(&path, 3).unwrap();
        assert!(back.observe(b"d"));
        assert_eq!(back.count(b"c"), 0, "the least frequent goes first");
        assert!(back.observe(b"e"));
        assert_eq!(back.count(b"b"), 0);
        assert_eq!(
            (back.count(b"a"), back.count(b"d"), back.count(b"e")),
            (3, 1, 1)
        );
    }

    #[test]
    fn table_saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut t = PatternTable::new(10);
        for tpl in [&b"a\tb"[..], b"c\\d\ne", b"c\\d\ne", b"plain"] {
            t.observe(tpl);
        }
        t.save(&path).unwrap();
        let back = PatternTable::load(&path, 10).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.events, 4);
        assert_eq!(back.count(b"c\\d\ne"), 2);
        assert_eq!(back.count(b"a\tb"), 1);
        // Loaded with a smaller bound: the most frequent are kept.
        let small = PatternTable::load(&path, 1).unwrap();
        assert_eq!(small.len(), 1);
        assert_eq!(small.count(b"c\\d\ne"), 2);
        // After a load, the most frequent is the last to be forgotten.
        let mut back = PatternTable::load(&path, 3).unwrap();
        assert!(back.observe(b"new"));
        assert_eq!(back.count(b"c\\d\ne"), 2);
        assert_eq!(back.len(), 3);
    }

    /// The word-at-a-time digit run is the bytewise one: runs of 0 to 24 digits (across the
    /// 8-byte steps) from every offset within a word, followed by every byte or by the end.
    #[test]
    fn digit_runs_end_where_the_bytewise_test_says() {
        for offset in 0..8 {
            for run in 0..=24u8 {
                for next in (0..=255u8).map(Some).chain([None]) {
                    let mut s = vec![b'x'; offset];
                    s.extend((0..run).map(|k| b'0' + k % 10));
                    s.extend(next);
                    s.extend_from_slice(b"42");
                    for from in 0..=s.len() {
                        assert_eq!(
                            digits_end(&s, from),
                            run_end(&s, from, DIGIT),
                            "{s:?} {from}"
                        );
                    }
                }
            }
        }
    }

    /// The 16-byte base64 test is the bytewise one: every byte at every place of a chunk
    /// otherwise of base64 bytes.
    #[test]
    fn base64_chunks_are_what_the_bytewise_test_says() {
        const BASE64_BYTES: &[u8] = b"0189AMZamz+/";
        let base: [u8; 16] = std::array::from_fn(|k| BASE64_BYTES[k % BASE64_BYTES.len()]);
        assert!(all_base64(&base));
        for at in 0..16 {
            for b in 0..=255u8 {
                let mut chunk = base;
                chunk[at] = b;
                let want = class(b) & BASE64 != 0;
                assert_eq!(all_base64(&chunk), want, "byte {b:#x} at {at}");
            }
        }
    }

    proptest! {
        /// Masking never panics, and masking a template again changes nothing but what
        /// masking itself introduced (`<N>`, `<IP>` ... hold no digits): a fixed point.
        #[test]
        fn mask_is_total_and_idempotent(msg in proptest::collection::vec(any::<u8>(), 0..150)) {
            let once = mask(&msg);
            prop_assert_eq!(mask(&once), once.clone());
            prop_assert!(!once.iter().any(u8::is_ascii_digit));
        }

        /// The scanner gives the reference masking's template, on any bytes and on text
        /// made of what masking looks at (letters, hex, digits, quotes, colons, dots).
        #[test]
        fn mask_matches_the_reference(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            text in "[a-zA-Z0-9 :.'\"_x+/=-]{0,300}",
            tokens in proptest::collection::vec(
                "[a-f]{1,8}|[a-f]{8}-[a-f]{4}-[a-f]{4}-[a-f]{4}-[a-f]{12}|[a-f]{0,4}::?[a-f]{0,4}|[0-9a-fx.:-]{1,12}|[g-z]{1,9}|[ =,\\[\\]()'\"/]",
                0..60,
            ),
        ) {
            prop_assert_eq!(mask(&bytes), reference::mask(&bytes));
            prop_assert_eq!(mask(text.as_bytes()), reference::mask(text.as_bytes()));
            let tokens = tokens.concat();
            prop_assert_eq!(mask(tokens.as_bytes()), reference::mask(tokens.as_bytes()));
        }

        /// Both 16-byte mark tests (SSE2, and two `u64` words) give the bytewise marks, for
        /// every byte at every place.
        #[test]
        fn marks16_are_the_bytewise_ones(bytes in any::<[u8; 16]>(), marked in any::<[u8; 16]>()) {
            let mut b = bytes;
            // Half the bytes drawn from the marks and their neighbours in the byte order.
            for (c, m) in b.iter_mut().zip(marked) {
                if m & 1 == 0 {
                    *c = b"/0123456789:;\"'-,!#&(.\xaf\xb0\xba\xad\xa2\x80\x7f"[usize::from(m >> 1) % 27];
                }
            }
            let want = b
                .iter()
                .enumerate()
                .fold(0u32, |m, (k, &c)| m | (u32::from(is_mark(c)) << k));
            prop_assert_eq!(marks16(&b), want);
            prop_assert_eq!(marks16_by_words(&b), want);
        }

        /// The table forgets exactly what a plain least-recently-seen list would, and counts
        /// as it does.
        #[test]
        fn table_forgets_the_least_recently_seen(
            max in 1usize..6,
            seen in proptest::collection::vec(0u8..10, 0..300),
        ) {
            let mut t = PatternTable::new(max);
            // Oldest first: (template, count).
            let mut model: Vec<(u8, u64)> = Vec::new();
            let mut evicted = 0;
            for k in seen {
                let new = match model.iter().position(|(m, _)| *m == k) {
                    Some(at) => {
                        let (m, c) = model.remove(at);
                        model.push((m, c + 1));
                        false
                    }
                    None => {
                        if model.len() >= max {
                            model.remove(0);
                            evicted += 1;
                        }
                        model.push((k, 1));
                        true
                    }
                };
                prop_assert_eq!(t.observe(&[k]), new);
                prop_assert_eq!(t.len(), model.len());
                prop_assert_eq!(t.evicted, evicted);
                for k in 0..10u8 {
                    let want = model.iter().find(|(m, _)| *m == k).map_or(0, |(_, c)| *c);
                    prop_assert_eq!(t.count(&[k]), want);
                }
            }
        }

        /// The values masking removes do not change the template.
        #[test]
        fn values_do_not_change_the_template(
            a in 0u32..u32::MAX, b in any::<[u8; 4]>(), c in any::<u128>(), d in any::<[u16; 8]>(),
            q in "[a-zA-Z0-9 ._-]{0,20}",
        ) {
            let ip4 = format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]);
            let uuid = format!("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", c >> 96, (c >> 80) & 0xffff,
                (c >> 64) & 0xffff, (c >> 48) & 0xffff, c & 0xffff_ffff_ffff);
            let ip6 = std::net::Ipv6Addr::from(d).to_string();
            let msg = format!("job {a} from {ip4} id {uuid} peer {ip6} at 0x{a:x} user \"{q}\" done");
            prop_assert_eq!(
                m(&msg),
                "job <N> from <IP> id <UUID> peer <IP> at <HEX> user \"<*>\" done"
            );
        }

        /// Two messages of the same shape have the same template. `b` is `a` with some digits
        /// changed to others (the shapes alike, unless a `0` of `0x` changed) and then, at
        /// times, some bytes changed to anything: whenever `same_shape` says yes, masking
        /// agrees, and it says yes to the digits-only changes outside `0x`.
        #[test]
        fn same_shape_means_same_template(
            tokens in proptest::collection::vec(
                "[a-f]{1,8}|[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}|[0-9a-f]{0,4}::?[0-9a-f]{0,4}|0x[0-9a-f]{1,6}|[0-9a-fxX.:-]{1,12}|[g-z]{1,9}|[0-9]{1,4}(\\.[0-9]{1,3}){3}|[ =,\\[\\]()'\"/]",
                0..60,
            ),
            digits in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..10), 0..8),
            others in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let a = tokens.concat().into_bytes();
            let mut b = a.clone();
            if !b.is_empty() {
                for (at, d) in &digits {
                    let k = at.index(b.len());
                    if b[k].is_ascii_digit() {
                        b[k] = b'0' + d;
                    }
                }
            }
            let in_0x = (0..a.len())
                .any(|k| a[k] != b[k] && matches!(a.get(k + 1), Some(b'x' | b'X')));
            prop_assert_eq!(same_shape(&a, &b), !in_0x);
            if !in_0x {
                prop_assert_eq!(mask(&a), mask(&b));
            }
            if !b.is_empty() {
                for (at, c) in &others {
                    let k = at.index(b.len());
                    b[k] = *c;
                }
            }
            if same_shape(&a, &b) {
                prop_assert_eq!(mask(&a), mask(&b));
            }
        }

        /// The word-at-a-time test is the bytewise one, on bytes next to the ones it looks
        /// for (digits, `x`, and the same with the high bit set).
        #[test]
        fn same_shape_is_the_bytewise_test(
            picks in proptest::collection::vec((0usize..14, 0usize..14, 0u8..4), 0..150),
        ) {
            const BYTES: &[u8; 14] = b"09/:xXw\xb0\xb9\xf8\xd8 \x00\xff";
            let a: Vec<u8> = picks.iter().map(|(i, _, _)| BYTES[*i]).collect();
            // A quarter of the bytes changed.
            let b: Vec<u8> = picks
                .iter()
                .map(|(i, j, c)| if *c == 0 { BYTES[*j] } else { BYTES[*i] })
                .collect();
            let want = (0..a.len()).all(|k| {
                a[k] == b[k]
                    || (a[k].is_ascii_digit()
                        && b[k].is_ascii_digit()
                        && !matches!(a.get(k + 1), Some(b'x' | b'X')))
            });
            prop_assert_eq!(same_shape(&a, &b), want);
            if let (Some(x), Some(y)) = (a.get(..64), b.get(..64)) {
                let (x, _) = x.as_chunks::<16>();
                let (y, _) = y.as_chunks::<16>();
                let (x, y): (&[[u8; 16]; 4], &[[u8; 16]; 4]) = match (x.try_into(), y.try_into()) {
                    (Ok(x), Ok(y)) => (x, y),
                    _ => return Err(TestCaseError::fail("64 bytes are 4 chunks")),
                };
                prop_assert_eq!(same64(x, y), x == y);
            }
        }

        /// `alike16` (and its fallback) is the bytewise test, on digits, `x` and bytes that
        /// are neither (the high bit set too).
        #[test]
        fn alike16_is_the_bytewise_test(
            picks in any::<[u8; 16]>(),
            // The last byte (whose next is `x_after`) a quarter of the time.
            changes in proptest::collection::vec(((0usize..20).prop_map(|k| k.min(15)), any::<u8>()), 1..4),
        ) {
            // Half of them digits.
            const BYTES: &[u8; 8] = b"0909xX/\xb9";
            let a: [u8; 16] = picks.map(|i| BYTES[usize::from(i % 8)]);
            // A byte or a few changed, as between two lines of one kind.
            let mut b = a;
            for (k, j) in changes {
                b[k] = BYTES[usize::from(j % 8)];
            }
            for x_after in [false, true] {
                let want = (0..16).all(|k| {
                    let x_next = if k == 15 { x_after } else { matches!(a[k + 1], b'x' | b'X') };
                    a[k] == b[k] || (a[k].is_ascii_digit() && b[k].is_ascii_digit() && !x_next)
                });
                prop_assert_eq!(alike16(&a, &b, || x_after), want);
                prop_assert_eq!(alike16_by_words(&a, &b, x_after), want);
            }
        }

        /// A table fed through `observe_same_shape` first (masking only what it cannot tell)
        /// counts, forgets and reports new templates exactly as one fed every template.
        #[test]
        fn same_shape_shortcut_changes_no_count(
            max in 1usize..5,
            lines in proptest::collection::vec((0usize..6, 0u32..100_000), 0..300),
        ) {
            // Six kinds of line, some of one length whatever the values.
            let line = |kind: usize, v: u32| -> Vec<u8> {
                match kind {
                    0 => format!("seq={v:06} ok"),
                    1 => format!("seq={v:06} no"),
                    2 => format!("took {v} ms"),
                    3 => format!("from 10.0.{}.{} port {v:05}", v % 256, v % 7),
                    4 => format!("id 0x{:04x} set", v % 65536),
                    _ => format!("x{v:03}y"),
                }
                .into_bytes()
            };
            let mut plain = PatternTable::new(max);
            let mut quick = PatternTable::new(max);
            let mut buf = Vec::new();
            for (kind, v) in lines {
                let msg = line(kind, v);
                let want = plain.observe(&mask(&msg));
                let got = if quick.observe_same_shape(&msg).is_some() {
                    false
                } else {
                    mask_into(&msg, &mut buf);
                    let new = quick.observe(&buf);
                    quick.remember(&msg);
                    new
                };
                prop_assert_eq!(got, want);
                prop_assert_eq!(quick.frequencies(), plain.frequencies());
                prop_assert_eq!(quick.evicted, plain.evicted);
                prop_assert_eq!(quick.events, plain.events);
            }
        }
    }
}
