//! The influxdata/go-syslog RFC 5424 conformance corpus (MIT; 204 cases, see
//! shared/corpus/README.md). Every case where sluice reads the frame as RFC 5424 must agree with
//! go-syslog on validity, on every field, and on the error offset. The rest differ on purpose,
//! each for a reason named in `Differs`, and their number is pinned. Those with another
//! well-formed VERSION (2..999) are also run through the RFC 5424 grammar directly, as if that
//! VERSION were accepted, so the grammar is checked against all of go-syslog's cases.

use std::collections::BTreeMap;

use chrono::DateTime;
use serde_json::Value;

use super::{err, parse_utc, text};
use crate::event::{ParseErrorKind, Parsed, Protocol};
use crate::parse::pri::{Pri, parse_pri};
use crate::parse::rfc5424;

const CORPUS: &str = include_str!("../../../tests/data/gosyslog_vectors_all.json");

/// Why sluice reads a case differently from go-syslog, by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Differs {
    /// No `<` at the start: RFC 3164 with `pri_missing` (hostile D05), not an error.
    NoPri,
    /// `<002>`: leading zeros are accepted as rsyslog does (D06); go-syslog rejects them.
    LeadingZeroPri,
    /// No `1 ` after the PRI (VERSION 2..999, 0, 1000, `1` at the end): RFC 3164 (D07).
    NotVersion1,
}

fn differs(input: &[u8]) -> Option<Differs> {
    match parse_pri(input) {
        Pri::Missing => Some(Differs::NoPri),
        Pri::Invalid { .. } => None,
        Pri::Valid { .. } if input.get(1) == Some(&b'0') && input.get(2) != Some(&b'>') => {
            Some(Differs::LeadingZeroPri)
        }
        Pri::Valid { len, .. } if input.get(len..).is_some_and(|r| r.starts_with(b"1 ")) => None,
        Pri::Valid { .. } => Some(Differs::NotVersion1),
    }
}

/// Where the TIMESTAMP starts if `VERSION = NONZERO-DIGIT 0*2DIGIT` and SP follow the PRI.
fn after_any_version(input: &[u8], pri_len: usize) -> Option<usize> {
    let rest = input.get(pri_len..)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let ok = (1..=3).contains(&digits) && rest.first() != Some(&b'0');
    (ok && rest.get(digits) == Some(&b' ')).then_some(pri_len + digits + 1)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// MSG as go-syslog's corpus shows it: bytes that are not UTF-8 as `\xNN`.
fn shown(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn error_col(error: &str) -> usize {
    let start = error.rfind("[col ").expect("column") + 5;
    let digits: String = error[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("number")
}

/// Compares a valid case's fields; returns the first mismatch.
fn compare_fields(input: &[u8], p: &Parsed, want: &Value) -> Result<(), String> {
    let s = |k: &str| want.get(k).and_then(Value::as_str);
    let code = |k: &str| want.get(k).and_then(Value::as_u64);
    let pri = (
        Some(u64::from(p.facility.code())),
        Some(u64::from(p.severity.code())),
    );
    if pri != (code("facility"), code("severity")) {
        return Err(format!("pri {pri:?}"));
    }
    let stamp = s("timestamp").map(|t| DateTime::parse_from_rfc3339(t).expect("stamp"));
    let offsets = (p.timestamp.map(|t| *t.offset()), stamp.map(|t| *t.offset()));
    if p.timestamp != stamp || offsets.0 != offsets.1 {
        return Err(format!("timestamp {:?}", p.timestamp));
    }
    for (key, got) in [
        ("hostname", p.hostname),
        ("appname", p.app_name),
        ("procid", p.procid),
        ("msgid", p.msgid),
    ] {
        if text(input, got) != s(key) {
            return Err(format!("{key} {:?}", text(input, got)));
        }
    }
    let msg = s("message").unwrap_or_default();
    let msg = msg.strip_prefix('\u{FEFF}').unwrap_or(msg);
    if shown(p.message.slice(input)) != msg {
        return Err(format!("message {:?}", shown(p.message.slice(input))));
    }
    let got: BTreeMap<&str, BTreeMap<&str, &str>> = p
        .structured_data
        .iter()
        .map(|e| {
            (
                e.id.as_str(),
                e.params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            )
        })
        .collect();
    let empty = serde_json::Map::new();
    let sd = want
        .get("structured_data")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let expected: BTreeMap<&str, BTreeMap<&str, &str>> = sd
        .iter()
        .map(|(id, ps)| {
            let ps = ps.as_object().unwrap_or(&empty);
            (
                id.as_str(),
                ps.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                    .collect(),
            )
        })
        .collect();
    if got != expected || got.len() != p.structured_data.len() {
        return Err(format!("structured data {:?}", p.structured_data));
    }
    Ok(())
}

/// Checks one case the RFC 5424 way; `Err` says how sluice disagrees with go-syslog.
fn check_rfc5424_case(case: &Value, input: &[u8], p: &Parsed) -> Result<(), String> {
    // go-syslog's default options accept any MSG bytes; these fail only WithCompliantMsg().
    let lax_msg = case["table"] == "nonCompliantMsgTestCases";
    let valid = case["valid"] == true || lax_msg;
    match (valid, p.parse_error) {
        (true, None) => {
            if p.protocol != Protocol::Rfc5424 || (lax_msg && p.msg_utf8) {
                return Err(format!("{:?}, msg_utf8 {}", p.protocol, p.msg_utf8));
            }
            let want = if lax_msg {
                &case["best_effort_partial"]
            } else {
                &case["expected"]
            };
            if lax_msg {
                // Only PRI and the header are pinned; MSG is the invalid UTF-8 after the BOM.
                let bom = input
                    .windows(3)
                    .position(|w| w == b"\xEF\xBB\xBF")
                    .unwrap_or(0);
                let after_bom = input.get(bom + 3..).unwrap_or_default();
                return (p.message.slice(input) == after_bom)
                    .then_some(())
                    .ok_or("msg".into());
            }
            compare_fields(input, p, want)
        }
        (false, Some(e)) => {
            let col = error_col(case["error"].as_str().unwrap_or_default());
            let pri_fault = e.kind == ParseErrorKind::InvalidPri;
            if pri_fault != matches!(parse_pri(input), Pri::Invalid { .. }) || e.at != col {
                return Err(format!("{e} (go-syslog: col {col})"));
            }
            if pri_fault && p.message.slice(input) != input {
                return Err("invalid PRI: MSG is not the whole frame".into());
            }
            Ok(())
        }
        (true, Some(e)) => Err(format!("flagged {e}")),
        (false, None) => Err("not flagged".into()),
    }
}

#[test]
fn gosyslog_corpus() {
    let cases: Vec<Value> = serde_json::from_str(CORPUS).expect("corpus is JSON");
    assert_eq!(cases.len(), 204);
    let mut agree = 0;
    let mut by_design: BTreeMap<Differs, Vec<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    let (mut grammar_agrees, mut grammar_differs) = (0, Vec::new());
    for (n, case) in cases.iter().enumerate() {
        let input = hex(case["input_hex"].as_str().expect("input_hex"));
        let p = parse_utc(&input);
        let label = format!(
            "#{} {}",
            n + 1,
            case["input_rust"].as_str().unwrap_or_default()
        );
        match differs(&input) {
            None => match check_rfc5424_case(case, &input, &p) {
                Ok(()) => agree += 1,
                Err(why) => failures.push(format!("{label}: {why}")),
            },
            Some(reason) => {
                // The documented behaviour: RFC 3164, never flagged, PRI as go-syslog read it.
                let partial = &case["best_effort_partial"];
                let pri = partial.get("priority").and_then(Value::as_u64);
                let ours = u64::from(p.facility.code() * 8 + p.severity.code());
                let pri_ok =
                    pri.is_none_or(|v| v == ours) && p.pri_missing == (reason == Differs::NoPri);
                if p.protocol != Protocol::Rfc3164 || err(&p).is_some() || !pri_ok {
                    failures.push(format!("{label}: {reason:?} but got {p:?}"));
                }
                if reason == Differs::NotVersion1
                    && let Pri::Valid {
                        facility,
                        severity,
                        len,
                    } = parse_pri(&input)
                    && let Some(start) = after_any_version(&input, len)
                {
                    let as_5424 = rfc5424::parse(&input, start, facility, severity);
                    match check_rfc5424_case(case, &input, &as_5424) {
                        Ok(()) => grammar_agrees += 1,
                        Err(why) => grammar_differs.push(format!("{label}: {why}")),
                    }
                }
                let go = if case["valid"] == true {
                    "valid"
                } else {
                    "invalid"
                };
                by_design
                    .entry(reason)
                    .or_default()
                    .push(format!("#{} ({go})", n + 1));
            }
        }
    }
    for (reason, list) in &by_design {
        eprintln!(
            "go-syslog differs by design, {reason:?}: {} cases: {}",
            list.len(),
            list.join(" ")
        );
    }
    eprintln!("agree with go-syslog: {agree} of {}", cases.len());
    eprintln!("other VERSIONs through the RFC 5424 grammar: {grammar_agrees} agree, differ:");
    for d in &grammar_differs {
        eprintln!("  {d}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let counts: Vec<_> = by_design.iter().map(|(r, l)| (*r, l.len())).collect();
    let pinned = [
        (Differs::NoPri, 3),
        (Differs::LeadingZeroPri, 1),
        (Differs::NotVersion1, 75),
    ];
    assert_eq!(counts, pinned);
    assert_eq!(agree, 125);
    // #116 `escape="\n"`: go-syslog rejects it, but RFC 5424 §6.3.3 says a backslash before
    // any other character is a literal backslash.
    assert_eq!(grammar_agrees, 67);
    assert_eq!(grammar_differs.len(), 1);
    assert!(
        grammar_differs[0].starts_with("#116 "),
        "{grammar_differs:?}"
    );
}
