//! Decoding with a bound on memory: [`Metered`] wraps any serde
//! `Deserializer` and counts what the value being built will take, so that
//! a few bytes cannot become a huge value.
//!
//! A MessagePack array of 8 million nils is 8 MiB; decoded as
//! `Vec<serde_json::Value>` it takes 256 MiB (32 bytes a value), and an
//! array header can claim 4 billion elements in 5 bytes. So the meter:
//!
//! - counts what each sequence and map the visitor builds allocates: it
//!   follows a growing vector's capacity (doubling, as `Vec` does), so an
//!   element that would make it grow past the limit is refused before the
//!   vector grows; and for each string or byte string its length. A
//!   struct's or tuple's fields are inside the value already counted and
//!   are not counted again;
//! - refuses the value ([`Refusal::TooLarge`]) once that count passes
//!   [`RATIO`] times the input's size plus [`ALLOWANCE`];
//! - takes what it counts past the allowance from the server's budget
//!   (when it has one), in [`CHUNK`]s, and refuses
//!   ([`Refusal::NoBudget`]) when the budget has no room: the hold lives as
//!   long as the decoded value's request;
//! - hides the sequences' and maps' size hints, so that no collection is
//!   allocated up front for what a header claims (serde preallocates up
//!   to 1 MiB per collection from a hint; nested headers would multiply
//!   that).
//!
//! So what is counted is close to what the value takes (maps and boxed
//! values add their own bookkeeping), and the limit holds for the memory
//! itself, not only for the elements' sizes.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

use crate::server::{Hold, MemoryBudget};

/// A decoded value may take this many times its encoded size (plus the
/// allowance): typed values stay far below it (a `u64` from a
/// one-byte MessagePack integer is 8 bytes, a string its own length), and
/// so do JSON objects; what passes it is a long array of tiny values
/// decoded as `serde_json::Value` (32 bytes each, in a vector that doubles
/// as it grows), the shape of a decode bomb: an 8 MiB MessagePack array of
/// nils would take 256 MiB.
pub const RATIO: usize = 16;

/// What any value may take, whatever its size: small messages are never
/// refused.
pub const ALLOWANCE: usize = 1 << 20;

/// The steps in which the meter takes from the server's budget.
const CHUNK: usize = 1 << 20;

/// Why a decode was stopped by its meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The value would take more than its limit.
    TooLarge { limit: usize, input: usize },
    /// The server's budget has no room for it now.
    NoBudget { budget: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLarge { limit, input } => write!(
                f,
                "the decoded value would take more than {limit} bytes in memory \
                 ({RATIO} times the {input} bytes sent, plus {ALLOWANCE}); send a \
                 smaller value, or use a type that holds it more compactly"
            ),
            Refusal::NoBudget { budget } => write!(
                f,
                "the server holds its budget of {budget} bytes for its clients' requests \
                 and cannot decode these params now; try again later"
            ),
        }
    }
}

/// Counts the memory of the value one decode builds.
pub(crate) struct Meter {
    counted: Cell<usize>,
    limit: usize,
    input: usize,
    /// What is taken from the server's budget so far.
    hold: Cell<Option<Hold>>,
    budget: Option<Arc<MemoryBudget>>,
    refusal: Cell<Option<Refusal>>,
}

impl Meter {
    /// A meter for a value decoded from `input` bytes, charging the
    /// server's `budget` (if any) past the allowance.
    pub(crate) fn new(input: usize, budget: Option<Arc<MemoryBudget>>) -> Meter {
        Meter {
            counted: Cell::new(0),
            limit: input.saturating_mul(RATIO).saturating_add(ALLOWANCE),
            input,
            hold: Cell::new(None),
            budget,
            refusal: Cell::new(None),
        }
    }

    /// Why the decode was stopped, if the meter stopped it.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        self.refusal.get()
    }

    /// The bytes counted so far.
    #[cfg(test)]
    pub(crate) fn counted(&self) -> usize {
        self.counted.get()
    }

    /// What was taken from the server's budget; it goes back when dropped.
    pub(crate) fn into_hold(self) -> Option<Hold> {
        self.hold.into_inner()
    }

    /// Starts over for another decode of the same input (the charges taken
    /// so far are kept, and given back with the hold).
    pub(crate) fn restart(&self) {
        self.counted.set(0);
        self.refusal.set(None);
    }

    /// Counts `bytes` more; an error (for the deserializer to return) if
    /// that passes the limit or the budget.
    fn count<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let counted = self.counted.get().saturating_add(bytes);
        self.counted.set(counted);
        if counted > self.limit {
            let (limit, input) = (self.limit, self.input);
            return Err(self.refuse(Refusal::TooLarge { limit, input }));
        }
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let mut hold = self
            .hold
            .take()
            .unwrap_or_else(|| Hold::empty(budget.clone()));
        let needed = counted.saturating_sub(ALLOWANCE);
        let taken = needed <= hold.bytes() || hold.try_add(CHUNK.max(needed - hold.bytes()));
        self.hold.set(Some(hold));
        match taken {
            true => Ok(()),
            false => Err(self.refuse(Refusal::NoBudget {
                budget: budget.limit(),
            })),
        }
    }

    fn refuse<E: de::Error>(&self, refusal: Refusal) -> E {
        self.refusal.set(Some(refusal));
        E::custom(refusal)
    }
}

/// A deserializer whose value is counted by `meter`.
pub(crate) struct Metered<'m, D> {
    inner: D,
    meter: &'m Meter,
}

impl<'m, D> Metered<'m, D> {
    pub(crate) fn new(inner: D, meter: &'m Meter) -> Metered<'m, D> {
        Metered { inner, meter }
    }
}

/// A visitor whose collections are counted. `inline`: the value is a
/// struct, tuple or enum variant, whose fields live inside it (counted
/// with it), not in collections of their own.
struct MeteredVisitor<'m, V> {
    inner: V,
    meter: &'m Meter,
    inline: bool,
}

impl<'m, V> MeteredVisitor<'m, V> {
    fn new(inner: V, meter: &'m Meter) -> Self {
        MeteredVisitor {
            inner,
            meter,
            inline: false,
        }
    }

    fn inline(inner: V, meter: &'m Meter) -> Self {
        MeteredVisitor {
            inner,
            meter,
            inline: true,
        }
    }
}

/// Forwards each `deserialize_*` method to the inner deserializer with a
/// metered visitor.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) $wrap:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* MeteredVisitor::$wrap(visitor, self.meter))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Metered<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any() new;
        deserialize_bool() new;
        deserialize_i8() new;
        deserialize_i16() new;
        deserialize_i32() new;
        deserialize_i64() new;
        deserialize_i128() new;
        deserialize_u8() new;
        deserialize_u16() new;
        deserialize_u32() new;
        deserialize_u64() new;
        deserialize_u128() new;
        deserialize_f32() new;
        deserialize_f64() new;
        deserialize_char() new;
        deserialize_str() new;
        deserialize_string() new;
        deserialize_bytes() new;
        deserialize_byte_buf() new;
        deserialize_option() new;
        deserialize_unit() new;
        deserialize_unit_struct(name: &'static str) new;
        deserialize_newtype_struct(name: &'static str) new;
        deserialize_seq() new;
        deserialize_tuple(len: usize) inline;
        deserialize_tuple_struct(name: &'static str, len: usize) inline;
        deserialize_map() new;
        deserialize_struct(name: &'static str, fields: &'static [&'static str]) inline;
        deserialize_enum(name: &'static str, variants: &'static [&'static str]) inline;
        deserialize_identifier() new;
        deserialize_ignored_any() new;
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for MeteredVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V::Value, E> {
        self.inner.visit_bool(v)
    }
    fn visit_i8<E: de::Error>(self, v: i8) -> Result<V::Value, E> {
        self.inner.visit_i8(v)
    }
    fn visit_i16<E: de::Error>(self, v: i16) -> Result<V::Value, E> {
        self.inner.visit_i16(v)
    }
    fn visit_i32<E: de::Error>(self, v: i32) -> Result<V::Value, E> {
        self.inner.visit_i32(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.inner.visit_i64(v)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<V::Value, E> {
        self.inner.visit_i128(v)
    }
    fn visit_u8<E: de::Error>(self, v: u8) -> Result<V::Value, E> {
        self.inner.visit_u8(v)
    }
    fn visit_u16<E: de::Error>(self, v: u16) -> Result<V::Value, E> {
        self.inner.visit_u16(v)
    }
    fn visit_u32<E: de::Error>(self, v: u32) -> Result<V::Value, E> {
        self.inner.visit_u32(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.inner.visit_u64(v)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<V::Value, E> {
        self.inner.visit_u128(v)
    }
    fn visit_f32<E: de::Error>(self, v: f32) -> Result<V::Value, E> {
        self.inner.visit_f32(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.inner.visit_f64(v)
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<V::Value, E> {
        self.inner.visit_char(v)
    }

    // Strings and bytes are counted at their length: the visitor may copy
    // them (a field name it only compares costs a little over-counting).
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.meter.count(v.len())?;
        self.inner.visit_str(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.meter.count(v.len())?;
        self.inner.visit_borrowed_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.meter.count(v.len())?;
        self.inner.visit_string(v)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        self.meter.count(v.len())?;
        self.inner.visit_bytes(v)
    }
    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        self.meter.count(v.len())?;
        self.inner.visit_borrowed_bytes(v)
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<V::Value, E> {
        self.meter.count(v.len())?;
        self.inner.visit_byte_buf(v)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }
    fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        self.inner.visit_some(Metered::new(d, self.meter))
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_newtype_struct<D2: Deserializer<'de>>(self, d: D2) -> Result<V::Value, D2::Error> {
        self.inner.visit_newtype_struct(Metered::new(d, self.meter))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_seq(MeteredAccess::new(seq, self.meter, self.inline))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_map(MeteredAccess::new(map, self.meter, self.inline))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_enum(MeteredAccess::new(data, self.meter, true))
    }
}

/// A sequence, map or enum being visited, decoded metered, and the
/// collection it becomes counted as it grows (unless its elements are the
/// fields of an inline value).
struct MeteredAccess<'m, A> {
    inner: A,
    meter: &'m Meter,
    inline: bool,
    /// Elements so far, and the capacity a vector of them has.
    len: usize,
    capacity: usize,
}

impl<'m, A> MeteredAccess<'m, A> {
    fn new(inner: A, meter: &'m Meter, inline: bool) -> Self {
        MeteredAccess {
            inner,
            meter,
            inline,
            len: 0,
            capacity: 0,
        }
    }

    /// Counts one more element of `size` bytes (not for inline fields):
    /// when the collection is full, the room its growth takes (it doubles,
    /// from 4 elements, as `Vec` does), before it grows.
    fn element<E: de::Error>(&mut self, size: usize) -> Result<(), E> {
        if self.inline {
            return Ok(());
        }
        self.len += 1;
        if self.len > self.capacity {
            let grown = (self.capacity * 2).max(4);
            // A zero-sized element still takes the decoder's time.
            self.meter.count((grown - self.capacity) * size.max(1))?;
            self.capacity = grown;
        }
        Ok(())
    }
}

/// A seed whose value is decoded metered.
struct MeteredSeed<'m, S> {
    inner: S,
    meter: &'m Meter,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for MeteredSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Metered::new(d, self.meter))
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for MeteredAccess<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = MeteredSeed {
            inner: seed,
            meter: self.meter,
        };
        let element = self.inner.next_element_seed(seed)?;
        if element.is_some() {
            self.element(std::mem::size_of::<T::Value>())?;
        }
        Ok(element)
    }

    // No hint: a collection grows with what arrives, never to what a
    // header claims.
    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for MeteredAccess<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = MeteredSeed {
            inner: seed,
            meter: self.meter,
        };
        let key = self.inner.next_key_seed(seed)?;
        if key.is_some() {
            self.element(std::mem::size_of::<K::Value>())?;
        }
        Ok(key)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let seed = MeteredSeed {
            inner: seed,
            meter: self.meter,
        };
        let value = self.inner.next_value_seed(seed)?;
        self.element(std::mem::size_of::<S::Value>())?;
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de, 'm, A: de::EnumAccess<'de>> de::EnumAccess<'de> for MeteredAccess<'m, A> {
    type Error = A::Error;
    type Variant = MeteredAccess<'m, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let seed = MeteredSeed {
            inner: seed,
            meter: self.meter,
        };
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((value, MeteredAccess::new(variant, self.meter, true)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for MeteredAccess<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.newtype_variant_seed(MeteredSeed {
            inner: seed,
            meter: self.meter,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner
            .tuple_variant(len, MeteredVisitor::inline(visitor, self.meter))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner
            .struct_variant(fields, MeteredVisitor::inline(visitor, self.meter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::Value;

    fn msgpack<T: for<'de> Deserialize<'de>>(bytes: &[u8], meter: &Meter) -> Result<T, String> {
        let mut de = rmp_serde::Deserializer::new(bytes);
        T::deserialize(Metered::new(&mut de, meter)).map_err(|e| e.to_string())
    }

    /// A MessagePack array32 of `n` nils.
    fn nils(n: u32) -> Vec<u8> {
        let mut bytes = vec![0xdd];
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.resize(n as usize + 5, 0xc0);
        bytes
    }

    #[test]
    fn an_array_of_nils_as_values_is_refused_past_the_ratio() {
        let bytes = nils(1 << 20);
        let meter = Meter::new(bytes.len(), None);
        let err = msgpack::<Value>(&bytes, &meter).unwrap_err();
        assert!(
            matches!(meter.refusal(), Some(Refusal::TooLarge { .. })),
            "{err}"
        );
        assert!(err.contains("times the"), "{err}");
        // Refused before the vector grew past the limit: the growth that
        // would have passed it is the last thing counted.
        let limit = bytes.len() * RATIO + ALLOWANCE;
        assert!(meter.counted() > limit && meter.counted() <= 2 * limit);
        // The same array as `Vec<Option<u8>>` (2 bytes a value) fits, and
        // what is counted is the vector's capacity.
        let meter = Meter::new(bytes.len(), None);
        let decoded = msgpack::<Vec<Option<u8>>>(&bytes, &meter).unwrap();
        assert_eq!(decoded.len(), 1 << 20);
        assert_eq!(meter.counted(), 2 << 20);
    }

    #[test]
    fn a_header_that_claims_more_than_is_there_allocates_nothing_for_it() {
        // 64 nested arrays each claiming 4 billion elements, then the end.
        let bytes: Vec<u8> = (0..64)
            .flat_map(|_| [0xdd, 0xff, 0xff, 0xff, 0xff])
            .collect();
        let meter = Meter::new(bytes.len(), None);
        assert!(msgpack::<Value>(&bytes, &meter).is_err());
        assert_eq!(meter.refusal(), None, "an ordinary error: the input ends");
        assert_eq!(meter.counted(), 0);
    }

    #[test]
    fn struct_fields_are_counted_with_their_struct_and_strings_at_their_length() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Item {
            id: u64,
            name: String,
            tags: Vec<u16>,
        }
        let json = br#"[{"id":1,"name":"abc","tags":[1,2]},{"id":2,"name":"de","tags":[]}]"#;
        let meter = Meter::new(json.len(), None);
        let mut de = serde_json::Deserializer::from_slice(json);
        let items = Vec::<Item>::deserialize(Metered::new(&mut de, &meter)).unwrap();
        assert_eq!(items.len(), 2);
        let item = std::mem::size_of::<Item>();
        // Room for four items (a vector's first growth), their field names
        // (2 x 10 bytes), "abc" and "de", room for four u16.
        assert_eq!(meter.counted(), 4 * item + 2 * 10 + 5 + 4 * 2);
    }

    #[test]
    fn past_the_allowance_the_servers_budget_is_charged_until_the_hold_is_dropped() {
        let budget = Arc::new(MemoryBudget::new(8 * CHUNK));
        let big = vec![7u8; 3 * CHUNK];
        let encoded = rmp_serde::to_vec(&serde_bytes_like(&big)).unwrap();
        let meter = Meter::new(encoded.len(), Some(budget.clone()));
        let decoded: Vec<u8> = msgpack(&encoded, &meter).unwrap();
        assert_eq!(decoded.len(), big.len());
        let hold = meter.into_hold().expect("charged past the allowance");
        assert!(hold.bytes() >= 2 * CHUNK, "{}", hold.bytes());
        assert_eq!(budget.held(), hold.bytes());
        drop(hold);
        assert_eq!(budget.held(), 0);
        // With no room left, the decode is refused for the budget.
        let full = Arc::new(MemoryBudget::new(CHUNK / 2));
        let meter = Meter::new(encoded.len(), Some(full.clone()));
        assert!(msgpack::<Vec<u8>>(&encoded, &meter).is_err());
        assert!(matches!(meter.refusal(), Some(Refusal::NoBudget { .. })));
        drop(meter);
        assert_eq!(full.held(), 0);
    }

    /// `bytes` as MessagePack's bin type.
    fn serde_bytes_like(bytes: &[u8]) -> impl serde::Serialize + '_ {
        struct Bin<'a>(&'a [u8]);
        impl serde::Serialize for Bin<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bin(bytes)
    }
}
