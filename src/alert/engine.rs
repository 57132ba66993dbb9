//! The rules' state, and the decisions: counted per window and group, judged when a window
//! ends, with `for`, de-duplication, resolution and re-sending.
//!
//! Time is whatever the caller says: every call takes `now`. The engine's thread passes the
//! wall clock; tests pass a simulated one, so an hour of traffic is judged in milliseconds.
//!
//! Windows are tumbling: a rule's first window starts at the first call, and each following
//! one where the last ended. When `now` passes a window's end, each group's count over it is
//! judged, and the counts start again. A group is a distinct set of `by` values; a group with
//! no events for [`FORGET_WINDOWS`] windows (or `history`, if longer) is forgotten, resolving
//! its alert if one was firing.
//!
//! Memory: per rule, at most `max_groups` groups, each holding its counts, its alert state and,
//! for z-score rules, `history` values (8 bytes each); per new-pattern rule, at most
//! `max_patterns` templates of at most [`super::pattern::MAX_TEMPLATE_BYTES`] bytes each, and
//! 64 recent messages of up to that size (32 KiB), the last of each length modulo 64; per
//! engine, the message matchers' verdicts for the first new-pattern rule's 64 recent messages
//! (24 bytes each).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hashbrown::HashTable;

use super::pattern::{PatternTable, SHAPES, Shape, mask_into};
use super::{AlertKind, AlertRule, Direction, GroupField, MIN_HISTORY, Series, same_bytes};
use crate::event::{Event, Severity};
use crate::metrics::{self, AlertMetrics};
use crate::route::{Matcher, PRIS, Rule, Selector};

/// Windows without events after which a group is forgotten (at least; z-score rules keep a
/// group for `history` windows).
pub const FORGET_WINDOWS: u64 = 60;
/// Windows judged one by one when the clock jumps (a suspended machine); beyond, the empty
/// windows between are skipped.
const MAX_CATCH_UP: u32 = 1000;

/// Whether a notice opens or closes an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// The condition holds (held for `for`).
    Firing,
    /// The condition cleared.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`.
    pub fn name(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// A firing, a re-send of one, or a resolution: what becomes an alert event.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The rule's index.
    pub rule: usize,
    /// The rule's name.
    pub alertname: Arc<str>,
    /// Firing or resolved.
    pub state: AlertState,
    /// A re-send of a firing alert (only Alertmanager wants those).
    pub resend: bool,
    /// The group's labels (`by` fields and values; `pattern` for new patterns).
    pub labels: Vec<(String, String)>,
    /// `severity` label.
    pub severity: String,
    /// What happened, in a few words (`rate spike`, `new pattern`).
    pub summary: String,
    /// The value judged.
    pub value: f64,
    /// What was expected instead, in words.
    pub expected: String,
    /// When the alert started firing.
    pub starts_at: DateTime<Utc>,
    /// When it ends: the resolution time, or, while firing, when a receiver may consider it
    /// resolved if no re-send came.
    pub ends_at: DateTime<Utc>,
}

impl Notice {
    /// The description annotation: what, the value and the expected value.
    pub fn description(&self) -> String {
        let group: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let of = if group.is_empty() {
            String::new()
        } else {
            format!(" for {}", group.join(", "))
        };
        format!(
            "{}{of}: value {} (expected {})",
            self.summary,
            fmt_value(self.value),
            self.expected
        )
    }
}

/// A value for people: whole numbers without decimals, others with up to 4.
pub fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// What a closed window's value means for a group: `Some` when the condition holds.
struct Judgement {
    value: f64,
    expected: String,
    summary: String,
    severity: Option<String>,
}

/// A group's key, inline up to [`INLINE_KEY_BYTES`] (a host name; a host and a program), so
/// that a lookup compares it where the group is instead of following a pointer to it (`perf
/// annotate` put a third of `Engine::count`'s samples on the lookups' compares).
#[derive(Debug)]
enum StoredKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

const INLINE_KEY_BYTES: usize = 30;

impl StoredKey {
    fn new(key: &[u8]) -> StoredKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY_BYTES => {
                let mut bytes = [0; INLINE_KEY_BYTES];
                bytes[..key.len()].copy_from_slice(key);
                StoredKey::Inline { len, bytes }
            }
            _ => StoredKey::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredKey::Heap(b) => b,
        }
    }
}

#[derive(Debug)]
struct Group {
    /// The `by` values, with a NUL between them.
    key: StoredKey,
    /// `key`'s hash (the engine's hasher).
    hash: u64,
    labels: Vec<(String, String)>,
    /// Events counted in the current window (the rule's matchers).
    count: u64,
    /// Events of the total selector in the current window (ratios), or errors among `count`
    /// (baseline rules).
    total: u64,
    /// When the group was first seen: its first window is partial, and not judged on drops.
    born: DateTime<Utc>,
    history: VecDeque<f64>,
    /// Windows in a row judged anomalous (z-score rules), kept out of the history.
    anomalous_run: usize,
    idle_windows: u64,
    pending_since: Option<DateTime<Utc>>,
    /// Boxed: most groups never fire, and a smaller group keeps more of a rule's table in
    /// the caches.
    firing: Option<Box<Firing>>,
}

#[derive(Debug, Clone)]
struct Firing {
    started: DateTime<Utc>,
    last_sent: DateTime<Utc>,
    last: Sent,
}

/// The judgement an alert fired (or was last re-sent) with.
#[derive(Debug, Clone)]
struct Sent {
    value: f64,
    expected: String,
    summary: String,
    severity: String,
}

/// What one event adds to its group's `count` and `total`: to `count` when the rule's
/// matchers took it, to `total` when the total selector did (ratios) or when it is an error
/// (baseline rules).
fn tally(kind: &AlertKind, severity: Severity, counted: bool, in_total: bool) -> (u64, u64) {
    let total = match kind {
        AlertKind::Baseline { .. } => counted && severity <= Severity::Err,
        _ => in_total,
    };
    (u64::from(counted), u64::from(total))
}

/// A rule without `by`'s counts since they were last put in its one group. Every event of
/// such a rule goes to that group, so its events are added up here and the group is looked
/// up once per batch ([`RuleState::settle`]), not once per event.
#[derive(Debug, Default)]
struct Unkeyed {
    events: u64,
    count: u64,
    total: u64,
    /// When they were counted (`None`: nothing is waiting).
    at: Option<DateTime<Utc>>,
}

/// A rule's matchers as checked for each event: one with a selector and nothing else (most
/// rules) tests the facility/severity mask and skips the other matchers' tests.
enum Check {
    Selector(Option<Selector>),
    Rule(Box<Rule>),
    /// A `message` matcher whose values hold no digit decides alike for every message of one
    /// [`Shape`]: it is searched once per shape ([`Shapes`]), the other matchers (`rest`) per
    /// event. On loadgen's stream, `message = "Out of memory"` was a sixth of the engine's
    /// instructions (a search of 230 bytes per message).
    ByShape {
        /// The other matchers: a selector alone (the usual), or a rule without `message`.
        rest: Result<Option<Selector>, Box<Rule>>,
        message: Matcher,
        /// Its bit in [`Verdicts`].
        bit: u32,
    },
}

impl Check {
    /// `r`'s check; a message matcher is decided by shape when `by_shape` and bits (of
    /// [`Verdicts`]) are left, taking the next from `bits`.
    fn of(r: &Rule, by_shape: bool, bits: &mut u32) -> Check {
        if r.selector_only() {
            return Check::Selector(r.selector.clone());
        }
        if let Some(message) = &r.message
            && by_shape
            && *bits < u64::BITS
            && same_for_a_shape(message)
        {
            *bits += 1;
            let rest = Rule {
                message: None,
                ..r.clone()
            };
            return Check::ByShape {
                rest: match rest.selector_only() {
                    true => Ok(rest.selector),
                    false => Err(Box::new(rest)),
                },
                message: message.clone(),
                bit: *bits - 1,
            };
        }
        Check::Rule(Box::new(r.clone()))
    }

    /// In line: made about ten times a message, mostly a selector's test (out of line, the
    /// calls cost more than the tests).
    #[inline]
    fn matches(&self, ev: &Event, shapes: &mut Shapes) -> bool {
        match self {
            Check::Selector(None) => true,
            Check::Selector(Some(s)) => s.matches(ev.facility(), ev.severity()),
            Check::Rule(r) => r.check(ev).is_ok(),
            Check::ByShape { rest, message, bit } => by_shape(rest, message, *bit, ev, shapes),
        }
    }
}

/// [`Check::ByShape`]'s test.
#[inline(never)]
fn by_shape(
    rest: &Result<Option<Selector>, Box<Rule>>,
    message: &Matcher,
    bit: u32,
    ev: &Event,
    shapes: &mut Shapes,
) -> bool {
    let rest_ok = match rest {
        Ok(None) => true,
        Ok(Some(s)) => s.matches(ev.facility(), ev.severity()),
        Err(r) => r.check(ev).is_ok(),
    };
    rest_ok && shapes.decide(bit, || message.matches_message(ev.message()))
}

/// Whether `m` decides alike for two messages that differ only where both hold digits: a
/// literal without digits (an occurrence of it, or a message equal to it, covers no digit, so
/// no byte that differs). Not a regex, which may look at digits.
fn same_for_a_shape(m: &Matcher) -> bool {
    match m {
        Matcher::Exact(values) => values
            .iter()
            .all(|v| !v.bytes().any(|b| b.is_ascii_digit())),
        Matcher::Contains(finders) => finders
            .iter()
            .all(|f| !f.needle().iter().any(u8::is_ascii_digit)),
        Matcher::Regex(_) => false,
    }
}

/// What [`Check::ByShape`] matchers decided for a [`Shape`]'s messages.
#[derive(Debug, Default, Clone, Copy)]
struct Verdicts {
    /// The shape's generation they hold for (0: none).
    generation: u64,
    /// Per matcher bit: decided, and matched.
    known: u64,
    matched: u64,
}

/// The event's [`Shape`], from the engine's first new-pattern rule (counted first), and the
/// verdicts per shape.
#[derive(Default)]
struct Shapes {
    /// The event's shape, once that rule has looked at it (`None`: not known).
    current: Option<Shape>,
    /// By `Shape::entry`.
    verdicts: Vec<Verdicts>,
}

impl Shapes {
    /// Matcher `bit`'s verdict for the event: the one for its shape, else `decide()` (kept
    /// for the shape when it is known).
    fn decide(&mut self, bit: u32, decide: impl FnOnce() -> bool) -> bool {
        let Some(shape) = self.current else {
            return decide();
        };
        if self.verdicts.is_empty() {
            self.verdicts = vec![Verdicts::default(); SHAPES];
        }
        let Some(v) = self.verdicts.get_mut(shape.entry) else {
            return decide();
        };
        if v.generation != shape.generation.get() {
            *v = Verdicts {
                generation: shape.generation.get(),
                ..Verdicts::default()
            };
        }
        let mask = 1u64 << bit;
        if v.known & mask == 0 {
            v.known |= mask;
            if decide() {
                v.matched |= mask;
            }
        }
        v.matched & mask != 0
    }
}

/// One rule's state.
struct RuleState {
    rule: Arc<AlertRule>,
    /// The rule's matchers, and its total selector's (ratios).
    counted: Check,
    in_total: Option<Check>,
    /// The engine's first new-pattern rule: it tells the event's [`Shape`].
    gives_shape: bool,
    metrics: Arc<AlertMetrics>,
    window_start: Option<DateTime<Utc>>,
    /// The earliest time at which [`RuleState::advance`] has something to do: a window's end,
    /// a re-send, a new-pattern alert's resolution (`None`: at once). Batches come many times
    /// a second; most of them end nothing.
    next_due: Option<DateTime<Utc>>,
    /// By `Group::key`, looked up with the key the engine made for the event.
    groups: HashTable<Group>,
    /// The key id ([`GroupKey::id`]) and the bucket of the group last found, while `groups`
    /// has not changed since (an insert moves groups, and sets it; a removal clears it): the
    /// next event of that key goes there without a lookup.
    last_group: Option<(u64, usize)>,
    /// Which of the engine's group keys (one per distinct `by` list) this rule's groups use.
    key_slot: usize,
    /// Reused for each event's template: no allocation per event.
    template_buf: Vec<u8>,
    /// Events counted since the counter was last published (per batch, not per event).
    events_unpublished: u64,
    /// Events refused a group (or a new-pattern alert) since then.
    refused_unpublished: u64,
    /// New-pattern rules: lines skipped while the engine was behind, since then.
    skipped_unpublished: u64,
    /// New-pattern rules: the table's `evicted` when last published.
    evicted_published: u64,
    /// A rule without `by`: counts not yet in its group.
    unkeyed: Unkeyed,
    /// New-pattern rules: the templates seen.
    patterns: Option<PatternTable>,
    /// New-pattern rules: alerts open now, by template, with when they fired.
    open_patterns: HashMap<Vec<u8>, DateTime<Utc>>,
    patterns_changed: bool,
}

/// Every rule's state.
pub struct Engine {
    rules: Vec<RuleState>,
    notices: Vec<Notice>,
    /// One per distinct `by` list: made once per event for every rule that groups by it.
    keys: Vec<GroupKey>,
    /// Hashes group keys: foldhash, randomly seeded. Senders choose the values, but the
    /// lookups compare the keys' bytes and each table holds at most `max_groups`, so a
    /// collision costs time within that bound, never a wrong count.
    hasher: foldhash::fast::RandomState,
    /// Bumped at every event: a key made for an earlier event is made again.
    event_seq: u64,
    /// Per PRI (facility × 8 + severity), the rules an event of that PRI can feed: those whose
    /// selector, or total selector, takes it, less those of `by_pri`. An event skips the others
    /// without a test (on loadgen's stream, 4 of the bench's 10 rules, and 1 more counted per
    /// PRI). The rule that gives the event's shape comes first; the others in config order.
    plans: Vec<Vec<u32>>,
    shapes: Shapes,
    /// Whether the engine has fallen behind: see [`Engine::set_behind`].
    behind: bool,
    /// Rules that an event's PRI decides whole (no `by`, a selector and nothing else: `kind =
    /// "rate"`, `selector = "kern.*"`), left out of `plans`: they are given the events counted
    /// per PRI ([`PriCounts`]) once per batch, not each event.
    by_pri: Vec<u32>,
    pri_counts: PriCounts,
}

/// Events per PRI since the rules in `Engine::by_pri` were last given them.
#[derive(Default)]
struct PriCounts {
    /// When they were counted (`None`: nothing is waiting).
    at: Option<DateTime<Utc>>,
    /// Per PRI (made on first use).
    events: Vec<u64>,
    /// The PRIs counted, once each.
    seen: Vec<u8>,
}

/// Whether an event's PRI decides everything `rule` does with it.
fn decided_by_pri(rule: &AlertRule) -> bool {
    rule.by.is_empty()
        && !matches!(rule.kind, AlertKind::NewPattern { .. })
        && rule.matchers.selector_only()
        && rule.total.as_ref().is_none_or(Rule::selector_only)
}

/// Per PRI, the indices of the rules whose `selector` or `total`'s selector takes it.
fn plans(rules: &[Arc<AlertRule>]) -> Vec<Vec<u32>> {
    (0..PRIS)
        .map(|pri| {
            (0u32..)
                .zip(rules)
                .filter(|(_, r)| {
                    r.matchers.selects_pri(pri)
                        || r.total.as_ref().is_some_and(|t| t.selects_pri(pri))
                })
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

/// An event's group key for one `by` list: the `by` values with a NUL between them, made at
/// most once per event, and made anew only when they change. Lines come in runs from one
/// sender (a connection's reads, a host's burst), so when `by` holds header fields only, their
/// bytes are compared with the key's values first: when equal, the key, its hash and its `id`
/// stay, and each rule counts into the group it last found for that id
/// ([`RuleState::last_group`]). On loadgen's stream (one sender) that skipped hashing and
/// four table lookups a message.
struct GroupKey {
    by: Vec<GroupField>,
    /// The key (reused: no allocation per event).
    bytes: Vec<u8>,
    /// Where each value ends in `bytes`; shorter than `by` when the values cannot be compared
    /// with an event's bytes: before the first event, and when `by` holds a field that is not
    /// in the header.
    ends: Vec<u32>,
    hash: u64,
    /// Bumped whenever the key is made anew: one id, one key. 0 is left to the empty key of
    /// rules without `by`.
    id: u64,
    /// The `event_seq` it was made for.
    made_for: u64,
}

impl GroupKey {
    fn new(by: Vec<GroupField>) -> GroupKey {
        GroupKey {
            by,
            bytes: Vec::new(),
            ends: Vec::new(),
            hash: 0,
            id: 0,
            made_for: 0,
        }
    }

    /// The key of `ev` (event number `seq`), its hash and its id.
    #[inline]
    fn make(
        &mut self,
        ev: &Event,
        seq: u64,
        hasher: &foldhash::fast::RandomState,
    ) -> (&[u8], u64, u64) {
        if self.made_for != seq {
            self.made_for = seq;
            if !self.same_values(ev) {
                self.make_anew(ev, hasher);
            }
        }
        (&self.bytes, self.hash, self.id)
    }

    /// Whether `ev`'s `by` fields hold the key's values. Their bytes as received are compared:
    /// a value in the key is UTF-8 or empty (what [`GroupField::span`] keeps), so bytes equal
    /// to it are that value.
    #[inline]
    fn same_values(&self, ev: &Event) -> bool {
        if self.ends.len() != self.by.len() {
            return false;
        }
        let mut start = 0;
        for (f, &end) in self.by.iter().zip(&self.ends) {
            let (Some(span), Some(value)) = (f.raw_span(ev), self.bytes.get(start..end as usize))
            else {
                return false;
            };
            if !same_bytes(value, span.slice(&ev.raw)) {
                return false;
            }
            // Past the NUL.
            start = end as usize + 1;
        }
        true
    }

    /// Makes the key of `ev` under a new id.
    fn make_anew(&mut self, ev: &Event, hasher: &foldhash::fast::RandomState) {
        self.bytes.clear();
        self.ends.clear();
        let mut comparable = true;
        for (k, f) in self.by.iter().enumerate() {
            if k > 0 {
                self.bytes.push(0);
            }
            match f.span(ev) {
                Some(span) => self.bytes.extend_from_slice(span.slice(&ev.raw)),
                None => {
                    comparable = false;
                    f.write_value(ev, &mut self.bytes);
                }
            }
            self.ends.push(self.bytes.len() as u32);
        }
        if !comparable {
            self.ends.clear();
        }
        self.hash = hasher.hash_one(&self.bytes);
        self.id += 1;
    }
}

fn span(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

impl Engine {
    /// An engine for `rules`, counting into `metrics` (one per rule, in order). New-pattern
    /// rules load the table saved in their state file, if any: a restart does not alert again
    /// on what was seen before.
    pub fn new(rules: &[Arc<AlertRule>], metrics: Vec<Arc<AlertMetrics>>) -> Engine {
        let mut keys: Vec<GroupKey> = Vec::new();
        let by_pri: Vec<u32> = (0u32..)
            .zip(rules)
            .filter(|(_, r)| decided_by_pri(r))
            .map(|(i, _)| i)
            .collect();
        let mut plans = plans(rules);
        for plan in &mut plans {
            plan.retain(|i| !by_pri.contains(i));
        }
        let shape_rule =
            (rules.iter()).position(|r| matches!(r.kind, AlertKind::NewPattern { .. }));
        if let Some(first) = shape_rule.map(|i| i as u32) {
            for plan in &mut plans {
                if let Some(at) = plan.iter().position(|&i| i == first) {
                    plan[..=at].rotate_right(1);
                }
            }
        }
        let mut bits = 0;
        let rules = rules
            .iter()
            .zip(metrics.into_iter().chain(std::iter::repeat_with(Arc::default)))
            .enumerate()
            .map(|(index, (rule, metrics))| {
                let patterns = match &rule.kind {
                    AlertKind::NewPattern {
                        max_patterns,
                        state_file,
                        ..
                    } => Some(
                        state_file
                            .as_ref()
                            .and_then(|f| match PatternTable::load(f, *max_patterns) {
                                Ok(t) => Some(t),
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                                Err(e) => {
                                    tracing::warn!(alert = %rule.name, file = %f.display(), error = %e,
                                        "alert: cannot read the saved patterns; starting empty");
                                    None
                                }
                            })
                            .unwrap_or_else(|| PatternTable::new(*max_patterns)),
                    ),
                    _ => None,
                };
                let key_slot = keys.iter().position(|k| k.by == rule.by).unwrap_or_else(|| {
                    keys.push(GroupKey::new(rule.by.clone()));
                    keys.len() - 1
                });
                RuleState {
                    rule: rule.clone(),
                    counted: Check::of(&rule.matchers, shape_rule.is_some(), &mut bits),
                    in_total: (rule.total.as_ref())
                        .map(|t| Check::of(t, shape_rule.is_some(), &mut bits)),
                    gives_shape: shape_rule == Some(index),
                    metrics,
                    window_start: None,
                    next_due: None,
                    groups: HashTable::new(),
                    last_group: None,
                    key_slot,
                    template_buf: Vec::new(),
                    events_unpublished: 0,
                    refused_unpublished: 0,
                    skipped_unpublished: 0,
                    evicted_published: 0,
                    unkeyed: Unkeyed::default(),
                    patterns,
                    open_patterns: HashMap::new(),
                    patterns_changed: false,
                }
            })
            .collect();
        Engine {
            plans,
            rules,
            notices: Vec::new(),
            keys,
            hasher: foldhash::fast::RandomState::default(),
            event_seq: 0,
            shapes: Shapes::default(),
            behind: false,
            by_pri,
            pri_counts: PriCounts::default(),
        }
    }

    /// Whether the engine has fallen behind its queue. While it has, a new-pattern rule
    /// counts a line whose template it knows by shape ([`PatternTable::observe_same_shape`])
    /// and skips the others (counted in `patterns_skipped`) instead of masking them: masking
    /// is most of the engine's work on a stream of ever new lines, and shedding it keeps the
    /// queue from dropping lines that every other rule must count. True when it has just
    /// fallen behind.
    pub fn set_behind(&mut self, behind: bool) -> bool {
        let fell = behind && !self.behind;
        self.behind = behind;
        fell
    }

    /// Counts `ev` into every rule it feeds, at time `now` (windows that ended before `now`
    /// are judged first).
    pub fn observe(&mut self, ev: &Event, now: DateTime<Utc>) {
        self.advance(now);
        self.count(ev, now);
    }

    /// [`observe`](Self::observe) for a caller that has already called
    /// [`advance`](Self::advance) with this `now`: a batch received at one instant is advanced
    /// once, not once per event.
    pub fn count(&mut self, ev: &Event, now: DateTime<Utc>) {
        self.event_seq += 1;
        let pri = usize::from(ev.facility().code()) * 8 + usize::from(ev.severity().code());
        if !self.by_pri.is_empty() {
            self.count_pri(pri, now);
        }
        let mut keys = Keys {
            keys: &mut self.keys,
            hasher: &self.hasher,
            seq: self.event_seq,
        };
        self.shapes.current = None;
        for &i in self.plans.get(pri).map_or(&[][..], Vec::as_slice) {
            let i = i as usize;
            if let Some(st) = self.rules.get_mut(i) {
                let ctx = (&mut self.shapes, self.behind);
                st.observe(i, &mut keys, ctx, ev, now, &mut self.notices);
            }
        }
    }

    /// Counts an event of `pri` for the rules of `by_pri`.
    #[inline]
    fn count_pri(&mut self, pri: usize, now: DateTime<Utc>) {
        if self.pri_counts.at != Some(now) {
            self.give_pri_counts();
            let p = &mut self.pri_counts;
            p.at = Some(now);
            if p.events.is_empty() {
                p.events = vec![0; PRIS];
            }
        }
        let p = &mut self.pri_counts;
        if let Some(n) = p.events.get_mut(pri) {
            if *n == 0 {
                p.seen.push(pri as u8);
            }
            *n += 1;
        }
    }

    /// Gives the rules of `by_pri` the events counted per PRI.
    fn give_pri_counts(&mut self) {
        let p = &mut self.pri_counts;
        let Some(at) = p.at.take() else {
            return;
        };
        for pri in p.seen.drain(..) {
            let pri = usize::from(pri);
            let Some(n) = p.events.get_mut(pri).map(std::mem::take) else {
                continue;
            };
            let severity = Severity::from_code((pri % 8) as u8).unwrap_or(Severity::Debug);
            for &i in &self.by_pri {
                let Some(st) = self.rules.get_mut(i as usize) else {
                    continue;
                };
                let rule = &*st.rule;
                let counted = rule.matchers.selects_pri(pri);
                let in_total = rule.total.as_ref().is_some_and(|t| t.selects_pri(pri));
                if !counted && !in_total {
                    continue;
                }
                if counted {
                    st.events_unpublished += n;
                }
                let (count, total) = tally(&rule.kind, severity, counted, in_total);
                st.add_unkeyed(n, (count * n, total * n), at, &self.hasher);
            }
        }
    }

    /// Judges every window that ended by `now`, resolves what cleared, re-sends what still
    /// fires.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        self.give_pri_counts();
        for (i, st) in self.rules.iter_mut().enumerate() {
            st.settle(&self.hasher);
            st.publish();
            if st.next_due.is_none_or(|due| now >= due) {
                st.advance(i, now, &mut self.notices);
            }
        }
    }

    /// Adds the events counted since the last call to the rules' `events` counters (done at
    /// every [`advance`](Self::advance) too).
    pub fn publish(&mut self) {
        self.give_pri_counts();
        for st in &mut self.rules {
            st.settle(&self.hasher);
            st.publish();
        }
    }

    /// The notices produced since the last call, in order.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Writes each new-pattern rule's table to its state file, if it changed.
    pub fn save(&mut self) {
        for st in &mut self.rules {
            let (
                Some(table),
                AlertKind::NewPattern {
                    state_file: Some(f),
                    ..
                },
            ) = (&st.patterns, &st.rule.kind)
            else {
                continue;
            };
            if !st.patterns_changed {
                continue;
            }
            match table.save(f) {
                Ok(()) => st.patterns_changed = false,
                Err(e) => {
                    tracing::warn!(alert = %st.rule.name, file = %f.display(), error = %e,
                        "alert: cannot save the patterns")
                }
            }
        }
    }

    /// Templates a new-pattern rule holds (tests, `--learn-baseline`).
    pub fn patterns(&self, rule: usize) -> Option<&PatternTable> {
        self.rules.get(rule)?.patterns.as_ref()
    }

    /// Alerts firing now, per rule.
    pub fn firing(&self, rule: usize) -> usize {
        self.rules.get(rule).map_or(0, |st| {
            st.groups.iter().filter(|g| g.firing.is_some()).count() + st.open_patterns.len()
        })
    }
}

/// The engine's group keys for the event being counted.
struct Keys<'a> {
    keys: &'a mut [GroupKey],
    hasher: &'a foldhash::fast::RandomState,
    seq: u64,
}

impl RuleState {
    fn observe(
        &mut self,
        index: usize,
        keys: &mut Keys<'_>,
        (shapes, behind): (&mut Shapes, bool),
        ev: &Event,
        now: DateTime<Utc>,
        out: &mut Vec<Notice>,
    ) {
        let rule = &*self.rule;
        let counted = self.counted.matches(ev, shapes);
        let in_total = (self.in_total.as_ref()).is_some_and(|t| t.matches(ev, shapes));
        if !counted && !in_total {
            return;
        }
        if counted {
            self.events_unpublished += 1;
        }
        if let Some(table) = &mut self.patterns {
            if !counted {
                return;
            }
            self.patterns_changed = true;
            let message = ev.message();
            if let Some(shape) = table.observe_same_shape(message) {
                if self.gives_shape {
                    shapes.current = Some(shape);
                }
                return;
            }
            if behind {
                self.skipped_unpublished += 1;
                return;
            }
            mask_into(message, &mut self.template_buf);
            let template = &self.template_buf;
            let new = table.observe(template);
            let shape = table.remember(message);
            if self.gives_shape {
                shapes.current = shape;
            }
            let AlertKind::NewPattern { warmup_events, .. } = rule.kind else {
                return;
            };
            if !new || table.events <= warmup_events {
                return;
            }
            if self.open_patterns.len() >= rule.max_groups {
                self.refused_unpublished += 1;
                return;
            }
            let text = String::from_utf8_lossy(template).into_owned();
            self.open_patterns.insert(template.clone(), now);
            let resolves = now + span(rule.window);
            self.next_due = Some(self.next_due.map_or(resolves, |d| d.min(resolves)));
            metrics::add(&self.metrics.fired, 1);
            self.metrics
                .firing
                .store(self.open_patterns.len() as u64, Ordering::Relaxed);
            out.push(Notice {
                rule: index,
                alertname: rule.name.clone(),
                state: AlertState::Firing,
                resend: false,
                labels: vec![("pattern".into(), text)],
                severity: rule.severity.clone().unwrap_or_else(|| "warning".into()),
                summary: "new pattern".into(),
                value: 1.0,
                expected: format!("one of {} known patterns", table.len() - 1),
                starts_at: now,
                ends_at: now + span(rule.window),
            });
            return;
        }
        let (count, total) = tally(&rule.kind, ev.severity(), counted, in_total);
        if rule.by.is_empty() {
            self.add_unkeyed(1, (count, total), now, keys.hasher);
            return;
        }
        let Some(key) = keys.keys.get_mut(self.key_slot) else {
            return;
        };
        let made = key.make(ev, keys.seq, keys.hasher);
        self.add_to_group(made, 1, (count, total), now);
    }

    /// Adds `events` events' counts to those of a rule without `by`, counted at `now`.
    #[inline]
    fn add_unkeyed(
        &mut self,
        events: u64,
        (count, total): (u64, u64),
        now: DateTime<Utc>,
        hasher: &foldhash::fast::RandomState,
    ) {
        if self.unkeyed.at.is_some_and(|at| at != now) {
            self.settle(hasher);
        }
        let u = &mut self.unkeyed;
        u.events += events;
        u.count += count;
        u.total += total;
        u.at = Some(now);
    }

    /// Puts the counts a rule without `by` added up into its group.
    fn settle(&mut self, hasher: &foldhash::fast::RandomState) {
        let Some(at) = self.unkeyed.at.take() else {
            return;
        };
        let u = std::mem::take(&mut self.unkeyed);
        let key: &[u8] = &[];
        let empty = (key, hasher.hash_one(key), 0);
        self.add_to_group(empty, u.events, (u.count, u.total), at);
    }

    /// Adds `events` events' `(count, total)` to the group of `key` (with its hash and id),
    /// making the group if there is room.
    #[inline(always)]
    fn add_to_group(
        &mut self,
        (key, hash, id): (&[u8], u64, u64),
        events: u64,
        (count, total): (u64, u64),
        now: DateTime<Utc>,
    ) {
        let group = match self.last_group {
            Some((last, bucket)) if last == id => self.groups.get_bucket_mut(bucket),
            // Looked up by reference: the key is copied only for a new group.
            _ => match (self.groups).find_entry(hash, |g| same_bytes(g.key.as_bytes(), key)) {
                Ok(entry) => {
                    self.last_group = Some((id, entry.bucket_index()));
                    Some(entry.into_mut())
                }
                Err(_) => None,
            },
        };
        if let Some(g) = group {
            g.count += count;
            g.total += total;
            return;
        }
        self.new_group((key, hash, id), events, (count, total), now);
    }

    /// [`add_to_group`](Self::add_to_group) for a key without a group: out of line, so that
    /// the lookup above, made for every event, stays small.
    #[cold]
    #[inline(never)]
    fn new_group(
        &mut self,
        (key, hash, id): (&[u8], u64, u64),
        events: u64,
        (count, total): (u64, u64),
        now: DateTime<Utc>,
    ) {
        let rule = &*self.rule;
        if self.groups.len() >= rule.max_groups {
            self.refused_unpublished += events;
            return;
        }
        // A key of one field is that field whole (a NUL in it included).
        let values: Vec<&[u8]> = match rule.by.len() {
            1 => vec![key],
            _ => key.split(|b| *b == 0).collect(),
        };
        let labels = rule
            .by
            .iter()
            .zip(values)
            .map(|(f, v)| {
                (
                    f.name().to_string(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        self.metrics
            .groups
            .store(self.groups.len() as u64 + 1, Ordering::Relaxed);
        let g = Group {
            key: StoredKey::new(key),
            hash,
            labels,
            count,
            total,
            born: now,
            history: VecDeque::new(),
            anomalous_run: 0,
            idle_windows: 0,
            pending_since: None,
            firing: None,
        };
        let bucket = self
            .groups
            .insert_unique(hash, g, |g| g.hash)
            .bucket_index();
        self.last_group = Some((id, bucket));
    }

    /// Adds what was counted since the last call to the rule's counters and sets its
    /// patterns gauge: once per batch, as a locked add per message stalled the engine's thread
    /// (`perf annotate` on the mixed stream put half of `Engine::count`'s own samples after
    /// the add of `patterns_evicted`, made for most messages there).
    fn publish(&mut self) {
        metrics::add(
            &self.metrics.events,
            std::mem::take(&mut self.events_unpublished),
        );
        metrics::add(
            &self.metrics.groups_refused,
            std::mem::take(&mut self.refused_unpublished),
        );
        if let Some(table) = &self.patterns {
            metrics::add(
                &self.metrics.patterns_skipped,
                std::mem::take(&mut self.skipped_unpublished),
            );
            metrics::add(
                &self.metrics.patterns_evicted,
                table.evicted - self.evicted_published,
            );
            self.evicted_published = table.evicted;
            self.metrics
                .patterns
                .store(table.len() as u64, Ordering::Relaxed);
        }
    }

    fn advance(&mut self, index: usize, now: DateTime<Utc>, out: &mut Vec<Notice>) {
        self.publish();
        let window = span(self.rule.window);
        let Some(mut start) = self.window_start else {
            self.window_start = Some(now);
            self.next_due = Some(now + window);
            return;
        };
        let mut judged = 0;
        while now >= start + window {
            let end = start + window;
            self.close_window(index, start, end, out);
            start = end;
            judged += 1;
            if judged >= MAX_CATCH_UP {
                // Skip the rest: whole windows from where the clock is now.
                let behind = (now - start).num_milliseconds() / window.num_milliseconds().max(1);
                start += window * (behind as i32);
                break;
            }
        }
        self.window_start = Some(start);
        self.expire_patterns(index, now, out);
        self.resend(index, now, out);
        self.next_due = Some(self.next_due_after(start + window));
    }

    /// The earliest of the window's end, the firing alerts' next re-sends and the open
    /// new-pattern alerts' resolutions.
    fn next_due_after(&self, window_end: DateTime<Utc>) -> DateTime<Utc> {
        let window = span(self.rule.window);
        let every = span(self.rule.resend);
        let resends = self
            .groups
            .iter()
            .filter_map(|g| g.firing.as_ref().map(|f| f.last_sent + every));
        let resolutions = self.open_patterns.values().map(|at| *at + window);
        resends.chain(resolutions).fold(window_end, DateTime::min)
    }

    /// New-pattern alerts are resolved one window after they fired.
    fn expire_patterns(&mut self, index: usize, now: DateTime<Utc>, out: &mut Vec<Notice>) {
        if self.open_patterns.is_empty() {
            return;
        }
        let rule = self.rule.clone();
        let window = span(rule.window);
        let mut closed: Vec<(Vec<u8>, DateTime<Utc>)> = self
            .open_patterns
            .iter()
            .filter(|(_, at)| **at + window <= now)
            .map(|(t, at)| (t.clone(), *at))
            .collect();
        closed.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        for (t, at) in closed {
            self.open_patterns.remove(&t);
            metrics::add(&self.metrics.resolved, 1);
            out.push(Notice {
                rule: index,
                alertname: rule.name.clone(),
                state: AlertState::Resolved,
                resend: false,
                labels: vec![("pattern".into(), String::from_utf8_lossy(&t).into_owned())],
                severity: rule.severity.clone().unwrap_or_else(|| "warning".into()),
                summary: "new pattern".into(),
                value: 1.0,
                expected: "a known pattern".into(),
                starts_at: at,
                ends_at: at + window,
            });
        }
        self.metrics
            .firing
            .store(self.open_patterns.len() as u64, Ordering::Relaxed);
    }

    /// Judges every group over the window `[start, end)`.
    fn close_window(
        &mut self,
        index: usize,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        out: &mut Vec<Notice>,
    ) {
        let rule = self.rule.clone();
        if self.patterns.is_some() {
            return;
        }
        let forget = match rule.kind {
            AlertKind::Zscore { history, .. } => FORGET_WINDOWS.max(history as u64),
            _ => FORGET_WINDOWS,
        };
        // Judged in a stable order, so notices come out the same way each run.
        let mut groups: Vec<&mut Group> = self.groups.iter_mut().collect();
        groups.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        for g in groups {
            let judgement = judge(&rule, g, start);
            if g.count == 0 && g.total == 0 {
                g.idle_windows += 1;
            } else {
                g.idle_windows = 0;
            }
            g.count = 0;
            g.total = 0;
            let gone = g.idle_windows >= forget;
            match judgement {
                Some(j) if !gone => {
                    let since = *g.pending_since.get_or_insert(end);
                    if g.firing.is_none() && end - since >= span(rule.hold) {
                        let severity = j.severity.clone().unwrap_or_else(|| {
                            rule.severity.clone().unwrap_or_else(|| "warning".into())
                        });
                        let last = Sent {
                            value: j.value,
                            expected: j.expected,
                            summary: j.summary,
                            severity,
                        };
                        g.firing = Some(Box::new(Firing {
                            started: end,
                            last_sent: end,
                            last: last.clone(),
                        }));
                        metrics::add(&self.metrics.fired, 1);
                        out.push(notice(
                            index,
                            &rule,
                            &g.labels,
                            AlertState::Firing,
                            false,
                            &last,
                            end,
                            firing_ends(&rule, end),
                        ));
                    } else if let Some(f) = &mut g.firing {
                        // Still firing: the next re-send carries the latest value.
                        f.last.value = j.value;
                        f.last.expected = j.expected;
                    }
                }
                _ => {
                    g.pending_since = None;
                    if let Some(f) = g.firing.take() {
                        metrics::add(&self.metrics.resolved, 1);
                        out.push(notice(
                            index,
                            &rule,
                            &g.labels,
                            AlertState::Resolved,
                            false,
                            &f.last,
                            f.started,
                            end,
                        ));
                    }
                }
            }
        }
        self.groups.retain(|g| g.idle_windows < forget);
        self.last_group = None;
        self.metrics
            .groups
            .store(self.groups.len() as u64, Ordering::Relaxed);
        self.metrics.firing.store(
            self.groups.iter().filter(|g| g.firing.is_some()).count() as u64,
            Ordering::Relaxed,
        );
    }

    /// Firing alerts sent again once `resend_interval` has passed since the last send.
    fn resend(&mut self, index: usize, now: DateTime<Utc>, out: &mut Vec<Notice>) {
        let rule = self.rule.clone();
        let every = span(rule.resend);
        let mut due: Vec<&mut Group> = self
            .groups
            .iter_mut()
            .filter(|g| {
                g.firing
                    .as_ref()
                    .is_some_and(|f| now - f.last_sent >= every)
            })
            .collect();
        due.sort_by(|a, b| a.labels.cmp(&b.labels));
        for g in due {
            let Some(f) = &mut g.firing else { continue };
            f.last_sent = now;
            out.push(notice(
                index,
                &rule,
                &g.labels,
                AlertState::Firing,
                true,
                &f.last,
                f.started,
                firing_ends(&rule, now),
            ));
        }
    }
}

/// When a firing alert sent at `at` expires at a receiver that hears nothing more: four
/// re-send intervals (or windows) later, as Prometheus does.
fn firing_ends(rule: &AlertRule, at: DateTime<Utc>) -> DateTime<Utc> {
    at + span(rule.resend.max(rule.window)) * 4
}

#[allow(clippy::too_many_arguments)]
fn notice(
    index: usize,
    rule: &AlertRule,
    labels: &[(String, String)],
    state: AlertState,
    resend: bool,
    j: &Sent,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
) -> Notice {
    Notice {
        rule: index,
        alertname: rule.name.clone(),
        state,
        resend,
        labels: labels.to_vec(),
        severity: j.severity.clone(),
        summary: j.summary.clone(),
        value: j.value,
        expected: j.expected.clone(),
        starts_at,
        ends_at,
    }
}

/// Mean and (population) standard deviation.
fn mean_std(values: &VecDeque<f64>) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Whether the group's window starting at `start` meets the rule's condition; keeps the
/// z-score history.
fn judge(rule: &AlertRule, g: &mut Group, start: DateTime<Utc>) -> Option<Judgement> {
    // A group born during this window has a partial count: not a drop.
    let whole = g.born <= start;
    let count = g.count as f64;
    let plain = |value: f64, above: Option<f64>, below: Option<f64>, what: &str| {
        if let Some(a) = above
            && value > a
        {
            return Some(Judgement {
                value,
                expected: format!("at most {}", fmt_value(a)),
                summary: format!("{what} above threshold"),
                severity: None,
            });
        }
        if let Some(b) = below
            && value < b
            && whole
        {
            return Some(Judgement {
                value,
                expected: format!("at least {}", fmt_value(b)),
                summary: format!("{what} below threshold"),
                severity: None,
            });
        }
        None
    };
    match &rule.kind {
        AlertKind::Rate { above, below } => plain(count, *above, *below, "rate"),
        AlertKind::Ratio {
            above,
            below,
            min_events,
        } => {
            if g.total < *min_events || g.total == 0 {
                return None;
            }
            plain(count / g.total as f64, *above, *below, "ratio")
        }
        AlertKind::Zscore {
            series,
            threshold,
            history,
            min_events,
            direction,
        } => {
            let value = match series {
                Series::Rate => count,
                Series::Ratio => {
                    if g.total < *min_events || g.total == 0 {
                        return None;
                    }
                    count / g.total as f64
                }
            };
            if !whole {
                return None;
            }
            let mut verdict = None;
            if g.history.len() >= MIN_HISTORY {
                let (mean, std) = mean_std(&g.history);
                // A rate judged only when this window or the past had enough events: a
                // silent source is a drop to judge, unlike the reference detector, which
                // skips every window with fewer than min_events.
                let enough = *series == Series::Ratio
                    || value >= *min_events as f64
                    || mean >= *min_events as f64;
                let z = if std > 0.0 {
                    (value - mean) / std
                } else if value > 2.0 * mean && value > 0.0 {
                    // Where the past never varied (errors where there were none), twice the
                    // mean is the spike.
                    f64::INFINITY
                } else if value < mean / 2.0 {
                    f64::NEG_INFINITY
                } else {
                    0.0
                };
                let up = z > *threshold && *direction != Direction::Below;
                let down = z < -*threshold && *direction != Direction::Above;
                if enough && (up || down) {
                    let what = match series {
                        Series::Rate => "rate",
                        Series::Ratio => "error",
                    };
                    let critical = z.abs() > 1.5 * threshold;
                    verdict = Some(Judgement {
                        value,
                        expected: format!(
                            "{} ± {} (|z| {} > {})",
                            fmt_value(mean),
                            fmt_value(std),
                            if z.is_finite() {
                                fmt_value((z.abs() * 100.0).round() / 100.0)
                            } else {
                                "inf".into()
                            },
                            fmt_value(*threshold)
                        ),
                        summary: format!("{what} {}", if up { "spike" } else { "drop" }),
                        severity: Some(if critical { "critical" } else { "warning" }.into()),
                    });
                }
            }
            // An anomaly is kept out of the history, so one spike does not widen the
            // deviation enough to hide the next anomaly (the reference detector takes every
            // value in); once anomalies have lasted a quarter of the history, they are taken
            // in, so a lasting change of level becomes the new normal.
            if verdict.is_some() && g.anomalous_run < (*history / 4).max(1) {
                g.anomalous_run += 1;
            } else {
                if verdict.is_none() {
                    g.anomalous_run = 0;
                }
                g.history.push_back(value);
                while g.history.len() > *history {
                    g.history.pop_front();
                }
            }
            verdict
        }
        AlertKind::Baseline {
            baseline,
            min_events,
            ..
        } => {
            let per_minute = count * 60.0 / rule.window.as_secs_f64();
            let expected_rate = baseline.events_per_minute;
            if whole
                && expected_rate > 0.0
                && (per_minute > 2.0 * expected_rate || per_minute < 0.5 * expected_rate)
            {
                return Some(Judgement {
                    value: per_minute,
                    expected: format!(
                        "{}–{} events/min (0.5×–2× the baseline's {})",
                        fmt_value(0.5 * expected_rate),
                        fmt_value(2.0 * expected_rate),
                        fmt_value(expected_rate)
                    ),
                    summary: if per_minute > 2.0 * expected_rate {
                        "rate above baseline".into()
                    } else {
                        "rate below baseline".into()
                    },
                    severity: None,
                });
            }
            if g.count >= *min_events && g.count > 0 {
                let ratio = g.total as f64 / count;
                let limit = 2.0 * baseline.error_ratio;
                if ratio > limit {
                    return Some(Judgement {
                        value: ratio,
                        expected: format!(
                            "at most {} (2× the baseline's error ratio {})",
                            fmt_value(limit),
                            fmt_value(baseline.error_ratio)
                        ),
                        summary: "error ratio above baseline".into(),
                        severity: None,
                    });
                }
            }
            None
        }
        AlertKind::NewPattern { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::GroupKey;
    use crate::alert::GroupField;
    use crate::alert::tests::parsed_event;
    use crate::event::Event;

    /// A key of header fields is made anew (under a new id) only when their bytes change; a
    /// key with a field from outside the header is made anew for every event.
    #[test]
    fn a_key_is_made_anew_only_when_its_header_fields_change() {
        let hasher = foldhash::fast::RandomState::default();
        let ev = |host: &str, app: &str| {
            parsed_event(format!("<14>1 2026-03-01T00:00:00Z {host} {app} - - - m"))
        };
        let mut seq = 0;
        let mut make = |k: &mut GroupKey, e: &Event| {
            seq += 1;
            let (key, hash, id) = k.make(e, seq, &hasher);
            assert_eq!(hash, hasher.hash_one(key));
            (String::from_utf8_lossy(key).into_owned(), id)
        };
        let mut k = GroupKey::new(vec![GroupField::Hostname, GroupField::AppName]);
        for (host, app, want) in [
            ("ab", "c", ("ab\0c", 1)),
            ("ab", "c", ("ab\0c", 1)),
            ("a", "bc", ("a\0bc", 2)),
            ("a", "bc", ("a\0bc", 2)),
            ("a", "b", ("a\0b", 3)),
        ] {
            assert_eq!(make(&mut k, &ev(host, app)), (want.0.into(), want.1));
        }
        let mut k = GroupKey::new(vec![GroupField::Hostname, GroupField::Severity]);
        for id in 1..3 {
            assert_eq!(make(&mut k, &ev("a", "b")), ("a\0info".into(), id));
        }
    }
}
