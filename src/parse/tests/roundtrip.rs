//! Round trips between the parsers and the RFC 5424 wire writer, and what any bytes keep.
//!
//! - Any event: `parse(write_rfc5424(e))` gives `e`'s fields back.
//! - Any bytes: parsing does not panic; the frame is the event's `raw`, written back exactly by
//!   the `raw` format, and MSG is the whole unparsed rest of the frame.
//! - Any bytes, parsed once: writing the result as RFC 5424 and parsing again changes nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use proptest::prelude::*;

use super::{opts, parse_utc};
use crate::event::{Event, Facility, Parsed, Protocol, SdElement, Severity, Span};
use crate::output::format::{Format, write_rfc5424};
use crate::parse::{rfc5424, trim_end};

/// An event as the RFC 5424 fields see it.
#[derive(Debug, Clone, PartialEq)]
struct Fields {
    facility: Facility,
    severity: Severity,
    version: u16,
    timestamp: Option<(DateTime<FixedOffset>, i32)>,
    header: [Option<String>; 4],
    sd: Vec<SdElement>,
    message: Vec<u8>,
}

impl Fields {
    fn of(ev: &Event) -> Fields {
        let own = |s: Option<&str>| s.map(str::to_string);
        Fields {
            facility: ev.facility(),
            severity: ev.severity(),
            version: ev.parsed.version,
            timestamp: ev
                .parsed
                .timestamp
                .map(|t| (t, t.offset().local_minus_utc())),
            header: [ev.hostname(), ev.app_name(), ev.procid(), ev.msgid()].map(own),
            sd: ev.parsed.structured_data.clone(),
            message: ev.message().to_vec(),
        }
    }

    /// An event with these fields: `raw` holds the header values and MSG, spans point in it.
    fn to_event(&self) -> Event {
        let mut raw = Vec::new();
        let mut span = |v: &[u8]| {
            let start = raw.len();
            raw.extend_from_slice(v);
            Span::new(start, raw.len())
        };
        let [h, a, p, m] = self.header.clone().map(|v| v.map(|v| span(v.as_bytes())));
        let message = span(&self.message);
        let parsed = Parsed {
            version: self.version,
            timestamp: self.timestamp.map(|(t, _)| t),
            hostname: h,
            app_name: a,
            procid: p,
            msgid: m,
            structured_data: self.sd.clone(),
            message,
            msg_utf8: std::str::from_utf8(&self.message).is_ok(),
            ..Parsed::new(Protocol::Rfc5424, self.facility, self.severity, 0)
        };
        event(Bytes::from(raw), parsed)
    }
}

fn event(raw: Bytes, parsed: Parsed) -> Event {
    Event {
        raw,
        received_at: opts().received_at,
        source: None,
        listener: "t".into(),
        truncated: false,
        parsed,
    }
}

/// The event parsed from `frame`.
fn parsed(frame: &[u8]) -> Event {
    event(Bytes::copy_from_slice(frame), parse_utc(frame))
}

fn wire(ev: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    write_rfc5424(ev, &mut out);
    out
}

fn header_value(max: usize) -> impl Strategy<Value = Option<String>> {
    // "-" alone is NILVALUE, so it cannot be a value.
    proptest::option::of("[!-~]{1,255}".prop_map(move |s| s.chars().take(max).collect()))
        .prop_map(|v: Option<String>| v.filter(|s| s != "-"))
}

fn sd_name() -> impl Strategy<Value = String> {
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
            let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs, micros * 1000)?;
            let t = offset.from_local_datetime(&date.and_time(time)).single()?;
            Some((t, minutes * 60))
        },
    ))
}

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

/// What a second trip cannot keep of an event parsed from any bytes: a value `-` (NILVALUE),
/// a MSG that starts with a BOM but is not UTF-8, fractions beyond microseconds, offsets with
/// seconds. RFC 3164 events become version 1.
fn representable(ev: &Event) -> bool {
    let nil_value = [ev.hostname(), ev.app_name(), ev.procid(), ev.msgid()].contains(&Some("-"));
    let msg = ev.message();
    let bad_bom = msg.starts_with(b"\xEF\xBB\xBF") && std::str::from_utf8(msg).is_err();
    let stamp_ok = ev.parsed.timestamp.is_none_or(|t| {
        t.timestamp_subsec_nanos() % 1000 == 0 && t.offset().local_minus_utc() % 60 == 0
    });
    !nil_value && !bad_bom && stamp_ok
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_event_survives_rfc5424_and_back(f in fields()) {
        let frame = wire(&f.to_event());
        let back = parsed(&frame);
        prop_assert_eq!(back.parsed.parse_error, None, "{:?}", String::from_utf8_lossy(&frame));
        prop_assert_eq!(back.parsed.protocol, Protocol::Rfc5424);
        prop_assert_eq!(Fields::of(&back), f);
    }

    #[test]
    fn any_bytes_are_kept_and_the_rest_is_msg(frame in proptest::collection::vec(any::<u8>(), 0..400)) {
        let ev = parsed(&frame);
        let mut out = Vec::new();
        Format::Raw.write_line(&ev, &mut out);
        prop_assert_eq!(&out[..out.len() - 1], &frame[..]);
        prop_assert_eq!(ev.parsed.message.end as usize, trim_end(&frame).len());
    }

    #[test]
    fn parsed_events_survive_a_second_trip(frame in prop_oneof![super::syslogish(), super::prefixed()]) {
        let first = parsed(&frame);
        prop_assume!(representable(&first));
        let back = parsed(&wire(&first));
        let mut want = Fields::of(&first);
        if first.parsed.protocol == Protocol::Rfc3164 {
            want.version = 1;
        }
        prop_assert_eq!(back.parsed.parse_error, None);
        prop_assert_eq!(Fields::of(&back), want);
    }
}
