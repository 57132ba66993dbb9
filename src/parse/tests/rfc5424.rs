//! RFC 5424 parser tests: the §6.5 examples, hostile inputs E04-E05, F, G and H, a round trip.

use chrono::{DateTime, FixedOffset};

use super::{err, parse_utc as parse, text};
use crate::event::{
    Facility, ParseErrorKind, ParseFlags, Parsed, Protocol, SdElement, Severity, Span,
};
use crate::parse::rfc5424::*;
use ParseErrorKind::*;

fn ts(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// Parses `frame` and checks it is RFC 5424 with this fault, MSG from `msg_from`.
fn assert_fault(frame: &[u8], kind: ParseErrorKind, at: usize, msg_from: usize) -> Parsed {
    let p = parse(frame);
    let shown = String::from_utf8_lossy(frame.get(..100).unwrap_or(frame)).into_owned();
    assert_eq!(p.protocol, Protocol::Rfc5424, "{shown}");
    assert_eq!(err(&p), Some((kind, at)), "{shown}");
    assert_eq!(p.message, Span::new(msg_from, frame.len()), "{shown}");
    p
}

#[test]
fn rfc5424_section_6_5_examples() {
    let f = b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8";
    let p = parse(f);
    assert_eq!((p.facility, p.severity), (Facility::Auth, Severity::Crit));
    assert_eq!(p.timestamp, ts("2003-10-11T22:14:15.003Z"));
    assert_eq!(text(f, p.hostname), Some("mymachine.example.com"));
    assert_eq!((text(f, p.app_name), text(f, p.procid)), (Some("su"), None));
    assert_eq!(
        (text(f, p.msgid), p.structured_data.to_elements().len()),
        (Some("ID47"), 0)
    );
    assert_eq!(
        p.message.slice(f),
        b"'su root' failed for lonvick on /dev/pts/8"
    );
    assert!(p.msg_utf8 && p.parse_error.is_none() && !p.pri_missing);

    let f = b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.";
    let p = parse(f);
    assert_eq!(
        (p.facility, p.severity),
        (Facility::Local4, Severity::Notice)
    );
    let stamp = p.timestamp.expect("timestamp");
    assert_eq!(Some(stamp), ts("2003-08-24T05:14:15.000003-07:00"));
    assert_eq!(stamp.offset().local_minus_utc(), -7 * 3600);
    assert_eq!(text(f, p.hostname), Some("192.0.2.1"));
    assert_eq!(
        (text(f, p.app_name), text(f, p.procid)),
        (Some("myproc"), Some("8710"))
    );
    assert_eq!((p.msgid, p.parse_error), (None, None));
    assert_eq!(p.message.slice(f), b"%% It's time to make the do-nuts.");

    let sd1 = r#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]"#;
    let head = "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 ";
    let f3 = format!("{head}{sd1} \u{FEFF}An application event log entry...");
    let f4 = format!(r#"{head}{sd1}[examplePriority@32473 class="high"]"#);
    let example = SdElement {
        id: "exampleSDID@32473".into(),
        params: [
            ("iut", "3"),
            ("eventSource", "Application"),
            ("eventID", "1011"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
    };
    let p = parse(f3.as_bytes());
    assert_eq!(p.structured_data.to_elements(), vec![example.clone()]);
    assert_eq!(text(f3.as_bytes(), p.app_name), Some("evntslog"));
    assert_eq!(
        p.message.slice(f3.as_bytes()),
        b"An application event log entry..."
    );
    let p = parse(f4.as_bytes());
    let priority = SdElement {
        id: "examplePriority@32473".into(),
        params: vec![("class".into(), "high".into())],
    };
    assert_eq!(p.structured_data.to_elements(), vec![example, priority]);
    assert_eq!(
        (p.message, p.parse_error),
        (Span::new(f4.len(), f4.len()), None)
    );
}

#[test]
fn hostile_e04_out_of_range_rfc5424_timestamps() {
    for (stamp, at) in [
        ("2023-13-01T00:00:00Z", 6),
        ("2023-01-32T00:00:00Z", 9),
        ("2023-02-29T00:00:00Z", 20),
        ("2023-01-01T24:00:00Z", 12),
        ("2023-01-01T23:60:00Z", 14),
        ("2023-01-01T23:59:60Z", 17),
        ("2023-01-01T23:59:59+24:00", 21),
        ("2023-01-01T23:59:59+05:60", 23),
        ("2023-01-01t23:59:59Z", 10),
        ("2023-01-01T23:59:59z", 19),
        ("2023-01-01T23:59:59.1234567Z", 26),
        ("2023-01-01T23:59:59 h", 19),
        ("2023-01-01T23:59:59,123Z", 19),
        ("2023-01-01 23:59:59Z", 10),
    ] {
        let frame = format!("<13>1 {stamp} h a - - - m");
        let p = assert_fault(frame.as_bytes(), BadTimestamp, 6 + at, 6);
        assert_eq!(p.timestamp, None);
    }
    // A complete stamp (or NIL) without its SP is kept, and MSG starts at the fault.
    let p = assert_fault(b"<13>1 2023-01-01T23:59:59Z+01:00 h", MissingSpace, 26, 26);
    assert_eq!(p.timestamp, ts("2023-01-01T23:59:59Z"));
    assert_fault(b"<13>1 -- h a - - - m", MissingSpace, 7, 7);
    // Offsets at the edge of the grammar are fine.
    let p = parse(b"<13>1 2018-12-31T23:59:59.999999-23:59 h a - - - m");
    assert_eq!(p.timestamp, ts("2018-12-31T23:59:59.999999-23:59"));
}

#[test]
fn hostile_e05_timestamp_cut_at_end_of_input() {
    for frame in [
        &b"<13>1 2022-08-17T05:02:28.417+03:0"[..],
        b"<13>1 2022-08-17T05:02:28.",
        b"<13>1 2022-",
        b"<13>1 2",
    ] {
        assert_fault(frame, TruncatedHeader, frame.len(), 6);
    }
}

#[test]
fn hostile_f01_fields_over_their_maximum() {
    for (i, max) in [MAX_HOSTNAME, MAX_APP_NAME, MAX_PROCID, MAX_MSGID]
        .into_iter()
        .enumerate()
    {
        let fields = |n: usize| {
            let mut f = vec!["-".to_string(); 4];
            f[i] = "x".repeat(n);
            format!("<13>1 - {} - m", f.join(" "))
        };
        let ok = fields(max);
        let p = parse(ok.as_bytes());
        assert_eq!(
            (p.parse_error, p.message.slice(ok.as_bytes())),
            (None, &b"m"[..])
        );
        let long = fields(max + 1);
        let start = 8 + 2 * i;
        let p = assert_fault(long.as_bytes(), InvalidHeaderChar, start + max, start);
        assert_eq!([p.hostname, p.app_name, p.procid, p.msgid][i], None);
    }
}

#[test]
fn hostile_f02_bytes_outside_printusascii_in_header() {
    assert_fault(b"<13>1 - h\x00st a - - - m", InvalidHeaderChar, 9, 8);
    assert_fault("<13>1 - hôst a - - - m".as_bytes(), InvalidHeaderChar, 9, 8);
    assert_fault(b"<13>1 - h\x1bst a - - - m", InvalidHeaderChar, 9, 8);
    let p = assert_fault(b"<13>1 - h a\x7fp - - - m", InvalidHeaderChar, 11, 10);
    assert_eq!(text(b"<13>1 - h", p.hostname), Some("h"));
}

/// F03: the parser keeps HOSTNAME/APP-NAME verbatim (RFC 5424 allows `/` and `.`); paths
/// are sanitised where they are built, in the file output.
#[test]
fn hostile_f03_traversal_fields_kept_verbatim() {
    let f = b"<13>1 - ../../etc/cron.d/x ../../x - - - m";
    let p = parse(f);
    assert_eq!(p.parse_error, None);
    assert_eq!(text(f, p.hostname), Some("../../etc/cron.d/x"));
    assert_eq!(text(f, p.app_name), Some("../../x"));
}

#[test]
fn hostile_f04_all_nil_header() {
    for (f, m) in [
        (&b"<13>1 - - - - - -"[..], &b""[..]),
        (b"<13>1 - - - - - - msg", b"msg"),
    ] {
        let p = parse(f);
        assert_eq!(
            (p.protocol, p.parse_error, p.timestamp),
            (Protocol::Rfc5424, None, None)
        );
        assert_eq!([p.hostname, p.app_name, p.procid, p.msgid], [None; 4]);
        assert_eq!(p.message.slice(f), m);
    }
}

#[test]
fn hostile_f05_missing_fields_and_extra_spaces() {
    let f = b"<13>1 2003-10-11T22:14:15.003Z host";
    let p = assert_fault(f, TruncatedHeader, f.len(), f.len());
    assert_eq!(p.timestamp, ts("2003-10-11T22:14:15.003Z"));
    assert_eq!(text(f, p.hostname), Some("host"));
    assert_fault(
        b"<13>1  2003-10-11T22:14:15.003Z h a p m -",
        BadTimestamp,
        6,
        6,
    );
    assert_fault(b"<13>1 - h  a p m -", InvalidHeaderChar, 10, 10);
    assert_fault(b"<13>1 - - - - -", TruncatedHeader, 15, 15);
    assert_fault(b"<13>1 - - - - - -x", MissingSpace, 17, 17);
}

/// G01: MSG without a BOM is MSG-ANY: any bytes are kept, unflagged, `msg_utf8` false.
#[test]
fn hostile_g01_invalid_utf8_in_msg_is_kept() {
    let f = b"<13>1 - h a - - - \xff\xfe\xc0\xaf\xed\xa0\x80 bytes";
    let p = parse(f);
    assert_eq!((p.parse_error, p.msg_utf8), (None, false));
    assert_eq!(p.message.slice(f), &f[18..]);
}

/// G02: a BOM starts MSG-UTF8 and is stripped. Invalid UTF-8 after it is `invalid_utf8` at the
/// first byte that cannot continue (go-syslog's column), and MSG still keeps every byte.
#[test]
fn hostile_g02_bom_then_utf8_or_not() {
    let f = "<13>1 - h a - - - \u{FEFF}héllo";
    let p = parse(f.as_bytes());
    assert_eq!(
        (p.message.slice(f.as_bytes()), p.msg_utf8, p.parse_error),
        ("héllo".as_bytes(), true, None)
    );
    for (tail, at) in [
        (&b"\xff"[..], 21),
        (b"ok\xc3(", 24),
        (b"\xe2\x82(", 23),
        (b"\xf0\x90\x8c", 24),
    ] {
        let f = [&b"<13>1 - h a - - - \xEF\xBB\xBF"[..], tail].concat();
        let p = assert_fault(&f, InvalidUtf8, at, 21);
        assert_eq!((p.msg_utf8, text(&f, p.hostname)), (false, Some("h")));
    }
    // A BOM inside a RFC 3164 message is stripped too; there is no MSG-UTF8 rule to break.
    let f = b"<13>Oct 11 22:14:15 h a: \xEF\xBB\xBF\xff";
    let p = parse(f);
    assert_eq!((p.message.slice(f), p.parse_error), (&b"\xff"[..], None));
}

/// G09: a LF inside one frame is content; outputs escape it.
#[test]
fn hostile_g09_multi_line_content_is_one_message() {
    let f = b"<13>1 - h a - - - line1\nline2";
    assert_eq!(parse(f).message.slice(f), b"line1\nline2");
}

#[test]
fn hostile_h01_h02_sd_caps_stay_linear() {
    let params = " a=\"1\"".repeat(100_000);
    let f = format!("<13>1 - h a - - [x@1{params}] m");
    let at = 16 + 4 + MAX_SD_PARAMS * 6 + 1;
    assert_fault(f.as_bytes(), SdInvalid, at, 16);
    let f = format!("<13>1 - h a - - {}[x@1] m", "[a@1 x=\"1\"]".repeat(10_000));
    assert_fault(f.as_bytes(), SdInvalid, 31, 16);
    let distinct: String = (0..=MAX_SD_ELEMENTS).map(|i| format!("[e{i}]")).collect();
    let f = format!("<13>1 - h a - - {distinct} m");
    let at = 16 + distinct.find(&format!("[e{MAX_SD_ELEMENTS}]")).unwrap_or(0);
    assert_fault(f.as_bytes(), SdInvalid, at, 16);
}

#[test]
fn hostile_h03_unterminated_sd() {
    for sd in [r#"[x@1 a="1""#, r#"[x@1 a="1"#, "[x@1 a=", "[x@1", "["] {
        let f = format!("<13>1 - h a - - {sd}");
        let p = assert_fault(f.as_bytes(), SdInvalid, f.len(), 16);
        assert!(p.structured_data.to_elements().is_empty());
    }
    let p = assert_fault(br#"<13>1 - h a - - [x@1 a="1"]]"#, MissingSpace, 27, 27);
    assert_eq!(p.structured_data.to_elements().len(), 1);
}

#[test]
fn hostile_h04_param_value_escapes() {
    for (value, want) in [
        (r#"q\"q"#, r#"q"q"#),
        (r"b\\s", r"b\s"),
        (r"r\]b", "r]b"),
        (r"x\ny", r"x\ny"),
        (r"\a\b", r"\a\b"),
    ] {
        let f = format!(r#"<13>1 - h a - - [x@1 a="{value}"] m"#);
        let p = parse(f.as_bytes());
        assert_eq!(p.parse_error, None, "{f}");
        assert_eq!(
            p.structured_data.to_elements()[0].params,
            vec![("a".into(), want.into())]
        );
    }
    // `\"` is an escape, so the value runs on into the unescaped `]`.
    assert_fault(br#"<13>1 - h a - - [x@1 a="end\"] m"#, SdInvalid, 29, 16);
    assert_fault(br#"<13>1 - h a - - [x@1 a="p]"] m"#, SdInvalid, 25, 16);
}

#[test]
fn hostile_h05_sd_name_length() {
    let (n32, n33) = ("n".repeat(32), "n".repeat(33));
    let f = format!(r#"<13>1 - h a - - [{n32} {n32}="v"] m"#);
    assert_eq!(parse(f.as_bytes()).structured_data.to_elements()[0].id, n32);
    let f = format!(r#"<13>1 - h a - - [{n33} a="v"] m"#);
    assert_fault(f.as_bytes(), SdInvalid, 17 + 32, 16);
    let f = format!(r#"<13>1 - h a - - [x {n33}="v"] m"#);
    assert_fault(f.as_bytes(), SdInvalid, 19 + 32, 16);
}

#[test]
fn hostile_h06_forbidden_sd_name_chars() {
    for (sd, at) in [
        (r#"[a=b@1 x="1"]"#, 2),
        ("[a b@1]", 6),
        (r#"[a"b@1]"#, 2),
        (r#"[x@1 a b="1"]"#, 6),
    ] {
        let f = format!("<13>1 - h a - - {sd} m");
        assert_fault(f.as_bytes(), SdInvalid, 16 + at, 16);
    }
    // `[a]` is a complete element: what is wrong in `[a]b@1]` is the missing SP before MSG.
    let p = assert_fault(b"<13>1 - h a - - [a]b@1] m", MissingSpace, 19, 19);
    assert_eq!(p.structured_data.to_elements()[0].id, "a");
    // §6.3.2: `name@<private enterprise number>`, with one `@` and both parts.
    for (sd, at) in [("[@1]", 1), ("[a@]", 3), ("[a@1@2]", 4)] {
        let f = format!("<13>1 - h a - - {sd} m");
        assert_fault(f.as_bytes(), SdInvalid, 16 + at, 16);
    }
    assert_eq!(
        parse(b"<13>1 - h a - - [an@id] m")
            .structured_data
            .to_elements()[0]
            .id,
        "an@id"
    );
}

/// H07: by the ABNF the second element is MSG; sluice does not re-read it as SD.
#[test]
fn hostile_h07_space_between_elements() {
    let f = br#"<13>1 - h a - - [a@1 x="1"] [b@1 y="2"] msg"#;
    let p = parse(f);
    assert_eq!(
        (p.parse_error, p.structured_data.to_elements().len()),
        (None, 1)
    );
    assert_eq!(p.message.slice(f), br#"[b@1 y="2"] msg"#);
}

#[test]
fn hostile_h08_empty_elements() {
    assert_eq!(
        parse(b"<13>1 - h a - - [x@1] m")
            .structured_data
            .to_elements()[0]
            .params,
        vec![]
    );
    for (sd, at) in [("[]", 1), ("[ ]", 1), ("[x@1 ]", 5)] {
        let f = format!("<13>1 - h a - - {sd} m");
        assert_fault(f.as_bytes(), SdInvalid, 16 + at, 16);
    }
}

/// H09: a PARAM-VALUE that is not UTF-8 is shown with U+FFFD and flagged; `raw` keeps the bytes.
#[test]
fn hostile_h09_invalid_utf8_param_value_kept_lossily() {
    let p = parse(b"<13>1 - h a - - [x@1 a=\"\xff\"] m");
    assert_eq!(p.parse_error, None);
    assert_eq!(p.structured_data.to_elements()[0].params[0].1, "\u{FFFD}");
    assert!(p.flags.contains(ParseFlags::SD_NOT_UTF8));
    let p = parse("<13>1 - h a - - [x@1 a=\"\u{FFFD}\"] m".as_bytes());
    assert_eq!(p.flags, ParseFlags::default(), "a real U+FFFD is UTF-8");
    // The other names and values around it read as they were sent.
    let p = parse(b"<13>1 - h a - - [x@1 a=\"\xff\" b=\"\xc3\xa9t\xc3\xa9\"][y@1 c=\"d\\\"\"] m");
    assert_eq!(
        p.structured_data.to_elements(),
        vec![
            SdElement {
                id: "x@1".into(),
                params: vec![("a".into(), "\u{FFFD}".into()), ("b".into(), "été".into())],
            },
            SdElement {
                id: "y@1".into(),
                params: vec![("c".into(), "d\"".into())],
            },
        ]
    );
}

#[test]
fn duplicate_sd_id_is_invalid() {
    let f = br#"<165>1 - h e - ID27 [dupe e="1"][id1][dupe class="l"] m"#;
    assert_fault(f, SdInvalid, 42, 20);
}

fn arb_field(max: usize) -> impl proptest::strategy::Strategy<Value = Option<String>> {
    use proptest::prelude::*;
    proptest::option::of(proptest::string::string_regex(&format!("[!-~]{{1,{max}}}")).unwrap())
        .prop_map(|v| v.filter(|s| s != "-"))
}

proptest::proptest! {
    /// A well-formed message built by hand parses back to the same fields.
    #[test]
    fn well_formed_messages_round_trip(
        pri in 0u8..=191,
        stamp in proptest::option::of((0i32..=9999, 1u32..=12, 1u32..=28, 0u32..=23,
            0u32..=59, 0u32..=59, proptest::option::of(0u32..=999_999), -1439i32..=1439)),
        host in arb_field(MAX_HOSTNAME), app in arb_field(MAX_APP_NAME),
        procid in arb_field(MAX_PROCID), msgid in arb_field(MAX_MSGID),
        sd in proptest::collection::btree_map("[!#-<>-?A-\\\\^-~]{1,20}(@[0-9]{1,8})?",
            proptest::collection::vec(("[!#-<>-\\\\^-~]{1,32}", "\\PC{0,12}"), 0..4), 0..4),
        msg in "\\PC{0,40}",
    ) {
        let nil = |f: &Option<String>| f.clone().unwrap_or_else(|| "-".into());
        let stamp_text = match stamp {
            None => "-".to_string(),
            Some((y, mo, d, h, mi, s, frac, off)) => {
                let frac = frac.map(|f| format!(".{f:06}")).unwrap_or_default();
                let zone = if off == 0 { "Z".to_string() } else {
                    let sign = if off < 0 { '-' } else { '+' };
                    format!("{sign}{:02}:{:02}", off.abs() / 60, off.abs() % 60)
                };
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}")
            }
        };
        let escape = |v: &str| v.replace('\\', r"\\").replace('"', "\\\"").replace(']', r"\]");
        let sd_text: String = sd.iter().map(|(id, params)| {
            let p: String = params.iter().map(|(k, v)| format!(" {k}=\"{}\"", escape(v))).collect();
            format!("[{id}{p}]")
        }).collect();
        let sd_text = if sd_text.is_empty() { "-".to_string() } else { sd_text };
        let frame = format!("<{pri}>1 {stamp_text} {} {} {} {} {sd_text} {msg}",
            nil(&host), nil(&app), nil(&procid), nil(&msgid));
        let f = frame.as_bytes();
        let p = parse(f);
        proptest::prop_assert_eq!(p.parse_error, None, "{}", frame);
        proptest::prop_assert_eq!((p.facility.code(), p.severity.code()), (pri / 8, pri % 8));
        let want = (stamp_text != "-").then(|| ts(&stamp_text)).flatten();
        proptest::prop_assert_eq!(p.timestamp, want);
        proptest::prop_assert_eq!(p.timestamp.map(|t| t.offset().local_minus_utc()),
            want.map(|t| t.offset().local_minus_utc()));
        proptest::prop_assert_eq!(text(f, p.hostname), host.as_deref());
        proptest::prop_assert_eq!(text(f, p.app_name), app.as_deref());
        proptest::prop_assert_eq!(text(f, p.procid), procid.as_deref());
        proptest::prop_assert_eq!(text(f, p.msgid), msgid.as_deref());
        let got: Vec<_> = p.structured_data.to_elements().iter().map(|e| (e.id.clone(), e.params.clone())).collect();
        let want_sd: Vec<_> = sd.iter().map(|(id, ps)| (id.clone(), ps.clone())).collect();
        proptest::prop_assert_eq!(got, want_sd);
        let want_msg = msg.strip_prefix('\u{FEFF}').unwrap_or(&msg);
        let want_msg = want_msg.trim_end_matches(['\n', '\0']);
        proptest::prop_assert_eq!(p.message.slice(f), want_msg.as_bytes());
        proptest::prop_assert!(p.msg_utf8);
    }
}
