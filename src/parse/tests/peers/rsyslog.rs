//! rsyslog's parser tests (group A, tests/parsertest-parse1.sh) and observed rsyslog 8.2302
//! output (group H). rsyslog's receiver ran in UTC; the reception year stands for `<RCVYEAR>`.

use chrono::DateTime;

use super::{Expect, Pinned, compare, literal, rsyslog_escaped};
use crate::parse::tests::opts;
use crate::parse::{ParseOptions, Zone, parse};

const CASES: &str = include_str!("../../../../tests/data/rsyslog_vectors.txt");

/// Where sluice reads a case differently, and why.
const PINNED: &[(&str, Pinned)] = &[
    (
        "A19",
        Pinned::Differs("rsyslog_a19_a20_space_after_equals_is_invalid_sd"),
    ),
    (
        "A20",
        Pinned::Differs("rsyslog_a19_a20_space_after_equals_is_invalid_sd"),
    ),
    (
        "A21",
        Pinned::Differs("rsyslog_a21_h32_year_after_the_time_is_the_year"),
    ),
    (
        "H01",
        Pinned::Differs("rsyslog_h01_h02_h05_h06_sd_is_read_by_the_abnf"),
    ),
    (
        "H02",
        Pinned::Differs("rsyslog_h01_h02_h05_h06_sd_is_read_by_the_abnf"),
    ),
    (
        "H05",
        Pinned::Differs("rsyslog_h01_h02_h05_h06_sd_is_read_by_the_abnf"),
    ),
    (
        "H06",
        Pinned::Differs("rsyslog_h01_h02_h05_h06_sd_is_read_by_the_abnf"),
    ),
    (
        "H10",
        Pinned::Differs("rsyslog_h10_h15_rfc5424_faults_are_flagged"),
    ),
    (
        "H11",
        Pinned::Differs("rsyslog_h10_h15_rfc5424_faults_are_flagged"),
    ),
    (
        "H12",
        Pinned::Differs("rsyslog_h10_h15_rfc5424_faults_are_flagged"),
    ),
    (
        "H13",
        Pinned::Differs("rsyslog_h10_h15_rfc5424_faults_are_flagged"),
    ),
    (
        "H15",
        Pinned::Differs("rsyslog_h10_h15_rfc5424_faults_are_flagged"),
    ),
    (
        "H16",
        Pinned::Differs("syslogng_s69_rsyslog_b02_first_word_without_timestamp_is_text"),
    ),
    ("H17", Pinned::Differs("rsyslog_h17_version_2_is_rfc5424")),
    (
        "H22",
        Pinned::Differs("rsyslog_h22_hostname_may_end_with_a_dot"),
    ),
    (
        "H23",
        Pinned::Differs("rsyslog_h23_h36_no_program_name_no_tag"),
    ),
    (
        "H24",
        Pinned::Differs("rsyslog_h24_h27_impossible_stamps_are_flagged"),
    ),
    (
        "H25",
        Pinned::Differs("rsyslog_h24_h27_impossible_stamps_are_flagged"),
    ),
    (
        "H26",
        Pinned::Differs("rsyslog_h24_h27_impossible_stamps_are_flagged"),
    ),
    (
        "H27",
        Pinned::Differs("rsyslog_h24_h27_impossible_stamps_are_flagged"),
    ),
    (
        "H29",
        Pinned::Differs("syslogng_s69_rsyslog_b02_first_word_without_timestamp_is_text"),
    ),
    (
        "H32",
        Pinned::Differs("rsyslog_a21_h32_year_after_the_time_is_the_year"),
    ),
    (
        "H36",
        Pinned::Differs("rsyslog_h23_h36_no_program_name_no_tag"),
    ),
    (
        "H39",
        Pinned::Differs("syslogng_s69_rsyslog_b02_first_word_without_timestamp_is_text"),
    ),
    (
        "H41",
        Pinned::Differs("rsyslog_h41_trailing_crlf_is_framing"),
    ),
];

/// One case's IN/OUT pairs with its id (`A05`, `H17.2` for a second pair).
fn pairs(group: char) -> Vec<(String, Vec<u8>, String)> {
    let mut out = Vec::new();
    for block in CASES.split("\n#").skip(1) {
        let id: String = block.chars().take_while(|c| !c.is_whitespace()).collect();
        if !id.starts_with(group) || !id[1..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let ins = block.lines().filter_map(|l| l.strip_prefix("IN : "));
        let outs = block.lines().filter_map(|l| l.strip_prefix("OUT: "));
        for (n, (input, output)) in ins.zip(outs).enumerate() {
            // Summaries (`"…" + 600*"T"`, `(no message)`) are not byte-exact cases.
            let Some((frame, rest)) = literal(input) else {
                continue;
            };
            let Some((shown, _)) = literal(output) else {
                continue;
            };
            if !rest.trim().is_empty() {
                continue;
            }
            let id = if n == 0 {
                id.clone()
            } else {
                format!("{id}.{}", n + 1)
            };
            out.push((id, frame, String::from_utf8_lossy(&shown).into_owned()));
        }
    }
    out
}

/// An empty or NIL field as rsyslog renders it (`-`, or fromhost for HOSTNAME) is `None`.
fn some(v: &str, nil: &[&str]) -> Option<Option<String>> {
    Some((!v.is_empty() && !nil.contains(&v)).then(|| v.to_string()))
}

/// PROCID from a 3164 syslogtag: `tag[pid]:`.
fn pid_of(tag: &str) -> Option<Option<String>> {
    let open = tag.find('[');
    let close = tag.rfind(']');
    Some(
        open.zip(close)
            .and_then(|(o, c)| tag.get(o + 1..c))
            .map(str::to_string),
    )
}

/// MSG as rsyslog shows it: without the SP after a TAG and without a BOM.
fn msg_of(msg: &str, tag: &str) -> Option<String> {
    let msg = if tag.is_empty() {
        msg
    } else {
        msg.strip_prefix(' ').unwrap_or(msg)
    };
    Some(msg.strip_prefix('\u{FEFF}').unwrap_or(msg).to_string())
}

/// Template T1: `PRI,facility,severity,timestamp,hostname,programname,syslogtag,msg`. The
/// programname may hold commas (A11); the syslogtag starts with it, which finds the split.
fn group_a() -> Vec<(String, Vec<u8>, Expect)> {
    pairs('A')
        .into_iter()
        .filter_map(|(id, frame, out)| {
            let f: Vec<&str> = out.splitn(6, ',').collect();
            let [pri, _, _, stamp, host, rest] = f[..] else {
                return None;
            };
            let (program, tag, msg) = rest.match_indices(',').find_map(|(i, _)| {
                let (program, after) = (rest.get(..i)?, rest.get(i + 1..)?);
                let tag_len = program.len() + after.get(program.len()..)?.find(',')?;
                after.starts_with(program).then(|| {
                    let (tag, msg) = after.split_at(tag_len);
                    (program, tag, msg.get(1..).unwrap_or_default())
                })
            })?;
            let want = Expect {
                pri: pri.parse().ok(),
                stamp_bsd: Some(stamp.to_string()),
                host: some(host, &["$RS_HOSTNAME"]),
                app: some(program, &[]),
                pid: pid_of(tag),
                msg: msg_of(msg, tag),
                ..Expect::default()
            };
            Some((id, frame, want))
        })
        .collect()
}

/// Template T2: `PRI|fac|sev|rfc3339|hostname|programname|syslogtag|app-name|procid|msgid|sd|msg|`.
fn group_h() -> Vec<(String, Vec<u8>, Expect)> {
    let year = opts().received_at.format("%Y").to_string();
    pairs('H')
        .into_iter()
        .filter_map(|(id, frame, out)| {
            let f: Vec<&str> = out.splitn(12, '|').collect();
            let [pri, _, _, stamp, host, _, tag, app, procid, msgid, sd, msg] = f[..] else {
                return None;
            };
            let msg = msg.strip_suffix('|')?;
            let stamp = match stamp {
                "<RCVTIME>" => Some(None),
                s => Some(DateTime::parse_from_rfc3339(&s.replace("<RCVYEAR>", &year)).ok()),
            };
            let want = Expect {
                error: pri == "invld",
                pri: pri.parse().ok(),
                stamp,
                host: some(host, &["localhost"]),
                app: some(app, &["-"]),
                pid: some(procid, &["-"]),
                msgid: some(msgid, &["-"]),
                sd: Some(if sd == "-" { "" } else { sd }.to_string()),
                msg: msg_of(msg, tag),
                ..Expect::default()
            };
            Some((id, frame, want))
        })
        .collect()
}

#[test]
fn rsyslog_parser_corpus() {
    let o = ParseOptions::new(opts().received_at(), Zone::Named(chrono_tz::UTC));
    let cases: Vec<_> = group_a().into_iter().chain(group_h()).collect();
    let n = compare(&cases, PINNED, |f| parse(f, &o), rsyslog_escaped);
    assert_eq!(n, 29 + 42);
}
