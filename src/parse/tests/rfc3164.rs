//! RFC 3164 parser tests: ordinary messages, hostile inputs E01-E03, E06-E07, F03, G07-G08.
//! Where sluice differs from rsyslog or syslog-ng: peers/differences.rs.

use chrono::{DateTime, FixedOffset, NaiveTime, Utc};

use super::{err, parse_utc as parse, text};
use crate::event::{Facility, ParseErrorKind, ParseFlags, Parsed, Protocol, SdElement, Severity};
use crate::parse::rfc3164::infer_year;
use crate::parse::{ParseOptions, Zone, parse as parse_opts, parse_in};

pub(super) fn ts(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// (hostname, app_name, procid, message) as text.
fn fields(f: &[u8], p: &Parsed) -> (Option<String>, Option<String>, Option<String>, String) {
    let own = |s: Option<&str>| s.map(str::to_string);
    let msg = String::from_utf8_lossy(p.message.slice(f)).into_owned();
    (
        own(text(f, p.hostname)),
        own(text(f, p.app_name)),
        own(text(f, p.procid)),
        msg,
    )
}

pub(super) fn check(
    frame: &str,
    host: Option<&str>,
    app: Option<&str>,
    pid: Option<&str>,
    msg: &str,
) -> Parsed {
    let f = frame.as_bytes();
    let p = parse(f);
    let want = (
        host.map(Into::into),
        app.map(Into::into),
        pid.map(Into::into),
        msg.into(),
    );
    assert_eq!(fields(f, &p), want, "{frame}");
    assert_eq!(p.protocol, Protocol::Rfc3164);
    p
}

pub(super) fn received(s: &str) -> ParseOptions {
    received_in(s, Zone::Local)
}

/// Options for a frame received at `s` on a listener in `zone`.
pub(super) fn received_in(s: &str, zone: Zone) -> ParseOptions {
    ParseOptions::new(
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc),
        zone,
    )
}

#[test]
fn rfc3164_ordinary_messages() {
    let p = check(
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        Some("mymachine"),
        Some("su"),
        None,
        "'su root' failed for lonvick on /dev/pts/8",
    );
    assert_eq!(
        (p.facility, p.severity, p.parse_error),
        (Facility::Auth, Severity::Crit, None)
    );
    assert_eq!(p.timestamp, ts("2026-10-11T22:14:15Z"));
    let p = check(
        "<13>Oct  1 09:00:00 host sshd[123]: Accepted",
        Some("host"),
        Some("sshd"),
        Some("123"),
        "Accepted",
    );
    assert_eq!(p.timestamp, ts("2026-10-01T09:00:00Z"));
    // glibc syslog(3) over /dev/log: no hostname.
    let p = check(
        "<38>Nov 22 10:00:00 sshd[42]: msg",
        None,
        Some("sshd"),
        Some("42"),
        "msg",
    );
    assert_eq!((p.facility, p.severity), (Facility::Auth, Severity::Info));
    let p = check("<13>hello", None, None, None, "hello");
    assert_eq!(
        (p.timestamp, p.parse_error, p.pri_missing),
        (None, None, false)
    );
    check("<13>app: hello", None, Some("app"), None, "hello");
    check(
        "<13>app:  two spaces",
        None,
        Some("app"),
        None,
        " two spaces",
    );
    check(
        "<13>Oct 11 22:14:15 host tag:msgnum:3",
        Some("host"),
        Some("tag"),
        None,
        "msgnum:3",
    );
    check(
        "<13>Oct 11 22:14:15 host tag[123] no colon",
        Some("host"),
        Some("tag"),
        Some("123"),
        "no colon",
    );
    check(
        "<13>Oct 11 22:14:15 host tag message",
        Some("host"),
        Some("tag"),
        None,
        "message",
    );
    check(
        "<30>Apr  6 13:21:08 docker/6befb258da22[6128]: TOO LONG",
        None,
        Some("docker/6befb258da22"),
        Some("6128"),
        "TOO LONG",
    );
    check(
        "<167>Mar 27 19:06:53 src sshd(pam_unix)[12750]: x",
        Some("src"),
        Some("sshd(pam_unix)"),
        Some("12750"),
        "x",
    );
    let p = check("\u{FEFF}x", None, None, None, "x");
    assert!(p.pri_missing && p.msg_utf8);
}

/// E01: Feb 29 without a year goes to the latest leap year; never a chrono panic.
#[test]
fn hostile_e01_feb_29_in_a_non_leap_year() {
    let f = b"<134>Feb 29 14:07:19 myhostname sshd - - - msg";
    let p = parse_in(f, &received("2022-06-01T00:00:00Z"), &Utc);
    assert_eq!(p.timestamp, ts("2020-02-29T14:07:19Z"));
    assert_eq!(
        (text(f, p.hostname), text(f, p.app_name)),
        (Some("myhostname"), Some("sshd"))
    );
    let p = parse_in(f, &received("2024-02-10T00:00:00Z"), &Utc);
    assert_eq!(p.timestamp, ts("2024-02-29T14:07:19Z"));
    // With the year given, a missing Feb 29 is a bad timestamp.
    let f = b"<13>Feb 29 2023 14:07:19 h a: x";
    assert_eq!(err(&parse(f)), Some((ParseErrorKind::BadTimestamp, 8)));
}

/// E02: a wall time in the spring gap moves forward an hour; one in the autumn overlap takes
/// the earlier instant. Deterministic, no panic, flagged.
#[test]
fn hostile_e02_local_time_in_dst_gap_or_overlap() {
    let berlin = chrono_tz::Europe::Berlin;
    let gap = b"<13>Mar 30 02:30:00 h a: x";
    let p = parse_in(gap, &received("2025-04-01T00:00:00Z"), &berlin);
    assert_eq!(p.timestamp, ts("2025-03-30T03:30:00+02:00"));
    assert_eq!(p.parse_error, None);
    assert!(p.flags.contains(ParseFlags::TIMESTAMP_ADJUSTED));
    let overlap = b"<13>Oct 26 02:30:00 h a: x";
    let p = parse_in(overlap, &received("2025-10-27T00:00:00Z"), &berlin);
    assert_eq!(p.timestamp, ts("2025-10-26T02:30:00+02:00"));
    let t = p.timestamp.expect("stamp");
    assert_eq!(t.offset().local_minus_utc(), 7200);
    assert!(p.flags.contains(ParseFlags::TIMESTAMP_ADJUSTED));
    let plain = b"<13>Oct 27 02:30:00 h a: x";
    let p = parse_in(plain, &received("2025-10-27T12:00:00Z"), &berlin);
    assert_eq!(p.timestamp, ts("2025-10-27T02:30:00+01:00"));
    assert_eq!(p.flags, ParseFlags::default());
    // Through ParseOptions, as a listener's `timezone` does.
    let o = received_in("2025-04-01T00:00:00Z", Zone::Named(berlin));
    assert_eq!(
        parse_opts(gap, &o).timestamp,
        ts("2025-03-30T03:30:00+02:00")
    );
}

/// E03: a December stamp read on Jan 1 is from last year; a January one read on Dec 31 from
/// next year.
#[test]
fn hostile_e03_year_rollover() {
    let f = b"<13>Dec 31 23:59:59 h a: x";
    let p = parse_in(f, &received("2027-01-01T00:00:05Z"), &Utc);
    assert_eq!(p.timestamp, ts("2026-12-31T23:59:59Z"));
    let f = b"<13>Jan  1 00:00:01 h a: x";
    let p = parse_in(f, &received("2026-12-31T23:59:58Z"), &Utc);
    assert_eq!(p.timestamp, ts("2027-01-01T00:00:01Z"));
    let now = |s: &str| DateTime::parse_from_rfc3339(s).expect("valid").naive_utc();
    let noon = NaiveTime::from_hms_opt(12, 0, 0).expect("valid");
    let year = |m, d, at| infer_year(m, d, noon, now(at)).map(|t| chrono::Datelike::year(&t));
    assert_eq!(year(11, 22, "2026-05-01T00:00:00Z"), Some(2025));
    assert_eq!(year(6, 1, "2026-05-15T00:00:00Z"), Some(2026));
    assert_eq!(year(2, 29, "2027-12-31T00:00:00Z"), Some(2024));
}

#[test]
fn hostile_e06_rfc3164_timestamp_variants() {
    for (stamp, want) in [
        ("Oct  1 22:14:15", "2026-10-01T22:14:15Z"),
        ("Oct 1 22:14:15", "2026-10-01T22:14:15Z"),
        ("oct 11 22:14:15", "2026-10-11T22:14:15Z"),
        ("OCT 11 22:14:15", "2026-10-11T22:14:15Z"),
        ("Oct 11 22:14:15.123", "2026-10-11T22:14:15.123Z"),
        ("Oct 11 22:14:15,987654", "2026-10-11T22:14:15.987654Z"),
        ("Oct 11 2024 22:14:15", "2024-10-11T22:14:15Z"),
        ("Oct 11 2024 22:14:15:", "2024-10-11T22:14:15Z"),
        ("Oct 11 22:14:15 2024", "2024-10-11T22:14:15Z"),
        ("Oct 11 22:14:15:", "2026-10-11T22:14:15Z"),
        ("2003 Oct 11 22:14:15", "2003-10-11T22:14:15Z"),
        ("2010-08-30T23:00:05Z", "2010-08-30T23:00:05Z"),
        (
            "2006-10-29 02:00:00.156+01:00",
            "2006-10-29T02:00:00.156+01:00",
        ),
        (
            "2006-11-10T10:43:21.15600000000",
            "2006-11-10T10:43:21.156Z",
        ),
        (
            "2026-07-23T09:30:45.123+0200",
            "2026-07-23T09:30:45.123+02:00",
        ),
    ] {
        let frame = format!("<13>{stamp} host tag: m");
        let p = check(&frame, Some("host"), Some("tag"), None, "m");
        assert_eq!((p.timestamp, p.parse_error), (ts(want), None), "{frame}");
    }
    // Clearly stamps, but wrong: flagged, MSG from the stamp on.
    for (stamp, at) in [
        ("Oct 11 22:14", 16),
        ("Oct 11 25:14:15", 11),
        ("Oct 32 22:14:15", 8),
        ("Feb 30 22:14:15", 8),
        ("Oct 11 22:14:15x", 19),
        ("2024-13-01T00:00:00Z", 4),
        ("2024-01-01T00:00:00+25:00", 23),
    ] {
        let frame = format!("<34>{stamp} host tag: bad");
        let p = parse(frame.as_bytes());
        assert_eq!(err(&p), Some((ParseErrorKind::BadTimestamp, at)), "{frame}");
        assert_eq!(p.message.slice(frame.as_bytes()), &frame.as_bytes()[4..]);
        assert_eq!((p.timestamp, p.hostname, p.app_name), (None, None, None));
    }
    // Not stamps at all: plain text, no flag.
    for text in [
        "Foo 11 22:14:15 host tag: m",
        "Okt 11 22:14:15 h t: m",
        "Mar 5 apples",
        "May I?",
    ] {
        let frame = format!("<13>{text}");
        let p = parse(frame.as_bytes());
        assert_eq!((p.timestamp, p.parse_error), (None, None), "{frame}");
        assert_eq!(p.message.slice(frame.as_bytes()), text.as_bytes());
    }
}

/// E07: Cisco sequence numbers become `meta sequenceId` (syslog-ng does the same, F1); nothing
/// is read past the end.
#[test]
fn hostile_e07_cisco_sequence_numbers() {
    for (frame, seq, msg) in [
        ("<189>65536: ", "65536", ""),
        ("<189>123: *", "123", "*"),
        ("<189>123: .Mar  1 00:00:00.000:", "123", ""),
    ] {
        let p = check(frame, None, None, None, msg);
        assert_eq!(p.structured_data.to_elements(), [sequence(seq)], "{frame}");
    }
    let p = check("<189>65536", None, None, None, "65536");
    assert!(p.structured_data.to_elements().is_empty());
}

/// `[meta sequenceId="n"]`.
pub(super) fn sequence(n: &str) -> SdElement {
    SdElement {
        id: "meta".into(),
        params: vec![("sequenceId".into(), n.into())],
    }
}

#[test]
fn hostile_f03_slash_in_rfc3164_hostname_is_message_content() {
    let p = check(
        "<13>Oct 11 22:14:15 ../../etc/cron.d/x tag: m",
        None,
        None,
        None,
        "../../etc/cron.d/x tag: m",
    );
    assert_eq!(p.parse_error, None);
    check(
        "<13>Oct 11 22:14:15 h\u{f4}st tag: m",
        None,
        None,
        None,
        "h\u{f4}st tag: m",
    );
}

#[test]
fn hostile_g07_long_tag_is_message_content() {
    let frame = format!("<13>Oct 11 22:14:15 host {}: msg", "a".repeat(1000));
    let want = format!("{}: msg", "a".repeat(1000));
    check(&frame, Some("host"), None, None, &want);
    let tag48 = "t".repeat(48);
    check(&format!("<13>{tag48}: m"), None, Some(&tag48), None, "m");
    check(
        &format!("<13>{tag48}t: m"),
        None,
        None,
        None,
        &format!("{tag48}t: m"),
    );
    let pid = format!("<13>h[{}]: m", "1".repeat(129));
    check(&pid, None, None, None, &pid[4..]);
}

#[test]
fn hostile_g08_headers_with_nothing_after() {
    check(
        "<13>Message forwarded from ",
        None,
        None,
        None,
        "Message forwarded from ",
    );
    check(
        "<13>Message forwarded from host:",
        None,
        None,
        None,
        "Message forwarded from host:",
    );
    check("<13>From ", None, None, None, "From ");
    check("<13>Oct 11 22:14:15 host :", Some("host"), None, None, ":");
    check("<14>Aug 30 23:00:05 ", None, None, None, "");
    check("<14>Aug 30 23:00:05", None, None, None, "");
    check("<14>Aug 30 23:00:05 X4711", Some("X4711"), None, None, "");
    check("<14>Aug 30 23:00:05 X4711 ", Some("X4711"), None, None, "");
    check("<13>tag[", None, None, None, "tag[");
    check("<13>tag[1", None, None, None, "tag[1");
    check("<13>tag[]: m", None, None, None, "tag[]: m");
}
