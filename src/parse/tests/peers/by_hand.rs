//! The rest of the peers' cases, transcribed by hand: rsyslog groups B to F (those about
//! parsing with default options; the others set options sluice does not have, or concern
//! output templates and framing) and syslog-ng's modules/syslogformat/tests/test_syslog_format.c
//! (its cases labelled F1-F13 here) and lib/timeutils/tests/test_scan_timestamp.c, at
//! syslog-ng/syslog-ng@b55e8d0b8: those cases are in this file only (tests/data/README.md has
//! the sources). Where sluice differs, the
//! test in `differences` says so; everything here agrees with the peer.

use chrono::{DateTime, Utc};

use crate::event::{ParseErrorKind, SdElement};
use crate::parse::tests::rfc3164::{check, sequence, ts};
use crate::parse::tests::{err, parse_utc as parse};
use crate::parse::{ParseOptions, Zone, parse as parse_opts};
use ParseErrorKind::*;

#[test]
fn rsyslog_groups_b_to_f() {
    let x = "[error|xen3|15|Guest liveness monitor D:bca30ab3f1c1|master_connection] Connection";
    check(&format!("<27>xapi: {x}"), None, Some("xapi"), None, x); // B01
    let p = check(
        "<175>Oct 16 2009 23:47:31 hostname tag This is a message",
        Some("hostname"),
        Some("tag"),
        None,
        "This is a message",
    ); // B04
    assert_eq!(p.timestamp, ts("2009-10-16T23:47:31Z"));
    check(
        "<175>Oct 16 2009 23:47:31 hostname tag[1234] This is a message",
        Some("hostname"),
        Some("tag"),
        Some("1234"),
        "This is a message",
    );
    let long = "01234567890123456789012345678901-toolong"; // B14, as with nolimittag
    check(
        &format!("<167>Mar  6 16:57:54 172.20.245.8 {long} Rest of message..."),
        Some("172.20.245.8"),
        Some(long),
        None,
        "Rest of message...",
    );
    let f = br#"<167>1 2003-03-01T01:00:00.000Z hostname1/hostname2 tcpflood - tag [tcpflood@32473 MSGNUM="0"] data"#;
    assert_eq!(
        crate::parse::tests::text(f, parse(f).hostname),
        Some("hostname1/hostname2")
    ); // C07
    for json in [r#"{ "c1":1 }"#, r#"   { "c2":2 }"#, r#"   [{ "c3":3 }]"#] {
        check(json, None, None, None, json); // C09: header-less text stays whole
    }
    check(
        "<14>May 21 12:00:01 host token-without-colon",
        Some("host"),
        Some("token-without-colon"),
        None,
        "",
    ); // C11
    check("<14>valid-after", None, None, None, "valid-after");
    for (sd, msg) in [
        ("-", "nosd-nosp"),
        (r#"[abc@123 a="b"]"#, "sd-nosp"),
        ("- ", " nosd-sp"),
        (r#"[abc@123 a="b"] "#, " sd-sp"),
    ] {
        let f = format!(
            "<13>1 2019-05-15T11:21:57+03:00 domain.tld tag - - {sd} {}",
            msg.trim_start()
        ); // D01
        assert_eq!(
            parse(f.as_bytes()).message.slice(f.as_bytes()),
            msg.as_bytes(),
            "{f}"
        );
    }
    let f = br#"<85>1 2019-08-27T13:02:58.000+01:00 A/B-896747 ABC LMBNI SUCCESS [origin software="ABC" swVersion="47.1"][ABC@32473 eventType="XYZ:IPIP,9:\"free -m\";" remoteIp="192.0.2.1" singleTick="D'E" bracket="1\]2"] TESTMESSAGE"#;
    let p = parse(f); // D05
    assert_eq!(
        p.structured_data.to_elements()[1].params[0].1,
        r#"XYZ:IPIP,9:"free -m";"#
    );
    assert_eq!(p.structured_data.to_elements()[1].params[3].1, "1]2");
    let head = "<161>1 2003-03-01T01:00:00.000Z mymachine.example.com tcpflood - tag ";
    for sd in [
        "[tcpflood@32473 MSGNUM] invalid",
        "[tcpflood@32473 MSGNUM ] x",
        "[tcpflood@32473 MSGNUM= ] x",
        "[tcpflood@32473 = ] x",
        "[tcpflood@32473 MSGNUM",
        "[tcpflood@32473 MSGNUM=",
        "[tcpflood@32473 MSGNUM=\"unterminated",
    ] {
        let f = format!("{head}{sd}"); // D06: kept, flagged
        let p = parse(f.as_bytes());
        assert_eq!(p.parse_error.map(|e| e.kind), Some(SdInvalid), "{f}");
        assert_eq!(p.message.slice(f.as_bytes()), sd.as_bytes());
    }
    for frame in [
        &b"<1011>Mar  1 01:00:00 172.20.245.8 tag msgnum:00000000:"[..],
        b"<3500000000>Mar  1 01:00:00 172.20.245.8 tag msgnum:00000000:",
        b"<x112>Mar  1 01:00:00 172.20.245.8 tag msgnum:00000000:",
    ] {
        let p = parse(frame); // E01: invalid PRI, the whole frame as MSG
        assert_eq!(
            (p.parse_error.map(|e| e.kind), p.message.slice(frame)),
            (Some(InvalidPri), frame)
        );
    }
    for (frame, pri) in [
        (&b"<13>hello"[..], Some(13)),
        (b"<165>1 2026-05-25...", Some(165)),
        (b"<13hello", None),
        (b"<1a>hello", None),
        (b"<1234>hello", None),
        (b"<>hello", None),
        (b"<192>hello", None),
        (b"<", None),
        (b"<1", None),
        (b"<1>", Some(1)),
    ] {
        let p = parse(frame); // E03
        let got = (p.parse_error.map(|e| e.kind) != Some(InvalidPri))
            .then(|| p.facility.code() * 8 + p.severity.code());
        assert_eq!(got, pri, "{frame:?}");
    }
    for frame in [&b"13>hello"[..], b"", b"\0<13>hello"] {
        assert!(parse(frame).pri_missing, "{frame:?}"); // E03: no `<`, user.notice
    }
    check(
        "<13>last message repeated 5 times",
        None,
        None,
        None,
        "last message repeated 5 times",
    ); // F01
}

#[test]
fn syslogng_syslog_format_and_sd_parser() {
    let p = check("<189>65536: ", None, None, None, ""); // F1
    assert_eq!(p.structured_data.to_elements(), [sequence("65536")]);
    let f = b"<189 Feb  3 12:34:56 host program[pid]: message"; // F2
    assert_eq!(
        (err(&parse(f)), parse(f).message.slice(f)),
        (Some((InvalidPri, 4)), &f[..])
    );
    check(
        "<189> program[pid]: message",
        None,
        Some("program"),
        Some("pid"),
        "message",
    ); // F7
    let f = b"<189>1 2024-09-16Q11:22:33+02:00 host program pid msgid [foo bar=baz] message"; // F8
    assert_eq!(err(&parse(f)), Some((BadTimestamp, 17)));
    let f = b"<189>1 2024-09-16T11:22:33+02:00 host program pid msgid [foo bar=baz message"; // F9
    assert_eq!(parse(f).parse_error.map(|e| e.kind), Some(SdInvalid));
    check(
        "<189>Feb  3 12:34:56 host program[pid]: message",
        Some("host"),
        Some("program"),
        Some("pid"),
        "message",
    ); // F10
    // F13, the SD parser (unquoted values: differences::syslogng_f11_f13_…).
    let sd = |text: &str| {
        let f = format!("<13>1 - h a - - {text} m");
        let p = parse(f.as_bytes());
        p.parse_error
            .is_none()
            .then_some(p.structured_data.to_elements())
    };
    let el = |id: &str, params: &[(&str, &str)]| SdElement {
        id: id.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    assert_eq!(sd("-"), Some(vec![]));
    for bad in [
        "<",
        "[",
        "[]",
        "]",
        "[foobar",
        r#"[foo= bar="baz"]"#,
        r#"[foo" bar="baz"]"#,
        r#"[foo bar"="baz"]"#,
        "[foo bar]",
        "[foo bar baz]",
        r#"[foo bar="]"#,
        r#"[foo bar="baz""#,
    ] {
        assert_eq!(sd(bad), None, "{bad}");
    }
    assert_eq!(sd("[foobar]"), Some(vec![el("foobar", &[])]));
    assert_eq!(
        sd(r#"[foo bar="baz"]"#),
        Some(vec![el("foo", &[("bar", "baz")])])
    );
    for (value, want) in [
        (r#"\a"#, r"\a"),
        (r#"\""#, "\""),
        (r#"\]"#, "]"),
        (r#"\\"#, r"\"),
    ] {
        assert_eq!(
            sd(&format!(r#"[foo bar="{value}"]"#)),
            Some(vec![el("foo", &[("bar", want)])])
        );
    }
    let many = sd(r#"[foo@1.2.3.4 bar="baz" chew="chow" peek="poke"]"#);
    assert_eq!(
        many,
        Some(vec![el(
            "foo@1.2.3.4",
            &[("bar", "baz"), ("chew", "chow"), ("peek", "poke")]
        )])
    );
}

/// syslog-ng's timestamp scanner cases, now = 2017-12-13 CET (Europe/Berlin).
#[test]
fn syslogng_timestamp_scanner() {
    let at = |now: &str| {
        let now = now.parse::<DateTime<Utc>>().unwrap_or_default();
        ParseOptions::new(now, Zone::Named(chrono_tz::Europe::Berlin))
    };
    for (now, stamp, want) in [
        (
            "2017-12-13T12:00:00Z",
            "Oct  1 17:46:12",
            "2017-10-01T17:46:12+02:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "Dec  3 09:10:12.987",
            "2017-12-03T09:10:12.987+01:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "Dec  3 09:10:12,987",
            "2017-12-03T09:10:12.987+01:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "Dec  3 09:10:12 2019",
            "2019-12-03T09:10:12+01:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "Dec  3 2019 09:10:12:",
            "2019-12-03T09:10:12+01:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "Dec  3 2019 09:10:12",
            "2019-12-03T09:10:12+01:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "Dec 3 09:10:12",
            "2017-12-03T09:10:12+01:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "2017-12-03 09:10:12.987+01:00",
            "2017-12-03T09:10:12.987+01:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "2017-12-03 09:10:12,987",
            "2017-12-03T09:10:12.987+01:00",
        ),
        (
            "2017-12-13T12:00:00Z",
            "Jan  3 17:46:12.000",
            "2018-01-03T17:46:12+01:00",
        ),
        (
            "2018-01-03T12:00:00Z",
            "Dec 31 17:46:12",
            "2017-12-31T17:46:12+01:00",
        ),
    ] {
        let f = format!("<13>{stamp} host app: m");
        let p = parse_opts(f.as_bytes(), &at(now));
        assert_eq!((p.timestamp, p.parse_error), (ts(want), None), "{f}");
    }
    // A frame cut inside the zone or fraction takes what is there (CVE-2022-38725's shape).
    let p = parse(b"<13>2022-08-17T05:02:28.41");
    assert_eq!(p.timestamp, ts("2022-08-17T05:02:28.41Z"));
}
