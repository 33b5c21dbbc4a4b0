//! Serde deserialization from a positioned [`Node`], so that typed specs (the config,
//! Canary, HelmRelease) get errors naming the line, column and field path of the
//! offending value rather than "invalid type" with no place.

use super::yaml::{Node, Pos, Value};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use std::fmt;

/// A deserialization error pinned to a place in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    /// Where the offending value starts, once known.
    pub pos: Option<Pos>,
    /// Dotted field path, e.g. `source.auth.ssh.privateKeyFile`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.pos {
            write!(f, "{p}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            path: String::new(),
            message: msg.to_string(),
        }
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!("expected {exp}, found {unexp}"))
    }
}

/// Deserializes `T` from `node`; `base` is the path of `node` itself (may be empty).
pub fn from_node<T: DeserializeOwned>(node: &Node, base: &str) -> Result<T, DeError> {
    T::deserialize(NodeDe {
        node,
        path: base.to_string(),
    })
}

/// A deserializer for one node at one path.
pub struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> NodeDe<'a> {
    fn locate(&self, mut e: DeError) -> DeError {
        if e.pos.is_none() {
            e.pos = Some(self.node.pos);
            e.path = self.path.clone();
        }
        e
    }
}

macro_rules! forward_to_any {
    ($($name:ident)*) => {
        $(fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.deserialize_any(visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
                path: &self.path,
            }),
            Value::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                value: None,
                path: &self.path,
                key: String::new(),
            }),
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            let path = self.path.clone();
            let node = self.node;
            visitor
                .visit_some(NodeDe { node, path })
                .map_err(|e| self.locate(e))
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Kubernetes fields typed string refuse numbers; so do we, but name the fix.
        match &self.node.value {
            Value::Str(s) => visitor.visit_borrowed_str(s),
            _ => Err(self.locate(de::Error::custom(format_args!(
                "expected a string, found {}{}",
                self.node.type_name(),
                if self.node.scalar_text().is_some() && !self.node.is_null() {
                    " (quote the value)"
                } else {
                    ""
                }
            )))),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let node = self.node;
        visitor
            .visit_newtype_struct(NodeDe { node, path })
            .map_err(|e| self.locate(e))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let key = k.scalar_text().unwrap_or_default();
                visitor.visit_enum(Enum {
                    key: key.clone(),
                    value: NodeDe {
                        node: v,
                        path: child(&self.path, &key),
                    },
                })
            }
            _ => Err(de::Error::custom(format_args!(
                "expected a string or a single-key mapping, found {}",
                self.node.type_name()
            ))),
        };
        r.map_err(|e| self.locate(e))
    }

    forward_to_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32 deserialize_f64
        deserialize_char deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_seq
        deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _l: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _l: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(v)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _n: &'static str,
        _f: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            // An empty `key:` reads as an empty mapping, as in Kubernetes.
            let empty = Node {
                value: Value::Map(Vec::new()),
                ..self.node.clone()
            };
            let path = self.path.clone();
            let r = v.visit_map(Map {
                entries: [].iter(),
                value: None,
                path: &path,
                key: String::new(),
            });
            return r.map_err(|e| {
                NodeDe {
                    node: &empty,
                    path: path.clone(),
                }
                .locate(e)
            });
        }
        self.deserialize_any(v)
    }
}

struct Seq<'a, 'p> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'p str,
}

impl<'de> SeqAccess<'de> for Seq<'de, '_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{}]", self.path, self.index);
        self.index += 1;
        let located = NodeDe {
            node,
            path: path.clone(),
        };
        seed.deserialize(NodeDe { node, path })
            .map(Some)
            .map_err(|e| located.locate(e))
    }
}

struct Map<'a, 'p> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    path: &'p str,
    key: String,
}

impl<'de> MapAccess<'de> for Map<'de, '_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        self.key = k.scalar_text().unwrap_or_default();
        let path = child(self.path, &self.key);
        // Keys are read as strings whatever they look like (`1:` is the key "1").
        let key: de::value::StringDeserializer<DeError> = self.key.clone().into_deserializer();
        seed.deserialize(key).map(Some).map_err(|mut e| {
            if e.pos.is_none() {
                e.pos = Some(k.pos);
                e.path = path;
            }
            e
        })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self.value.take().expect("value follows key");
        let path = child(self.path, &self.key);
        let located = NodeDe {
            node,
            path: path.clone(),
        };
        // Errors raised by the seed itself after reading (e.g. a bad duration string)
        // have no place yet; pin them to the value.
        seed.deserialize(NodeDe { node, path })
            .map_err(|e| located.locate(e))
    }
}

struct Enum<'a> {
    key: String,
    value: NodeDe<'a>,
}

impl<'de> de::EnumAccess<'de> for Enum<'de> {
    type Error = DeError;
    type Variant = NodeDe<'de>;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'de>), DeError> {
        let v = seed.deserialize(self.key.as_str().into_deserializer())?;
        Ok((v, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'de> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _f: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_documents;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Inner,
        list: Option<Vec<u32>>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        max_weight: Option<u32>,
    }

    fn de(text: &str) -> Result<Outer, DeError> {
        let doc = parse_documents(text).unwrap().remove(0);
        from_node(&doc.root, "")
    }

    #[test]
    fn errors_carry_line_and_path() {
        let e = de("name: x\ninner:\n  maxWeight: lots\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "3:14: inner.maxWeight: expected u32, found string \"lots\""
        );
        let e = de("name: x\nlist: [1, two]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "2:11: list[1]: expected u32, found string \"two\""
        );
        let e = de("name: x\nbogus: 1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("2:1: bogus: unknown field `bogus`"),
            "{e}"
        );
        let e = de("inner: {}\n").unwrap_err();
        assert_eq!(e.to_string(), "1:1: missing field `name`");
        let e = de("name: 5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "1:7: name: expected a string, found integer (quote the value)"
        );
    }

    #[test]
    fn reads_good_input() {
        let o = de("name: x\ninner:\n  maxWeight: 50\nlist: [1, 2]\n").unwrap();
        assert_eq!(o.inner.max_weight, Some(50));
        assert_eq!(o.list, Some(vec![1, 2]));
    }
}
