//! Cutting a file's bytes into lines: a pure state machine over what has been read, with the
//! file offset of every line's end, so positions can be checkpointed at line boundaries. One
//! buffer is reused for every read: lines are ranges into it, valid until the next read.

use std::ops::Range;

/// One line of a file, without its LF (nor a CR before it): where it is in the splitter's
/// buffer ([`LineSplitter::bytes`]) and in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Its bytes in the splitter's buffer, at most `max_line_bytes`.
    pub range: Range<usize>,
    /// The line was longer than `max_line_bytes` and was cut; its rest is skipped.
    pub truncated: bool,
    /// File offset of the line's first byte.
    pub start: u64,
    /// File offset of the byte after it: past its LF, or past what was kept of a cut line.
    pub end: u64,
}

/// Splits bytes appended to a file into [`Line`]s. Holds the unfinished last line.
#[derive(Debug)]
pub struct LineSplitter {
    max_line_bytes: usize,
    /// Bytes read: `buf[..consumed]` were given out (or skipped), the rest is the unfinished
    /// line.
    buf: Vec<u8>,
    consumed: usize,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// A line was cut: its bytes up to the next LF are skipped (they were past the limit).
    skipping: bool,
}

impl LineSplitter {
    /// A splitter whose first byte is at file offset `offset`.
    pub fn new(max_line_bytes: usize, offset: u64) -> LineSplitter {
        LineSplitter {
            max_line_bytes: max_line_bytes.max(1),
            buf: Vec::new(),
            consumed: 0,
            buf_start: offset,
            skipping: false,
        }
    }

    /// File offset of the first byte not yet given out as part of a line (the unfinished line's
    /// start, or where a skipped rest ends).
    pub fn consumed_to(&self) -> u64 {
        self.buf_start + self.consumed as u64
    }

    /// Bytes held for the unfinished line.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The bytes of `line`, given out since the last [`LineSplitter::space`].
    pub fn bytes(&self, line: &Line) -> &[u8] {
        self.buf.get(line.range.clone()).unwrap_or_default()
    }

    /// A buffer of `want` writable bytes at the end, for the next read; the caller writes into
    /// it and calls [`LineSplitter::filled`] with what it read. Lines given out before are
    /// forgotten.
    pub fn space(&mut self, want: usize) -> &mut [u8] {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.buf_start += self.consumed as u64;
            self.consumed = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + want, 0);
        &mut self.buf[len..]
    }

    /// `read` bytes of the last [`LineSplitter::space`] were filled; the lines they complete are
    /// pushed to `out`.
    pub fn filled(&mut self, want: usize, read: usize, out: &mut Vec<Line>) {
        let len = self.buf.len() - want + read.min(want);
        self.buf.truncate(len);
        self.split(out);
    }

    /// Appends `bytes` (what was read) and pushes the lines they complete.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Line>) {
        let space = self.space(bytes.len());
        space.copy_from_slice(bytes);
        self.split(out);
    }

    fn offset(&self, i: usize) -> u64 {
        self.buf_start + i as u64
    }

    fn split(&mut self, out: &mut Vec<Line>) {
        loop {
            let rest = &self.buf[self.consumed..];
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let lf = self.consumed + i;
                    if self.skipping {
                        self.skipping = false;
                        self.consumed = lf + 1;
                        continue;
                    }
                    if i > self.max_line_bytes {
                        self.cut(out);
                        continue;
                    }
                    let end = if i > 0 && self.buf[lf - 1] == b'\r' {
                        lf - 1
                    } else {
                        lf
                    };
                    out.push(Line {
                        range: self.consumed..end,
                        truncated: false,
                        start: self.offset(self.consumed),
                        end: self.offset(lf + 1),
                    });
                    self.consumed = lf + 1;
                }
                None if self.skipping => {
                    self.consumed = self.buf.len();
                    return;
                }
                None if rest.len() > self.max_line_bytes => self.cut(out),
                None => return,
            }
        }
    }

    /// Gives out the next `max_line_bytes` as a truncated line; the rest of that line, up to
    /// its LF, is skipped.
    fn cut(&mut self, out: &mut Vec<Line>) {
        let from = self.consumed;
        let to = from + self.max_line_bytes;
        out.push(Line {
            range: from..to,
            truncated: true,
            start: self.offset(from),
            end: self.offset(to),
        });
        self.consumed = to;
        self.skipping = true;
    }

    /// The unfinished line, if any, given out as a line of its own (the file was truncated or is
    /// being let go). Its bytes stay readable until [`LineSplitter::reset`].
    pub fn rest(&mut self) -> Option<Line> {
        if self.buffered() == 0 || self.skipping {
            return None;
        }
        let line = Line {
            range: self.consumed..self.buf.len(),
            truncated: false,
            start: self.offset(self.consumed),
            end: self.offset(self.buf.len()),
        };
        self.consumed = self.buf.len();
        Some(line)
    }

    /// Starts again at file offset `offset`, with nothing held.
    pub fn reset(&mut self, offset: u64) {
        self.buf.clear();
        self.consumed = 0;
        self.buf_start = offset;
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &mut LineSplitter, chunks: &[&[u8]]) -> Vec<(String, bool, u64, u64)> {
        let mut got = Vec::new();
        for c in chunks {
            let mut out = Vec::new();
            s.push(c, &mut out);
            got.extend(out.iter().map(|l| {
                (
                    String::from_utf8_lossy(s.bytes(l)).into_owned(),
                    l.truncated,
                    l.start,
                    l.end,
                )
            }));
        }
        got
    }

    #[test]
    fn lines_across_reads_carry_their_offsets() {
        let mut s = LineSplitter::new(100, 10);
        let got = lines(&mut s, &[b"ab", b"c\nde\r\n", b"f"]);
        assert_eq!(
            got,
            vec![("abc".into(), false, 10, 14), ("de".into(), false, 14, 18)]
        );
        assert_eq!(s.consumed_to(), 18);
        assert_eq!(s.buffered(), 1);
        let last = s.rest().unwrap();
        assert_eq!((s.bytes(&last), last.start, last.end), (&b"f"[..], 18, 19));
        assert_eq!(s.consumed_to(), 19);
        s.reset(0);
        assert_eq!(s.consumed_to(), 0);
        assert!(s.rest().is_none());
    }

    #[test]
    fn a_long_line_is_cut_flagged_and_its_rest_skipped() {
        let mut s = LineSplitter::new(4, 0);
        let got = lines(&mut s, &[b"abcdefg", b"hij", b"kl\nok\n"]);
        assert_eq!(
            got,
            vec![("abcd".into(), true, 0, 4), ("ok".into(), false, 13, 16)]
        );
        // A long line whose LF is in the same read.
        let mut s = LineSplitter::new(3, 0);
        let got = lines(&mut s, &[b"abcdef\nxy\n"]);
        assert_eq!(
            got,
            vec![("abc".into(), true, 0, 3), ("xy".into(), false, 7, 10)]
        );
        assert_eq!(s.consumed_to(), 10);
        // While the rest is skipped, nothing is held for it.
        let mut s = LineSplitter::new(3, 0);
        lines(&mut s, &[b"abcdef"]);
        assert_eq!((s.buffered(), s.consumed_to()), (0, 6));
        assert!(s.rest().is_none());
    }

    #[test]
    fn reads_into_its_own_space() {
        let mut s = LineSplitter::new(100, 0);
        let mut out = Vec::new();
        let space = s.space(8);
        space[..3].copy_from_slice(b"a\nb");
        s.filled(8, 3, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.bytes(&out[0]), b"a");
        assert_eq!(s.buffered(), 1);
        assert_eq!(s.consumed_to(), 2);
        // The next read keeps the unfinished line and forgets the given-out ones.
        let space = s.space(4);
        space[..2].copy_from_slice(b"c\n");
        out.clear();
        s.filled(4, 2, &mut out);
        assert_eq!(s.bytes(&out[0]), b"bc");
        assert_eq!((out[0].start, out[0].end), (2, 5));
    }
}
