//! Every key path the configuration accepts, read from the raw structs themselves: serde's
//! derive hands each struct's field names to `deserialize_struct`, and [`fields`] records them.
//! So the list cannot drift from what is parsed; the man page test checks it against
//! sluice.toml(5).

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

use super::raw::*;

/// A deserializer that only records the field names a struct asks for, then fails.
struct FieldNames(&'static [&'static str]);

impl<'de> Deserializer<'de> for &mut FieldNames {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only structs are inspected"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(serde::de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The field names of a struct deriving `Deserialize`.
fn fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = FieldNames(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}

/// Every key the configuration accepts, as paths: `daemon.state_dir`, `listen.*.address`,
/// `listen.*.rate_limit.burst`, `output.*.queue.kind`, `route.selector`, ... (`*` stands for
/// a listener or output name). Inline tables appear both as themselves and with each key.
pub fn known_keys() -> Vec<String> {
    type Nested = (&'static str, fn() -> &'static [&'static str]);
    let tables: [(&str, &[&str], &[Nested]); 4] = [
        ("daemon", fields::<RawDaemon>(), &[]),
        (
            "listen.*",
            fields::<RawListener>(),
            &[("rate_limit", fields::<RawRateLimit>)],
        ),
        (
            "output.*",
            fields::<RawOutput>(),
            &[
                ("queue", fields::<RawQueue>),
                ("rotate", fields::<RawRotate>),
            ],
        ),
        ("route", fields::<RawRoute>(), &[]),
    ];
    let mut keys = Vec::new();
    for (prefix, own, nested) in tables {
        for key in own {
            keys.push(format!("{prefix}.{key}"));
            if let Some((_, inner)) = nested.iter().find(|(name, _)| name == key) {
                keys.extend(inner().iter().map(|k| format!("{prefix}.{key}.{k}")));
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_come_from_the_raw_structs_with_their_inline_tables() {
        let keys = known_keys();
        for want in [
            "daemon.shutdown_timeout",
            "listen.*.kind",
            "listen.*.rate_limit",
            "listen.*.rate_limit.burst",
            "output.*.queue.when_full",
            "output.*.rotate.naming",
            "output.*.group",
            "route.stop",
        ] {
            assert!(keys.iter().any(|k| k == want), "{want} not in {keys:?}");
        }
        // As many as serde reads: RawListener's fields, and each nested table's.
        assert_eq!(
            keys.iter().filter(|k| k.starts_with("listen.*.")).count(),
            fields::<RawListener>().len() + fields::<RawRateLimit>().len()
        );
        assert!(fields::<RawListener>().len() >= 20);
    }
}
