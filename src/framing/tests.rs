//! Framer tests, named after the hostile-input case IDs they cover (defined in docs/TESTING.md).
use super::*;
use proptest::prelude::*;

#[derive(Debug, PartialEq)]
struct Run {
    frames: Vec<Frame>,
    err: Option<FrameError>,
    stats: FramerStats,
}

/// The default options (NUL ends a line) with `max`.
fn opts(max: usize) -> FramerOptions {
    FramerOptions {
        max_message_size: max,
        ..FramerOptions::default()
    }
}

/// `nul_trailer = false`: only LF ends a line.
fn lf_only(max: usize) -> FramerOptions {
    FramerOptions {
        max_message_size: max,
        nul_trailer: false,
    }
}

/// Feeds `chunks`, decoding until `Ok(None)` after each, then (if `eof`) drains with
/// `decode_eof`. Checks progress, frame size and buffer bounds on every call.
fn feed(o: FramerOptions, chunks: &[&[u8]], eof: bool) -> Run {
    let max = o.max_message_size.max(1);
    let mut f = Framer::new(o);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut err = None;
    let pull = |f: &mut Framer, buf: &mut BytesMut, frames: &mut Vec<Frame>, at_eof| loop {
        let before = buf.len();
        let out = if at_eof {
            f.decode_eof(buf)
        } else {
            f.decode(buf)
        };
        match out {
            Ok(Some(fr)) => {
                assert!(!fr.data.is_empty() && fr.data.len() <= max, "{fr:?}");
                assert!(buf.len() < before, "frame without progress");
                frames.push(fr);
            }
            Ok(None) => {
                assert!(
                    buf.len() <= max + 64,
                    "buffer {} > max {max} + 64",
                    buf.len()
                );
                assert!(!at_eof || buf.is_empty());
                return None;
            }
            Err(e) => return Some(e),
        }
    };
    for c in chunks {
        buf.extend_from_slice(c);
        err = pull(&mut f, &mut buf, &mut frames, false);
        if err.is_some() {
            break;
        }
    }
    if eof && err.is_none() {
        err = pull(&mut f, &mut buf, &mut frames, true);
    }
    Run {
        frames,
        err,
        stats: f.stats().clone(),
    }
}

fn split<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(n.clamp(1, rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

fn feed_split(o: FramerOptions, data: &[u8], sizes: &[usize], eof: bool) -> Run {
    feed(o, &split(data, sizes), eof)
}

fn datas(r: &Run) -> Vec<&[u8]> {
    r.frames.iter().map(|f| &f.data[..]).collect()
}

/// Same result whole, one byte at a time and in 7-byte chunks.
fn feed_all_ways(o: FramerOptions, data: &[u8], eof: bool) -> Run {
    let whole = feed(o, &[data], eof);
    assert_eq!(whole, feed_split(o, data, &[1], eof));
    assert_eq!(whole, feed_split(o, data, &[7], eof));
    whole
}

const BAD: Option<FrameError> = Some(FrameError::FrameLenInvalid);

#[test]
fn hostile_a01_huge_octet_count() {
    let input = b"99999999999999999999999999 <13>hi";
    let r = feed_all_ways(opts(65536), input, true);
    assert_eq!((r.frames.len(), r.err), (0, BAD));
    // The error fires on the 11th digit; no further digit is ever looked at.
    let mut f = Framer::new(opts(65536));
    let mut buf = BytesMut::new();
    for (i, b) in input.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        match f.decode(&mut buf) {
            Ok(None) => assert!(i < 10),
            other => {
                assert_eq!((i, other), (10, Err(FrameError::FrameLenInvalid)));
                break;
            }
        }
    }
    assert_eq!(f.decode(&mut buf), Err(FrameError::FrameLenInvalid)); // sticky
}

#[test]
fn hostile_a02_usize_overflow_boundary() {
    for v in [
        "1844674407370955161",
        "18446744073709551615",
        "18446744073709551616",
        "18446744073709551614",
    ] {
        let r = feed_all_ways(opts(65536), format!("{v} <13>x").as_bytes(), true);
        assert_eq!((r.frames.len(), r.err), (0, BAD), "{v}");
    }
    // 10 digits: a valid (oversize) length; nothing allocated, partial frame kept at EOF.
    for v in [
        u64::from(u32::MAX) - 1,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
    ] {
        let input = format!("{v} <13>x");
        let mut f = Framer::new(opts(65536));
        let mut buf = BytesMut::from(input.as_bytes());
        assert_eq!(f.decode(&mut buf), Ok(None));
        assert!(f.in_frame() && buf.len() == 5);
        let r = feed_all_ways(opts(65536), input.as_bytes(), true);
        assert_eq!((datas(&r), r.err), (vec![&b"<13>x"[..]], None), "{v}");
        assert!(r.frames[0].truncated && r.frames[0].incomplete_at_eof);
    }
}

#[test]
fn hostile_a03_leading_zeros() {
    let mut input = vec![b'0'; 1000];
    input.extend_from_slice(b"200000 <120>2011-03-01T11:22:12Z host tag: msg");
    assert_eq!(feed_all_ways(opts(65536), &input, true).err, BAD);
    assert_eq!(feed(opts(65536), &[b"0"], false).err, BAD);
    assert_eq!(
        feed(opts(65536), &[b"<13>a\n", b"05 <13>b"], false).err,
        BAD
    );
}

#[test]
fn hostile_a04_octet_count_above_max() {
    let mut payload = b"<13>".to_vec();
    payload.resize(200_000, b'z');
    let mut input = b"200000 ".to_vec();
    input.extend_from_slice(&payload);
    input.extend_from_slice(b"5 <13>x");
    for sizes in [&[input.len()][..], &[4096], &[65536, 3, 1]] {
        let r = feed_split(opts(65536), &input, sizes, true);
        assert_eq!(datas(&r), vec![&payload[..65536], b"<13>x"]);
        assert!(r.frames[0].truncated && !r.frames[1].truncated);
        assert_eq!(r.stats.discarded_bytes, 200_000 - 65536);
        assert_eq!((r.err, r.stats.empty_frames), (None, 0));
    }
}

#[test]
fn hostile_a05_oversize_split_discard() {
    let body = b"abcdefghijklmnopqrstuvwxyz";
    let input = [&b"26 "[..], body, b"5 <13>x"].concat();
    let expect = |r: &Run| {
        assert_eq!(datas(r), vec![&body[..16], b"<13>x"]);
        assert!(r.frames[0].truncated && !r.frames[1].truncated);
        assert_eq!((r.err, r.stats.discarded_bytes), (None, 10));
    };
    expect(&feed(
        opts(16),
        &[b"26 abc", b"def", &body[6..], b"5 <13>x"],
        true,
    ));
    // Every chunking into up to three pieces.
    for i in 0..=input.len() {
        for j in i..=input.len() {
            let (a, rest) = input.split_at(i);
            let (b, c) = rest.split_at(j - i);
            expect(&feed(opts(16), &[a, b, c], true));
        }
    }
}

#[test]
fn hostile_a06_payload_looks_like_frames() {
    let mut payload = b"<134>1 - h a - - - ".to_vec();
    while payload.len() < 70_000 {
        payload.extend_from_slice(b" 12 <13>fake\n3 <1\n<134>x\n");
    }
    payload.truncate(70_000);
    let input = [&b"70000 "[..], &payload, b"5 <13>y"].concat();
    for sizes in [&[input.len()][..], &[1000], &[17]] {
        let r = feed_split(opts(65536), &input, sizes, true);
        assert_eq!(datas(&r), vec![&payload[..65536], b"<13>y"]);
        assert_eq!((r.err, r.stats.discarded_bytes), (None, 70_000 - 65536));
    }
}

#[test]
fn hostile_a07_zero_length() {
    let r = feed_all_ways(opts(64), b"0 <13>hi\n", true);
    assert_eq!((r.frames.len(), r.err), (0, BAD));
}

#[test]
fn hostile_a08_signed_count_is_a_line() {
    let r = feed_all_ways(opts(64), b"-5 <13>hi\n+5 <13>hi", true);
    assert_eq!(datas(&r), vec![b"-5 <13>hi", b"+5 <13>hi"]);
    assert!(
        r.frames
            .iter()
            .all(|f| f.framing == Framing::NonTransparent)
    );
    assert_eq!(r.err, None);
}

#[test]
fn hostile_a09_garbage_after_digits_makes_progress() {
    for input in [&b"1a <13>hi"[..], b"12x<13>hi"] {
        assert_eq!(feed_all_ways(opts(64), input, true).err, BAD);
    }
    let r = feed_all_ways(opts(64), b"1 <23>4\n1 <23>4\n", true);
    assert_eq!((datas(&r), r.err), (vec![&b"<"[..]], BAD));
    // Repeated calls after the error neither loop nor panic.
    let mut f = Framer::new(opts(64));
    let mut buf = BytesMut::from(&b"12x<13>hi"[..]);
    for _ in 0..3 {
        assert_eq!(f.decode(&mut buf), Err(FrameError::FrameLenInvalid));
        assert_eq!(f.decode_eof(&mut buf), Err(FrameError::FrameLenInvalid));
    }
}

#[test]
fn hostile_a10_count_not_followed_by_single_sp() {
    for input in [
        &b"12<13>hello world"[..],
        b"12  <13>hello",
        b"12\t<13>hello",
    ] {
        assert_eq!(feed_all_ways(opts(64), input, true).err, BAD);
    }
    // A header followed by EOF is invalid too.
    assert_eq!(feed(opts(64), &[b"12"], true).err, BAD);
}

#[test]
fn hostile_a11_count_ends_mid_field() {
    // The frame is exactly the declared 27 bytes. The rest, `7 mymachine ...`, starts with
    // a digit and SP, so per-frame detection reads `7 mymachi` as a frame (A16 hazard).
    let input = b"27 <182>2022-08-17T05:02:28.217 mymachine su: 'su root' failed\n";
    let r = feed_all_ways(opts(1024), input, true);
    assert_eq!(
        datas(&r),
        vec![&input[3..30], b"mymachi", b"ne su: 'su root' failed"]
    );
    assert_eq!(r.err, None);
    let input = b"28 <182>2022-08-17T05:02:28.217 mymachine su: 'su root' failed\n";
    let r = feed_all_ways(opts(1024), input, true);
    assert_eq!(datas(&r), vec![&input[3..31], &input[31..input.len() - 1]]);
    assert_eq!(r.frames[1].framing, Framing::NonTransparent);
}

#[test]
fn hostile_a12_eof_mid_octet_frame() {
    let r = feed_all_ways(opts(1024), b"100 <13>only-20-bytes...", true);
    assert_eq!(datas(&r), vec![b"<13>only-20-bytes..."]);
    assert!(r.frames[0].truncated && r.frames[0].incomplete_at_eof);
    // A header with no payload at all is counted as an empty frame, not delivered.
    let r = feed(opts(1024), &[b"<13>a\n", b"5 "], true);
    assert_eq!((r.frames.len(), r.stats.empty_frames), (1, 1));
}

#[test]
fn hostile_a12_eof_mid_oversize_octet_frame_is_counted_once_the_stream_ends() {
    // 200000 declared, 100000 sent: the first 65536 are delivered before the cut is known.
    let mut input = b"200000 <13>".to_vec();
    input.resize(7 + 100_000, b'z');
    for sizes in [&[input.len()][..], &[4096], &[65536 + 7, 1]] {
        let r = feed_split(opts(65536), &input, sizes, true);
        assert_eq!(datas(&r), vec![&input[7..7 + 65536]]);
        assert!(r.frames[0].truncated && !r.frames[0].incomplete_at_eof);
        assert_eq!(r.stats.oversize_cut_at_eof, 1, "{sizes:?}");
        // Without the end of the stream it may still complete: not counted.
        let r = feed_split(opts(65536), &input, sizes, false);
        assert_eq!(r.stats.oversize_cut_at_eof, 0);
    }
    // An oversize frame that was whole is not cut, nor is an oversize line.
    let mut whole = b"70000 <13>".to_vec();
    whole.resize(6 + 70_000, b'z');
    let r = feed(opts(65536), &[&whole], true);
    assert_eq!((r.frames.len(), r.stats.oversize_cut_at_eof), (1, 0));
    let r = feed(opts(16), &[b"<13>a line longer than sixteen bytes"], true);
    assert_eq!((r.frames.len(), r.stats.oversize_cut_at_eof), (1, 0));
}

#[test]
fn hostile_a13_no_allocation_from_declared_length() {
    let mut f = Framer::new(opts(65536));
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(b"65536 <13>0123456789");
    assert_eq!(f.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 14); // only the bytes that arrived, header consumed
    assert!(buf.capacity() < 1024 && f.in_frame());
}

#[test]
fn hostile_a14_header_split_at_every_byte() {
    let r = feed(opts(64), &[b"1", b"2 <13>he", b"llo world"], true);
    assert_eq!(r, feed(opts(64), &[b"12 <13>hello world"], true));
    assert_eq!(datas(&r), vec![&b"<13>hello wo"[..], b"rld"]);
    let stream = b"10 <13>hello\n<13>line\n3 <1>\r\n <14>x\n";
    let r = feed_all_ways(opts(64), stream, true);
    assert_eq!(
        datas(&r),
        vec![&b"<13>hello\n"[..], b"<13>line", b"<1>", b"<14>x"]
    );
}

#[test]
fn hostile_a15_several_frames_optional_lf() {
    for input in [
        &b"5 <13>a5 <13>b"[..],
        b"5 <13>a\n5 <13>b\n",
        b"5 <13>a\r\n5 <13>b\r\n",
    ] {
        let r = feed_all_ways(opts(64), input, true);
        assert_eq!(datas(&r), vec![b"<13>a", b"<13>b"]);
        assert_eq!((r.err, r.stats.empty_frames), (None, 0));
    }
    for input in [
        &b"5 <13>a\n\n5 <13>b"[..],
        b"5 <13>a\0\n5 <13>b",
        b"5 <13>a\r5 <13>b",
    ] {
        let r = feed_all_ways(opts(64), input, true);
        assert_eq!((r.frames.len(), r.stats.empty_frames), (2, 1));
    }
}

#[test]
fn hostile_a16_mixed_framing_per_frame() {
    let r = feed_all_ways(opts(64), b"5 <13>a<13>b\n5 <13>c", true);
    assert_eq!(datas(&r), vec![b"<13>a", b"<13>b", b"<13>c"]);
    let kinds: Vec<_> = r.frames.iter().map(|f| f.framing).collect();
    use Framing::*;
    assert_eq!(kinds, vec![OctetCounting, NonTransparent, OctetCounting]);
    // The documented hazard: a PRI-less line starting with a digit is read as a count.
    assert_eq!(
        feed(opts(64), &[b"2024-01-01 host app: hi\n"], true).err,
        BAD
    );
}

#[test]
fn hostile_b01_long_line_without_lf() {
    let max = 65536;
    let mut input = b"<13>".to_vec();
    input.resize(4 + 10 * 1024 * 1024, b'A');
    // Truncated frame delivered before any LF arrives.
    let r = feed(opts(max), &[&input[..max + 1]], false);
    assert_eq!((r.frames.len(), r.frames[0].truncated), (1, true));
    input.extend_from_slice(b"\n<13>ok\n");
    let r = feed_split(opts(max), &input, &[65536], true);
    assert_eq!(datas(&r), vec![&input[..max], b"<13>ok"]);
    assert_eq!(r.stats.discarded_bytes, (4 + 10 * 1024 * 1024 - max) as u64);
}

#[test]
fn hostile_b02_oversize_then_good_line_same_read() {
    let max = 1024;
    let mut input = b"<13>".to_vec();
    input.resize(4 + max + 100, b'A');
    input.extend_from_slice(b"\n<13>next\n");
    let r = feed_all_ways(opts(max), &input, true);
    assert_eq!(datas(&r), vec![&input[..max], b"<13>next"]);
    assert!(r.frames[0].truncated && !r.frames[1].truncated);
    assert_eq!(r.stats.discarded_bytes, 104);
}

#[test]
fn hostile_b03_truncation_boundaries() {
    let max = 16;
    for (n, suffix) in [
        (15, "\n"),
        (16, "\n"),
        (17, "\n"),
        (16, "\r\n"),
        (16, "\0\r\n"),
    ] {
        let mut line = b"<13>".to_vec();
        line.resize(n, b'A');
        let input = [&line[..], suffix.as_bytes(), b"<13>next\n"].concat();
        let r = feed_all_ways(opts(max), &input, true);
        assert_eq!(datas(&r), vec![&line[..n.min(max)], b"<13>next"], "{n}");
        assert_eq!(r.frames[0].truncated, n > max);
        assert_eq!(r.stats.discarded_bytes, (n - n.min(max)) as u64);
    }
    // max bytes then CR: undecided until the next byte shows whether LF follows.
    let mut f = Framer::new(opts(max));
    let mut buf = BytesMut::from(&b"<13>AAAAAAAAAAAA\r"[..]);
    assert_eq!(f.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b"B");
    assert!(
        f.decode(&mut buf)
            .is_ok_and(|o| o.is_some_and(|fr| fr.truncated))
    );
}

#[test]
fn hostile_b04_crlf() {
    let r = feed_all_ways(
        opts(64),
        b"<13>Oct 11 22:14:15 host app: hi\r\n<13>a\rb\n",
        true,
    );
    assert_eq!(
        datas(&r),
        vec![&b"<13>Oct 11 22:14:15 host app: hi"[..], b"<13>a\rb"]
    );
}

#[test]
fn hostile_b05_nul_trailer() {
    assert!(FramerOptions::default().nul_trailer, "on by default");
    // Python's SysLogHandler over TCP: NUL and no LF.
    let r = feed_all_ways(opts(64), b"<13>a\0<13>b\0<13>c", true);
    assert_eq!(datas(&r), vec![b"<13>a", b"<13>b", b"<13>c"]);
    assert_eq!((r.stats.nul_terminated, r.stats.empty_frames), (2, 0));
    // NUL LF and NUL CR LF are one trailer; CR NUL loses its CR like CR LF.
    let r = feed_all_ways(opts(64), b"<13>a\0\n<13>b\0\r\n<13>c\r\0\n<13>d\n", true);
    assert_eq!(datas(&r), vec![b"<13>a", b"<13>b", b"<13>c", b"<13>d"]);
    assert_eq!((r.stats.nul_terminated, r.stats.empty_frames), (3, 0));
    // A NUL inside an octet-counted frame is data.
    let r = feed_all_ways(opts(64), b"12 <13>a\0<13>b\n\0", true);
    assert_eq!(datas(&r), vec![&b"<13>a\0<13>b\n"[..]]);
    assert_eq!(r.frames[0].framing, Framing::OctetCounting);
    assert_eq!((r.stats.nul_terminated, r.stats.empty_frames), (0, 1));
    // A truncated line ended by NUL counts too, and the rest is discarded up to the NUL.
    let r = feed_all_ways(opts(8), b"<13>abcdefgh\0<13>b\0", true);
    assert_eq!(datas(&r), vec![&b"<13>abcd"[..], b"<13>b"]);
    assert_eq!((r.stats.nul_terminated, r.stats.discarded_bytes), (2, 4));

    // nul_trailer = false: NUL is data, and a NUL right before the LF is dropped.
    let r = feed_all_ways(lf_only(64), b"<13>a\0<13>b\0", true);
    assert_eq!(datas(&r), vec![b"<13>a\0<13>b"]);
    let r = feed_all_ways(lf_only(64), b"<13>hi\0\n<13>hi\r\n", true);
    assert_eq!(datas(&r), vec![b"<13>hi", b"<13>hi"]);
    assert_eq!((r.stats.nul_terminated, r.stats.empty_frames), (0, 0));
}

#[test]
fn hostile_b06_space_before_frame() {
    let r = feed_all_ways(opts(64), b"<13>a\n <13>b\n   <13>c\n x\n", true);
    assert_eq!(datas(&r), vec![&b"<13>a"[..], b"<13>b", b"<13>c", b" x"]);
    let many = [&[b' '; 17][..], b"<13>d\n"].concat(); // beyond the skip bound: data
    assert_eq!(
        datas(&feed_all_ways(opts(64), &many, true)),
        vec![&many[..22]]
    );
}

#[test]
fn hostile_b07_empty_lines_and_nul_only() {
    // (input, empty frames by default where every NUL ends a line, with nul_trailer = false)
    for (input, n, lf_n) in [
        (&b"\n\n\n"[..], 3, 3),
        (b"\0\0\0\n", 3, 1),
        (b"\r\n\r\n", 2, 2),
        (b"\0\0", 2, 1),
        (b"\0\r\n\r\n", 2, 2),
    ] {
        let r = feed_all_ways(opts(64), input, true);
        assert_eq!((r.frames.len(), r.stats.empty_frames), (0, n));
        let r = feed_all_ways(lf_only(64), input, true);
        assert_eq!((r.frames.len(), r.stats.empty_frames), (0, lf_n));
    }
    for (o, n) in [(opts(64), 4), (lf_only(64), 2)] {
        let r = feed_all_ways(o, b"<13>a\n\n\0\0\0\n<13>b\n", true);
        assert_eq!(
            (datas(&r), r.stats.empty_frames),
            (vec![&b"<13>a"[..], b"<13>b"], n)
        );
    }
}

#[test]
fn hostile_b08_tls_client_hello_on_plain_port() {
    let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    let r = feed_all_ways(opts(64), hello, true);
    assert_eq!(
        (r.frames.len(), r.err),
        (0, Some(FrameError::TlsOnPlainPort))
    );
    let mut f = Framer::new(opts(64));
    let mut buf = BytesMut::from(&hello[..2]);
    assert_eq!(f.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 2);
    buf.extend_from_slice(&hello[2..3]);
    assert_eq!(f.decode(&mut buf), Err(FrameError::TlsOnPlainPort));
    // Only the start of the stream is checked.
    let r = feed_all_ways(opts(64), b"<13>a\n\x16\x03\x01x\n", true);
    assert_eq!((r.frames.len(), r.err), (2, None));
    assert_eq!(feed(opts(64), &[b"\x16\x03"], true).frames.len(), 1);
    assert_eq!(
        feed(
            opts(64),
            &[FrameError::TlsOnPlainPort.as_str().as_bytes()],
            true
        )
        .err,
        None
    );
}

#[test]
fn hostile_c03_in_frame_mid_frame() {
    let mut f = Framer::new(opts(2048));
    let mut buf = BytesMut::new();
    assert!(!f.in_frame());
    buf.extend_from_slice(b"10");
    assert_eq!((f.decode(&mut buf), f.in_frame()), (Ok(None), true));
    buf.extend_from_slice(b"00 <13>");
    assert_eq!((f.decode(&mut buf), f.in_frame()), (Ok(None), true));
    for _ in 0..1000 - 4 - 1 {
        buf.extend_from_slice(b"x");
        assert_eq!((f.decode(&mut buf), f.in_frame()), (Ok(None), true));
    }
    buf.extend_from_slice(b"y<13>line");
    assert!(f.decode(&mut buf).is_ok_and(|o| o.is_some()));
    assert!(f.decode(&mut buf).is_ok_and(|o| o.is_none()) && f.in_frame());
    buf.extend_from_slice(b"\n");
    assert!(f.decode(&mut buf).is_ok_and(|o| o.is_some()) && !f.in_frame());
    // Still in the frame while discarding the rest of an oversize one.
    let mut f = Framer::new(opts(64));
    let mut buf = BytesMut::from(&[&b"100 "[..], &[b'x'; 64]].concat()[..]);
    assert!(
        f.decode(&mut buf)
            .is_ok_and(|o| o.is_some_and(|fr| fr.truncated))
    );
    buf.extend_from_slice(&[b'x'; 35]);
    assert_eq!((f.decode(&mut buf), f.in_frame()), (Ok(None), true));
    buf.extend_from_slice(b"x");
    assert_eq!((f.decode(&mut buf), f.in_frame()), (Ok(None), false));
    assert_eq!(f.stats().discarded_bytes, 36);
}

#[test]
fn hostile_c06_partial_frame_at_eof() {
    let mut f = Framer::new(opts(64));
    assert_eq!((f.in_frame(), f.stats()), (false, &FramerStats::default()));
    let mut buf = BytesMut::from(&b"20 <13>part"[..]);
    assert_eq!(f.decode(&mut buf), Ok(None));
    let fr = f.decode_eof(&mut buf).ok().flatten();
    assert!(fr.is_some_and(|fr| fr.incomplete_at_eof && fr.truncated && fr.data == "<13>part"));
    assert_eq!((f.decode_eof(&mut buf), f.in_frame()), (Ok(None), false));
}

#[test]
fn hostile_g03_embedded_nul_is_data() {
    let line = b"<167>Mar  6 16:57:54 172.20.245.8 test: msgnum:0 \0 test message";
    // In an octet-counted frame always, in an LF-framed one with nul_trailer = false.
    let counted = [format!("{} ", line.len()).as_bytes(), &line[..]].concat();
    let r = feed_all_ways(opts(1024), &counted, true);
    assert_eq!(datas(&r), vec![&line[..]]);
    let r = feed_all_ways(lf_only(1024), &[&line[..], b"\n"].concat(), true);
    assert_eq!(datas(&r), vec![&line[..]]);
    // By default the NUL ends the line.
    let r = feed_all_ways(opts(1024), &[&line[..], b"\n"].concat(), true);
    assert_eq!(datas(&r), vec![&line[..49], &line[50..]]);
}

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b"0123456789  <<\n\n\r\0\x16\x03a>".to_vec()),
        1 => any::<u8>(),
    ]
}

#[derive(Debug, Clone)]
enum Item {
    Octet {
        payload: Vec<u8>,
        trailer: u8,
    },
    Line {
        sp: usize,
        content: Vec<u8>,
        nul_end: bool,
    },
    Blank(usize),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        (prop::collection::vec(byte(), 1..60), 0u8..3).prop_map(|(mut payload, trailer)| {
            if payload[0] == b' ' {
                payload[0] = b'x';
            }
            Item::Octet { payload, trailer }
        }),
        (
            0usize..3,
            prop::collection::vec(byte(), 0..60),
            any::<bool>()
        )
            .prop_map(|(sp, rest, nul_end)| {
                let rest = rest.into_iter().map(|b| if b == b'\n' { b'y' } else { b });
                let content = std::iter::once(b'<').chain(rest).collect();
                Item::Line {
                    sp,
                    content,
                    nul_end,
                }
            }),
        (1usize..4).prop_map(Item::Blank),
    ]
}

/// Stream bytes, expected `(data, truncated)` frames, expected stats.
type Model = (Vec<u8>, Vec<(Vec<u8>, bool)>, FramerStats);

/// Encodes `items`, returning the stream and the expected frames and stats.
fn model(items: &[Item], max: usize, nul: bool) -> Model {
    let (mut out, mut frames, mut stats) = (Vec::new(), Vec::new(), FramerStats::default());
    let mut tolerant = false;
    for it in items {
        match it {
            Item::Octet { payload, trailer } => {
                out.extend_from_slice(format!("{} ", payload.len()).as_bytes());
                out.extend_from_slice(payload);
                out.extend_from_slice([&b""[..], b"\n", b"\r\n"][usize::from(*trailer)]);
                let keep = payload.len().min(max);
                frames.push((payload[..keep].to_vec(), keep < payload.len()));
                stats.discarded_bytes += (payload.len() - keep) as u64;
                tolerant = *trailer == 0;
                continue;
            }
            Item::Line {
                sp,
                content,
                nul_end,
            } => {
                let content: Vec<u8> = content
                    .iter()
                    .map(|&b| if nul && b == 0 { b'z' } else { b })
                    .collect();
                out.extend(std::iter::repeat_n(b' ', *sp));
                out.extend_from_slice(&content);
                out.push(if nul && *nul_end { 0 } else { b'\n' });
                let c = content.strip_suffix(b"\r").unwrap_or(&content);
                let c = if nul {
                    c
                } else {
                    c.strip_suffix(b"\0").unwrap_or(c)
                };
                if c.len() <= max {
                    frames.push((c.to_vec(), false));
                } else {
                    frames.push((content[..max].to_vec(), true));
                    stats.discarded_bytes += (content.len() - max) as u64;
                }
                // An LF right after a NUL trailer belongs to it.
                tolerant = nul && *nul_end;
                stats.nul_terminated += u64::from(tolerant);
                continue;
            }
            Item::Blank(n) => {
                out.extend(std::iter::repeat_n(b'\n', *n));
                stats.empty_frames += (*n - usize::from(tolerant)) as u64;
            }
        }
        tolerant = false;
    }
    (out, frames, stats)
}

proptest! {
    #[test]
    fn prop_a14_split_invariance_valid_streams(
        items in prop::collection::vec(item(), 0..12),
        sizes in prop::collection::vec(1usize..20, 1..6),
        max in 1usize..40,
        nul in any::<bool>(),
    ) {
        let (stream, want, want_stats) = model(&items, max, nul);
        let o = FramerOptions { max_message_size: max, nul_trailer: nul };
        let r = feed_split(o, &stream, &sizes, true);
        let got: Vec<_> = r.frames.iter().map(|f| (f.data.to_vec(), f.truncated)).collect();
        prop_assert_eq!(r.err, None);
        prop_assert_eq!(got, want);
        prop_assert_eq!(r.stats, want_stats);
    }

    #[test]
    fn prop_a09_progress_bounded_split_invariant_on_any_bytes(
        data in prop::collection::vec(byte(), 0..400),
        sizes in prop::collection::vec(1usize..40, 1..6),
        max in 0usize..40,
        nul in any::<bool>(),
    ) {
        // `feed` asserts progress, frame sizes and the buffer bound on every call.
        let o = FramerOptions { max_message_size: max, nul_trailer: nul };
        let whole = feed(o, &[&data], true);
        prop_assert_eq!(&whole, &feed_split(o, &data, &sizes, true));
        prop_assert_eq!(&whole, &feed_split(o, &data, &[1], true));
    }
}
