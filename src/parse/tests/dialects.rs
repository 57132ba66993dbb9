//! RFC 3164 as particular devices send it: Cisco IOS and NX-OS, Cisco ASA, FortiGate, AIX, and
//! senders that leave out the HOSTNAME (haproxy, pfSense, busybox).

use chrono_tz::Europe::Berlin;

use super::rfc3164::{check, received_in, sequence, ts};
use super::{parse_utc as parse, text};
use crate::event::{ParseFlags, Protocol};
use crate::parse::{Zone, parse as parse_opts};

#[test]
fn cisco_ios_sequence_marker_milliseconds_and_mnemonic() {
    let p = check(
        "<189>123: *Mar  1 00:01:02.345: %SYS-5-CONFIG_I: Configured from console by vty0",
        None,
        Some("%SYS-5-CONFIG_I"),
        None,
        "Configured from console by vty0",
    );
    assert_eq!(p.structured_data.to_elements(), [sequence("123")]);
    assert_eq!(p.timestamp, ts("2026-03-01T00:01:02.345Z"));
    assert!(p.flags.contains(ParseFlags::CLOCK_UNSYNCED));
    // `.`: clock not authoritative; a year, and the zone (UTC is known, CET is not).
    let p = check(
        "<187>000456: .Mar  1 2025 00:01:02.345 UTC: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        None,
        Some("%LINK-3-UPDOWN"),
        None,
        "Interface Gi0/1, changed state to down",
    );
    assert_eq!(p.structured_data.to_elements(), [sequence("000456")]);
    assert_eq!(p.timestamp, ts("2025-03-01T00:01:02.345Z"));
    let o = received_in("2025-03-02T00:00:00Z", Zone::Named(Berlin));
    let f = b"<189>Mar  1 2025 00:01:02 CET: %SYS-5-RESTART: System restarted";
    let p = parse_opts(f, &o);
    assert_eq!(p.timestamp, ts("2025-03-01T00:01:02+01:00"));
    assert_eq!(text(f, p.app_name), Some("%SYS-5-RESTART"));
    assert_eq!(p.flags, ParseFlags::default());
    // With `logging origin-id`: a HOSTNAME after the stamp (syslog-ng S68).
    let p = check(
        "<0>91: *Oct 07 03:10:04: mydevice.com %CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet",
        Some("mydevice.com"),
        Some("%CRYPTO-4-RECVD_PKT_INV_SPI"),
        None,
        "decaps: rec'd IPSEC packet",
    );
    assert_eq!(p.timestamp, ts("2026-10-07T03:10:04Z"));
    // A marker that no stamp follows is text.
    let p = check("<189>12: *not a stamp", None, None, None, "*not a stamp");
    assert_eq!(p.flags, ParseFlags::default());
}

#[test]
fn cisco_nx_os_year_first_with_zone() {
    let p = check(
        "<189>2024 Jan 15 10:30:00 UTC: %ETHPORT-5-IF_UP: Interface Ethernet1/1 is up",
        None,
        Some("%ETHPORT-5-IF_UP"),
        None,
        "Interface Ethernet1/1 is up",
    );
    assert_eq!(p.timestamp, ts("2024-01-15T10:30:00Z"));
}

#[test]
fn cisco_asa_with_and_without_header() {
    check(
        "<166>%ASA-6-302013: Built outbound TCP connection 1 for outside:10.0.0.1/443",
        None,
        Some("%ASA-6-302013"),
        None,
        "Built outbound TCP connection 1 for outside:10.0.0.1/443",
    );
    let p = check(
        "<166>Jun 18 2019 10:27:12: %ASA-6-302015: Built outbound UDP connection",
        None,
        Some("%ASA-6-302015"),
        None,
        "Built outbound UDP connection",
    );
    assert_eq!(p.timestamp, ts("2019-06-18T10:27:12Z"));
    // `logging device-id hostname` puts ` : ` between HOSTNAME and the tag.
    check(
        "<166>Jun 18 2019 10:27:12 FW01 : %ASA-6-302015: Built outbound UDP connection",
        Some("FW01"),
        Some("%ASA-6-302015"),
        None,
        "Built outbound UDP connection",
    );
}

#[test]
fn fortigate_key_value_without_header() {
    let kv = r#"date=2025-01-15 time=10:30:00 devname="FGT60E" devid="FGT60E4Q16000000" eventtime=1736933400 tz="+0100" logid="0000000013" type="traffic" srcip=10.0.0.1"#;
    let frame = format!("<189>{kv}");
    let p = check(&frame, Some("FGT60E"), None, None, kv);
    assert_eq!(p.timestamp, ts("2025-01-15T10:30:00+01:00"));
    // Older FortiOS: bare values and no `tz`: the listener's zone.
    let kv = "date=2019-05-10 time=11:37:47 logid=0000000013 type=traffic devname=FG100D vd=root";
    let f = format!("<189>{kv}");
    let o = received_in("2019-05-11T00:00:00Z", Zone::Named(Berlin));
    let p = parse_opts(f.as_bytes(), &o);
    assert_eq!(p.timestamp, ts("2019-05-10T11:37:47+02:00"));
    assert_eq!(text(f.as_bytes(), p.hostname), Some("FG100D"));
    assert_eq!(p.message.slice(f.as_bytes()), kv.as_bytes());
    // No date that exists, or no devname: what is there is kept, nothing is invented.
    check(
        "<189>date=2025-02-30 time=10:30:00 devname=x",
        None,
        None,
        None,
        "date=2025-02-30 time=10:30:00 devname=x",
    );
    let p = check(
        "<189>date=2025-01-15 time=10:30:00",
        None,
        None,
        None,
        "date=2025-01-15 time=10:30:00",
    );
    assert_eq!(p.timestamp, ts("2025-01-15T10:30:00Z"));
}

/// syslog-ng S38: AIX relays with `Message forwarded from HOST:`.
#[test]
fn aix_message_forwarded_from() {
    let p = check(
        "<38>Sep 22 10:11:56 Message forwarded from cdaix66: sshd[679960]: Accepted publickey",
        Some("cdaix66"),
        Some("sshd"),
        Some("679960"),
        "Accepted publickey",
    );
    assert_eq!(p.timestamp, ts("2026-09-22T10:11:56Z"));
    // Without a stamp (hostile G08) or a colon, the prefix is plain text.
    check(
        "<13>Oct 11 22:14:15 Message forwarded from ",
        Some("Message"),
        Some("forwarded"),
        None,
        "from ",
    );
}

/// haproxy, pfSense and busybox send `<PRI>TIMESTAMP tag[pid]: msg`, without HOSTNAME.
#[test]
fn senders_without_hostname() {
    for (frame, app, pid, msg) in [
        (
            "<133>Jan 13 16:33:35 haproxy[73411]: Proxy sticky-servers started.",
            "haproxy",
            Some("73411"),
            "Proxy sticky-servers started.",
        ),
        (
            "<134>Nov 22 09:15:01 filterlog[4321]: 5,,,1000000103,igb0,match,block,in,4",
            "filterlog",
            Some("4321"),
            "5,,,1000000103,igb0,match,block,in,4",
        ),
        (
            "<13>Nov 22 09:15:01 root: hello from busybox",
            "root",
            None,
            "hello from busybox",
        ),
    ] {
        let p = check(frame, None, Some(app), pid, msg);
        assert!(p.timestamp.is_some());
    }
}

/// A trailing NUL (glibc over /dev/log) or LF (UDP senders) is not part of MSG.
#[test]
fn trailing_nul_or_lf_is_stripped() {
    for frame in [
        &b"<13>Nov 22 09:15:01 host app: m\0"[..],
        b"<13>Nov 22 09:15:01 host app: m\n",
    ] {
        let p = parse(frame);
        assert_eq!(
            (p.protocol, p.message.slice(frame)),
            (Protocol::Rfc3164, &b"m"[..])
        );
    }
}
