//! The byte scans every message goes through: runs of a byte class (header fields, names,
//! tags), one table lookup per byte, and the search for a PARAM-VALUE's end.

/// A class of bytes: PRINTUSASCII (`%d33-126`) but some excluded bytes, as a table.
pub(crate) struct Class([bool; 256]);

impl Class {
    /// PRINTUSASCII but the bytes in `except`.
    const fn print_except(except: &[u8]) -> Class {
        let mut table = [false; 256];
        let mut b = 33;
        while b <= 126 {
            table[b] = true;
            b += 1;
        }
        let mut i = 0;
        while i < except.len() {
            table[except[i] as usize] = false;
            i += 1;
        }
        Class(table)
    }

    /// Whether `b` is in the class.
    pub(crate) fn has(&self, b: u8) -> bool {
        self.0[usize::from(b)]
    }

    /// Length of the run of at most `max` bytes of this class at the start of `input`.
    pub(crate) fn run(&self, input: &[u8], max: usize) -> usize {
        let head = input.get(..input.len().min(max)).unwrap_or_default();
        head.iter()
            .position(|&b| !self.has(b))
            .unwrap_or(head.len())
    }
}

/// PRINTUSASCII: RFC 5424 header fields.
pub(crate) static PRINT: Class = Class::print_except(b"");
/// SD-NAME: PRINTUSASCII but `=`, `]` and `"` (RFC 5424 §6.3).
pub(crate) static SD_NAME: Class = Class::print_except(b"=]\"");
/// An RFC 3164 TAG: PRINTUSASCII but `:`, `[` and `]`.
pub(crate) static TAG: Class = Class::print_except(b":[]");
/// An RFC 3164 `[pid]`: PRINTUSASCII but `[`.
pub(crate) static PID: Class = Class::print_except(b"[");
/// An RFC 3164 HOSTNAME: PRINTUSASCII but `/` (it could name a path, hostile-inputs F03).
pub(crate) static HOSTNAME: Class = Class::print_except(b"/");

/// The first of `a`, `b` or `c` in `input`. Most PARAM-VALUEs are short, where a plain loop
/// beats the setup of a vectorised search; a long one gets `memchr3` after its first bytes.
pub(crate) fn find3(input: &[u8], a: u8, b: u8, c: u8) -> Option<usize> {
    const SHORT: usize = 32;
    let head = input.get(..input.len().min(SHORT)).unwrap_or_default();
    if let Some(k) = head.iter().position(|&x| x == a || x == b || x == c) {
        return Some(k);
    }
    let rest = input.get(head.len()..)?;
    memchr::memchr3(a, b, c, rest).map(|k| head.len() + k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find3_on_either_side_of_the_short_prefix() {
        for at in [0, 5, 31, 32, 33, 200] {
            let mut v = vec![b'x'; 300];
            v[at] = b']';
            assert_eq!(find3(&v, b'"', b'\\', b']'), Some(at));
        }
        assert_eq!(find3(&[b'x'; 40], b'"', b'\\', b']'), None);
        assert_eq!(find3(b"", b'"', b'\\', b']'), None);
    }

    #[test]
    fn classes_are_printusascii_but_their_exceptions() {
        assert_eq!(PRINT.run(b"abc def", 10), 3);
        assert_eq!(SD_NAME.run(b"name=\"v\"", 32), 4);
        assert_eq!(TAG.run(b"sshd[1]:", 48), 4);
        assert_eq!(HOSTNAME.run(b"a/b", 9), 1);
        assert_eq!(PRINT.run(b"\x7f", 1), 0);
        assert_eq!(PRINT.run(b"aaaa", 2), 2);
    }
}

/// What one pass over MSG learns: whether it is ASCII, and whether it holds a control character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextScan {
    /// No byte above 0x7f: UTF-8 without decoding.
    pub(crate) ascii: bool,
    /// A byte below 0x20, or 0x7f: what a line format escapes.
    pub(crate) control: bool,
}

/// Scans `bytes` eight at a time, as one `u64` each: most messages are printable ASCII, and one
/// pass here spares each line output its own scan (issue 18). Written as word arithmetic because
/// the compiler did not vectorise the bytewise forms for the baseline x86-64 target (2.6 to 4.7
/// instructions per byte under callgrind, against 1.2 here).
pub(crate) fn scan_text(bytes: &[u8]) -> TextScan {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES * 0x80;
    // High bit set in a byte that is zero (exact for the lowest; a borrow can only flag a byte
    // above one that is flagged already, which is enough to say "any").
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v;
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let (mut or, mut control) = (0u64, 0u64);
    for w in words {
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        or |= w;
        // Below 0x20 (bytes from 0x80 up never set it: their own high bit is clear in !w),
        // or 0x7f.
        control |= (w.wrapping_sub(ONES * 0x20) & !w) | zero_in(w ^ (ONES * 0x7f));
    }
    let (mut ascii, mut has_control) = (or & HIGHS == 0, control & HIGHS != 0);
    for &b in tail {
        ascii &= b < 0x80;
        has_control |= b < 0x20 || b == 0x7f;
    }
    TextScan {
        ascii,
        control: has_control,
    }
}

#[cfg(test)]
mod text_scan_tests {
    use super::*;

    #[test]
    fn every_control_byte_is_found_at_every_place() {
        for len in 1..40 {
            for at in 0..len {
                for b in (0u8..0x20).chain([0x7f]) {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert!(scan_text(&text).control, "{b:#x} at {at} of {len}");
                }
                let mut text = vec![b'a'; len];
                text[at] = 0xc3;
                let s = scan_text(&text);
                assert!(!s.ascii && !s.control, "0xc3 at {at} of {len}");
            }
        }
        let printable: Vec<u8> = (0x20u8..0x7f).chain(0x80..=0xff).collect();
        assert!(!scan_text(&printable).control);
        assert!(scan_text(&printable[..95]).ascii);
        assert_eq!(
            scan_text(b""),
            TextScan {
                ascii: true,
                control: false
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn scan_text_agrees_with_a_byte_loop(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let want = TextScan {
                ascii: bytes.iter().all(|&b| b < 0x80),
                control: bytes.iter().any(|&b| b < 0x20 || b == 0x7f),
            };
            proptest::prop_assert_eq!(scan_text(&bytes), want);
        }
    }
}
