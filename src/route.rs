//! The rule table: ordered `[[route]]` entries, each a syslog.conf selector plus optional
//! matchers, deciding which outputs get an event. Pure: `&Event -> output indices`.
//!
//! Selector semantics follow sysklogd/rsyslog: parts joined by `;` are applied left to right to a
//! per-facility severity mask. `fac.sev` adds `sev` and everything more severe, `fac.=sev` adds
//! exactly `sev`, `fac.!sev` removes `sev` and everything more severe, `fac.!=sev` removes
//! exactly `sev`, `fac.none` removes everything, `*` stands for all facilities or severities.
//! So `*.info;auth,authpriv.none` is "info or more severe, except auth and authpriv".

use std::net::IpAddr;
use std::sync::Arc;

use memchr::memmem;

use crate::event::{Event, Facility, Severity};

/// A compiled selector: for each facility code, a bit per severity code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    masks: [u8; 24],
    /// The text it was parsed from, for explanations.
    text: Box<str>,
}

impl Selector {
    /// Parses syslog.conf selector syntax. The error says what is wrong, for config messages.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut masks = [0u8; 24];
        if text.trim().is_empty() {
            return Err("empty selector".into());
        }
        for part in text.split(';') {
            let part = part.trim();
            let (facs, pri) = part
                .split_once('.')
                .ok_or_else(|| format!("{part:?} has no '.': expected facility.severity"))?;
            let mut facilities = Vec::new();
            for f in facs.split(',') {
                let f = f.trim();
                if f == "*" {
                    facilities.extend(0..24usize);
                } else {
                    let fac = Facility::from_name(f).ok_or_else(|| {
                        format!("unknown facility {f:?} (expected kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, security, console, solaris-cron, local0..local7 or *)")
                    })?;
                    facilities.push(usize::from(fac.code()));
                }
            }
            let pri = pri.trim();
            let (negate, rest) = match pri.strip_prefix('!') {
                Some(r) => (true, r),
                None => (false, pri),
            };
            let (exact, name) = match rest.strip_prefix('=') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let bits: u8 = if name == "*" {
                if exact {
                    return Err(format!("{pri:?}: '=*' is not a severity"));
                }
                0xff
            } else if name == "none" {
                if negate || exact {
                    return Err(format!("{pri:?}: 'none' cannot take '!' or '='"));
                }
                for f in &facilities {
                    masks[*f] = 0;
                }
                continue;
            } else {
                let sev = Severity::from_name(name).ok_or_else(|| {
                    format!("unknown severity {name:?} (expected emerg, alert, crit, err, warning, notice, info, debug, none or *)")
                })?;
                if exact {
                    1 << sev.code()
                } else {
                    // This severity and every more severe one (lower codes).
                    ((1u16 << (sev.code() + 1)) - 1) as u8
                }
            };
            for f in &facilities {
                if negate {
                    masks[*f] &= !bits;
                } else {
                    masks[*f] |= bits;
                }
            }
        }
        Ok(Selector {
            masks,
            text: text.trim().into(),
        })
    }

    /// The selector as written in the config.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a message of this facility and severity is selected.
    pub fn matches(&self, facility: Facility, severity: Severity) -> bool {
        self.masks[usize::from(facility.code())] & (1 << severity.code()) != 0
    }
}

/// A field matcher: literal values (exact, or substring for `message`) or a regex.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Any of these values, compared exactly (ASCII case-insensitively for hostnames).
    Exact(Vec<String>),
    /// Any of these substrings.
    Contains(Vec<memmem::Finder<'static>>),
    /// A regular expression, searched anywhere in the field.
    Regex(regex::bytes::Regex),
}

impl Matcher {
    /// Literal values: substrings when `substring`, else exact values.
    pub fn literal(values: Vec<String>, substring: bool) -> Matcher {
        if substring {
            Matcher::Contains(
                values
                    .iter()
                    .map(|v| memmem::Finder::new(v.as_bytes()).into_owned())
                    .collect(),
            )
        } else {
            Matcher::Exact(values)
        }
    }

    /// A regex matcher.
    pub fn regex(pattern: &str) -> Result<Matcher, regex::Error> {
        regex::bytes::Regex::new(pattern).map(Matcher::Regex)
    }

    /// Whether MSG matches, as [`Rule::check`] tests it.
    pub(crate) fn matches_message(&self, message: &[u8]) -> bool {
        self.matches(message, false)
    }

    fn matches(&self, field: &[u8], case_insensitive: bool) -> bool {
        match self {
            Matcher::Exact(values) => values.iter().any(|v| {
                if case_insensitive {
                    v.as_bytes().eq_ignore_ascii_case(field)
                } else {
                    v.as_bytes() == field
                }
            }),
            Matcher::Contains(finders) => finders.iter().any(|f| f.find(field).is_some()),
            Matcher::Regex(re) => re.is_match(field),
        }
    }
}

impl std::fmt::Display for Matcher {
    /// As written in the config: `"a"`, `["a", "b"]` or `{ regex = "..." }`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values: Vec<String> = match self {
            Matcher::Regex(re) => return write!(f, "{{ regex = {:?} }}", re.as_str()),
            Matcher::Exact(v) => v.iter().map(|s| format!("{s:?}")).collect(),
            Matcher::Contains(v) => v
                .iter()
                .map(|n| format!("{:?}", String::from_utf8_lossy(n.needle())))
                .collect(),
        };
        match values.as_slice() {
            [one] => f.write_str(one),
            many => write!(f, "[{}]", many.join(", ")),
        }
    }
}

/// The first matcher of a rule that an event failed, as [`Rule::check`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The selector does not select the event's facility and severity.
    Selector,
    /// The event came from another listener.
    Listener,
    /// HOSTNAME is absent or does not match.
    Hostname,
    /// APP-NAME is absent or does not match.
    AppName,
    /// MSG does not match.
    Message,
    /// No authenticated TLS peer, or its name and fingerprint do not match.
    TlsPeer,
    /// The sender's address is unknown (unix sockets, `--explain`) or outside the networks.
    Source,
}

/// One compiled `[[route]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What the rule's counters are labelled with: its `name`, else its position (`0`, `1`...).
    pub label: Arc<str>,
    /// Facility/severity selector; `None` selects everything.
    pub selector: Option<Selector>,
    /// Only events from these listeners.
    pub listener: Option<Vec<Arc<str>>>,
    /// HOSTNAME matcher (exact values compare case-insensitively, as DNS names do).
    pub hostname: Option<Matcher>,
    /// APP-NAME matcher.
    pub app_name: Option<Matcher>,
    /// MSG matcher.
    pub message: Option<Matcher>,
    /// TLS peer matcher: its certificate name or its `sha256:` fingerprint (never matches
    /// events without an authenticated TLS peer).
    pub tls_peer: Option<Matcher>,
    /// Sender address in any of these networks (never matches unix-socket events).
    pub source: Option<Vec<ipnet::IpNet>>,
    /// Output indices (into `Config::outputs`).
    pub to: Vec<usize>,
    /// Later rules are skipped for an event this rule matched.
    pub stop: bool,
}

impl Rule {
    fn matches(&self, ev: &Event) -> bool {
        self.check(ev).is_ok()
    }

    /// Whether the rule's selector takes events of `pri` (facility × 8 + severity, below
    /// [`PRIS`]): what per-PRI plans (routing's, the alert engine's) are built from.
    pub(crate) fn selects_pri(&self, pri: usize) -> bool {
        match (
            &self.selector,
            Facility::from_code((pri / 8) as u8),
            Severity::from_code((pri % 8) as u8),
        ) {
            (None, _, _) => true,
            (Some(sel), Some(f), Some(s)) => sel.matches(f, s),
            (Some(_), _, _) => false,
        }
    }

    /// True when the selector is all the rule asks of an event (routing plans it per PRI, the
    /// alert engine tests the selector alone).
    pub(crate) fn selector_only(&self) -> bool {
        // Exhaustive, so a new matcher cannot be forgotten here.
        let Rule {
            label: _,
            selector: _,
            listener,
            hostname,
            app_name,
            message,
            tls_peer,
            source,
            to: _,
            stop: _,
        } = self;
        listener.is_none()
            && hostname.is_none()
            && app_name.is_none()
            && message.is_none()
            && tls_peer.is_none()
            && source.is_none()
    }

    /// Checks each matcher in turn; the first one the event fails is the error. The one place
    /// that decides whether a rule matches, for routing and for `--explain` alike.
    pub fn check(&self, ev: &Event) -> Result<(), Mismatch> {
        if let Some(sel) = &self.selector
            && !sel.matches(ev.facility(), ev.severity())
        {
            return Err(Mismatch::Selector);
        }
        if let Some(names) = &self.listener
            && !names.iter().any(|n| **n == *ev.listener)
        {
            return Err(Mismatch::Listener);
        }
        // The field is read (and checked as UTF-8) only when the rule has a matcher for it:
        // most rules have none, and every event goes through every rule.
        let field_ok = |m: &Option<Matcher>, v: fn(&Event) -> Option<&str>, ci: bool| match m {
            None => true,
            Some(m) => v(ev).is_some_and(|v| m.matches(v.as_bytes(), ci)),
        };
        if !field_ok(&self.hostname, Event::hostname, true) {
            return Err(Mismatch::Hostname);
        }
        if !field_ok(&self.app_name, Event::app_name, false) {
            return Err(Mismatch::AppName);
        }
        if let Some(m) = &self.message
            && !m.matches_message(ev.message())
        {
            return Err(Mismatch::Message);
        }
        if let Some(m) = &self.tls_peer {
            let Some(peer) = &ev.tls_peer else {
                return Err(Mismatch::TlsPeer);
            };
            let by_name = peer
                .name
                .as_deref()
                .is_some_and(|n| m.matches(n.as_bytes(), true));
            if !by_name && !m.matches(peer.fingerprint.as_bytes(), true) {
                return Err(Mismatch::TlsPeer);
            }
        }
        if let Some(nets) = &self.source {
            let Some(addr) = ev.source else {
                return Err(Mismatch::Source);
            };
            if !in_networks(nets, addr.ip()) {
                return Err(Mismatch::Source);
            }
        }
        Ok(())
    }

    /// Why `ev` failed `why`, in words naming the matcher and the event's value.
    pub fn explain_mismatch(&self, why: Mismatch, ev: &Event) -> String {
        let quoted = |v: Option<&str>| v.map_or("absent (nil)".to_string(), |v| format!("{v:?}"));
        let m = |m: &Option<Matcher>| m.as_ref().map(ToString::to_string).unwrap_or_default();
        match why {
            Mismatch::Selector => format!(
                "selector {:?} does not select {}.{}",
                self.selector.as_ref().map_or("", Selector::text),
                ev.facility(),
                ev.severity()
            ),
            Mismatch::Listener => format!(
                "listener {:?} is not in [{}]",
                &*ev.listener,
                self.listener
                    .iter()
                    .flatten()
                    .map(|n| &**n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Mismatch::Hostname => format!(
                "hostname {} does not match {}",
                quoted(ev.hostname()),
                m(&self.hostname)
            ),
            Mismatch::AppName => format!(
                "app_name {} does not match {}",
                quoted(ev.app_name()),
                m(&self.app_name)
            ),
            Mismatch::Message => format!(
                "message {:?} does not match {}",
                String::from_utf8_lossy(ev.message()),
                m(&self.message)
            ),
            Mismatch::TlsPeer => match &ev.tls_peer {
                None => format!(
                    "tls_peer {} needs an authenticated TLS client; this message has none",
                    m(&self.tls_peer)
                ),
                Some(p) => format!(
                    "tls_peer: neither name {} nor fingerprint {} matches {}",
                    quoted(p.name.as_deref()),
                    p.fingerprint,
                    m(&self.tls_peer)
                ),
            },
            Mismatch::Source => {
                let nets: Vec<String> = self
                    .source
                    .iter()
                    .flatten()
                    .map(|n| n.to_string())
                    .collect();
                match ev.source {
                    None => format!(
                        "source [{}] needs the sender's address, which is unknown here",
                        nets.join(", ")
                    ),
                    Some(a) => format!("source {} is not in [{}]", a.ip(), nets.join(", ")),
                }
            }
        }
    }
}

/// Whether `ip` lies in any of `nets`. Dual-stack sockets report IPv4 peers as
/// `::ffff:a.b.c.d`; those are matched as IPv4.
pub fn in_networks(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

/// The ordered rule table.
#[derive(Debug, Clone, Default)]
pub struct RuleTable {
    rules: Vec<Rule>,
    /// Per PRI (facility × 8 + severity), the rules that can match such an event, in order:
    /// a rule whose selector is all it asks is listed, already known to match, only for the
    /// PRIs it selects; any other rule is listed for every PRI and checked. Routing a message
    /// is then a lookup and a short walk instead of a check per rule (on a collector's rule set
    /// the checks were 7% of sluice's instructions, issue 18).
    plans: Vec<Vec<Step>>,
}

/// One rule of a PRI's plan.
#[derive(Debug, Clone, Copy)]
struct Step {
    rule: usize,
    /// False when the rule matches every event of this PRI (its selector alone decides).
    check: bool,
}

/// Facility codes (0..=23) times severities (0..=7).
pub(crate) const PRIS: usize = 24 * 8;

impl RuleTable {
    /// A table evaluating `rules` in order.
    pub fn new(rules: Vec<Rule>) -> RuleTable {
        let plans = (0..PRIS)
            .map(|pri| {
                rules
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        if !r.selector_only() {
                            return Some(Step {
                                rule: i,
                                check: true,
                            });
                        }
                        r.selects_pri(pri).then_some(Step {
                            rule: i,
                            check: false,
                        })
                    })
                    .collect()
            })
            .collect();
        RuleTable { rules, plans }
    }

    /// Appends to `outputs` (cleared first) each output index the event goes to, once each, in
    /// first-match order. Returns false when no rule matched (the event is unrouted).
    pub fn route(&self, ev: &Event, outputs: &mut Vec<usize>) -> bool {
        self.route_counting(ev, outputs, &mut [])
    }

    /// [`RuleTable::route`], adding 1 to `hits[i]` for each rule `i` that matched (`hits` may be
    /// shorter than the table: rules beyond it are not counted).
    pub fn route_counting(&self, ev: &Event, outputs: &mut Vec<usize>, hits: &mut [u64]) -> bool {
        outputs.clear();
        let mut matched = false;
        let pri = usize::from(ev.facility().code()) * 8 + usize::from(ev.severity().code());
        let plan = self.plans.get(pri).map_or(&[][..], Vec::as_slice);
        for step in plan {
            let (i, rule) = (step.rule, &self.rules[step.rule]);
            if step.check && !rule.matches(ev) {
                continue;
            }
            matched = true;
            if let Some(h) = hits.get_mut(i) {
                *h += 1;
            }
            for &o in &rule.to {
                if !outputs.contains(&o) {
                    outputs.push(o);
                }
            }
            if rule.stop {
                break;
            }
        }
        matched
    }

    /// What [`RuleTable::route`] does with `ev`, rule by rule: matched or, if not, which
    /// matcher failed; rules after a matching `stop = true` are not evaluated. Pure.
    pub fn explain(&self, ev: &Event) -> Vec<RouteDecision> {
        let mut out = Vec::with_capacity(self.rules.len());
        let mut stopped_by = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let outcome = match stopped_by {
                Some(by) => Outcome::NotEvaluated { stopped_by: by },
                None => match rule.check(ev) {
                    Ok(()) => {
                        if rule.stop {
                            stopped_by = Some(i);
                        }
                        Outcome::Matched
                    }
                    Err(why) => Outcome::NotMatched {
                        why,
                        reason: rule.explain_mismatch(why, ev),
                    },
                },
            };
            out.push(RouteDecision {
                index: i,
                to: rule.to.clone(),
                stop: rule.stop,
                outcome,
            });
        }
        out
    }
}

/// What became of an event at one rule, from [`RuleTable::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    /// The rule's position (`route[index]`).
    pub index: usize,
    /// The rule's outputs.
    pub to: Vec<usize>,
    /// Whether the rule has `stop = true`.
    pub stop: bool,
    /// The verdict.
    pub outcome: Outcome,
}

/// A rule's verdict on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every matcher matched: the event goes to the rule's outputs.
    Matched,
    /// A matcher failed; `reason` says which and why.
    NotMatched {
        /// The failed matcher.
        why: Mismatch,
        /// In words.
        reason: String,
    },
    /// An earlier rule with `stop = true` matched.
    NotEvaluated {
        /// That rule's index.
        stopped_by: usize,
    },
}

/// The outputs the decisions send the event to, once each, in first-match order (as
/// [`RuleTable::route`] gives them).
pub fn outputs_of(decisions: &[RouteDecision]) -> Vec<usize> {
    let mut outputs = Vec::new();
    for d in decisions.iter().filter(|d| d.outcome == Outcome::Matched) {
        for &o in &d.to {
            if !outputs.contains(&o) {
                outputs.push(o);
            }
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Parsed, Protocol, Span};
    use bytes::Bytes;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    fn m(s: &Selector, f: &str, v: &str) -> bool {
        s.matches(
            Facility::from_name(f).unwrap(),
            Severity::from_name(v).unwrap(),
        )
    }

    #[test]
    fn severity_means_that_or_more_severe() {
        let s = sel("mail.warning");
        assert!(m(&s, "mail", "emerg"));
        assert!(m(&s, "mail", "warning"));
        assert!(!m(&s, "mail", "notice"));
        assert!(!m(&s, "auth", "emerg"));
    }

    #[test]
    fn exact_negated_and_none() {
        let s = sel("*.=info");
        assert!(m(&s, "kern", "info") && !m(&s, "kern", "err"));
        let s = sel("mail.*;mail.!err");
        assert!(
            m(&s, "mail", "warning")
                && m(&s, "mail", "debug")
                && !m(&s, "mail", "err")
                && !m(&s, "mail", "crit")
        );
        let s = sel("mail.*;mail.!=info");
        assert!(m(&s, "mail", "debug") && !m(&s, "mail", "info"));
    }

    #[test]
    fn debian_syslog_line() {
        // Debian's /etc/rsyslog.conf: everything info and above except auth and authpriv.
        let s = sel("*.info;auth,authpriv.none");
        assert!(m(&s, "daemon", "info"));
        assert!(m(&s, "local7", "emerg"));
        assert!(!m(&s, "daemon", "debug"));
        assert!(!m(&s, "auth", "emerg"));
        assert!(!m(&s, "authpriv", "info"));
        let s = sel("*.*;auth,authpriv.none");
        assert!(m(&s, "kern", "debug") && !m(&s, "authpriv", "crit"));
        let s = sel("auth,authpriv.*");
        assert!(m(&s, "auth", "debug") && m(&s, "authpriv", "emerg") && !m(&s, "user", "emerg"));
    }

    #[test]
    fn bad_selectors_are_explained() {
        assert!(Selector::parse("auth").unwrap_err().contains("no '.'"));
        assert!(
            Selector::parse("bogus.info")
                .unwrap_err()
                .contains("unknown facility")
        );
        assert!(
            Selector::parse("auth.loud")
                .unwrap_err()
                .contains("unknown severity")
        );
        assert!(Selector::parse("auth.!none").is_err());
        assert!(Selector::parse("").is_err());
    }

    fn event(fac: Facility, sev: Severity, listener: &str, host: &str, msg: &str) -> Event {
        let raw = format!("{host} {msg}");
        let mut parsed = Parsed::unparsed(raw.as_bytes());
        parsed.protocol = Protocol::Rfc3164;
        parsed.facility = fac;
        parsed.severity = sev;
        parsed.hostname = Some(Span::new(0, host.len()));
        parsed.message = Span::new(host.len() + 1, raw.len());
        Event {
            raw: Bytes::from(raw),
            received_at: chrono::Utc::now(),
            source: Some("10.1.2.3:514".parse().unwrap()),
            listener: listener.into(),
            tls_peer: None,
            truncated: false,
            parsed,
        }
    }

    fn rule(selector: Option<&str>, to: &[usize], stop: bool) -> Rule {
        Rule {
            label: "test".into(),
            selector: selector.map(sel),
            listener: None,
            hostname: None,
            app_name: None,
            message: None,
            tls_peer: None,
            source: None,
            to: to.to_vec(),
            stop,
        }
    }

    #[test]
    fn order_stop_and_dedup() {
        let t = RuleTable::new(vec![
            rule(Some("auth,authpriv.*"), &[0], true),
            rule(Some("*.info;auth,authpriv.none"), &[1, 2], false),
            rule(None, &[2], false),
        ]);
        let mut out = Vec::new();
        assert!(t.route(
            &event(Facility::Auth, Severity::Info, "udp", "h", "x"),
            &mut out
        ));
        assert_eq!(out, vec![0]);
        assert!(t.route(
            &event(Facility::Daemon, Severity::Info, "udp", "h", "x"),
            &mut out
        ));
        assert_eq!(out, vec![1, 2]);
        assert!(t.route(
            &event(Facility::Daemon, Severity::Debug, "udp", "h", "x"),
            &mut out
        ));
        assert_eq!(out, vec![2]);
        let t = RuleTable::new(vec![rule(Some("mail.*"), &[0], false)]);
        assert!(!t.route(
            &event(Facility::Daemon, Severity::Debug, "udp", "h", "x"),
            &mut out
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn field_matchers() {
        let mut r = rule(None, &[0], false);
        r.listener = Some(vec!["tcp".into()]);
        r.hostname = Some(Matcher::literal(vec!["WEB1".into()], false));
        r.message = Some(Matcher::literal(vec!["fail".into()], true));
        r.source = Some(vec!["10.0.0.0/8".parse().unwrap()]);
        let t = RuleTable::new(vec![r.clone()]);
        let mut out = Vec::new();
        assert!(t.route(
            &event(
                Facility::User,
                Severity::Info,
                "tcp",
                "web1",
                "login failed"
            ),
            &mut out
        ));
        assert!(!t.route(
            &event(
                Facility::User,
                Severity::Info,
                "udp",
                "web1",
                "login failed"
            ),
            &mut out
        ));
        assert!(!t.route(
            &event(
                Facility::User,
                Severity::Info,
                "tcp",
                "web2",
                "login failed"
            ),
            &mut out
        ));
        assert!(!t.route(
            &event(Facility::User, Severity::Info, "tcp", "web1", "login ok"),
            &mut out
        ));
        let mut ev = event(
            Facility::User,
            Severity::Info,
            "tcp",
            "web1",
            "login failed",
        );
        ev.source = Some("192.168.1.1:514".parse().unwrap());
        assert!(!t.route(&ev, &mut out));
        ev.source = Some("[::ffff:10.9.9.9]:514".parse().unwrap());
        assert!(t.route(&ev, &mut out));
        ev.source = None;
        assert!(!t.route(&ev, &mut out));

        let mut r = rule(None, &[0], false);
        r.message = Some(Matcher::regex("fail(ed|ure)").unwrap());
        let t = RuleTable::new(vec![r]);
        assert!(t.route(
            &event(Facility::User, Severity::Info, "tcp", "h", "disk failure"),
            &mut out
        ));
        assert!(!t.route(
            &event(Facility::User, Severity::Info, "tcp", "h", "disk fail"),
            &mut out
        ));
    }

    #[test]
    fn explain_names_the_failed_matcher_and_agrees_with_route() {
        let mut host = rule(None, &[1], false);
        host.hostname = Some(Matcher::literal(vec!["x".into()], false));
        let mut listener = rule(None, &[2], false);
        listener.listener = Some(vec!["tcp".into()]);
        let mut source = rule(None, &[3], false);
        source.source = Some(vec!["10.0.0.0/8".parse().unwrap()]);
        let t = RuleTable::new(vec![
            rule(Some("mail.*"), &[0], false),
            host,
            listener,
            source,
            rule(Some("*.*"), &[4, 0], true),
            rule(None, &[5], false),
        ]);
        let mut ev = event(Facility::User, Severity::Notice, "udp", "web1", "hi");
        ev.source = None;
        let d = t.explain(&ev);
        let reason = |i: usize| match &d[i].outcome {
            Outcome::NotMatched { reason, .. } => reason.clone(),
            o => panic!("route[{i}]: {o:?}"),
        };
        assert_eq!(reason(0), "selector \"mail.*\" does not select user.notice");
        assert_eq!(reason(1), "hostname \"web1\" does not match \"x\"");
        assert_eq!(reason(2), "listener \"udp\" is not in [tcp]");
        assert!(reason(3).contains("unknown"), "{}", reason(3));
        assert_eq!(d[4].outcome, Outcome::Matched);
        assert_eq!(d[5].outcome, Outcome::NotEvaluated { stopped_by: 4 });
        let mut out = Vec::new();
        assert!(t.route(&ev, &mut out));
        assert_eq!(outputs_of(&d), out);
        assert_eq!(out, vec![4, 0]);
        ev.source = Some("192.168.1.1:514".parse().unwrap());
        assert!(matches!(
            &t.explain(&ev)[3].outcome,
            Outcome::NotMatched { why: Mismatch::Source, reason } if reason == "source 192.168.1.1 is not in [10.0.0.0/8]"
        ));
    }

    /// Routing as it was before the per-PRI plans: every rule checked in order.
    fn route_rule_by_rule(rules: &[Rule], ev: &Event, hits: &mut [u64]) -> (bool, Vec<usize>) {
        let mut outputs = Vec::new();
        let mut matched = false;
        for (i, rule) in rules.iter().enumerate() {
            if rule.check(ev).is_err() {
                continue;
            }
            matched = true;
            hits[i] += 1;
            for &o in &rule.to {
                if !outputs.contains(&o) {
                    outputs.push(o);
                }
            }
            if rule.stop {
                break;
            }
        }
        (matched, outputs)
    }

    proptest::proptest! {
        /// The per-PRI plans route every event as checking each rule in turn does: the same
        /// outputs in the same order, the same rule counts, stops and matchers included.
        #[test]
        fn plans_route_as_checking_every_rule(
            specs in proptest::collection::vec((0usize..6, 0usize..3, proptest::bool::ANY, 0usize..4), 0..8),
            events in proptest::collection::vec((0u8..24, 0u8..8, 0usize..3), 1..40),
        ) {
            const SELECTORS: [Option<&str>; 6] = [
                None,
                Some("*.*;auth,authpriv.none"),
                Some("auth,authpriv.*"),
                Some("kern.*"),
                Some("*.=info"),
                Some("mail.warning;local7.*"),
            ];
            const HOSTS: [&str; 3] = ["web1", "db1", "edge"];
            let rules: Vec<Rule> = specs
                .iter()
                .map(|&(s, host, stop, to)| {
                    let mut r = rule(SELECTORS[s], &[to, (to + 1) % 4], stop);
                    // A second matcher: the rule must then be checked, not planned.
                    if host > 0 {
                        r.hostname = Some(Matcher::literal(vec![HOSTS[host].into()], false));
                    }
                    r
                })
                .collect();
            let table = RuleTable::new(rules.clone());
            for &(f, v, h) in &events {
                let ev = event(
                    Facility::from_code(f).unwrap(),
                    Severity::from_code(v).unwrap(),
                    "l",
                    HOSTS[h],
                    "m",
                );
                let (mut hits, mut want_hits) = (vec![0; rules.len()], vec![0; rules.len()]);
                let mut outputs = Vec::new();
                let matched = table.route_counting(&ev, &mut outputs, &mut hits);
                let (want_matched, want_outputs) = route_rule_by_rule(&rules, &ev, &mut want_hits);
                proptest::prop_assert_eq!((matched, &outputs, &hits), (want_matched, &want_outputs, &want_hits));
            }
        }
    }
}
