//! syslog-ng's lib/tests/test_msgparse.c (74 cases). Its context: TZ=MET-1METDST, now
//! 2019-02-08 09:37:49 CET; here Europe/Berlin (the same rules in these years).

use chrono::DateTime;

use super::{Expect, Pinned, compare, literal, shown};
use crate::parse::{ParseOptions, Zone, parse};

const CASES: &str = include_str!("../../../../tests/data/syslogng_vectors_all.txt");

/// Where sluice reads a case differently, and why.
const PINNED: &[(&str, Pinned)] = &[
    (
        "S1",
        Pinned::Differs("syslogng_s1_sd_id_over_32_characters_is_invalid"),
    ),
    (
        "S6",
        Pinned::Option("flags(no-hostname): the first word is the TAG"),
    ),
    (
        "S21",
        Pinned::Option("check-hostname(yes) rejects `%` in HOSTNAME"),
    ),
    (
        "S23",
        Pinned::Option("flags(no-hostname): the first word is the TAG"),
    ),
    ("S27", Pinned::Option("bad-hostname(\"^ctld\")")),
    ("S28", Pinned::Option("bad-hostname(\"^ctld\")")),
    ("S29", Pinned::Option("bad-hostname(\"^ctld\")")),
    ("S30", Pinned::Option("bad-hostname(\"^ctld\")")),
    ("S31", Pinned::Option("bad-hostname(\"^ctld\")")),
    (
        "S34",
        Pinned::Differs("syslogng_s34_stamp_months_ahead_is_last_year"),
    ),
    (
        "S48",
        Pinned::Differs("syslogng_s1_sd_id_over_32_characters_is_invalid"),
    ),
    (
        "S49",
        Pinned::Differs("syslogng_s1_sd_id_over_32_characters_is_invalid"),
    ),
    (
        "S50",
        Pinned::Differs("syslogng_s1_sd_id_over_32_characters_is_invalid"),
    ),
    (
        "S52",
        Pinned::Differs("syslogng_s52_long_param_value_is_kept_whole"),
    ),
    (
        "S54",
        Pinned::Differs("syslogng_s54_s56_rfc5424_fields_over_their_limit"),
    ),
    (
        "S55",
        Pinned::Differs("syslogng_s54_s56_rfc5424_fields_over_their_limit"),
    ),
    (
        "S56",
        Pinned::Differs("syslogng_s54_s56_rfc5424_fields_over_their_limit"),
    ),
    (
        "S59",
        Pinned::Differs("syslogng_s59_rfc5424_stamp_needs_an_offset"),
    ),
    (
        "S66",
        Pinned::Differs("syslogng_s66_one_word_after_the_stamp_is_the_hostname"),
    ),
    (
        "S68",
        Pinned::Differs("syslogng_s34_stamp_months_ahead_is_last_year"),
    ),
    (
        "S69",
        Pinned::Differs("syslogng_s69_rsyslog_b02_first_word_without_timestamp_is_text"),
    ),
    (
        "S71",
        Pinned::Option("flags(no-rfc3164-fallback): only RFC 5424"),
    ),
    (
        "S72",
        Pinned::Differs("syslogng_s69_rsyslog_b02_first_word_without_timestamp_is_text"),
    ),
];

/// The value after `key=` in an expectation: a literal, or `None` for `(not checked)`.
fn value(text: &str, key: &str) -> Option<String> {
    let at = text.find(&format!(" {key}="))? + key.len() + 2;
    let (bytes, _) = literal(text.get(at..)?)?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn expectation(text: &str) -> Expect {
    let num = |key: &str| -> Option<i64> {
        let rest = text.get(text.find(key)? + key.len()..)?;
        let n: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        n.parse().ok()
    };
    let field = |key: &str| value(text, key).map(|v| Some(v).filter(|v| !v.is_empty()));
    let error = text.contains("Error processing log message");
    let stamp = text.split("stamp=").nth(1).unwrap_or_default();
    let (stamp, stamp_parts) = if stamp.starts_with("(none") {
        (Some(None), None)
    } else if stamp.starts_with("(sec not checked") {
        let micros = num("usec=").and_then(|n| u32::try_from(n).ok());
        let offset = num("gmtoff=").and_then(|n| i32::try_from(n).ok());
        (None, micros.zip(offset))
    } else {
        let t = stamp.split_whitespace().next().unwrap_or_default();
        (DateTime::parse_from_rfc3339(t).ok().map(Some), None)
    };
    // syslog-ng fills a NIL stamp with the receive time, which this corpus shows.
    let stamp = stamp.map(|s| s.filter(|t| t.timestamp() != 1_549_615_069));
    Expect {
        error,
        pri: num("pri=").and_then(|n| u8::try_from(n).ok()),
        stamp,
        stamp_parts,
        host: field("HOST"),
        app: field("PROGRAM"),
        pid: field("PID"),
        msgid: field("MSGID"),
        sd: value(text, "SDATA"),
        msg: value(text, "MSG"),
        ..Expect::default()
    }
}

fn cases() -> Vec<(String, Vec<u8>, Expect)> {
    CASES
        .split("\n### S")
        .skip(1)
        .filter_map(|block| {
            let id = format!("S{}", block.split('.').next()?);
            let input = block.lines().find_map(|l| l.strip_prefix("input: "))?;
            let (frame, _) = literal(input)?;
            let expected = block.split("expected: ").nth(1)?;
            Some((id, frame, expectation(&format!(" {expected}"))))
        })
        .collect()
}

/// Receive time and zone of syslog-ng's tests.
pub(super) fn options() -> ParseOptions {
    ParseOptions::new(
        "2019-02-08T08:37:49Z".parse().unwrap_or_default(),
        Zone::Named(chrono_tz::Europe::Berlin),
    )
}

#[test]
fn syslogng_test_msgparse_corpus() {
    let cases = cases();
    assert_eq!(cases.len(), 74);
    let opts = options();
    compare(&cases, PINNED, |f| parse(f, &opts), shown);
}
