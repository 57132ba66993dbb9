//! Config parsing and validation tests.

use std::time::Duration;

use super::*;
use crate::decode::{parse_duration, parse_size};
use crate::listen::ListenerKind;
use crate::listen::settings::RateLimit;
use crate::parse::Zone;

fn errors(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, "t.toml") {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded_default();
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.outputs.len(), 1);
    assert_eq!(c.routes.len(), 1);
}

#[test]
fn reports_every_error_with_line_and_key() {
    let text = r#"
[listen.udp]
kind = "udp"
address = "127.0.0.1:5514"
colour = "blue"

[output.a]
kind = "stdout"

[[route]]
to = ["nosuch"]

[[route]]
selector = "auth.bogus"
to = ["a"]
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(errs[0], "t.toml:5:1: listen.udp.colour: unknown key");
    assert!(
        errs[1].starts_with("t.toml:11:6: route[0].to: no output named \"nosuch\""),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("t.toml:14:12: route[1].selector: invalid selector"),
        "{}",
        errs[2]
    );
}

#[test]
fn bad_address_names_key_and_value() {
    let errs = errors(
        "[listen.x]\nkind = \"tcp\"\naddress = \"siem:abc\"\n[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n",
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("t.toml:3:11: listen.x.address: invalid socket address \"siem:abc\""),
        "{}",
        errs[0]
    );
}

#[test]
fn syntax_error_has_position() {
    let errs = errors("[listen.x\nkind = 1\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("t.toml:1:"), "{}", errs[0]);
}

#[test]
fn type_error_has_position() {
    let errs = errors(
        "[listen.x]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\nmax_connections = \"many\"\n[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("t.toml:4:"), "{}", errs[0]);
}

#[test]
fn keys_of_other_kinds_are_rejected() {
    let errs = errors(
        "[listen.x]\nkind = \"udp\"\naddress = \"127.0.0.1:1\"\npath = \"/dev/log\"\n[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n",
    );
    assert_eq!(
        errs,
        vec!["t.toml:4:8: listen.x.path: not valid for kind = \"udp\"".to_string()]
    );
}

#[test]
fn udp_sockets_is_a_count_from_1_to_64_for_udp_only() {
    let udp = |sockets: &str| {
        format!(
            "[listen.x]\nkind = \"udp\"\naddress = \"127.0.0.1:1\"\nsockets = {sockets}\n[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n"
        )
    };
    let c = Config::from_toml_str(&udp("4"), "t.toml").unwrap();
    assert!(matches!(
        c.listeners[0].kind,
        ListenerKind::Udp(crate::listen::udp::UdpSettings { sockets: 4, .. })
    ));
    let c = Config::from_toml_str(&udp("1").replace("sockets = 1\n", ""), "t.toml").unwrap();
    assert!(matches!(
        c.listeners[0].kind,
        ListenerKind::Udp(crate::listen::udp::UdpSettings { sockets: 1, .. })
    ));
    for bad in ["0", "65", "-2"] {
        let errs = errors(&udp(bad));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("t.toml:4:11: listen.x.sockets: must be from 1 to 64"),
            "{}",
            errs[0]
        );
    }
    let errs = errors(&udp("2").replace("\"udp\"", "\"tcp\""));
    assert_eq!(
        errs,
        vec!["t.toml:4:11: listen.x.sockets: not valid for kind = \"tcp\"".to_string()]
    );
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("64KiB"), Ok(65536));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("10MB"), Ok(10_000_000));
    assert!(parse_size("10XB").is_err());
    assert!(parse_size("99999999999999999999GiB").is_err());
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert!(parse_duration("5 fortnights").is_err());
}

#[test]
fn nested_unknown_key_in_queue() {
    let errs = errors(
        "[listen.x]\nkind = \"udp\"\naddress = \"127.0.0.1:1\"\n[output.o]\nkind=\"stdout\"\nqueue = { max_events = 10, colour = 1 }\n[[route]]\nto=\"o\"\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("t.toml:6:28: output.o.queue.colour: unknown key"),
        "{}",
        errs[0]
    );
}

#[test]
fn listener_timezone_is_an_iana_name_or_local() {
    let text = |tz: &str| {
        format!(
            "[listen.u]\nkind = \"udp\"\naddress = \"127.0.0.1:0\"\ntimezone = \"{tz}\"\n\
             [output.o]\nkind = \"stdout\"\n[[route]]\nto = \"o\"\n"
        )
    };
    for (name, want) in [
        ("local", Zone::Local),
        ("UTC", Zone::Named(chrono_tz::UTC)),
        ("Europe/Berlin", Zone::Named(chrono_tz::Europe::Berlin)),
    ] {
        let c = Config::from_toml_str(&text(name), "t.toml").expect("valid");
        assert_eq!(c.listeners[0].limits.timezone, want);
    }
    let c = Config::embedded_default();
    assert!(c.listeners.iter().all(|l| l.limits.timezone == Zone::Local));
    assert_eq!(
        errors(&text("Europe/Berln")),
        [
            "t.toml:4:12: listen.u.timezone: unknown time zone \"Europe/Berln\": expected an IANA \
          name like \"Europe/Berlin\", \"UTC\", or \"local\""
        ]
    );
    assert_eq!(errors(&text("europe/berlin")).len(), 1, "case matters");
}

#[test]
fn rate_limit_defaults_and_errors() {
    let base = "[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n";
    let c = Config::from_toml_str(
        &format!("[listen.x]\nkind = \"unix\"\npath = \"/dev/log\"\nrate_limit = {{ messages = 200 }}\n{base}"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.listeners[0].limits.rate_limit,
        Some(RateLimit {
            messages: 200,
            interval: Duration::from_secs(1),
            burst: 200
        })
    );
    let errs = errors(&format!(
        "[listen.x]\nkind = \"udp\"\naddress = \"127.0.0.1:1\"\nrate_limit = {{ interval = \"5s\", burst = 3 }}\n[listen.y]\nkind = \"tcp\"\naddress = \"127.0.0.1:2\"\nrate_limit = {{ messages = 5, interval = \"0s\", burst = 0, colour = 1 }}\n{base}"
    ));
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with("t.toml:4:27: listen.x.rate_limit.messages: missing"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("t.toml:8:41: listen.y.rate_limit.interval: must be more than 0"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("t.toml:8:55: listen.y.rate_limit.burst: must be a positive integer"),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].starts_with("t.toml:8:58: listen.y.rate_limit.colour: unknown key"),
        "{}",
        errs[3]
    );
}

#[test]
fn tcp_and_tls_end_messages_at_nul_by_default_unless_nul_trailer_is_false() {
    let base = "[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n";
    let tls =
        "kind = \"tls\"\naddress = \"127.0.0.1:2\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"";
    let nul = |extra: &str| {
        let c = Config::from_toml_str(
            &format!(
                "[listen.t]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n{extra}\n[listen.s]\n{tls}\n{extra}\n{base}"
            ),
            "t.toml",
        )
        .unwrap();
        c.listeners
            .iter()
            .map(|l| match &l.kind {
                ListenerKind::Tcp(t) => t.connections.nul_trailer,
                ListenerKind::Tls(t) => t.tcp.connections.nul_trailer,
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        nul(""),
        [true, true],
        "Python's SysLogHandler ends messages with NUL"
    );
    assert_eq!(nul("nul_trailer = false"), [false, false]);
    assert_eq!(nul("nul_trailer = true"), [true, true]);
}

#[test]
fn unix_stream_takes_connection_keys_and_ends_messages_at_nul_by_default() {
    let base = "[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n";
    let c = Config::from_toml_str(
        &format!("[listen.s]\nkind = \"unix_stream\"\npath = \"/run/log.sock\"\nmax_connections = 7\n{base}"),
        "t.toml",
    )
    .unwrap();
    match &c.listeners[0].kind {
        ListenerKind::UnixStream(crate::listen::unix_stream::UnixStreamSettings {
            socket,
            connections,
        }) => {
            assert_eq!(socket.path, std::path::PathBuf::from("/run/log.sock"));
            assert_eq!(socket.mode, 0o666);
            assert_eq!(connections.max_connections, 7);
            assert!(
                connections.nul_trailer,
                "glibc ends stream messages with NUL"
            );
            assert_eq!(
                connections.idle_timeout,
                Some(crate::listen::settings::DEFAULT_IDLE_TIMEOUT)
            );
        }
        other => panic!("{other:?}"),
    }
    let errs = errors(&format!(
        "[listen.s]\nkind = \"unix_stream\"\naddress = \"127.0.0.1:1\"\nnul_trailer = false\n{base}"
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].contains("listen.s.path: missing"), "{}", errs[0]);
    assert!(
        errs[1].starts_with("t.toml:3:11: listen.s.address: not valid for kind = \"unix_stream\""),
        "{}",
        errs[1]
    );
    let errs = errors(&format!(
        "[listen.d]\nkind = \"unix\"\npath = \"/dev/log\"\n[listen.s]\nkind = \"unix_stream\"\npath = \"/dev/log\"\n{base}"
    ));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("binds the same unix /dev/log as listen.d"),
        "{}",
        errs[0]
    );
}

#[test]
fn known_keys_come_from_the_kinds_that_read_them() {
    let keys = known_keys();
    for want in [
        "daemon.shutdown_timeout",
        "listen.*.kind",
        "listen.*.address",
        "listen.*.path",
        "listen.*.rate_limit",
        "listen.*.rate_limit.burst",
        "listen.*.nul_trailer",
        "listen.*.read_existing",
        "output.*.format",
        "output.*.queue.when_full",
        "output.*.rotate.naming",
        "output.*.group",
        "output.*.fingerprints",
        "route.stop",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} not in {keys:?}");
    }
    // Each key once, though several kinds read it.
    let mut sorted = keys.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), keys.len());
}

#[test]
fn every_bad_key_of_a_table_is_reported_in_words() {
    let errs = errors(
        "[listen.x]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\nmax_connections = \"lots\"\nnul_trailer = 1\nrate_limit = { messages = [1] }\n[output.o]\nkind=\"stdout\"\n[[route]]\nto=\"o\"\n",
    );
    assert_eq!(
        errs,
        vec![
            "t.toml:4:19: listen.x.max_connections: expected a number, got \"lots\"".to_string(),
            "t.toml:5:15: listen.x.nul_trailer: expected true or false, got 1".to_string(),
            "t.toml:6:27: listen.x.rate_limit.messages: expected a number, got a list".to_string(),
        ]
    );
}

#[test]
fn a_key_of_another_kind_is_named_as_such_and_a_typo_as_unknown() {
    let errs = errors(
        "[output.o]\nkind = \"stdout\"\npath = \"/x\"\npaht = \"/y\"\n[listen.u]\nkind=\"udp\"\naddress=\"127.0.0.1:1\"\n[[route]]\nto=\"o\"\n",
    );
    assert_eq!(
        errs,
        vec![
            "t.toml:3:8: output.o.path: not valid for kind = \"stdout\"".to_string(),
            "t.toml:4:1: output.o.paht: unknown key".to_string(),
        ]
    );
}
