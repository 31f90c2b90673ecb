//! What a `PUT` body may be: its size, and JSON whose objects name each
//! key once.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The largest body a `PUT` may send (axum's default bound, named here so
/// an announced `Content-Length` is checked against the same number).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// The first key an object of `json` names twice, if any. serde_json
/// keeps the last of duplicates, so `{"theme": "dark", "theme": "light"}`
/// would save what one reader sees and another does not; the service
/// refuses it instead. Run on JSON that parses (errors are left to the
/// real parse).
pub fn duplicate_key(json: &[u8]) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let mut found = None;
    let _ = Check { found: &mut found }.deserialize(&mut deserializer);
    found
}

/// Walks a JSON value, ignoring all but object keys; stops at the first
/// duplicate, recorded in `found`. (Under serde_json's
/// `arbitrary_precision`, a number arrives as a one-key map: no duplicate.)
struct Check<'a> {
    found: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key.clone()) {
                *self.found = Some(key);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Check { found: self.found })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Check {
                found: &mut *self.found,
            })?
            .is_some()
        {}
        Ok(())
    }

    // Every scalar: nothing to check.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_named_twice_in_any_object_is_found() {
        assert_eq!(duplicate_key(br#"{"a": 1, "b": 2}"#), None);
        assert_eq!(
            duplicate_key(br#"{"a": 1, "b": {"c": 1e400, "d": [1, {"e": 2}]}}"#),
            None
        );
        assert_eq!(
            duplicate_key(br#"{"theme": "dark", "theme": "light"}"#).as_deref(),
            Some("theme")
        );
        assert_eq!(
            duplicate_key(br#"{"a": {"b": [{"c": 1, "c": 2}]}}"#).as_deref(),
            Some("c")
        );
        // The same key, escaped once.
        assert_eq!(
            duplicate_key(br#"{"a": 1, "\u0061": 2}"#).as_deref(),
            Some("a")
        );
        // The same key in two objects is no duplicate.
        assert_eq!(duplicate_key(br#"[{"a": 1}, {"a": 2}]"#), None);
    }
}
