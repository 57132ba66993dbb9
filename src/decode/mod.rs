//! Reading configuration tables: what the config loader and every listener and output kind use
//! to turn a TOML table into typed settings, with every problem recorded at its line and column.
//!
//! A kind reads its own `[listen.NAME]` or `[output.NAME]` table through an [`Entry`]: it takes
//! the parts it needs (serde structs of optional, spanned fields, some shared between kinds),
//! and what no part names is reported at the end, as "not valid for kind" when another kind of
//! the section takes that key, else as an unknown key. A key of the wrong type is reported on
//! its own, in an operator's words, and does not hide the keys after it.
//!
//! This module knows no kind: `config`, `listen` and `output` depend on it, never the reverse.

pub mod keys;

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// One configuration error, positioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name (or `<embedded default>`).
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub col: usize,
    /// Dotted key path, e.g. `output.siem.address`; empty for syntax errors.
    pub key: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors with positions computed from byte spans in the source text.
pub struct Errors<'a> {
    /// The file's name, for messages.
    pub file: &'a str,
    /// The file's text, to turn spans into lines and columns.
    pub text: &'a str,
    /// What was found so far.
    pub list: Vec<ConfigError>,
}

impl<'a> Errors<'a> {
    /// An empty collection for `text`, read from `file`.
    pub fn new(file: &'a str, text: &'a str) -> Errors<'a> {
        Errors {
            file,
            text,
            list: Vec::new(),
        }
    }

    /// Records `msg` about `key`, at the byte span `span` of the text.
    pub fn at(&mut self, span: Range<usize>, key: impl Into<String>, msg: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.list.push(ConfigError {
            file: self.file.to_string(),
            line,
            col,
            key: key.into(),
            message: msg.into(),
        });
    }

    /// How many errors there are: a kind compares before and after to know whether its own
    /// checks found any.
    pub fn count(&self) -> usize {
        self.list.len()
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// An inline table among a part's fields: its key, and its own field names.
pub type Nested = (&'static str, fn() -> &'static [&'static str]);

/// A raw struct a kind reads from its table: optional, spanned fields, read with serde.
pub trait Part: DeserializeOwned + Default {
    /// Its fields that are inline tables, for key listings.
    const NESTED: &'static [Nested] = &[];
}

/// One `[SECTION.NAME]` table being read by its kind.
pub struct Entry<'t, 'i> {
    /// The key path of the table, `listen.NAME` or `output.NAME`.
    pub path: String,
    /// The `kind` value, and where it is (where "missing" errors point).
    pub kind: Spanned<String>,
    value: Option<&'t Spanned<DeValue<'i>>>,
    /// Keys some part has read; `kind` is read by the loader.
    read: BTreeSet<&'static str>,
    /// In a probe, parts only record their keys (for listings) and read as empty.
    probe: Option<Vec<String>>,
}

impl<'t, 'i> Entry<'t, 'i> {
    /// The table `value` at `path`, whose `kind` the loader has read.
    pub fn new(path: String, kind: Spanned<String>, value: &'t Spanned<DeValue<'i>>) -> Self {
        Entry {
            path,
            kind,
            value: Some(value),
            read: BTreeSet::new(),
            probe: None,
        }
    }

    /// An entry with no table, that records the keys each part would read: the listing of a
    /// kind's keys comes from the code that reads them.
    pub fn probe(kind: &str) -> Self {
        Entry {
            path: String::new(),
            kind: Spanned::new(0..0, kind.to_string()),
            value: None,
            read: BTreeSet::new(),
            probe: Some(Vec::new()),
        }
    }

    /// The keys a probe recorded, `key` and `key.inner` for inline tables.
    pub fn probed_keys(self) -> Vec<String> {
        self.probe.unwrap_or_default()
    }

    /// `PATH.key`, for messages.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// Records `msg` about `key`, pointing at the `kind` line: for keys that are missing.
    pub fn missing(&self, errs: &mut Errors<'_>, key: &str, msg: impl Into<String>) {
        errs.at(self.kind.span(), self.key(key), msg);
    }

    /// Reports that `kind` names none of `names` (the kinds of the section, `what`).
    pub fn unknown_kind(&self, errs: &mut Errors<'_>, what: &str, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        errs.at(
            self.kind.span(),
            self.key("kind"),
            format!(
                "unknown {what} kind {:?}: expected {}",
                self.kind.get_ref(),
                or_list(&names)
            ),
        );
    }

    /// Reads part `R` of the table. A key of the wrong type is reported alone, in words, and
    /// the part is then `None` (every other key still checked); keys `R` does not name are left
    /// for other parts and for [`Entry::finish`].
    pub fn part<R: Part>(&mut self, errs: &mut Errors<'_>) -> Option<R> {
        let fields = keys::fields::<R>();
        self.read.extend(fields.iter().copied());
        let Some(value) = self.value else {
            let keys = self.probe.get_or_insert_with(Vec::new);
            for f in fields {
                keys.push(f.to_string());
                if let Some((_, inner)) = R::NESTED.iter().find(|(n, _)| n == f) {
                    keys.extend(inner().iter().map(|k| format!("{f}.{k}")));
                }
            }
            return Some(R::default());
        };
        let path = self.path.clone();
        decode_part(errs, &path, value, true)
    }

    /// Reports every key of the table that no part read: `not valid for kind = "..."` when
    /// `elsewhere(key)` says another kind takes it, else an unknown key.
    pub fn finish(self, errs: &mut Errors<'_>, elsewhere: impl Fn(&str) -> bool) {
        let Some(DeValue::Table(t)) = self.value.map(Spanned::get_ref) else {
            return;
        };
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            if key == "kind" || self.read.contains(key) {
                continue;
            }
            // A typo points at the key; a key of another kind at what it sets.
            if elsewhere(key) {
                let msg = format!("not valid for kind = \"{}\"", self.kind.get_ref());
                // An inline table is pointed at by its first value.
                let span = match v.get_ref() {
                    DeValue::Table(t) => t.iter().map(|(_, v)| v.span()).min_by_key(|s| s.start),
                    _ => None,
                };
                errs.at(span.unwrap_or_else(|| v.span()), self.key(key), msg);
            } else {
                errs.at(k.span(), self.key(key), "unknown key");
            }
        }
    }
}

/// Deserializes a whole table into `T`, reporting unknown keys (unless `others_read_top` says
/// other parts read the table's own keys: then only unknown keys of its inline tables), and
/// each key of the wrong type on its own.
pub fn decode<T: DeserializeOwned>(
    errs: &mut Errors<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<T> {
    decode_part(errs, key, value, false)
}

fn decode_part<T: DeserializeOwned>(
    errs: &mut Errors<'_>,
    key: &str,
    value: &Spanned<DeValue<'_>>,
    others_read_top: bool,
) -> Option<T> {
    let DeValue::Table(table) = value.get_ref() else {
        errs.at(
            value.span(),
            key,
            format!("expected a table, got {}", describe(value.get_ref())),
        );
        return None;
    };
    let mut unknown = Vec::new();
    let de = ValueDeserializer::from(value.clone());
    let result: Result<T, _> = serde_ignored::deserialize(de, |path| {
        // `?` is serde_ignored's segment for an Option's Some: not part of the key path.
        let key: Vec<String> = path
            .to_string()
            .split('.')
            .filter(|s| *s != "?")
            .map(str::to_string)
            .collect();
        unknown.push(key.join("."));
    });
    match result {
        Ok(v) => {
            for path in unknown {
                if others_read_top && !path.contains('.') {
                    continue;
                }
                let span = find_key_span(value, &path).unwrap_or_else(|| value.span());
                errs.at(span, format!("{key}.{path}"), "unknown key");
            }
            Some(v)
        }
        Err(whole) => {
            // Serde stops at the first bad key: read each key alone to report them all.
            let before = errs.count();
            for (k, v) in table.iter() {
                let mut one = DeTable::new();
                one.insert(k.clone(), v.clone());
                let alone = Spanned::new(value.span(), DeValue::Table(one));
                if let Err(e) = T::deserialize(ValueDeserializer::from(alone)) {
                    let (span, path) = deepest_bad(v, k.get_ref().as_ref(), &e);
                    errs.at(span, format!("{key}.{path}"), in_words(&e, v));
                }
            }
            if errs.count() == before {
                let span = whole.span().unwrap_or_else(|| value.span());
                errs.at(span, key, whole.message().trim().to_string());
            }
            None
        }
    }
}

/// Where a key's type error is: the key itself, or for an inline table the key inside it that
/// is wrong (found by trying each of its keys alone would need its type; its span is enough).
fn deepest_bad(
    value: &Spanned<DeValue<'_>>,
    key: &str,
    err: &toml::de::Error,
) -> (Range<usize>, String) {
    if let (DeValue::Table(t), Some(span)) = (value.get_ref(), err.span()) {
        for (k, v) in t.iter() {
            if v.span().start <= span.start && span.end <= v.span().end {
                return (v.span(), format!("{key}.{}", k.get_ref()));
            }
        }
    }
    (err.span().unwrap_or_else(|| value.span()), key.to_string())
}

/// A serde type error as an operator reads it: `expected a number, got "lots"`.
fn in_words(err: &toml::de::Error, value: &Spanned<DeValue<'_>>) -> String {
    let msg = err.message().trim();
    let Some((_, expected)) = msg.rsplit_once(", expected ") else {
        return msg.to_string();
    };
    // The innermost value the error points at, for `got`.
    let got = match (value.get_ref(), err.span()) {
        (DeValue::Table(t), Some(span)) => t
            .iter()
            .map(|(_, v)| v)
            .find(|v| v.span().start <= span.start && span.end <= v.span().end)
            .map_or_else(|| describe(value.get_ref()), |v| describe(v.get_ref())),
        (DeValue::Array(a), Some(span)) => a
            .iter()
            .find(|v| v.span().start <= span.start && span.end <= v.span().end)
            .map_or_else(
                || describe(value.get_ref()),
                |v| format!("{} in the list", describe(v.get_ref())),
            ),
        (v, _) => describe(v),
    };
    let expected = match expected {
        "i64" | "u64" | "i32" | "u32" | "usize" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        "struct RawRateLimit" | "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => other,
    };
    format!("expected {expected}, got {got}")
}

/// A TOML value in a few words, for "got ...".
fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{:?}", s.as_ref()),
        DeValue::Integer(i) => i.as_str().to_string(),
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) => "a list".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// The span of the key at a dotted path below `value`, for pointing at unknown keys.
pub fn find_key_span(value: &Spanned<DeValue<'_>>, path: &str) -> Option<Range<usize>> {
    find_key(value, path).map(|(key, _)| key)
}

/// The key at a dotted path below `value` (its span; for an array index, the element's) and
/// the value it holds.
pub fn find_key<'v, 'i>(
    value: &'v Spanned<DeValue<'i>>,
    path: &str,
) -> Option<(Range<usize>, &'v Spanned<DeValue<'i>>)> {
    let mut cur = value;
    let mut found = None;
    for part in path.split('.') {
        match cur.get_ref() {
            DeValue::Table(t) => {
                let (k, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
                found = Some(k.span());
                cur = v;
            }
            DeValue::Array(a) => {
                cur = a.get(part.parse::<usize>().ok()?)?;
                found = Some(cur.span());
            }
            _ => return None,
        }
    }
    Some((found?, cur))
}

/// A size or duration: an integer, or a string with a unit.
#[derive(Clone, Debug)]
pub enum NumOrStr {
    /// A bare number (bytes, seconds, an id).
    Num(i64),
    /// A number with a unit, or a name.
    Str(String),
}

impl<'de> Deserialize<'de> for NumOrStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NumOrStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string (like \"64KiB\", \"10s\" or a name)")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Num(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumOrStr, E> {
                i64::try_from(v)
                    .map(NumOrStr::Num)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NumOrStr, E> {
                Ok(NumOrStr::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings.
#[derive(Clone, Debug)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut list = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    list.push(s);
                }
                Ok(OneOrMany::Many(list))
            }
        }
        d.deserialize_any(V)
    }
}

impl OneOrMany {
    /// The strings, one or many.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A path given as a string.
pub fn path_opt(v: &Option<Spanned<String>>) -> Option<std::path::PathBuf> {
    v.as_ref().map(|v| std::path::PathBuf::from(v.get_ref()))
}

/// Parses `64KiB`, `1GiB`, `10MB`, `512` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with a unit like \"64KiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}: use B, KiB, MiB, GiB, kB, MB or GB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `10s`, `5m`, `1h`, `1d`, `250ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number with a unit like \"10s\"")
    })?;
    let ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?}: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// A size (`64KiB`, or a number of bytes), reported at its key when invalid.
pub fn size_opt(errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<NumOrStr>>) -> Option<u64> {
    let v = v.as_ref()?;
    let r = match v.get_ref() {
        NumOrStr::Num(n) => u64::try_from(*n).map_err(|_| "a size cannot be negative".to_string()),
        NumOrStr::Str(s) => parse_size(s),
    };
    r.map_err(|m| errs.at(v.span(), key, m)).ok()
}

/// A duration (`10s`, or a number of seconds), reported at its key when invalid.
pub fn duration_opt(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<NumOrStr>>,
) -> Option<Duration> {
    let v = v.as_ref()?;
    let r = match v.get_ref() {
        NumOrStr::Num(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| "a duration cannot be negative".to_string()),
        NumOrStr::Str(s) => parse_duration(s),
    };
    r.map_err(|m| errs.at(v.span(), key, m)).ok()
}

/// A duration that must be more than zero, reported at its key when invalid or zero.
pub fn positive_duration(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<NumOrStr>>,
) -> Option<Duration> {
    let d = duration_opt(errs, key, v)?;
    if d.is_zero() {
        if let Some(v) = v {
            errs.at(v.span(), key, "must be more than 0");
        }
        return None;
    }
    Some(d)
}

/// A positive integer, reported at its key when not.
pub fn positive(errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<i64>>) -> Option<usize> {
    let v = v.as_ref()?;
    match usize::try_from(*v.get_ref()) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            errs.at(
                v.span(),
                key,
                format!("must be a positive integer, got {}", v.get_ref()),
            );
            None
        }
    }
}

/// Parses an octal permission string like `"0666"`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid mode {s:?}: expected octal like \"0640\""))
}

/// Parses a list of networks, reporting each bad one.
pub fn cidr_list(errs: &mut Errors<'_>, key: &str, v: &Spanned<OneOrMany>) -> Vec<ipnet::IpNet> {
    v.get_ref()
        .clone()
        .into_vec()
        .into_iter()
        .filter_map(|c| {
            parse_cidr(&c)
                .map_err(|msg| errs.at(v.span(), key, msg))
                .ok()
        })
        .collect()
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address (a host route).
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            format!("invalid network {s:?}: expected CIDR like \"10.0.0.0/8\" or an address")
        })
}

/// An octal mode like `"0640"`, reported at its key when invalid.
pub fn mode_opt(errs: &mut Errors<'_>, key: &str, v: &Option<Spanned<String>>) -> Option<u32> {
    let v = v.as_ref()?;
    parse_mode(v.get_ref())
        .map_err(|m| errs.at(v.span(), key, m))
        .ok()
}

/// A user or group given by name or number, resolved now so `--check-config` reports it.
pub fn id_opt(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<NumOrStr>>,
    lookup: fn(&str) -> Result<u32, String>,
) -> Option<u32> {
    let v = v.as_ref()?;
    let r = match v.get_ref() {
        NumOrStr::Num(n) => u32::try_from(*n).map_err(|_| format!("invalid id {n}")),
        NumOrStr::Str(s) => lookup(s),
    };
    r.map_err(|m| errs.at(v.span(), key, m)).ok()
}

/// One of `names` (the spellings, in the order they are listed in messages), or an error at
/// the key naming them all.
pub fn choice<T: Copy>(
    errs: &mut Errors<'_>,
    key: &str,
    v: &Option<Spanned<String>>,
    what: &str,
    names: &[(&str, T)],
    default: T,
) -> T {
    let Some(v) = v else { return default };
    match names.iter().find(|(n, _)| *n == v.get_ref()) {
        Some((_, t)) => *t,
        None => {
            let list: Vec<String> = names.iter().map(|(n, _)| format!("{n:?}")).collect();
            errs.at(
                v.span(),
                key,
                format!(
                    "unknown {what} {:?}: expected {}",
                    v.get_ref(),
                    or_list(&list)
                ),
            );
            default
        }
    }
}

/// `"a", "b" or "c"`.
pub fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
