//! Cutting a file's bytes into lines: a pure state machine over what has been read, with the
//! file offset of every line's end, so positions can be checkpointed at line boundaries.

use bytes::{Bytes, BytesMut};

/// One line of a file, without its LF (nor a CR before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's bytes, at most `max_line_bytes`.
    pub bytes: Bytes,
    /// The line was longer than `max_line_bytes` and was cut; its rest is skipped.
    pub truncated: bool,
    /// File offset of the line's first byte.
    pub start: u64,
    /// File offset just past the line's LF (where the next line starts).
    pub end: u64,
}

/// Splits bytes appended to a file into [`Line`]s. Holds the unfinished last line.
#[derive(Debug)]
pub struct LineSplitter {
    max_line_bytes: usize,
    /// Bytes read and not yet part of a line: the unfinished last line.
    buf: BytesMut,
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
            buf: BytesMut::new(),
            buf_start: offset,
            skipping: false,
        }
    }

    /// File offset of the first byte not yet given out as part of a line (the unfinished line's
    /// start, or where a skipped rest ends).
    pub fn consumed_to(&self) -> u64 {
        self.buf_start
    }

    /// Bytes held for the unfinished line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A buffer of `want` writable bytes at the end, for the next read; the caller writes into
    /// it and calls [`LineSplitter::filled`] with what it read.
    pub fn space(&mut self, want: usize) -> &mut [u8] {
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
        self.buf.extend_from_slice(bytes);
        self.split(out);
    }

    fn split(&mut self, out: &mut Vec<Line>) {
        let mut scanned = 0;
        loop {
            match memchr::memchr(b'\n', &self.buf[scanned..]) {
                Some(i) => {
                    let lf = scanned + i;
                    if self.skipping {
                        self.skipping = false;
                        let _ = self.buf.split_to(lf + 1);
                        self.buf_start += lf as u64 + 1;
                        scanned = 0;
                        continue;
                    }
                    if lf > self.max_line_bytes {
                        // Longer than allowed: keep the start, flagged, and skip to the LF.
                        self.cut(out);
                        scanned = 0;
                        continue;
                    }
                    let mut line = self.buf.split_to(lf + 1);
                    let start = self.buf_start;
                    self.buf_start += lf as u64 + 1;
                    line.truncate(lf);
                    if line.last() == Some(&b'\r') {
                        line.truncate(lf - 1);
                    }
                    out.push(Line {
                        bytes: line.freeze(),
                        truncated: false,
                        start,
                        end: self.buf_start,
                    });
                    scanned = 0;
                }
                None => {
                    if self.skipping {
                        self.buf_start += self.buf.len() as u64;
                        self.buf.clear();
                    } else if self.buf.len() > self.max_line_bytes {
                        self.cut(out);
                        continue;
                    }
                    return;
                }
            }
        }
    }

    /// Gives out the first `max_line_bytes` of the buffer as a truncated line; the rest of that
    /// line, up to its LF, is skipped.
    fn cut(&mut self, out: &mut Vec<Line>) {
        let start = self.buf_start;
        let line = self.buf.split_to(self.max_line_bytes).freeze();
        self.buf_start += line.len() as u64;
        self.skipping = true;
        out.push(Line {
            bytes: line,
            truncated: true,
            start,
            end: self.buf_start,
        });
        // Everything before the LF (if any is buffered) is skipped by the caller's loop.
        match memchr::memchr(b'\n', &self.buf) {
            Some(i) => {
                let _ = self.buf.split_to(i + 1);
                self.buf_start += i as u64 + 1;
                self.skipping = false;
            }
            None => {
                self.buf_start += self.buf.len() as u64;
                self.buf.clear();
            }
        }
    }

    /// The file was truncated or is being let go: the unfinished line (if any) as a line of its
    /// own, and the splitter restarted at `offset`.
    pub fn finish(&mut self, offset: u64) -> Option<Line> {
        let line = (!self.buf.is_empty()).then(|| {
            let bytes = self.buf.split().freeze();
            Line {
                start: self.buf_start,
                end: self.buf_start + bytes.len() as u64,
                bytes,
                truncated: false,
            }
        });
        self.buf.clear();
        self.buf_start = offset;
        self.skipping = false;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &mut LineSplitter, chunks: &[&[u8]]) -> Vec<(String, bool, u64, u64)> {
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        out.into_iter()
            .map(|l| {
                (
                    String::from_utf8_lossy(&l.bytes).into_owned(),
                    l.truncated,
                    l.start,
                    l.end,
                )
            })
            .collect()
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
        let last = s.finish(0).unwrap();
        assert_eq!((&last.bytes[..], last.start, last.end), (&b"f"[..], 18, 19));
        assert_eq!(s.consumed_to(), 0);
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
    }

    #[test]
    fn reads_into_its_own_space() {
        let mut s = LineSplitter::new(100, 0);
        let mut out = Vec::new();
        let space = s.space(8);
        space[..3].copy_from_slice(b"a\nb");
        s.filled(8, 3, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(s.buffered(), 1);
        assert_eq!(s.consumed_to(), 2);
    }
}
