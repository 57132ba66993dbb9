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
