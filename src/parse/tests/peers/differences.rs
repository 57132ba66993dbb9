//! Where sluice reads a case of the rsyslog or syslog-ng test suites differently, on purpose.
//! Each test is named after the cases and says why.

use super::syslogng;
use crate::event::{ParseErrorKind, Protocol};
use crate::parse::parse as parse_opts;
use crate::parse::tests::rfc3164::{check, ts};
use crate::parse::tests::{err, parse_utc as parse, text};
use ParseErrorKind::*;

/// syslog-ng S1, S48-S50 accept SD-IDs and PARAM-NAMEs of 33 and 34 characters. RFC 5424's
/// SD-NAME is `1*32PRINTUSASCII`, and sluice reads RFC 5424 strictly (hostile-inputs H05).
#[test]
fn syslogng_s1_sd_id_over_32_characters_is_invalid() {
    let head = "<132>1 2006-10-29T01:59:59.156+01:00 mymachine evntslog - - ";
    for sd in [
        r#"[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa i="long_33"]"#,
        r#"[a aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa="long_33"]"#,
    ] {
        let f = format!("{head}{sd} msg");
        let p = parse(f.as_bytes());
        assert_eq!(p.parse_error.map(|e| e.kind), Some(SdInvalid), "{f}");
        assert_eq!(text(f.as_bytes(), p.app_name), Some("evntslog"));
        assert_eq!(
            p.message.slice(f.as_bytes()),
            format!("{sd} msg").as_bytes()
        );
    }
}

/// syslog-ng S34 and S68 give a year-less stamp the current year unless it is December read in
/// January. sluice gives it the year that puts it at most a month ahead of the receive time
/// (as the issue asks, and as a device's log is never months in the future): `NOV 22` read on
/// 2019-02-08 is 2018-11-22, not nine months ahead.
#[test]
fn syslogng_s34_stamp_months_ahead_is_last_year() {
    let opts = syslogng::options();
    let f = b"<190>NOV 22 00:00:33 192.168.33.8-1 CMDLOGGER[165319912]: cmd_logger_api.c(83)";
    let p = parse_opts(f, &opts);
    assert_eq!(p.timestamp, ts("2018-11-22T00:00:33+01:00"));
    assert_eq!(text(f, p.hostname), Some("192.168.33.8-1"));
    let f = b"<0>91: *Oct 07 03:10:04: mydevice.com %CRYPTO-4-RECVD_PKT_INV_SPI: decaps";
    assert_eq!(
        parse_opts(f, &opts).timestamp,
        ts("2018-10-07T03:10:04+02:00")
    );
    let f = b"<190>Mar 01 00:00:00 host app: less than a month ahead is this year";
    assert_eq!(
        parse_opts(f, &opts).timestamp,
        ts("2019-03-01T00:00:00+01:00")
    );
}

/// syslog-ng S52 cuts a PARAM-VALUE to 255 bytes. RFC 5424 sets no limit and a cut value is a
/// silently wrong value; sluice keeps it whole (the frame is bounded by `max_message_size`).
#[test]
fn syslogng_s52_long_param_value_is_kept_whole() {
    let value = "a".repeat(256);
    let f = format!("<132>1 - h evntslog - - [a i=\"{value}\"] msg");
    let p = parse(f.as_bytes());
    assert_eq!(
        (
            p.parse_error,
            p.structured_data.to_elements()[0].params[0].1.len()
        ),
        (None, 256)
    );
}

/// syslog-ng S54-S56 accept an APP-NAME of 49, a PROCID of 129 and a MSGID of 33 characters
/// (cutting them). RFC 5424 caps them at 48, 128 and 32; sluice flags the field and keeps the
/// rest of the frame, that field included, in MSG (hostile-inputs F01).
#[test]
fn syslogng_s54_s56_rfc5424_fields_over_their_limit() {
    for (fields, max) in [
        (format!("{} - -", "a".repeat(49)), 48),
        (format!("evntslog {} -", "a".repeat(129)), 128),
        (format!("evntslog - {}", "a".repeat(33)), 32),
    ] {
        let f = format!("<132>1 - mymachine {fields} [a i=\"ok\"] msg");
        let field = f.find(&"a".repeat(max + 1)).unwrap_or_default();
        let p = parse(f.as_bytes());
        assert_eq!(err(&p), Some((InvalidHeaderChar, field + max)), "{f}");
        assert_eq!(p.message.start as usize, field);
    }
}

/// syslog-ng S59 reads an RFC 5424 stamp without offset in the receiver's zone. RFC 5424
/// requires the offset (TIME-OFFSET is not optional); sluice flags `bad_timestamp`, and MSG
/// keeps the frame from the stamp on, so nothing is lost.
#[test]
fn syslogng_s59_rfc5424_stamp_needs_an_offset() {
    let f = b"<134>1 2009-10-16T11:51:56 exchange MSExchange_ADAccess 20208 - - entry";
    let p = parse(f);
    assert_eq!(err(&p), Some((BadTimestamp, 26)));
    assert_eq!(p.message.slice(f), &f[7..]);
}

/// syslog-ng S66 takes the one word after the stamp as the program; rsyslog A24 takes it as
/// the HOSTNAME, as RFC 3164's header order says. sluice follows rsyslog; with two words the
/// second is the TAG, as both peers read it (S62, A22).
#[test]
fn syslogng_s66_one_word_after_the_stamp_is_the_hostname() {
    check("<0>Jan 10 01:00:00 prg0", Some("prg0"), None, None, "");
    check(
        "<0>Jan 10 01:00:00 1.2.3.4 prg0",
        Some("1.2.3.4"),
        Some("prg0"),
        None,
        "",
    );
}

/// syslog-ng S69, S72 and F12, and rsyslog B02, F01, H16, H29 and H39 take the first words of a
/// message without a stamp as HOSTNAME and TAG (rsyslog issue #1789 complains about it). sluice
/// keeps such text whole: without a stamp only `word:` or `word[pid]` is a TAG, as both peers
/// agree (syslog-ng S3, rsyslog B01).
#[test]
fn syslogng_s69_rsyslog_b02_first_word_without_timestamp_is_text() {
    for frame in [
        "This is a message!",
        "some message",
        "<189>65536",
        "<165>1",
        "<34>Okt 11 22:14:15 host tag: german month",
        "zabc not compressed",
        "<13>last message  repeated 5 times",
    ] {
        let msg = frame.find('>').map_or(frame, |i| &frame[i + 1..]);
        let p = check(frame, None, None, None, msg);
        assert_eq!((p.timestamp, p.parse_error), (None, None));
    }
    check(
        "<27>xapi: [error|xen3] died",
        None,
        Some("xapi"),
        None,
        "[error|xen3] died",
    );
    check(
        "<15> openvpn[2499]: PTHREAD",
        None,
        Some("openvpn"),
        Some("2499"),
        "PTHREAD",
    );
}

/// syslog-ng F3 takes an 80-character program name. RFC 3164 caps the TAG at 32 characters and
/// RFC 5424 APP-NAME at 48; sluice takes up to 48, and a longer word is MSG text (G07).
#[test]
fn syslogng_f3_tag_over_48_characters_is_message_text() {
    let tag =
        "program_0123456789-abcdefghijklmnopqrstuvwxyz(ABCDEFGHIJKLMNOPQRSTUVWXYZ).valid/chars";
    let f = format!("<189> Feb  3 12:34:56 host {tag}[pid]: message");
    check(
        &f,
        Some("host"),
        None,
        None,
        &format!("{tag}[pid]: message"),
    );
}

/// syslog-ng F11 and F13 accept unquoted PARAM-VALUEs (`[foo bar=baz]`, as VMware sends). RFC
/// 5424 quotes every PARAM-VALUE; sluice flags `sd_invalid` and keeps the SD text in MSG.
#[test]
fn syslogng_f11_f13_unquoted_param_value_is_invalid() {
    let f = b"<189>1 2024-02-03T12:34:56Z host program pid msgid [foo bar=baz] message";
    let p = parse(f);
    assert_eq!(err(&p), Some((SdInvalid, 60)));
    assert_eq!(p.message.slice(f), b"[foo bar=baz] message");
}

/// rsyslog A19/A20 accept `eventSource= "Application"` (a SP after `=`). RFC 5424's SD-PARAM
/// is `PARAM-NAME "=" %d34 PARAM-VALUE %d34`; sluice flags `sd_invalid` at the SP.
#[test]
fn rsyslog_a19_a20_space_after_equals_is_invalid_sd() {
    let f = br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource= "Application"] An application event"#;
    let p = parse(f);
    assert_eq!(err(&p), Some((SdInvalid, 109)));
    assert_eq!(text(f, p.msgid), Some("ID47"));
}

/// rsyslog A21 and H32 read four digits after the time as the HOSTNAME (its default,
/// detect.yearAfterTimestamp=off); syslog-ng S37 reads them as the year, as LinkSys devices
/// mean them. sluice follows syslog-ng.
#[test]
fn rsyslog_a21_h32_year_after_the_time_is_the_year() {
    let p = check(
        "<34>Oct 11 22:14:15 2003 host tag: year after time",
        Some("host"),
        Some("tag"),
        None,
        "year after time",
    );
    assert_eq!(p.timestamp, ts("2003-10-11T22:14:15Z"));
    let p = check(
        "<6>AUG 10 22:18:24 2009  netips [audit] user",
        Some("netips"),
        None,
        None,
        "[audit] user",
    );
    assert_eq!(p.timestamp, ts("2009-08-10T22:18:24Z"));
}

/// rsyslog H01, H02, H05 and H06 misread structured data: a missing SD takes the MSGID's
/// value, `]nospace` loses a byte, `]` inside a value ends the element. sluice reads SD by the
/// ABNF: SD is `-` or `[`, a value ends at an unescaped `"`, and one SP follows SD.
#[test]
fn rsyslog_h01_h02_h05_h06_sd_is_read_by_the_abnf() {
    let f = b"<165>1 2003-10-11T22:14:15.003Z host app - ID47 no structured data here";
    let p = parse(f);
    assert_eq!(
        (err(&p), text(f, p.msgid)),
        (Some((SdInvalid, 48)), Some("ID47"))
    );
    let f = b"<34>1 2003-10-11T22:14:15Z host app - ID47";
    assert_eq!(err(&parse(f)), Some((TruncatedHeader, 42)));
    let f = br#"<34>1 2003-10-11T22:14:15.003Z host app - ID47 [a@1 x="y"]nospace"#;
    let p = parse(f);
    assert_eq!(
        (err(&p), p.message.slice(f)),
        (Some((MissingSpace, 58)), &b"nospace"[..])
    );
    assert_eq!(
        p.structured_data.to_elements()[0].params,
        [("x".into(), "y".into())]
    );
    let f = br#"<34>1 2003-10-11T22:14:15Z host app - ID47 [a@1 x="a] b"] msg after"#;
    assert_eq!(err(&parse(f)), Some((SdInvalid, 52)));
}

/// rsyslog H10-H13 and H15 read an RFC 5424 frame with a bad or cut header as the same fields
/// sluice keeps, but say nothing. sluice adds `parse_error` (README.md, "How input is
/// handled"), so the fault is seen
/// and counted.
#[test]
fn rsyslog_h10_h15_rfc5424_faults_are_flagged() {
    for (frame, fault) in [
        (
            &b"<165>1 2003-13-45T99:14:15.003Z host app 123 ID47 - bad timestamp"[..],
            (BadTimestamp, 13),
        ),
        (
            b"<34>1 2003-10-11T22:14:15.003 host app - ID47 - no tz",
            (BadTimestamp, 29),
        ),
        (
            b"<34>1 2003-10-11 22:14:15 host app - ID47 - space instead of T",
            (BadTimestamp, 16),
        ),
        (
            b"<34>1  2003-10-11T22:14:15Z host app - ID47 - double space",
            (BadTimestamp, 6),
        ),
    ] {
        let p = parse(frame);
        assert_eq!((err(&p), p.hostname), (Some(fault), None));
        let stamp = frame.iter().position(|&b| b == b' ').unwrap_or_default() + 1;
        assert_eq!(p.message.slice(frame), &frame[stamp..]);
    }
    let f = b"<34>1 2003-10-11T22:14:15Z host";
    let p = parse(f);
    assert_eq!(
        (err(&p), text(f, p.hostname)),
        (Some((TruncatedHeader, 31)), Some("host"))
    );
}

/// rsyslog H17 reads `<165>2 …` as RFC 3164 (taking `2` as HOSTNAME). RFC 5424's VERSION is
/// `NONZERO-DIGIT 0*2DIGIT`, and go-syslog reads 1 to 999; so does sluice (hostile D07).
#[test]
fn rsyslog_h17_version_2_is_rfc5424() {
    let f = b"<165>2 2003-10-11T22:14:15.003Z host app - - - version two";
    let p = parse(f);
    assert_eq!(
        (p.protocol, p.version, p.parse_error),
        (Protocol::Rfc5424, 2, None)
    );
    assert_eq!(p.message.slice(f), b"version two");
}

/// rsyslog H22 wants a HOSTNAME to end in a letter or digit and makes `host.` the TAG. A fully
/// qualified name may end in a dot, and syslog-ng takes any word; so does sluice.
#[test]
fn rsyslog_h22_hostname_may_end_with_a_dot() {
    check(
        "<34>Oct 11 22:14:15 host. tag: dot",
        Some("host."),
        Some("tag"),
        None,
        "dot",
    );
}

/// rsyslog H23 and H36 make a TAG with an empty program name (`[10.0.0.1]`, `:`). A TAG has at
/// least one character (RFC 3164 §4.1.3); sluice keeps such text in MSG.
#[test]
fn rsyslog_h23_h36_no_program_name_no_tag() {
    check(
        "<34>Oct 11 22:14:15 [10.0.0.1] tag: m",
        None,
        None,
        None,
        "[10.0.0.1] tag: m",
    );
    check(
        "<187>Oct 11 22:14:15 host : empty tag",
        Some("host"),
        None,
        None,
        ": empty tag",
    );
}

/// rsyslog H24 accepts `Feb 30`; H25-H27 read `Oct` as HOSTNAME when the time is out of range or
/// has no seconds. These clearly are stamps and are wrong: sluice flags `bad_timestamp` and keeps
/// the frame from the stamp on in MSG (hostile-inputs E06).
#[test]
fn rsyslog_h24_h27_impossible_stamps_are_flagged() {
    for (stamp, at) in [
        ("Feb 30 22:14:15", 8),
        ("Oct 11 25:14:15", 11),
        ("Oct 32 22:14:15", 8),
        ("Oct 11 22:14", 16),
    ] {
        let f = format!("<34>{stamp} host tag: m");
        let p = parse(f.as_bytes());
        assert_eq!(err(&p), Some((BadTimestamp, at)), "{f}");
        assert_eq!(p.message.slice(f.as_bytes()), &f.as_bytes()[4..]);
    }
}

/// rsyslog H41 keeps the CR of a trailing CRLF (as `#015`). CRLF is a line end, as LF is
/// (hostile-inputs I06, B04); sluice drops it. A lone trailing CR stays.
#[test]
fn rsyslog_h41_trailing_crlf_is_framing() {
    let f = b"<34>Oct 11 22:14:15 host tag: udp with crlf\r\n";
    assert_eq!(parse(f).message.slice(f), b"udp with crlf");
    let f = b"<34>Oct 11 22:14:15 host tag: cr\r";
    assert_eq!(parse(f).message.slice(f), b"cr\r");
}

/// rsyslog B03 allows only letters, digits, `.`, `-` and `_` in a HOSTNAME, so `#001` becomes
/// the TAG. syslog-ng (without check-hostname) takes any word, as sluice does: a HOSTNAME is
/// any PRINTUSASCII word but `/` (which could name a path, F03).
#[test]
fn rsyslog_b03_word_with_hash_is_a_hostname() {
    check(
        "<175>Oct 16 23:47:31 #001 MSWinEventLog 0#011Security",
        Some("#001"),
        Some("MSWinEventLog"),
        None,
        "0#011Security",
    );
}

/// rsyslog B12/B13 end the program name at `/`. syslog-ng keeps it (S32, `ctld/snmpd`), as
/// sluice does: the TAG is what the sender wrote.
#[test]
fn rsyslog_b12_b13_slash_stays_in_the_tag() {
    check(
        "<133>2011-03-01T11:22:12Z host tag/with/slashes msgh ...x",
        Some("host"),
        Some("tag/with/slashes"),
        None,
        "msgh ...x",
    );
}

/// rsyslog D02 cuts fractions of 7 to 9 digits to microseconds. RFC 5424's TIME-SECFRAC is
/// `"." 1*6DIGIT`; sluice flags `bad_timestamp` (hostile-inputs E04). In an RFC 3164 frame, any
/// fraction is read.
#[test]
fn rsyslog_d02_more_than_six_fraction_digits_are_invalid() {
    let f = b"<34>1 2026-04-27T15:46:41.0300000Z mymachine.example.com su - ID47 - MSG";
    assert_eq!(err(&parse(f)), Some((BadTimestamp, 32)));
    let p = parse(b"<34>2026-04-27T15:46:41.000006930Z mymachine su: MSG");
    assert_eq!(p.timestamp, ts("2026-04-27T15:46:41.000006930Z"));
    let o = syslogng::options();
    assert!(
        parse_opts(b"<34>Dec  3 09:10:12.987 h a: m", &o)
            .timestamp
            .is_some()
    );
}
