//! The influxdata/go-syslog RFC 5424 conformance corpus (MIT; 204 cases, see tests/data/README.md).
//!
//! sluice calls a frame valid RFC 5424 when it reads it as `rfc5424` without a `parse_error`.
//! Every case comes out valid or invalid as go-syslog lists it, except #116 (a literal backslash,
//! see [`gosyslog_116_unknown_escape_is_a_literal_backslash`]). A valid case must give exactly
//! go-syslog's fields. An invalid case is never dropped: either sluice reads it as RFC 5424 and
//! flags it at go-syslog's column, keeping the header fields go-syslog's best-effort mode keeps,
//! or it is no RFC 5424 at all (no PRI, or no `VERSION SP`) and is read as RFC 3164.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use super::{parse_utc, shown, text};
use crate::event::{ParseErrorKind, Parsed, Protocol};

const CORPUS: &str = include_str!("../../../tests/data/gosyslog_vectors_all.json");

/// How a case came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Valid RFC 5424 with go-syslog's fields.
    Valid,
    /// Read as RFC 5424 (or its PRI as invalid) and flagged where go-syslog stops.
    Flagged,
    /// No PRI: RFC 3164 with `pri_missing` (hostile-inputs D05).
    NoPri,
    /// No `VERSION SP` after the PRI: RFC 3164 text, as tolerant parsing reads it.
    NotRfc5424,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn error_col(error: &str) -> usize {
    let start = error.rfind("[col ").expect("column") + 5;
    let digits: String = error[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("number")
}

type Sd = BTreeMap<String, BTreeMap<String, String>>;

/// The fields go-syslog reports, in one comparable shape.
#[derive(Debug, PartialEq)]
struct Fields {
    priority: Option<u64>,
    version: Option<u64>,
    timestamp: Option<(DateTime<FixedOffset>, i32)>,
    header: [Option<String>; 4],
    sd: Sd,
}

impl Fields {
    fn from_sluice(input: &[u8], p: &Parsed) -> Fields {
        let own = |s| text(input, s).map(str::to_string);
        Fields {
            priority: Some(u64::from(p.facility.code() * 8 + p.severity.code())),
            version: Some(u64::from(p.version)),
            timestamp: p.timestamp.map(|t| (t, t.offset().local_minus_utc())),
            header: [p.hostname, p.app_name, p.procid, p.msgid].map(own),
            sd: p
                .structured_data
                .to_elements()
                .iter()
                .map(|e| (e.id.clone(), e.params.iter().cloned().collect()))
                .collect(),
        }
    }

    fn from_gosyslog(want: &Value) -> Fields {
        let s = |k: &str| want.get(k).and_then(Value::as_str).map(str::to_string);
        let stamp = s("timestamp").map(|t| DateTime::parse_from_rfc3339(&t).expect("stamp"));
        let sd = want
            .get("structured_data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(id, ps)| {
                let ps = ps.as_object().into_iter().flatten();
                let ps = ps.map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()));
                (id.clone(), ps.collect())
            })
            .collect();
        Fields {
            priority: want.get("priority").and_then(Value::as_u64),
            version: want.get("version").and_then(Value::as_u64),
            timestamp: stamp.map(|t| (t, t.offset().local_minus_utc())),
            header: ["hostname", "appname", "procid", "msgid"].map(s),
            sd,
        }
    }
}

/// Checks one case; `Err` says how sluice disagrees with go-syslog.
fn check(case: &Value, input: &[u8], p: &Parsed) -> Result<Outcome, String> {
    let valid = case["valid"] == true;
    let ours = Fields::from_sluice(input, p);
    match (valid, p.protocol, p.parse_error) {
        (true, Protocol::Rfc5424, None) => {
            let want = Fields::from_gosyslog(&case["expected"]);
            if ours != want {
                return Err(format!("fields {ours:?}, want {want:?}"));
            }
            let msg = case["expected"]["message"].as_str().unwrap_or_default();
            // go-syslog keeps the BOM in `message`; sluice strips it (hostile input G02).
            let msg = msg.strip_prefix('\u{FEFF}').unwrap_or(msg);
            let got = shown(p.message.slice(input));
            (got == msg)
                .then_some(Outcome::Valid)
                .ok_or(format!("message {got:?}"))
        }
        (true, _, _) => Err(format!("valid in go-syslog, but {p:?}")),
        (false, _, Some(e)) => {
            let col = error_col(case["error"].as_str().unwrap_or_default());
            if e.at != col {
                return Err(format!("{e}, go-syslog stops at col {col}"));
            }
            if e.kind == ParseErrorKind::InvalidPri {
                return (p.message.slice(input) == input)
                    .then_some(Outcome::Flagged)
                    .ok_or("invalid PRI: MSG is not the whole frame".into());
            }
            let mut want = Fields::from_gosyslog(&case["best_effort_partial"]);
            if e.kind == ParseErrorKind::SdInvalid {
                // go-syslog keeps the elements read before the fault; sluice keeps the faulting
                // field whole, in MSG (a fault keeps what came before it), so structured data is all or
                // nothing.
                want.sd.clear();
            }
            (ours == want)
                .then_some(Outcome::Flagged)
                .ok_or(format!("kept {ours:?}, go-syslog keeps {want:?}"))
        }
        (false, Protocol::Rfc5424, None) => Err("invalid in go-syslog, not flagged".into()),
        (false, Protocol::Rfc3164, None) if p.pri_missing => Ok(Outcome::NoPri),
        (false, Protocol::Rfc3164, None) => Ok(Outcome::NotRfc5424),
    }
}

#[test]
fn gosyslog_corpus() {
    let cases: Vec<Value> = serde_json::from_str(CORPUS).expect("corpus is JSON");
    assert_eq!(cases.len(), 204);
    let mut outcomes: BTreeMap<Outcome, Vec<usize>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let input = hex(case["input_hex"].as_str().expect("input_hex"));
        let p = parse_utc(&input);
        match check(case, &input, &p) {
            Ok(outcome) => outcomes.entry(outcome).or_default().push(n + 1),
            Err(why) => failures.push((n + 1, why)),
        }
    }
    for (outcome, cases) in &outcomes {
        eprintln!("{outcome:?}: {} cases: {cases:?}", cases.len());
    }
    let failed: Vec<usize> = failures.iter().map(|(n, _)| *n).collect();
    assert_eq!(failed, [116], "failures: {failures:#?}");
    let counts: Vec<_> = outcomes.iter().map(|(o, l)| (*o, l.len())).collect();
    let pinned = [
        (Outcome::Valid, 64),
        (Outcome::Flagged, 129),
        (Outcome::NoPri, 3),
        (Outcome::NotRfc5424, 7),
    ];
    assert_eq!(counts, pinned);
}

/// go-syslog #116 rejects `escape="\n"`. RFC 5424 §6.3.3: "A backslash ('\') followed by none of
/// the three described characters is considered an invalid escape sequence. In this case, the
/// backslash MUST be treated as a regular backslash and the following character as a regular
/// character. Thus, the invalid escape sequence MUST NOT be changed." A receiver that rejects
/// the message does not do that; sluice keeps the value as `\n`, two characters.
#[test]
fn gosyslog_116_unknown_escape_is_a_literal_backslash() {
    let cases: Vec<Value> = serde_json::from_str(CORPUS).expect("corpus is JSON");
    let case = &cases[115];
    assert_eq!(case["valid"], false);
    let input = hex(case["input_hex"].as_str().expect("input_hex"));
    let p = parse_utc(&input);
    assert_eq!((p.protocol, p.parse_error), (Protocol::Rfc5424, None));
    assert_eq!(
        p.structured_data.to_elements()[0].params,
        vec![("escape".to_string(), r"\n".to_string())]
    );
    assert_eq!(
        p.message.slice(&input),
        br#"127.0.0.1 - - 1452819643 "GET""#
    );
}
