//! The field names a raw struct reads, taken from the struct itself: serde's derive hands each
//! struct's field names to `deserialize_struct`, and [`fields`] records them. So key listings
//! (`--check-config`'s "not valid for kind", the man page test) cannot drift from what is parsed.

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

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
pub fn fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = FieldNames(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Two {
        a: Option<u8>,
        b_c: Option<String>,
    }

    #[test]
    fn fields_come_from_the_derive() {
        assert_eq!(fields::<Two>(), &["a", "b_c"]);
    }
}
