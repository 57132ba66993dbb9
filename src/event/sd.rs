//! Structured data (RFC 5424 §6.3), stored so that parsing it costs two allocations however
//! many elements and params a message has (every name and value goes into one text buffer, the
//! ranges into another), and none for one short element with one param, such as Cisco's
//! `[meta sequenceId="123"]`.

use std::fmt;
use std::sync::Arc;

/// Bytes of text (SD-ID, PARAM-NAME, PARAM-VALUE) that one element with one param may hold
/// without allocating: `meta`, `sequenceId` and a 32-bit counter fit.
const INLINE: usize = 30;

/// The SD-ELEMENTs of a message in order, PARAM-VALUEs unescaped. Build it with
/// [`push_element`](Self::push_element) and [`push_param`](Self::push_param), or
/// [`single`](Self::single), or from [`SdElement`]s; read it with [`elements`](Self::elements).
#[derive(Clone, Default)]
pub struct StructuredData {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// Every SD-ID, PARAM-NAME and PARAM-VALUE back to back in `text`, and in `entries` an
    /// element (its id) followed by its params, for each element in order. Text, so reading a
    /// name or value back checks only its ends, not its bytes (a UTF-8 check per value per
    /// output was 4% of a collector's instructions on RFC 5424 with SD, issue 18).
    Many { text: String, entries: Vec<Entry> },
    /// One element with one param, its text inline: id, name and value lengths in `lens`.
    One { text: [u8; INLINE], lens: [u8; 3] },
    /// As `Many`, shared: the same SD on every event of a source (a `tail` listener's file
    /// element) costs a reference count per event, not a copy.
    Shared(Arc<(String, Vec<Entry>)>),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Many {
            text: String::new(),
            entries: Vec::new(),
        }
    }
}

/// An SD-ID (`value` is `ELEMENT`) or a PARAM-NAME and PARAM-VALUE, as ranges of `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    name: (u32, u32),
    value: (u32, u32),
}

/// The `value` of an entry that starts an element.
const ELEMENT: (u32, u32) = (u32::MAX, u32::MAX);

impl Entry {
    fn is_element(&self) -> bool {
        self.value == ELEMENT
    }
}

/// `u32` offsets: a frame (and so its SD) is capped far below 4 GiB.
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Text the SD put in its buffer.
fn slice(text: &str, (start, end): (u32, u32)) -> &str {
    text.get(start as usize..end as usize).unwrap_or_default()
}

impl StructuredData {
    /// One element with one param; without allocating when they are short.
    pub fn single(id: &str, name: &str, value: &str) -> StructuredData {
        let parts = [id, name, value];
        let lens = parts.map(|p| u8::try_from(p.len()).unwrap_or(u8::MAX));
        let total = parts.iter().map(|p| p.len()).sum::<usize>();
        if total > INLINE {
            let mut sd = StructuredData::default();
            sd.push_element(id);
            sd.push_param(name, value);
            return sd;
        }
        let mut text = [0u8; INLINE];
        let mut at = 0;
        for p in parts {
            if let Some(slot) = text.get_mut(at..at + p.len()) {
                slot.copy_from_slice(p.as_bytes());
            }
            at += p.len();
        }
        StructuredData {
            repr: Repr::One { text, lens },
        }
    }

    /// The same SD in a form whose clones share one copy of its text: for SD that
    /// many events carry unchanged.
    pub fn shared(self) -> StructuredData {
        let repr = match self.repr {
            Repr::Many { text, entries } => Repr::Shared(Arc::new((text, entries))),
            other => other,
        };
        StructuredData { repr }
    }

    /// The text and entries of a `Many` or `Shared` SD.
    fn parts(&self) -> Option<(&str, &[Entry])> {
        match &self.repr {
            Repr::Many { text, entries } => Some((text, entries)),
            Repr::Shared(shared) => Some((&shared.0, &shared.1)),
            Repr::One { .. } => None,
        }
    }

    /// True when the message has no SD (NILVALUE).
    pub fn is_empty(&self) -> bool {
        match self.parts() {
            Some((_, entries)) => entries.is_empty(),
            None => false,
        }
    }

    /// Number of SD-ELEMENTs.
    pub fn len(&self) -> usize {
        match self.parts() {
            Some((_, entries)) => entries.iter().filter(|e| e.is_element()).count(),
            None => 1,
        }
    }

    /// The buffers to append to; an inline or shared SD is copied into them first.
    fn many(&mut self) -> (&mut String, &mut Vec<Entry>) {
        if let Repr::Shared(shared) = &self.repr {
            let (text, entries) = (**shared).clone();
            self.repr = Repr::Many { text, entries };
        }
        if let Repr::One { .. } = self.repr {
            let elements = self.to_elements();
            self.repr = Repr::default();
            for e in elements {
                self.push_element(&e.id);
                for (k, v) in &e.params {
                    self.push_param(k, v);
                }
            }
        }
        match &mut self.repr {
            Repr::Many { text, entries } => (text, entries),
            Repr::One { .. } | Repr::Shared(_) => unreachable!("converted above"),
        }
    }

    /// Starts an SD-ELEMENT; params pushed next belong to it.
    pub fn push_element(&mut self, id: &str) {
        let (text, entries) = self.many();
        let name = append(text, id);
        entries.push(Entry {
            name,
            value: ELEMENT,
        });
    }

    /// Adds a param to the last element (an element is started if there is none).
    pub fn push_param(&mut self, name: &str, value: &str) {
        if self.is_empty() {
            self.push_element("");
        }
        let (text, entries) = self.many();
        let name = append(text, name);
        let value = append(text, value);
        entries.push(Entry { name, value });
    }

    /// The elements in message order.
    pub fn elements(&self) -> impl ExactSizeIterator<Item = SdElementRef<'_>> {
        let (many, one) = match &self.repr {
            Repr::One { text, lens } => (None, Some(inline(text, *lens))),
            Repr::Many { .. } | Repr::Shared(_) => (self.parts(), None),
        };
        let many = many.into_iter().flat_map(|(text, entries)| {
            entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.is_element())
                .map(move |(i, e)| {
                    let params = entries.get(i + 1..).unwrap_or_default();
                    let n = params.iter().take_while(|p| !p.is_element()).count();
                    SdElementRef {
                        id: slice(text, e.name),
                        params: Params::Many {
                            text,
                            params: params.get(..n).unwrap_or_default(),
                        },
                    }
                })
        });
        let one = one.map(|(id, name, value)| SdElementRef {
            id,
            params: Params::One(name, value),
        });
        Counted {
            iter: many.chain(one),
            left: self.len(),
        }
    }

    /// The elements as owned values (for tests and comparisons).
    pub fn to_elements(&self) -> Vec<SdElement> {
        self.elements()
            .map(|e| SdElement {
                id: e.id.to_string(),
                params: e
                    .params()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .collect()
    }
}

/// Builds the SD of a frame from byte ranges of the frame, copying the SD's bytes once at the
/// end instead of name by name and value by value. A value that is not the frame's bytes
/// (unescaped, or repaired UTF-8) goes to a side buffer. Every range must hold UTF-8 (names are
/// PRINTUSASCII, values are checked by the parser): text that does not reads as empty.
pub(crate) struct SdBuilder {
    /// Where the SD starts in the frame: ranges are relative to it.
    base: usize,
    entries: Vec<Entry>,
    side: Vec<u8>,
}

/// Marks a range in `side` until `finish` knows where `side` goes.
const SIDE: u32 = 1 << 31;

impl SdBuilder {
    /// A builder for SD that starts at `base` in the frame.
    pub(crate) fn new(base: usize) -> SdBuilder {
        SdBuilder {
            base,
            // Room for a few elements with a few params each, as most SD has.
            entries: Vec::with_capacity(8),
            side: Vec::new(),
        }
    }

    fn range(&self, start: usize, end: usize) -> (u32, u32) {
        let rel = |at: usize| offset(at.saturating_sub(self.base));
        (rel(start), rel(end))
    }

    /// Starts an element whose SD-ID is `frame[start..end]`.
    pub(crate) fn element(&mut self, start: usize, end: usize) {
        let name = self.range(start, end);
        self.entries.push(Entry {
            name,
            value: ELEMENT,
        });
    }

    /// Adds a param: its name is `frame[name.0..name.1]`, its value `frame[value.0..value.1]`
    /// as it is, or what `owned` writes when it is given.
    pub(crate) fn param(
        &mut self,
        name: (usize, usize),
        value: (usize, usize),
        owned: Option<impl FnOnce(&mut Vec<u8>)>,
    ) {
        let name = self.range(name.0, name.1);
        let value = match owned {
            None => self.range(value.0, value.1),
            Some(write) => {
                let start = offset(self.side.len());
                write(&mut self.side);
                (start | SIDE, offset(self.side.len()) | SIDE)
            }
        };
        self.entries.push(Entry { name, value });
    }

    /// The SD, its bytes `frame[base..end]` copied once, the side buffer after them. When those
    /// bytes are not all UTF-8 (a value with invalid bytes, kept repaired in the side buffer),
    /// the text is built range by range instead, a range that is not UTF-8 reading as empty.
    pub(crate) fn finish(mut self, frame: &[u8], end: usize) -> StructuredData {
        let raw = frame.get(self.base..end).unwrap_or_default();
        let whole = (std::str::from_utf8(raw), std::str::from_utf8(&self.side));
        let (Ok(raw), Ok(side)) = whole else {
            return self.finish_by_range(raw);
        };
        let mut text = String::with_capacity(raw.len() + side.len());
        text.push_str(raw);
        text.push_str(side);
        let shift = offset(raw.len());
        for e in &mut self.entries {
            if e.value != ELEMENT && e.value.0 & SIDE != 0 {
                e.value = ((e.value.0 & !SIDE) + shift, (e.value.1 & !SIDE) + shift);
            }
        }
        StructuredData {
            repr: Repr::Many {
                text,
                entries: self.entries,
            },
        }
    }

    fn finish_by_range(self, raw: &[u8]) -> StructuredData {
        let text_of = |(start, end): (u32, u32)| {
            let (bytes, start, end) = if start & SIDE != 0 {
                (&self.side[..], start & !SIDE, end & !SIDE)
            } else {
                (raw, start, end)
            };
            let part = bytes.get(start as usize..end as usize).unwrap_or_default();
            std::str::from_utf8(part).unwrap_or_default()
        };
        let mut sd = StructuredData::default();
        for e in &self.entries {
            if e.is_element() {
                sd.push_element(text_of(e.name));
            } else {
                sd.push_param(text_of(e.name), text_of(e.value));
            }
        }
        sd
    }
}

/// Appends `part` to `text`; returns where it went.
fn append(text: &mut String, part: &str) -> (u32, u32) {
    let start = offset(text.len());
    text.push_str(part);
    (start, offset(text.len()))
}

/// The id, name and value of an inline element.
fn inline(text: &[u8; INLINE], [id, name, value]: [u8; 3]) -> (&str, &str, &str) {
    let (id, name, value) = (usize::from(id), usize::from(name), usize::from(value));
    let part = |start: usize, len: usize| {
        let bytes = text.get(start..start + len).unwrap_or_default();
        std::str::from_utf8(bytes).unwrap_or_default()
    };
    (part(0, id), part(id, name), part(id + name, value))
}

/// An iterator that knows its length.
struct Counted<I> {
    iter: I,
    left: usize,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.iter.next()?;
        self.left = self.left.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}

impl PartialEq for StructuredData {
    fn eq(&self, other: &StructuredData) -> bool {
        self.len() == other.len()
            && self
                .elements()
                .zip(other.elements())
                .all(|(a, b)| a.id == b.id && a.params().eq(b.params()))
    }
}

impl Eq for StructuredData {}

impl fmt::Debug for StructuredData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_elements()).finish()
    }
}

impl From<Vec<SdElement>> for StructuredData {
    fn from(elements: Vec<SdElement>) -> StructuredData {
        let mut sd = StructuredData::default();
        for e in elements {
            sd.push_element(&e.id);
            for (k, v) in &e.params {
                sd.push_param(k, v);
            }
        }
        sd
    }
}

/// One SD-ELEMENT of a [`StructuredData`].
#[derive(Clone, Copy)]
pub struct SdElementRef<'a> {
    /// SD-ID, e.g. `exampleSDID@32473`.
    pub id: &'a str,
    params: Params<'a>,
}

#[derive(Clone, Copy)]
enum Params<'a> {
    Many { text: &'a str, params: &'a [Entry] },
    One(&'a str, &'a str),
}

impl<'a> SdElementRef<'a> {
    /// (PARAM-NAME, PARAM-VALUE) in message order; a name may repeat.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let (many, one) = match self.params {
            Params::Many { text, params } => (Some((text, params)), None),
            Params::One(name, value) => (None, Some((name, value))),
        };
        let many = many.into_iter().flat_map(|(text, params)| {
            params
                .iter()
                .map(move |p| (slice(text, p.name), slice(text, p.value)))
        });
        many.chain(one)
    }
}

/// One SD-ELEMENT as owned values: to build [`StructuredData`] from, or compare it with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdElement {
    /// SD-ID, e.g. `exampleSDID@32473`.
    pub id: String,
    /// (PARAM-NAME, PARAM-VALUE) in message order; a name may repeat.
    pub params: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_buffered_forms_read_alike() {
        let one = StructuredData::single("meta", "sequenceId", "4294967295");
        assert!(matches!(one.repr, Repr::One { .. }));
        let mut many = StructuredData::default();
        many.push_element("meta");
        many.push_param("sequenceId", "4294967295");
        assert_eq!(one, many);
        assert_eq!(one.to_elements(), many.to_elements());
        assert_eq!(one.elements().len(), 1);
        let long = StructuredData::single("meta", "sequenceId", &"9".repeat(40));
        assert!(matches!(long.repr, Repr::Many { .. }));
        let mut grown = one.clone();
        grown.push_param("sysUpTime", "37");
        let params: Vec<_> = grown
            .elements()
            .flat_map(|e| e.params().collect::<Vec<_>>())
            .collect();
        assert_eq!(params, [("sequenceId", "4294967295"), ("sysUpTime", "37")]);
    }

    #[test]
    fn a_shared_sd_reads_as_its_source_and_copies_on_write() {
        let mut sd = StructuredData::default();
        sd.push_element("file@32473");
        sd.push_param("path", &format!("/var/log/{}.log", "x".repeat(40)));
        let shared = sd.clone().shared();
        assert!(matches!(shared.repr, Repr::Shared(_)));
        let copy = shared.clone();
        assert_eq!(copy, sd);
        assert_eq!((copy.len(), copy.is_empty()), (1, false));
        let mut grown = copy.clone();
        grown.push_element("origin");
        grown.push_param("ip", "192.0.2.1");
        assert_eq!(grown.len(), 2);
        assert_eq!(shared, sd, "the shared copy is untouched");
    }
}
