//! The mixed workload (`loadgen --workload mixed`): what a site collector receives in a day,
//! built before the clock starts so that building costs the sender nothing while it sends.
//!
//! - 200 hosts, each running 4 to 6 of 30 programs, each host pinned to one of the connections
//!   (a device or relay keeps its connection);
//! - every facility, each program with its own (sshd auth, postfix mail, kernel kern, ...) and
//!   2% of messages on a facility drawn from all 24; severities skewed as real traffic is:
//!   mostly info and notice, some warning and err, rare crit, alert and emerg;
//! - MSG sizes lognormal around 200 bytes, from 60 bytes to 2 KiB; in RFC 5424, a third of the
//!   messages carry structured data;
//! - each program's line shape is padded to its size with words, some with `=N` values:
//!   [`Templates::Fresh`] draws the words anew for every message, so almost every message is a
//!   template never seen before (issue 18's stream, and the worst case for an alert rule
//!   that remembers templates); [`Templates::Repeating`] takes one of [`PHRASES`] phrases fixed
//!   per program, its values drawn anew, so that templates repeat as in a site's logs (about
//!   2,800 in a million messages: programs, users and phrases);
//! - stamps: each host's clock off by up to +-90 s, 3% replayed from one to three days ago; in
//!   RFC 3164, 3% are network devices' own dialects (Cisco IOS with sequence numbers on local7,
//!   FortiGate key=value without a header on local6).
//!
//! The generator also counts what each rule of the benchmark's rule set (benches/e2e.py,
//! `mixed` cases) must write, so every daemon's output can be checked file by file.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};

/// A small, seeded generator (SplitMix64): the same workload for every daemon and run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Facility codes by name, for the rule counts.
const KERN: u8 = 0;
const USER: u8 = 1;
const MAIL: u8 = 2;
const AUTH: u8 = 4;
const AUTHPRIV: u8 = 10;
const LOCAL6: u8 = 22;
const LOCAL7: u8 = 23;

/// The 30 programs: name, facility, and the shape of their lines (`{n}` a number, `{ip}` an
/// address, `{user}` a user name, `{id}` a hex id).
const PROGRAMS: [(&str, u8, &str); 30] = [
    (
        "sshd",
        AUTH,
        "Accepted publickey for {user} from {ip} port {n} ssh2: ED25519 SHA256:{id}",
    ),
    (
        "sudo",
        AUTHPRIV,
        "{user} : TTY=pts/{n} ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/systemctl restart app{n}",
    ),
    (
        "login",
        AUTHPRIV,
        "pam_unix(login:session): session opened for user {user}(uid={n}) by LOGIN(uid=0)",
    ),
    (
        "CRON",
        9,
        "({user}) CMD (/usr/local/bin/job-{n}.sh >/dev/null 2>&1)",
    ),
    (
        "postfix",
        MAIL,
        "{id}: to=<{user}@example.net>, relay=mx{n}.example.net[{ip}]:25, delay={n}, status=sent (250 2.0.0 Ok)",
    ),
    (
        "dovecot",
        MAIL,
        "imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=10.0.0.1, mpid={n}, TLS",
    ),
    (
        "kernel",
        KERN,
        "[{n}.{n}] IN=eth0 OUT= MAC={id} SRC={ip} DST=10.0.0.1 LEN={n} TOS=0x00 PROTO=TCP SPT={n} DPT=22",
    ),
    ("systemd", 3, "Started Session {n} of user {user}."),
    ("dhclient", 3, "DHCPACK of {ip} from 10.0.0.1 (xid=0x{id})"),
    (
        "named",
        3,
        "client @0x{id} {ip}#{n} (example.org): query: example.org IN A +E(0)K ({ip})",
    ),
    (
        "snmpd",
        3,
        "Connection from UDP: [{ip}]:{n}->[10.0.0.1]:161",
    ),
    (
        "rsyslogd",
        5,
        "action 'action-{n}-builtin:omfwd' resumed (module 'builtin:omfwd') [v8.2302.0]",
    ),
    ("lpd", 6, "job {n} for {user} printed on queue lp{n}"),
    ("innd", 7, "{ip} connected {n} streaming allowed"),
    (
        "uucico",
        8,
        "{user} uucp ({n}) Call complete ({n} seconds {n} bytes)",
    ),
    (
        "vsftpd",
        11,
        "[{user}] OK DOWNLOAD: Client \"{ip}\", \"/pub/file{n}.tar.gz\", {n} bytes, {n}.{n}Kbyte/sec",
    ),
    ("ntpd", 12, "adjusting local clock by {n}.{n}s"),
    (
        "auditd",
        13,
        "type=USER_AUTH msg=audit({n}.{n}:{n}): pid={n} uid=0 auid={n} ses={n} msg='op=PAM:authentication acct=\"{user}\" exe=\"/usr/sbin/sshd\" addr={ip} res=success'",
    ),
    ("console", 14, "tty{n}: login prompt restarted"),
    ("crond", 15, "({user}) RELOAD (/var/spool/cron/{user})"),
    (
        "haproxy",
        16,
        "{ip}:{n} [04/Dec/2026:10:00:01.{n}] fe be/srv{n} 0/0/{n}/{n}/{n} 200 {n} - - ---- {n}/{n}/0/0/0 0/0 \"GET /api/v1/items/{n} HTTP/1.1\"",
    ),
    (
        "nginx",
        17,
        "{ip} - - [04/Dec/2026:10:00:01 +0000] \"GET /static/{id}.js HTTP/1.1\" 200 {n} \"-\" \"Mozilla/5.0\"",
    ),
    (
        "redis",
        18,
        "{n}:M 04 Dec 2026 10:00:01.{n} * Background saving terminated with success",
    ),
    (
        "postgres",
        19,
        "[{n}] LOG:  duration: {n}.{n} ms  statement: SELECT * FROM orders WHERE id = {n}",
    ),
    (
        "java",
        20,
        "INFO  [pool-{n}-thread-{n}] c.e.s.OrderService - order {id} accepted for customer {n}",
    ),
    (
        "python3",
        21,
        "worker-{n}: processed batch {id} with {n} items in {n} ms",
    ),
    (
        "app",
        USER,
        "request id={id} method=GET path=/v1/users/{n} status=200 duration_ms={n}",
    ),
    (
        "backup",
        USER,
        "snapshot {id} finished: {n} files, {n} MiB, {n} s",
    ),
    (
        "docker",
        3,
        "time=\"2026-12-04T10:00:01Z\" level=info msg=\"container {id} health status healthy\"",
    ),
    (
        "kubelet",
        LOCAL6,
        "I1204 10:00:01.{n} {n} kubelet.go:{n}] \"SyncLoop (PLEG): event for pod\" pod=\"default/web-{id}\"",
    ),
];

const USERS: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "www-data", "postgres",
];
const WORDS: [&str; 16] = [
    "while",
    "processing",
    "request",
    "cache",
    "upstream",
    "retry",
    "timeout",
    "session",
    "connection",
    "client",
    "backend",
    "queue",
    "worker",
    "handler",
    "state",
    "update",
];

/// Severity by weight: info and notice most, then warning, debug and err, crit and worse rare.
const SEVERITIES: [(u8, u32); 8] = [
    (6, 5500),
    (5, 2000),
    (4, 1000),
    (7, 500),
    (3, 700),
    (2, 200),
    (1, 60),
    (0, 40),
];

fn severity(rng: &mut Rng) -> u8 {
    let mut x = rng.below(10_000) as u32;
    for (sev, w) in SEVERITIES {
        if x < w {
            return sev;
        }
        x -= w;
    }
    6
}

struct Host {
    name: String,
    skew_secs: i64,
    programs: Vec<usize>,
    conn: usize,
    pid_base: u64,
}

/// Which syslog format the messages are in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Rfc3164,
    Rfc5424,
}

/// The messages of each connection, framed, and what each rule must write.
pub struct Workload {
    pub per_conn: Vec<Vec<u8>>,
    /// Messages per connection.
    pub counts: Vec<u64>,
    /// Lines each file of the rule set must hold, by path relative to the output directory.
    pub expected: BTreeMap<String, u64>,
}

pub const HOSTS: usize = 200;

/// Where a message's padding comes from (its size is lognormal either way).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Templates {
    /// Words drawn for each message: almost every message a new template.
    Fresh,
    /// One of [`PHRASES`] phrases fixed per program: templates repeat.
    Repeating,
}

/// Padding phrases per program with [`Templates::Repeating`].
pub const PHRASES: usize = 12;

/// The padding phrases of each program, `{n}` where a value goes: words up to a lognormal
/// message size, drawn from their own generator so that the messages' draws do not depend on
/// them.
fn phrases(seed: u64) -> Vec<Vec<String>> {
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    PROGRAMS
        .iter()
        .map(|(_, _, shape)| {
            (0..PHRASES)
                .map(|_| {
                    // About the bytes of the header and the shape before the padding.
                    let target = message_size(&mut rng).saturating_sub(60 + shape.len());
                    let mut phrase = String::new();
                    while phrase.len() < target {
                        phrase.push(' ');
                        let word = *rng.pick(&WORDS);
                        phrase.push_str(word);
                        if rng.chance(0.2) {
                            phrase.push_str("={n}");
                        }
                    }
                    phrase
                })
                .collect()
        })
        .collect()
}

/// Builds `count` messages over `connections`, stamped around `now`.
pub fn build(
    syntax: Syntax,
    templates: Templates,
    count: u64,
    connections: usize,
    seed: u64,
    now: DateTime<Utc>,
) -> Workload {
    let connections = connections.max(1);
    let mut rng = Rng::new(seed);
    let phrases = phrases(seed);
    let hosts: Vec<Host> = (0..HOSTS)
        .map(|i| {
            let n = 4 + rng.below(3) as usize;
            let mut programs = Vec::with_capacity(n);
            while programs.len() < n {
                let p = rng.below(PROGRAMS.len() as u64) as usize;
                if !programs.contains(&p) {
                    programs.push(p);
                }
            }
            let kind = ["web", "db", "app", "mail", "fw", "lb", "k8s", "ci"][i % 8];
            Host {
                name: format!("{kind}-{i:03}.dc{}.example.net", i % 3 + 1),
                skew_secs: rng.below(181) as i64 - 90,
                programs,
                conn: i % connections,
                pid_base: 1000 + rng.below(60_000),
            }
        })
        .collect();
    let mut w = Workload {
        per_conn: vec![Vec::new(); connections],
        counts: vec![0; connections],
        expected: BTreeMap::new(),
    };
    let mut msg = Vec::with_capacity(4096);
    // Stamps advance over an assumed sending time of 10 s.
    let span_ms = 10_000.0;
    for i in 0..count {
        let host = &hosts[rng.below(HOSTS as u64) as usize];
        let progress =
            ChronoDuration::milliseconds((span_ms * i as f64 / count.max(1) as f64) as i64);
        let mut stamp = now + ChronoDuration::seconds(host.skew_secs) + progress;
        if rng.chance(0.03) {
            stamp -= ChronoDuration::days(1 + rng.below(3) as i64);
        }
        let sev = severity(&mut rng);
        msg.clear();
        let (facility, app) = if syntax == Syntax::Rfc3164 && rng.chance(0.03) {
            device_dialect(&mut rng, host, stamp, sev, &mut msg)
        } else {
            let p = *rng.pick(&host.programs);
            let (app, mut facility, shape) = PROGRAMS[p];
            if rng.chance(0.02) {
                facility = rng.below(24) as u8;
            }
            let pri = u16::from(facility) * 8 + u16::from(sev);
            let pid = host.pid_base + p as u64;
            match syntax {
                Syntax::Rfc3164 => {
                    let local = stamp.with_timezone(&chrono::Local);
                    msg.extend_from_slice(
                        format!(
                            "<{pri}>{} {} {app}[{pid}]: ",
                            local.format("%b %e %H:%M:%S"),
                            host.name
                        )
                        .as_bytes(),
                    );
                }
                Syntax::Rfc5424 => {
                    let msgid = ["-", "ID47", "AUDIT", "REQ"][rng.below(4) as usize];
                    msg.extend_from_slice(
                        format!(
                            "<{pri}>1 {} {} {app} {pid} {msgid} ",
                            stamp.format("%Y-%m-%dT%H:%M:%S%.6f%:z"),
                            host.name
                        )
                        .as_bytes(),
                    );
                    if rng.chance(1.0 / 3.0) {
                        msg.extend_from_slice(
                            format!(
                                "[origin ip=\"10.{}.{}.{}\" software=\"{app}\"][meta sequenceId=\"{}\" sysUpTime=\"{}\"] ",
                                rng.below(256),
                                rng.below(256),
                                rng.below(256),
                                i,
                                rng.below(1_000_000)
                            )
                            .as_bytes(),
                        );
                    } else {
                        msg.extend_from_slice(b"- ");
                    }
                }
            }
            match templates {
                Templates::Fresh => {
                    let target = message_size(&mut rng);
                    fill(&mut rng, shape, &mut msg);
                    while msg.len() < target {
                        msg.push(b' ');
                        msg.extend_from_slice(rng.pick(&WORDS).as_bytes());
                        if rng.chance(0.2) {
                            msg.extend_from_slice(format!("={}", rng.below(100_000)).as_bytes());
                        }
                    }
                }
                Templates::Repeating => {
                    fill(&mut rng, shape, &mut msg);
                    let phrase = rng.pick(&phrases[p]);
                    fill(&mut rng, phrase, &mut msg);
                }
            }
            (facility, Some((host.name.as_str(), app)))
        };
        let out = &mut w.per_conn[host.conn];
        match syntax {
            Syntax::Rfc3164 => {
                out.extend_from_slice(&msg);
                out.push(b'\n');
            }
            Syntax::Rfc5424 => {
                out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                out.extend_from_slice(&msg);
            }
        }
        w.counts[host.conn] += 1;
        count_rules(&mut w.expected, facility, app);
    }
    w
}

/// MSG length: lognormal with a median of 200 bytes, cut to 60..=2048.
fn message_size(rng: &mut Rng) -> usize {
    let x = (200f64.ln() + 0.55 * rng.normal()).exp();
    (x as usize).clamp(60, 2048)
}

fn fill(rng: &mut Rng, shape: &str, out: &mut Vec<u8>) {
    let mut rest = shape;
    while let Some(at) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let end = rest[at..].find('}').map_or(rest.len(), |e| at + e + 1);
        match &rest[at..end] {
            "{n}" => out.extend_from_slice(rng.below(100_000).to_string().as_bytes()),
            "{ip}" => out.extend_from_slice(
                format!(
                    "{}.{}.{}.{}",
                    10 + rng.below(200),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                )
                .as_bytes(),
            ),
            "{user}" => out.extend_from_slice(rng.pick(&USERS).as_bytes()),
            "{id}" => out.extend_from_slice(format!("{:012x}", rng.next_u64() >> 16).as_bytes()),
            other => out.extend_from_slice(other.as_bytes()),
        }
        rest = &rest[end..];
    }
    out.extend_from_slice(rest.as_bytes());
}

/// A network device's own line: Cisco IOS (local7, a sequence number before the device's
/// stamp) or FortiGate (local6, key=value with no syslog header). Returns the facility; these
/// lines go to no per-host file (their host and program fields differ between parsers).
fn device_dialect(
    rng: &mut Rng,
    host: &Host,
    stamp: DateTime<Utc>,
    sev: u8,
    out: &mut Vec<u8>,
) -> (u8, Option<(&'static str, &'static str)>) {
    let local = stamp.with_timezone(&chrono::Local);
    if rng.chance(0.5) {
        let pri = u16::from(LOCAL7) * 8 + u16::from(sev);
        out.extend_from_slice(
            format!(
                "<{pri}>{} {} {}: *{}: %LINK-3-UPDOWN: Interface GigabitEthernet0/{}, changed state to {}",
                local.format("%b %e %H:%M:%S"),
                host.name,
                rng.below(1_000_000),
                local.format("%b %e %H:%M:%S%.3f"),
                rng.below(48),
                if rng.chance(0.5) { "up" } else { "down" }
            )
            .as_bytes(),
        );
        (LOCAL7, None)
    } else {
        let pri = u16::from(LOCAL6) * 8 + u16::from(sev);
        out.extend_from_slice(
            format!(
                "<{pri}>date={} time={} devname=\"FGT-{}\" devid=\"FGT60E{:010}\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" srcip=10.{}.{}.{} srcport={} dstip=93.184.{}.{} dstport=443 proto=6 action=\"close\" sentbyte={} rcvdbyte={}",
                local.format("%Y-%m-%d"),
                local.format("%H:%M:%S"),
                host.pid_base,
                host.pid_base,
                rng.below(256),
                rng.below(256),
                rng.below(256),
                rng.below(65_536),
                rng.below(256),
                rng.below(256),
                rng.below(100_000),
                rng.below(1_000_000)
            )
            .as_bytes(),
        );
        (LOCAL6, None)
    }
}

/// The rule set of the benchmark (Debian's rsyslog.conf rules, a network log, a per-host
/// template and a forward of everything), counted per file.
fn count_rules(expected: &mut BTreeMap<String, u64>, facility: u8, app: Option<(&str, &str)>) {
    let mut add = |k: String| *expected.entry(k).or_insert(0) += 1;
    if facility != AUTH && facility != AUTHPRIV {
        add("syslog".into());
    }
    match facility {
        AUTH | AUTHPRIV => add("auth.log".into()),
        KERN => add("kern.log".into()),
        MAIL => add("mail.log".into()),
        USER => add("user.log".into()),
        _ => {}
    }
    if facility == LOCAL6 || facility == LOCAL7 {
        add("network.log".into());
    } else if let Some((host, app)) = app {
        add(format!("devices/{host}/{app}.log"));
    }
    add("forwarded".into());
}
