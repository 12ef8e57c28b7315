//! A serde `Deserializer` over a [`Node`] tree.
//!
//! It does three things a plain YAML-to-JSON conversion cannot:
//! - every error is tied to the line/column and field path of the node that
//!   caused it;
//! - keys that the target struct does not declare are collected, which gives
//!   Kubernetes' strict field validation (k8s-openapi ignores unknown keys);
//! - JSON typing is kept strict (`"80"` is not an integer, `80` is not a string),
//!   while `null` behaves as in Go's encoding/json: it leaves the zero value.

use std::cell::RefCell;
use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use super::tree::{Entry, Node, Pos, Value};

/// A key that the target type does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unknown {
    pub path: String,
    pub pos: Pos,
}

#[derive(Debug, Default)]
pub(crate) struct Ctx {
    unknown: RefCell<Vec<Unknown>>,
}

impl Ctx {
    pub(crate) fn into_unknown(self) -> Vec<Unknown> {
        self.unknown.into_inner()
    }
}

/// An error with the place it happened, once known.
#[derive(Debug)]
pub(crate) struct DeError {
    pub msg: String,
    pub at: Option<(Pos, String)>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            msg: msg.to_string(),
            at: None,
        }
    }
}

/// Deserialize `T` from `node`; `path` is the field path of `node` ("" at a document root).
pub(crate) fn from_node<T: de::DeserializeOwned>(
    node: &Node,
    path: &str,
    ctx: &Ctx,
) -> Result<T, DeError> {
    T::deserialize(NodeDe {
        node,
        path: path.to_owned(),
        ctx,
    })
}

pub(crate) fn child_path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn key_path(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    ctx: &'a Ctx,
}

impl NodeDe<'_> {
    /// Innermost node wins: an error already placed by a child keeps its place.
    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|mut e| {
            if e.at.is_none() {
                e.at = Some((self.node.pos, self.path.clone()));
            }
            e
        })
    }

    fn visit_map_node<'de, V: Visitor<'de>>(
        &self,
        visitor: V,
        entries: &[Entry],
        fields: Option<&'static [&'static str]>,
    ) -> Result<V::Value, DeError> {
        let r = visitor.visit_map(MapDe {
            iter: entries.iter(),
            current: None,
            fields,
            path: &self.path,
            ctx: self.ctx,
        });
        self.locate(r)
    }

    fn visit_seq_node<'de, V: Visitor<'de>>(
        &self,
        visitor: V,
        items: &[Node],
    ) -> Result<V::Value, DeError> {
        let r = visitor.visit_seq(SeqDe {
            iter: items.iter().enumerate(),
            path: &self.path,
            ctx: self.ctx,
        });
        self.locate(r)
    }
}

macro_rules! forward_scalar {
    ($($method:ident => $null:expr),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                if let Value::Null = self.node.value {
                    // Go leaves the zero value for `null`.
                    let r = ($null)(visitor);
                    return self.locate(r);
                }
                self.deserialize_any(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => return self.visit_seq_node(visitor, items),
            Value::Map(entries) => return self.visit_map_node(visitor, entries, None),
        };
        self.locate(r)
    }

    forward_scalar! {
        deserialize_bool => |v: V| v.visit_bool(false),
        deserialize_i8 => |v: V| v.visit_i64(0),
        deserialize_i16 => |v: V| v.visit_i64(0),
        deserialize_i32 => |v: V| v.visit_i64(0),
        deserialize_i64 => |v: V| v.visit_i64(0),
        deserialize_u8 => |v: V| v.visit_u64(0),
        deserialize_u16 => |v: V| v.visit_u64(0),
        deserialize_u32 => |v: V| v.visit_u64(0),
        deserialize_u64 => |v: V| v.visit_u64(0),
        deserialize_f32 => |v: V| v.visit_f64(0.0),
        deserialize_f64 => |v: V| v.visit_f64(0.0),
        deserialize_str => |v: V| v.visit_str(""),
        deserialize_string => |v: V| v.visit_str(""),
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if let Value::Null = self.node.value {
            let r = visitor.visit_none();
            return self.locate(r);
        }
        let node = self.node;
        let path = self.path.clone();
        let r = visitor.visit_some(NodeDe {
            node,
            path,
            ctx: self.ctx,
        });
        self.locate(r)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let node = self.node;
        let path = self.path.clone();
        let r = visitor.visit_newtype_struct(NodeDe {
            node,
            path,
            ctx: self.ctx,
        });
        self.locate(r)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => self.visit_seq_node(visitor, items),
            Value::Null => self.visit_seq_node(visitor, &[]),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => self.visit_map_node(visitor, entries, None),
            Value::Null => self.visit_map_node(visitor, &[], None),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => self.visit_map_node(visitor, entries, Some(fields)),
            Value::Null => self.visit_map_node(visitor, &[], Some(fields)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => {
                let de: StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                let r = visitor.visit_enum(de);
                self.locate(r)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Skipped subtrees are not inspected (their key was already reported if unknown).
        visitor.visit_unit()
    }
}

struct SeqDe<'a> {
    iter: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'a str,
    ctx: &'a Ctx,
}

impl<'de> SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.iter.next() else {
            return Ok(None);
        };
        seed.deserialize(NodeDe {
            node,
            path: format!("{}[{i}]", self.path),
            ctx: self.ctx,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'a> {
    iter: std::slice::Iter<'a, Entry>,
    current: Option<&'a Entry>,
    /// The declared fields when the target is a struct; `None` for maps.
    fields: Option<&'static [&'static str]>,
    path: &'a str,
    ctx: &'a Ctx,
}

impl<'de> MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.iter.next() else {
            return Ok(None);
        };
        self.current = Some(entry);
        if let Some(fields) = self.fields
            && !fields.contains(&entry.key.as_str())
        {
            self.ctx.unknown.borrow_mut().push(Unknown {
                path: child_path(self.path, &entry.key),
                pos: entry.key_pos,
            });
        }
        let de: StrDeserializer<'_, DeError> = entry.key.as_str().into_deserializer();
        seed.deserialize(de).map(Some).map_err(|mut e| {
            if e.at.is_none() {
                e.at = Some((entry.key_pos, key_path(self.path, &entry.key)));
            }
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(entry) = self.current.take() else {
            return Err(de::Error::custom(
                "a map value was requested before its key",
            ));
        };
        let path = if self.fields.is_some() {
            child_path(self.path, &entry.key)
        } else {
            key_path(self.path, &entry.key)
        };
        seed.deserialize(NodeDe {
            node: &entry.value,
            path,
            ctx: self.ctx,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}
