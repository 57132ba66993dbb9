//! Properties over any input, checked by the same code as the fuzz targets
//! (fuzz/src/checks.rs): parsing any bytes, framing any stream in any chunks, and events going
//! out as RFC 5424 and back.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone};
use proptest::prelude::*;
use sluice::event::{Facility, SdElement, Severity};
use sluice::output::format::write_rfc5424;
use sluice::parse::{ParseOptions, parse, rfc5424, trim_end};

use crate::checks::{self, Fields};

fn prefixed() -> impl Strategy<Value = Vec<u8>> {
    let prefixes: Vec<&'static [u8]> = vec![
        b"",
        b"<13>",
        b"<13>1 ",
        b"<13>1 2003-10-11T22:14:15.003Z h a p m ",
        b"<13>1 - h a p m [x@1 a=\"",
        b"<13>Oct 11 22:14:15 ",
        b"<13>Oct 11 22:14:15 host ",
        b"<13>2024-02-29T10:00:00",
    ];
    (
        proptest::sample::select(prefixes),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(p, tail)| [p, &tail[..]].concat())
}

fn syslogish() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::sample::select(vec![
            &b"<"[..],
            b">",
            b"1",
            b"9",
            b"13",
            b"191",
            b" ",
            b"-",
            b"[",
            b"]",
            b"=",
            b"\"",
            b"\\",
            b":",
            b"T",
            b"Z",
            b"+",
            b".",
            b"Oct",
            b"feb",
            b"29",
            b"2024-",
            b"12:",
            b"@",
            b"\xEF\xBB\xBF",
            b"\xff",
            b"\n",
            b"\0",
            b"a",
            b"host",
        ]),
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn header_value(max: usize) -> impl Strategy<Value = Option<String>> {
    // "-" alone is NILVALUE, so it cannot be a value.
    proptest::option::of("[!-~]{1,255}".prop_map(move |s| s.chars().take(max).collect()))
        .prop_map(|v: Option<String>| v.filter(|s| s != "-"))
}

fn sd_name() -> impl Strategy<Value = String> {
    // PRINTUSASCII but `=`, SP, `]`, `"` (and `@`, placed below).
    "[!#-<>-\\\\^-~&&[^@]]{1,32}"
}

fn stamp() -> impl Strategy<Value = Option<(DateTime<FixedOffset>, i32)>> {
    let parts = (
        0i32..=9999,
        1u32..=366,
        0u32..86_400,
        0u32..1_000_000,
        -1439i32..=1439,
    );
    proptest::option::of(parts.prop_filter_map(
        "a date",
        |(year, ordinal, secs, micros, minutes)| {
            let offset = FixedOffset::east_opt(minutes * 60)?;
            let date = NaiveDate::from_yo_opt(year, ordinal)?;
            let time = NaiveTime::from_num_seconds_from_midnight_opt(secs, micros * 1000)?;
            let t = offset.from_local_datetime(&date.and_time(time)).single()?;
            Some((t, minutes * 60))
        },
    ))
}

/// Any event RFC 5424 can carry (see `checks::representable`).
fn fields() -> impl Strategy<Value = Fields> {
    let element = (
        sd_name(),
        proptest::option::of("[0-9]{1,9}"),
        proptest::collection::vec((sd_name(), any::<String>()), 0..4),
    )
        .prop_map(|(name, pen, params)| {
            // SD-ID is one SD-NAME (ASCII), `@` included: 32 characters at most.
            let id = match pen {
                Some(n) => format!("{}@{n}", &name[..name.len().min(31 - n.len())]),
                None => name,
            };
            SdElement { id, params }
        });
    let sd = proptest::collection::vec(element, 0..4).prop_map(|els| {
        // SD-IDs are unique in a message (§6.3.2).
        let unique: BTreeMap<String, SdElement> =
            els.into_iter().map(|e| (e.id.clone(), e)).collect();
        unique.into_values().collect::<Vec<_>>()
    });
    // A trailing LF or NUL is framing, not MSG (I06): the parser drops it on any input.
    let message = proptest::collection::vec(any::<u8>(), 0..200)
        .prop_filter("no trailing LF/NUL", |m| trim_end(m).len() == m.len())
        .prop_filter("BOM then UTF-8 (MSG-UTF8)", |m| {
            !m.starts_with(b"\xEF\xBB\xBF") || std::str::from_utf8(m).is_ok()
        });
    let header = (
        header_value(rfc5424::MAX_HOSTNAME),
        header_value(rfc5424::MAX_APP_NAME),
        header_value(rfc5424::MAX_PROCID),
        header_value(rfc5424::MAX_MSGID),
    );
    (0u8..24, 0u8..8, 1u16..=999, stamp(), header, sd, message).prop_map(
        |(f, s, version, timestamp, (h, a, p, m), sd, message)| Fields {
            facility: Facility::from_code(f).unwrap_or(Facility::User),
            severity: Severity::from_code(s).unwrap_or(Severity::Notice),
            version,
            timestamp,
            header: [h, a, p, m],
            sd,
            message,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// For any event, `parse(write_rfc5424(e))` gives `e` back.
    #[test]
    fn any_event_survives_rfc5424_and_back(f in fields()) {
        let mut frame = Vec::new();
        write_rfc5424(&f.to_event(), &mut frame);
        let back = checks::event(&frame, parse(&frame, &ParseOptions::now()));
        prop_assert_eq!(back.parsed.parse_error, None, "{:?}", String::from_utf8_lossy(&frame));
        prop_assert_eq!(Fields::of(&back), f);
    }

    /// For any bytes: no panic, the raw bytes come back, fields stay in the frame, and the
    /// event survives a trip through RFC 5424.
    #[test]
    fn any_bytes_parse_within_the_invariants(pick in any::<u8>(), frame in proptest::collection::vec(any::<u8>(), 0..400)) {
        checks::parse_frame(&[&[pick][..], &frame].concat());
    }

    #[test]
    fn syslog_shaped_bytes_too(pick in any::<u8>(), frame in prop_oneof![syslogish(), prefixed()]) {
        checks::parse_frame(&[&[pick][..], &frame].concat());
    }

    /// Kernel records, well formed or not: a clean RFC 5424 frame or the record kept, flagged.
    #[test]
    fn kmsg_records_convert_within_the_invariants(
        pick in any::<u8>(),
        pri in 0u32..260,
        seq in any::<u64>(),
        micros in prop_oneof![0u64..10_000_000_000_000, any::<u64>()],
        text in proptest::collection::vec(any::<u8>(), 0..200),
        dict in proptest::collection::vec((r#"[A-Z_ =\\\]"]{0,12}"#, "[ -~]{0,20}"), 0..4),
        garble in any::<bool>(),
    ) {
        let mut record = format!("{pri},{seq},{micros},-;").into_bytes();
        record.extend(text.iter().filter(|&&b| b != b'\n'));
        for (k, v) in dict {
            record.extend_from_slice(format!("\n {k}={v}").as_bytes());
        }
        record.push(b'\n');
        if garble && !record.is_empty() {
            let at = usize::from(pick) % record.len();
            record[at] = pick;
        }
        checks::kmsg_record(&[&[pick][..], &record].concat());
    }

    /// Any stream, in any chunks, gives the same frames, and every step makes progress.
    #[test]
    fn any_stream_frames_alike_in_any_chunks(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        checks::framing(&data);
    }
}
