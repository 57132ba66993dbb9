//! Interop with the Elasticsearch outputs of rsyslog and syslog-ng (issue 15): Debian's
//! `rsyslog-elasticsearch` (omelasticsearch) and `syslog-ng-mod-http` (elasticsearch-http()),
//! unpacked by .ci/install-test-tools, write the same three messages as sluice to the same
//! in-memory Elasticsearch (support/es_server.rs). For each message, every value the peer's
//! document holds must be in sluice's documents, plain and with `ecs = true`.
//!
//! The field mapping (also in the README, "Indexing into Elasticsearch or OpenSearch"):
//!
//! | value     | rsyslog omelasticsearch¹ | syslog-ng elasticsearch-http() | sluice            | sluice `ecs = true`          |
//! |-----------|--------------------------|--------------------------------|-------------------|------------------------------|
//! | time      | `@timestamp`             | `@timestamp` (and `ISODATE`)   | `@timestamp`, `timestamp` | `@timestamp`         |
//! | message   | `message` (`%msg%`)      | `MESSAGE`                      | `message`         | `message`                    |
//! | host      | `host` (`%hostname%`)    | `HOST`                         | `hostname`        | `host.name`                  |
//! | app name  | `app-name` (`%app-name%`)| `PROGRAM`                      | `app_name`        | `log.syslog.appname`         |
//! | facility  | `facility` (`%syslogfacility-text%`) | `FACILITY`         | `facility`        | `log.syslog.facility.name`   |
//! | severity  | `severity` (`%syslogseverity-text%`) | `PRIORITY`         | `severity`        | `log.syslog.severity.name`   |
//! | proc id   | `procid` (`%procid%`)    | `PID`                          | `procid`          | `log.syslog.procid`          |
//! | msg id    | `msgid` (`%msgid%`)      | `MSGID`                        | `msgid`           | `log.syslog.msgid`           |
//! | SD        | `structured-data` (the raw string) | `_SDATA` (`{id: {param: value}}`) | `structured_data` (`{id: {param: value}}`) | `log.syslog.structured_data` |
//!
//! ¹ omelasticsearch has no fixed document: these are the names of the usual template (below).
//!
//! Differences the comparison allows for, each a property of the peer, not a loss:
//! - rsyslog's `%msg%` of an RFC 3164 message keeps the space after `tag:`; syslog-ng and
//!   sluice drop it.
//! - rsyslog writes `-` for an absent procid, msgid or structured data; syslog-ng omits the
//!   field (`--omit-empty-values`); sluice writes `null`.
//! - syslog-ng's `@timestamp` has whole seconds (its `frac-digits(0)` default): compared to the
//!   second. Stamps are compared as instants; the three keep the sender's offset.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Timelike};
use serde_json::Value;

use crate::support::es_server::EsServer;
use crate::support::*;

/// The messages sent to each daemon: RFC 3164 (stamped a minute ago, local time, so that every
/// daemon infers the same year), RFC 5424 with two SD elements, RFC 5424 with nil fields and an
/// offset. `.0` is the line, `.1` the message text every document must hold.
fn samples() -> Vec<(String, &'static str)> {
    let stamp = (chrono::Local::now() - chrono::Duration::seconds(60)).format("%b %e %H:%M:%S");
    vec![
        (
            format!("<34>{stamp} mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8"),
            "'su root' failed for lonvick on /dev/pts/8",
        ),
        (
            concat!(
                "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 1234 ID47 ",
                "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"]",
                "[examplePriority@32473 class=\"high\"] An application event log entry"
            )
            .to_string(),
            "An application event log entry",
        ),
        (
            "<13>1 2024-05-06T07:08:09.123456+02:00 web1.example.net nginx - - - GET /index.html 200"
                .to_string(),
            "GET /index.html 200",
        ),
    ]
}

/// What a document says about a message, under common names.
#[derive(Debug, Default, PartialEq)]
struct Fields {
    message: Option<String>,
    hostname: Option<String>,
    app_name: Option<String>,
    facility: Option<String>,
    severity: Option<String>,
    timestamp: Option<DateTime<FixedOffset>>,
    procid: Option<String>,
    msgid: Option<String>,
    /// SD-ID -> param -> value.
    sd: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// rsyslog's `-` (and an empty string) for "absent".
fn not_nil(v: &Value) -> Option<String> {
    string(v).filter(|s| s != "-" && !s.is_empty())
}

fn stamp(v: &Value) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(v.as_str()?).ok()
}

/// `{id: {param: value}}` as JSON (syslog-ng's `_SDATA`, sluice's `structured_data`).
fn sd_object(v: &Value) -> Option<BTreeMap<String, BTreeMap<String, String>>> {
    let obj = v.as_object()?;
    Some(
        obj.iter()
            .map(|(id, params)| {
                let params = params
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), string(v).unwrap_or_else(|| v.to_string())))
                    .collect();
                (id.clone(), params)
            })
            .collect(),
    )
}

/// RFC 5424 STRUCTURED-DATA text (rsyslog's `%structured-data%`) read into the same shape.
fn sd_text(s: &str) -> Option<BTreeMap<String, BTreeMap<String, String>>> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some(r) = rest.strip_prefix('[') {
        let id_end = r.find([' ', ']'])?;
        let id = r[..id_end].to_string();
        let mut r = &r[id_end..];
        let mut params = BTreeMap::new();
        while let Some(p) = r.strip_prefix(' ') {
            let eq = p.find('=')?;
            let name = p[..eq].to_string();
            let mut chars = p[eq + 1..].strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => value.push(chars.next()?.1),
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            params.insert(name, value);
            r = &p[eq + 1 + 1 + end + 1..];
        }
        out.insert(id, params);
        rest = r.strip_prefix(']')?;
    }
    Some(out)
}

/// A document written with [`RSYSLOG_TEMPLATE`].
fn from_rsyslog(d: &Value) -> Fields {
    Fields {
        // %msg% of an RFC 3164 message starts with the space that followed "tag:".
        message: string(&d["message"]).map(|m| m.strip_prefix(' ').unwrap_or(&m).to_string()),
        hostname: string(&d["host"]),
        app_name: not_nil(&d["app-name"]),
        facility: string(&d["facility"]),
        severity: string(&d["severity"]),
        timestamp: stamp(&d["@timestamp"]),
        procid: not_nil(&d["procid"]),
        msgid: not_nil(&d["msgid"]),
        sd: not_nil(&d["structured-data"]).map(|s| {
            sd_text(&s).unwrap_or_else(|| panic!("rsyslog's structured data {s:?} unreadable"))
        }),
    }
}

/// A document of syslog-ng's elasticsearch-http() as shipped (`format-json --scope rfc5424`).
fn from_syslog_ng(d: &Value) -> Fields {
    Fields {
        message: string(&d["MESSAGE"]),
        hostname: string(&d["HOST"]),
        app_name: string(&d["PROGRAM"]),
        facility: string(&d["FACILITY"]),
        severity: string(&d["PRIORITY"]),
        timestamp: stamp(&d["@timestamp"]),
        procid: string(&d["PID"]),
        msgid: string(&d["MSGID"]),
        sd: sd_object(&d["_SDATA"]),
    }
}

/// A sluice document with `ecs = false`: the JSON event.
fn from_sluice(d: &Value) -> Fields {
    assert_eq!(
        stamp(&d["@timestamp"]),
        stamp(&d["timestamp"]),
        "@timestamp is the message's stamp: {d}"
    );
    Fields {
        message: string(&d["message"]),
        hostname: string(&d["hostname"]),
        app_name: string(&d["app_name"]),
        facility: string(&d["facility"]),
        severity: string(&d["severity"]),
        timestamp: stamp(&d["@timestamp"]),
        procid: string(&d["procid"]),
        msgid: string(&d["msgid"]),
        sd: sd_object(&d["structured_data"]),
    }
}

/// A sluice document with `ecs = true`.
fn from_sluice_ecs(d: &Value) -> Fields {
    let s = &d["log"]["syslog"];
    Fields {
        message: string(&d["message"]),
        hostname: string(&d["host"]["name"]),
        app_name: string(&s["appname"]),
        facility: string(&s["facility"]["name"]),
        severity: string(&s["severity"]["name"]),
        timestamp: stamp(&d["@timestamp"]),
        procid: string(&s["procid"]),
        msgid: string(&s["msgid"]),
        sd: sd_object(&s["structured_data"]),
    }
}

/// Asserts that `ours` holds every value `theirs` has (a peer's `None` asks nothing).
fn assert_holds(peer: &str, flavour: &str, theirs: &Fields, ours: &Fields) {
    let ctx = format!("{peer} vs sluice {flavour}:\n  {peer}: {theirs:?}\n  sluice: {ours:?}");
    macro_rules! same {
        ($f:ident) => {
            if theirs.$f.is_some() {
                assert_eq!(theirs.$f, ours.$f, "{} differs; {ctx}", stringify!($f));
            }
        };
    }
    same!(message);
    same!(hostname);
    same!(app_name);
    same!(facility);
    same!(severity);
    same!(procid);
    same!(msgid);
    same!(sd);
    let (t, o) = (theirs.timestamp.expect(&ctx), ours.timestamp.expect(&ctx));
    if t.nanosecond() == 0 {
        // Whole seconds (syslog-ng; any RFC 3164 stamp): equal to the second.
        assert_eq!(t.timestamp(), o.timestamp(), "timestamp differs; {ctx}");
    } else {
        assert_eq!(t, o, "timestamp differs; {ctx}");
    }
}

/// The document of each sample in `docs` (by message text, read with `read`), in sample order.
fn by_sample(
    docs: &[Value],
    samples: &[(String, &str)],
    read: fn(&Value) -> Fields,
    who: &str,
) -> Vec<Fields> {
    samples
        .iter()
        .map(|(_, text)| {
            let found: Vec<Fields> = docs
                .iter()
                .map(read)
                .filter(|f| f.message.as_deref() == Some(*text))
                .collect();
            assert_eq!(
                found.len(),
                1,
                "{who}: one document for {text:?} in {docs:#?}"
            );
            found.into_iter().next().unwrap()
        })
        .collect()
}

/// The template omelasticsearch is given: the usual fields, one property each.
const RSYSLOG_TEMPLATE: &str = r#"template(name="es" type="list" option.jsonf="on") {
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="facility" name="syslogfacility-text" format="jsonf")
  property(outname="syslogtag" name="syslogtag" format="jsonf")
  property(outname="app-name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured-data" name="structured-data" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}"#;

/// A peer in the foreground, killed on drop; its stderr in `log`.
struct Peer {
    child: Child,
    log: PathBuf,
}

impl Peer {
    fn spawn(mut cmd: Command, log: PathBuf) -> Peer {
        let err = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Peer { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its log if it has exited.
    fn check(&mut self, name: &str) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("{name} exited ({st}):\n{}", self.log());
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The unpacked tools, or `None` (and a message) when the Elasticsearch modules are missing.
/// On CI (`CI` set) they must be there: .ci/install-test-tools installs them.
fn es_tools() -> Option<PathBuf> {
    let root = tools_root();
    let needed = [
        "usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so",
        "usr/sbin/syslog-ng",
        "usr/lib/syslog-ng/3.38/libhttp.so",
        "usr/share/syslog-ng/include/scl/elasticsearch/elastic-http.conf",
    ];
    let missing: Vec<_> = needed.iter().filter(|p| !root.join(p).exists()).collect();
    if missing.is_empty() {
        return Some(root);
    }
    let msg = format!(
        "{missing:?} not unpacked under {}: run .ci/install-test-tools",
        root.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

fn rsyslog(root: &Path, dir: &Path, es_port: u16) -> (Peer, u16) {
    let port_file = dir.join("rsyslog.port");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imtcp")
module(load="omelasticsearch")
input(type="imtcp" port="0" address="127.0.0.1" listenPortFileName="{port_file}")
{RSYSLOG_TEMPLATE}
action(type="omelasticsearch" server="127.0.0.1" serverport="{es_port}" searchIndex="rsyslog-test"
       esVersion.major="8" bulkmode="on" template="es")
"#,
            dir = dir.display(),
            port_file = port_file.display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(root.join("usr/sbin/rsyslogd"));
    cmd.arg("-n")
        .arg(format!("-f{}", conf.display()))
        .arg(format!("-i{}", dir.join("rsyslog.pid").display()))
        .arg(format!(
            "-M{}",
            root.join("usr/lib/x86_64-linux-gnu/rsyslog").display()
        ));
    let mut peer = Peer::spawn(cmd, dir.join("rsyslog.log"));
    wait_until("rsyslog's port file", DEADLINE, || {
        peer.check("rsyslogd");
        std::fs::read_to_string(&port_file).is_ok_and(|s| s.trim().parse::<u16>().is_ok())
    });
    let port = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (peer, port)
}

/// syslog-ng from the unpacked prefix (its libraries by LD_LIBRARY_PATH, its modules by
/// --module-path, the SCL block by absolute path), nothing of the host's touched. It listens
/// for RFC 3164 on the first port and RFC 5424 (`flags(syslog-protocol)`) on the second.
fn syslog_ng(root: &Path, dir: &Path, es_url: &str) -> (Peer, u16, u16) {
    let (p3164, p5424) = (free_tcp_port(), free_tcp_port());
    let conf = dir.join("syslog-ng.conf");
    std::fs::write(
        &conf,
        format!(
            r#"@version: 3.38
@include "{scl}"
options {{ keep-hostname(yes); use-dns(no); stats-freq(0); }};
source s3164 {{ network(ip("127.0.0.1") port({p3164}) transport("tcp")); }};
source s5424 {{ network(ip("127.0.0.1") port({p5424}) transport("tcp") flags(syslog-protocol)); }};
destination es {{ elasticsearch-http(url("{es_url}/_bulk") index("syslog-ng-test") type("")); }};
log {{ source(s3164); source(s5424); destination(es); }};
"#,
            scl = root
                .join("usr/share/syslog-ng/include/scl/elasticsearch/elastic-http.conf")
                .display(),
        ),
    )
    .unwrap();
    let libs = [
        "usr/lib/syslog-ng",
        "usr/lib/x86_64-linux-gnu",
        "lib/x86_64-linux-gnu",
    ]
    .map(|l| root.join(l).display().to_string())
    .join(":");
    let mut cmd = Command::new(root.join("usr/sbin/syslog-ng"));
    cmd.env("LD_LIBRARY_PATH", libs)
        .args(["-F", "-e", "--no-caps"])
        .arg(format!("--cfgfile={}", conf.display()))
        .arg(format!(
            "--persist-file={}",
            dir.join("sng.persist").display()
        ))
        .arg(format!("--pidfile={}", dir.join("sng.pid").display()))
        .arg(format!("--control={}", dir.join("sng.ctl").display()))
        .arg(format!(
            "--module-path={}",
            root.join("usr/lib/syslog-ng/3.38").display()
        ));
    let mut peer = Peer::spawn(cmd, dir.join("syslog-ng.log"));
    wait_until("syslog-ng's listeners", DEADLINE, || {
        peer.check("syslog-ng");
        [p3164, p5424]
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
    });
    (peer, p3164, p5424)
}

/// Sends `lines` LF-framed on one connection to `port`.
fn send(port: u16, lines: &[&str]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for l in lines {
        s.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
}

/// Waits until `index` holds `n` documents; panics with the peers' logs if not.
fn wait_docs(es: &EsServer, index: &str, n: usize, peers: &mut [(&str, &mut Peer)]) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let docs = es.docs(index);
        if docs.len() >= n {
            return docs;
        }
        for (name, p) in peers.iter_mut() {
            p.check(name);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let logs: Vec<String> = peers
                .iter()
                .map(|(name, p)| format!("--- {name}:\n{}", p.log()))
                .collect();
            panic!(
                "{index}: {} of {n} documents after 30 s; indices {:?}; bulks {:#?}\n{}",
                docs.len(),
                es.indices(),
                es.bulks(),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rsyslog_syslog_ng_and_sluice_index_the_same_information() {
    let Some(root) = es_tools() else { return };
    let es = EsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    let lines: Vec<&str> = samples.iter().map(|(l, _)| l.as_str()).collect();

    let d = TestDaemon::start(
        &ConfigBuilder::new()
            .tcp("tcp", "")
            .output(
                "es",
                "elasticsearch",
                &format!("url = \"{}\"\nindex = \"sluice-test\"", es.url()),
            )
            .output(
                "ecs",
                "elasticsearch",
                &format!(
                    "url = \"{}\"\nindex = \"sluice-ecs-test\"\necs = true",
                    es.url()
                ),
            )
            .route_to(&["es", "ecs"])
            .build(),
    );
    let (mut rs, rs_port) = rsyslog(&root, dir.path(), es.addr().port());
    let (mut sng, p3164, p5424) = syslog_ng(&root, dir.path(), &es.url());

    send(d.addr("tcp").port(), &lines);
    send(rs_port, &lines);
    send(p3164, &lines[..1]);
    send(p5424, &lines[1..]);

    let mut peers = [("rsyslogd", &mut rs), ("syslog-ng", &mut sng)];
    let ours = by_sample(
        &wait_docs(&es, "sluice-test", 3, &mut peers),
        &samples,
        from_sluice,
        "sluice",
    );
    let ours_ecs = by_sample(
        &wait_docs(&es, "sluice-ecs-test", 3, &mut peers),
        &samples,
        from_sluice_ecs,
        "sluice ecs",
    );
    let rsyslog_docs = by_sample(
        &wait_docs(&es, "rsyslog-test", 3, &mut peers),
        &samples,
        from_rsyslog,
        "rsyslog",
    );
    let syslog_ng_docs = by_sample(
        &wait_docs(&es, "syslog-ng-test", 3, &mut peers),
        &samples,
        from_syslog_ng,
        "syslog-ng",
    );

    // The peers' documents do hold the values compared (a template or SCL change that emptied
    // them would make the comparison vacuous).
    for (peer, docs) in [("rsyslog", &rsyslog_docs), ("syslog-ng", &syslog_ng_docs)] {
        let sd = docs[1]
            .sd
            .as_ref()
            .unwrap_or_else(|| panic!("{peer}: {docs:?}"));
        assert_eq!(sd["exampleSDID@32473"]["eventID"], "1011", "{peer}");
        assert_eq!(sd["examplePriority@32473"]["class"], "high", "{peer}");
        assert_eq!(docs[1].msgid.as_deref(), Some("ID47"), "{peer}");
        assert_eq!(docs[0].procid.as_deref(), Some("123"), "{peer}");
        for f in docs {
            assert!(
                f.hostname.is_some()
                    && f.app_name.is_some()
                    && f.facility.is_some()
                    && f.severity.is_some()
                    && f.timestamp.is_some(),
                "{peer}: {f:?}"
            );
        }
    }
    for i in 0..samples.len() {
        for (flavour, ours) in [("", &ours[i]), ("ecs", &ours_ecs[i])] {
            assert_holds("rsyslog", flavour, &rsyslog_docs[i], ours);
            assert_holds("syslog-ng", flavour, &syslog_ng_docs[i], ours);
        }
    }
    // And the two flavours of sluice say the same.
    assert_eq!(ours, ours_ecs);
}
