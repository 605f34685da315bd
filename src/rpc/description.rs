//! What DESCRIBE returns (PROTOCOL.md, "DESCRIBE"), as serde types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::Encoding;

/// A service's description: its name, version, the encodings it accepts,
/// and its methods. [`Client::describe`](crate::Client::describe) returns
/// it; members this version does not know are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Description {
    /// The service's name.
    pub service: String,
    /// The service's own version (free text; may be empty).
    pub version: String,
    /// The protocol version the server speaks (2).
    pub protocol: u16,
    /// The encodings the server accepts, by name (`msgpack`, `json`), in
    /// its order of preference.
    pub encodings: Vec<String>,
    /// Its methods.
    pub methods: Vec<MethodDescription>,
    /// Its topics (revision 2.2; an empty list when it has none, absent
    /// from an older server's description).
    pub topics: Vec<TopicDescription>,
}

impl Description {
    /// The method called `name`, if the service has it.
    pub fn method(&self, name: &str) -> Option<&MethodDescription> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// The topic called `name`, if the service has it.
    pub fn topic(&self, name: &str) -> Option<&TopicDescription> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The [`encodings`](Self::encodings) this crate knows, in the
    /// server's order.
    pub fn known_encodings(&self) -> Vec<Encoding> {
        let known = self.encodings.iter().map(|name| Encoding::from_name(name));
        known.flatten().collect()
    }
}

/// One method of a [`Description`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MethodDescription {
    /// The method's name.
    pub name: String,
    /// Its one-line doc.
    pub doc: String,
    /// The JSON Schema (draft 2020-12) of its params.
    pub request: Value,
    /// The JSON Schema of its result.
    pub response: Value,
    /// Revision 2.2, a streaming method: `"server"`, `"client"` or
    /// `"both"`; `None` for a method that does not stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<String>,
    /// The JSON Schema of each item the server sends (`"server"` and
    /// `"both"` streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_item: Option<Value>,
    /// The JSON Schema of each item the client sends (`"client"` and
    /// `"both"` streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_item: Option<Value>,
}

/// One topic of a [`Description`] (revision 2.2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// Its one-line doc.
    pub doc: String,
    /// The JSON Schema of each event.
    pub event: Value,
    /// What happens to a subscriber that falls behind: `"drop_oldest"` or
    /// `"disconnect"`.
    pub policy: String,
    /// How many events a subscriber may fall behind by.
    pub queue: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_members_are_ignored_and_missing_ones_default() {
        let json =
            br#"{"service":"s","protocol":2,"later":[1],"encodings":["msgpack","cbor","json"],
            "methods":[{"name":"m","request":true,"response":{"type":"null"},"new":1}]}"#;
        let description: Description = serde_json::from_slice(json).unwrap();
        assert_eq!(description.service, "s");
        assert_eq!(description.version, "");
        let known = description.known_encodings();
        assert_eq!(known, [Encoding::MessagePack, Encoding::Json]);
        let method = description.method("m").unwrap();
        assert_eq!(method.doc, "");
        assert_eq!(method.response["type"], "null");
        assert!(description.method("n").is_none());
    }
}
