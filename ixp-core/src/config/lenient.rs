//! A serde `Deserializer` over a JSON tree that accepts strings where numbers or
//! booleans are expected.
//!
//! Values that come from `${VAR}` interpolation or from environment overrides are
//! strings; `port = "${REDIS_PORT}"` must still fill a `u16`. Everything else is exactly
//! `serde_json::Value`'s behaviour.

use serde::de::value::Error;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// Deserializes from a borrowed JSON tree, coercing strings to numbers and booleans.
pub(crate) struct Lenient<'a>(pub(crate) &'a Value);

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Unexpected::Unsigned(u)
            } else if let Some(i) = n.as_i64() {
                Unexpected::Signed(i)
            } else {
                Unexpected::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

macro_rules! coerce_number {
    ($($method:ident => $visit:ident : $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                if let Value::String(s) = self.0 {
                    return match s.trim().parse::<$ty>() {
                        Ok(n) => visitor.$visit(n),
                        Err(_) => Err(de::Error::invalid_type(Unexpected::Str(s), &visitor)),
                    };
                }
                self.deserialize_any(visitor)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Lenient<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.iter().map(Lenient));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(map) => visitor.visit_map(LenientMap::new(map)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if let Value::String(s) = self.0 {
            return match s.trim() {
                "true" => visitor.visit_bool(true),
                "false" => visitor.visit_bool(false),
                _ => Err(de::Error::invalid_type(Unexpected::Str(s), &visitor)),
            };
        }
        self.deserialize_any(visitor)
    }

    coerce_number! {
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Object(map) if map.len() == 1 => match map.iter().next() {
                Some((variant, content)) => visitor.visit_enum(LenientEnum { variant, content }),
                None => Err(de::Error::invalid_value(unexpected(self.0), &visitor)),
            },
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any i128 u128
    }
}

impl<'de> IntoDeserializer<'de, Error> for Lenient<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

struct LenientMap<'a> {
    iter: serde_json::map::Iter<'a>,
    value: Option<&'a Value>,
}

impl<'a> LenientMap<'a> {
    fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            iter: map.iter(),
            value: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for LenientMap<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Lenient(value)),
            None => Err(de::Error::custom("value requested before key")),
        }
    }
}

struct LenientEnum<'a> {
    variant: &'a String,
    content: &'a Value,
}

impl<'de> de::EnumAccess<'de> for LenientEnum<'de> {
    type Error = Error;
    type Variant = LenientVariant<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let variant = seed.deserialize(de::value::BorrowedStrDeserializer::new(self.variant))?;
        Ok((variant, LenientVariant(self.content)))
    }
}

struct LenientVariant<'a>(&'a Value);

impl<'de> de::VariantAccess<'de> for LenientVariant<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            Value::Null => Ok(()),
            other => Err(de::Error::invalid_type(unexpected(other), &"unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(Lenient(self.0))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(Lenient(self.0), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(Lenient(self.0), visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Redis {
        host: String,
        port: u16,
        tls: bool,
        ratio: Option<f64>,
    }

    #[test]
    fn strings_fill_numbers_and_booleans() {
        let value = json!({"host": "localhost", "port": "6379", "tls": "false", "ratio": "0.5"});
        let redis = Redis::deserialize(Lenient(&value)).expect("coerces");
        assert_eq!(
            redis,
            Redis {
                host: "localhost".into(),
                port: 6379,
                tls: false,
                ratio: Some(0.5)
            }
        );
    }

    #[test]
    fn a_string_that_is_not_a_number_is_a_type_error() {
        let value = json!({"host": "h", "port": "abc", "tls": true});
        let err = Redis::deserialize(Lenient(&value)).expect_err("rejects");
        assert_eq!(
            err.to_string(),
            "invalid type: string \"abc\", expected u16"
        );
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Memory,
        Redis { db: u8 },
    }

    #[test]
    fn enums_from_strings_and_single_key_maps() {
        assert_eq!(
            Kind::deserialize(Lenient(&json!("memory"))).ok(),
            Some(Kind::Memory)
        );
        assert_eq!(
            Kind::deserialize(Lenient(&json!({"redis": {"db": "2"}}))).ok(),
            Some(Kind::Redis { db: 2 })
        );
    }
}
