//! A YAML document read into a tree of located nodes, so that every value, key and
//! problem can be reported at its line and column, and every problem in a manifest can
//! be collected in one pass (serde's derive would stop at the first).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

/// One YAML node and where it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub line: usize,
    pub column: usize,
    /// Byte range in the source, when known: lets a plain scalar read as a number or a
    /// boolean be recovered as the text it was written as (`watermark: 2024`).
    pub bytes: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64, kept as text.
    BigInt(String),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are refused by the parser.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What kind of value this is, for "must be X, got Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::BigInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "text",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::BigInt(s) | Value::Str(s) => f.write_str(s),
            Value::Float(x) => write!(f, "{x}"),
            Value::Seq(_) => f.write_str("[...]"),
            Value::Map(_) => f.write_str("{...}"),
        }
    }
}

impl Node {
    fn from_spanned(s: Spanned<Value>) -> Node {
        let loc: Location = s.referenced;
        let span = loc.span();
        let bytes = match (span.byte_offset(), span.byte_len()) {
            (Some(off), Some(len)) => usize::try_from(off)
                .ok()
                .zip(usize::try_from(off + len).ok()),
            _ => None,
        };
        Node {
            value: s.value,
            line: usize::try_from(loc.line()).unwrap_or(0),
            column: usize::try_from(loc.column()).unwrap_or(0),
            bytes,
        }
    }

    /// The key text of a mapping key node (keys that are not text are shown as written).
    pub fn key_text(&self) -> String {
        self.value.to_string()
    }

    /// [`key_text`](Node::key_text) without a copy for a text key (every key of a
    /// sound manifest: read several times for each of 100,000 jobs).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        match &self.value {
            Value::Str(s) => std::borrow::Cow::Borrowed(s),
            other => std::borrow::Cow::Owned(other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        Spanned::<Value>::deserialize(d).map(Node::from_spanned)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::BigInt(v.to_string()), Value::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::BigInt(v.to_string()), Value::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| Value::BigInt(v.to_string()), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

/// The text a scalar was written as: strings as they are, numbers and booleans as
/// they appear in `src` (so `watermark: 2024` stays "2024" and `1.10` stays "1.10").
/// `None` for null, lists and mappings.
pub(crate) fn scalar_text(n: &Node, src: &str) -> Option<String> {
    match &n.value {
        Value::Str(s) => Some(s.clone()),
        Value::Null | Value::Seq(_) | Value::Map(_) => None,
        other => Some(
            n.bytes
                .and_then(|(a, b)| src.get(a..b))
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| other.to_string()),
        ),
    }
}

/// Gives every mapping key that is not text the text it was written as: a key is a
/// name (a matrix placeholder, a field), so `n:`, `on:` or `0x10:` is that word, not
/// a boolean or a number shown another way.
pub(crate) fn keys_as_written(n: &mut Node, src: &str) {
    match &mut n.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                if !matches!(k.value, Value::Str(_))
                    && let Some(text) = scalar_text(k, src)
                {
                    k.value = Value::Str(text);
                }
                keys_as_written(v, src);
            }
        }
        Value::Seq(items) => {
            for item in items {
                keys_as_written(item, src);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_written_text_and_place() {
        let src = "a: 16:9\nb: 2024\nc: yes\nd: 1.10\ne:\n";
        let n: Node = serde_saphyr::from_str(src).unwrap();
        let Value::Map(entries) = &n.value else {
            panic!("not a map")
        };
        let texts: Vec<Option<String>> = entries.iter().map(|(_, v)| scalar_text(v, src)).collect();
        assert_eq!(
            texts,
            [
                Some("16:9".into()),
                Some("2024".into()),
                Some("yes".into()),
                Some("1.10".into()),
                None
            ]
        );
        assert_eq!(entries[1].1.value, Value::Int(2024));
        assert_eq!((entries[1].1.line, entries[1].1.column), (2, 4));
        assert_eq!((entries[2].0.line, entries[2].0.column), (3, 1));
    }
}
