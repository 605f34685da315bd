//! [`Service`]: typed methods and their handlers, as the server's [`Calls`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use schemars::{JsonSchema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::bounded::{Meter, Refusal};
use super::codec;
use super::description::{Description, MethodDescription, TopicDescription};
use super::items::{ItemSink, ItemSource};
use super::{Method, StreamDirection, StreamMethod, Topic};
use crate::protocol::{Encoding, MAX_METHOD_LEN, PROTOCOL_VERSION};
use crate::server::StreamItems;
use crate::server::{Calls, ConnectionContext, Hold, MemoryBudget, Publisher, ServiceError};

/// Params at least this large are decoded on a blocking thread: decoding
/// megabytes takes long enough (a tenth of a second and more) to hold up
/// the connection's other requests, and other connections served by the
/// same worker thread.
const BLOCKING_DECODE: usize = 64 * 1024;

/// A handler with its types erased: params bytes in, result bytes out.
type Erased<S> = Box<
    dyn Fn(
            Arc<S>,
            Encoding,
            Bytes,
            ConnectionContext,
        ) -> BoxFuture<'static, Result<Bytes, ServiceError>>
        + Send
        + Sync,
>;

/// A streaming method's handler with its types erased: params bytes and
/// the stream's raw items in, result bytes out.
type ErasedStream<S> = Box<
    dyn Fn(
            Arc<S>,
            Encoding,
            Bytes,
            StreamItems,
            ConnectionContext,
        ) -> BoxFuture<'static, Result<Bytes, ServiceError>>
        + Send
        + Sync,
>;

/// A typed service: a name, a version, shared state `S`, and a handler for
/// each of its [`Method`]s. It answers the server's CALLs and DESCRIBE
/// ([`ServerBuilder::calls`](crate::server::ServerBuilder::calls)): it
/// decodes each CALL's params into the method's request type, runs the
/// handler, and encodes its response in the CALL's encoding.
///
/// ```
/// use pipesvc::rpc::{Method, Service};
/// use pipesvc::server::Server;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// const BUMP: Method<u64, u64> = Method::new("bump", "Adds to the counter; returns the new total");
///
/// let service = Service::new("counter", "1.0.0", AtomicU64::new(0))
///     .method(&BUMP, |counter, by: u64, _ctx| async move {
///         Ok(counter.fetch_add(by, Ordering::Relaxed) + by)
///     });
/// let server = Server::builder("counter".parse()?).calls(service).build()?;
/// # let _ = server;
/// # Ok::<(), pipesvc::Error>(())
/// ```
pub struct Service<S = ()> {
    name: String,
    version: String,
    state: Arc<S>,
    handlers: HashMap<&'static str, Erased<S>, NameHash>,
    /// Its streaming methods (revision 2.2), and which way each streams.
    streams: HashMap<&'static str, (StreamDirection, ErasedStream<S>), NameHash>,
    /// The same names and directions, for [`Calls::stream_direction`]
    /// (asked of every CALL): while there are at most
    /// [`SCANNED_STREAMS`], comparing names (their lengths first) costs a
    /// CALL of a method that does not stream a few instructions, where
    /// hashing its name cost about 250 per CALL.
    stream_names: Vec<(&'static str, StreamDirection)>,
    /// Each method's entry in the description, in the order they were added.
    methods: Vec<MethodDescription>,
    /// Its topics (revision 2.2), and their entries in the description.
    publisher: Publisher,
    topics: Vec<TopicDescription>,
    encodings: Vec<Encoding>,
    /// The DESCRIBE answer, made at the first DESCRIBE.
    description: OnceLock<Bytes>,
    /// Large decodes running at once on blocking threads: half the CPUs
    /// (at least one), so that they leave the runtime's worker threads
    /// room to serve everyone else.
    decoders: Arc<tokio::sync::Semaphore>,
}

impl<S: Send + Sync + 'static> Service<S> {
    /// A service called `name`, of version `version` (both shown by
    /// DESCRIBE), whose handlers share `state`. It offers both encodings,
    /// MessagePack first.
    pub fn new(name: impl Into<String>, version: impl Into<String>, state: S) -> Service<S> {
        Service {
            name: name.into(),
            version: version.into(),
            state: Arc::new(state),
            handlers: HashMap::default(),
            streams: HashMap::default(),
            stream_names: Vec::new(),
            methods: Vec::new(),
            publisher: Publisher::default(),
            topics: Vec::new(),
            encodings: vec![Encoding::MessagePack, Encoding::Json],
            description: OnceLock::new(),
            decoders: Arc::new(tokio::sync::Semaphore::new(decoders())),
        }
    }

    /// Answers `method` with `handler`, which gets the service's state, the
    /// decoded request and the call's [`ConnectionContext`] (deadline,
    /// metadata, cancellation, the client's identity). The handler's
    /// future is dropped when the call is cancelled or its deadline passes.
    ///
    /// # Panics
    /// If the service already has a method of that name, or the name is
    /// empty (that is the byte handler's) or longer than 255 bytes: a
    /// mistake in the service's definition, found when it is built.
    pub fn method<Req, Resp, H, Fut>(mut self, method: &Method<Req, Resp>, handler: H) -> Self
    where
        Req: DeserializeOwned + JsonSchema + Send + 'static,
        Resp: Serialize + JsonSchema + Send + 'static,
        H: Fn(Arc<S>, Req, ConnectionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        let name = method.name();
        self.check_new(name);
        let handler = Arc::new(handler);
        let decoders = self.decoders.clone();
        let erased: Erased<S> = Box::new(move |state, encoding, params, ctx| {
            let budget = ctx.memory_budget().clone();
            if params.len() < BLOCKING_DECODE {
                return match decode_params::<Req>(encoding, &params, budget) {
                    Ok((request, hold)) => handler(state, request, ctx)
                        .map(move |result| {
                            drop(hold);
                            encode_result(name, encoding, result?)
                        })
                        .boxed(),
                    Err(err) => std::future::ready(Err(err)).boxed(),
                };
            }
            let (handler, decoders) = (handler.clone(), decoders.clone());
            async move {
                let decoding = decoders.acquire_owned().await;
                let decode = move || decode_params::<Req>(encoding, &params, budget);
                let (request, hold) = match tokio::task::spawn_blocking(decode).await {
                    Ok(decoded) => decoded?,
                    Err(e) => return Err(ServiceError::new(format!("decoding failed: {e}"))),
                };
                drop(decoding);
                let result = handler(state, request, ctx).await;
                drop(hold);
                encode_result(name, encoding, result?)
            }
            .boxed()
        });
        self.check_new(name);
        self.handlers.insert(name, erased);
        self.methods.push(describe::<Req, Resp>(method));
        self
    }

    /// Answers the streaming `method` with `handler` (revision 2.2), which
    /// gets the service's state, the decoded params, an [`ItemSink`] for
    /// the items it sends (a server or bidirectional stream), an
    /// [`ItemSource`] for the items the client sends (a client or
    /// bidirectional stream; one that streams the other way sends or
    /// takes nothing) and the call's [`ConnectionContext`]. Its result is
    /// the stream's last answer (its RESPONSE), after every item; an error
    /// ends the stream with that ERROR, however many items went before.
    /// The stream does not count against the in-flight limit; the CALL's
    /// timeout covers all of it, the server's request timeout none. The
    /// handler's future is dropped when the client cancels the stream.
    ///
    /// ```
    /// use pipesvc::rpc::{Service, StreamMethod};
    ///
    /// const COUNT: StreamMethod<u64, (), u64, ()> =
    ///     StreamMethod::server("count", "The numbers 1 to n");
    ///
    /// let service = Service::new("counter", "1.0.0", ())
    ///     .stream_method(&COUNT, |_, n: u64, items, _, _ctx| async move {
    ///         for i in 1..=n {
    ///             items.send(&i).await?;
    ///         }
    ///         Ok(())
    ///     });
    /// # let _ = service;
    /// ```
    ///
    /// # Panics
    /// As [`Service::method`]: a name defined twice (by either), empty or
    /// longer than 255 bytes.
    pub fn stream_method<Req, In, Out, Resp, H, Fut>(
        mut self,
        method: &StreamMethod<Req, In, Out, Resp>,
        handler: H,
    ) -> Self
    where
        Req: DeserializeOwned + JsonSchema + Send + 'static,
        In: DeserializeOwned + JsonSchema + Send + 'static,
        Out: Serialize + JsonSchema + Send + 'static,
        Resp: Serialize + JsonSchema + Send + 'static,
        H: Fn(Arc<S>, Req, ItemSink<Out>, ItemSource<In>, ConnectionContext) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        let name = method.name();
        let erased: ErasedStream<S> = Box::new(move |state, encoding, params, items, ctx| {
            let budget = ctx.memory_budget().clone();
            // Params of a stream are small (the items carry the bulk):
            // decoded here, not on a blocking thread.
            let (request, hold) = match decode_params::<Req>(encoding, &params, budget) {
                Ok(decoded) => decoded,
                Err(err) => return std::future::ready(Err(err)).boxed(),
            };
            let sink = ItemSink::new(items.sender, encoding);
            let source = ItemSource::new(items.receiver, encoding);
            handler(state, request, sink, source, ctx)
                .map(move |result| {
                    drop(hold);
                    encode_result(name, encoding, result?)
                })
                .boxed()
        });
        self.check_new(name);
        self.streams.insert(name, (method.direction(), erased));
        self.stream_names.push((name, method.direction()));
        self.methods.push(describe_stream(method));
        self
    }

    /// Offers `topic` (revision 2.2): clients SUBSCRIBE to it, and the
    /// service publishes its events through its [`Publisher`]
    /// ([`Service::publisher`], or a handler's
    /// [`ConnectionContext::publisher`]). Listed in DESCRIBE with the
    /// schema of its events, its policy and its queue.
    ///
    /// ```
    /// use pipesvc::rpc::{Service, Topic};
    ///
    /// const TICKS: Topic<u64> = Topic::new("ticks", "Uptime in ms, once a second");
    ///
    /// let service = Service::new("clock", "1.0.0", ()).topic(&TICKS);
    /// // Taken before the service is handed to the server: publish from
    /// // anywhere, also before it serves.
    /// let publisher = service.publisher().clone();
    /// assert_eq!(publisher.publish(&TICKS, &1000), 0, "no subscriber yet");
    /// ```
    ///
    /// # Panics
    /// If the service already has a topic of that name, or the name is
    /// empty or longer than 255 bytes.
    pub fn topic<E: Serialize + JsonSchema>(mut self, topic: &Topic<E>) -> Self {
        let name = topic.name();
        assert!(
            !name.is_empty() && name.len() <= 255,
            "topic name {name:?}: it must be 1 to 255 bytes long"
        );
        assert!(
            self.publisher.register(topic),
            "topic {name:?} is defined twice"
        );
        self.topics.push(TopicDescription {
            name: name.to_owned(),
            doc: topic.doc().to_owned(),
            event: schema::<E>(),
            policy: topic.slow_policy().as_str().to_owned(),
            queue: topic.queue_len(),
        });
        self
    }

    /// What the service publishes its topics' events through: clone it
    /// before handing the service to the server (or to `ops::serve`) to
    /// publish from outside any handler.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Panics unless `name` is a valid name no method has yet.
    fn check_new(&self, name: &str) {
        assert!(
            !name.is_empty() && name.len() <= MAX_METHOD_LEN,
            "method name {name:?}: it must be 1 to {MAX_METHOD_LEN} bytes long"
        );
        let taken = self.handlers.contains_key(name) || self.streams.contains_key(name);
        assert!(!taken, "method {name:?} is defined twice");
    }

    /// The encodings the service accepts, in order of preference (sent in
    /// the HELLO reply and DESCRIBE). Default: MessagePack, then JSON.
    ///
    /// # Panics
    /// If `encodings` is empty: a typed service needs at least one.
    pub fn encodings(mut self, encodings: &[Encoding]) -> Self {
        assert!(
            !encodings.is_empty(),
            "a service needs at least one encoding"
        );
        self.encodings.clear();
        for &encoding in encodings {
            if !self.encodings.contains(&encoding) {
                self.encodings.push(encoding);
            }
        }
        self
    }

    /// The service's shared state.
    pub fn state(&self) -> &Arc<S> {
        &self.state
    }

    /// The description DESCRIBE returns.
    pub fn describe(&self) -> Description {
        Description {
            service: self.name.clone(),
            version: self.version.clone(),
            protocol: PROTOCOL_VERSION,
            encodings: self.encodings.iter().map(|e| e.name().to_owned()).collect(),
            methods: self.methods.clone(),
            topics: self.topics.clone(),
        }
    }
}

/// Large decodes at once: half the CPUs, at least one.
fn decoders() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// A call's params decoded, their memory bounded and charged to the
/// server's `budget` (the hold gives it back when dropped): `bad request`
/// for params that do not decode or would take too much memory,
/// `overloaded` when the server's budget has no room for them.
fn decode_params<Req: DeserializeOwned>(
    encoding: Encoding,
    params: &[u8],
    budget: Arc<MemoryBudget>,
) -> Result<(Req, Option<Hold>), ServiceError> {
    let meter = Meter::new(params.len(), Some(budget));
    match codec::decode_metered::<Req>(encoding, params, "params", &meter) {
        Ok(request) => Ok((request, meter.into_hold())),
        Err(message) => Err(match meter.refusal() {
            Some(Refusal::NoBudget { .. }) => ServiceError::overloaded(message),
            _ => ServiceError::bad_request(message),
        }),
    }
}

/// The response in the call's encoding; failing that, `handler failed`.
fn encode_result<Resp: Serialize>(
    method: &str,
    encoding: Encoding,
    response: Resp,
) -> Result<Bytes, ServiceError> {
    codec::encode_bytes(encoding, &response)
        .map_err(|e| ServiceError::new(format!("cannot encode the result of {method}: {e}")))
}

/// The JSON Schema of `T`.
pub(super) fn schema<T: JsonSchema>() -> serde_json::Value {
    SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .to_value()
}

/// A method's DESCRIBE entry, with the JSON Schemas of its types.
fn describe<Req: JsonSchema, Resp: JsonSchema>(method: &Method<Req, Resp>) -> MethodDescription {
    MethodDescription {
        name: method.name().to_owned(),
        doc: method.doc().to_owned(),
        request: schema::<Req>(),
        response: schema::<Resp>(),
        ..MethodDescription::default()
    }
}

/// A streaming method's DESCRIBE entry: which way it streams, and the
/// schemas of its items in the directions that carry them.
fn describe_stream<Req, In, Out, Resp>(
    method: &StreamMethod<Req, In, Out, Resp>,
) -> MethodDescription
where
    Req: JsonSchema,
    In: JsonSchema,
    Out: JsonSchema,
    Resp: JsonSchema,
{
    let direction = method.direction();
    MethodDescription {
        name: method.name().to_owned(),
        doc: method.doc().to_owned(),
        request: schema::<Req>(),
        response: schema::<Resp>(),
        streams: Some(direction.as_str().to_owned()),
        server_item: direction.server_sends().then(schema::<Out>),
        client_item: direction.client_sends().then(schema::<In>),
    }
}

/// How the method tables hash a CALL's method name: FNV-1a, a few
/// instructions a byte where SipHash cost about 170 per CALL. Their keys
/// are the service's own names, fixed when it is built; a client only
/// looks names up, and a lookup probes at most the table's few entries
/// however its name hashes, so a hash a client can aim buys it nothing.
type NameHash = std::hash::BuildHasherDefault<Fnv1a>;

/// The 64-bit FNV-1a hash ([`NameHash`]).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// How many streaming methods a service may have for a CALL to find
/// whether its method streams by comparing names rather than hashing:
/// past this many, a hash lookup costs less than the comparisons.
const SCANNED_STREAMS: usize = 8;

impl<S: Send + Sync + 'static> Calls for Service<S> {
    fn encodings(&self) -> &[Encoding] {
        &self.encodings
    }

    fn description(&self) -> Bytes {
        let make = || {
            let json = serde_json::to_vec(&self.describe()).expect("a description is JSON");
            Bytes::from(json)
        };
        self.description.get_or_init(make).clone()
    }

    fn call(
        &self,
        method: &str,
        encoding: Encoding,
        params: Bytes,
        ctx: ConnectionContext,
    ) -> BoxFuture<'static, Result<Bytes, ServiceError>> {
        match self.handlers.get(method) {
            Some(handler) => handler(self.state.clone(), encoding, params, ctx),
            None => std::future::ready(Err(ServiceError::unknown_method(method))).boxed(),
        }
    }

    fn publisher(&self) -> Option<&Publisher> {
        Some(&self.publisher)
    }

    fn stream_direction(&self, method: &str) -> Option<StreamDirection> {
        if self.stream_names.len() <= SCANNED_STREAMS {
            let mut names = self.stream_names.iter();
            return names.find(|(name, _)| *name == method).map(|&(_, d)| d);
        }
        self.streams.get(method).map(|(direction, _)| *direction)
    }

    fn call_stream(
        &self,
        method: &str,
        encoding: Encoding,
        params: Bytes,
        items: StreamItems,
        ctx: ConnectionContext,
    ) -> BoxFuture<'static, Result<Bytes, ServiceError>> {
        match self.streams.get(method) {
            Some((_, handler)) => handler(self.state.clone(), encoding, params, items, ctx),
            None => std::future::ready(Err(ServiceError::unknown_method(method))).boxed(),
        }
    }
}

impl<S> std::fmt::Debug for Service<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let methods: Vec<&str> = self.methods.iter().map(|m| m.name.as_str()).collect();
        let topics: Vec<&str> = self.topics.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("methods", &methods)
            .field("topics", &topics)
            .field("encodings", &self.encodings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use schemars::JsonSchema;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    struct Sleep {
        ms: u64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    enum Slept {
        Done { ms: u64, trace: Option<String> },
    }

    const SLEEP: Method<Sleep, Slept> = Method::new("sleep", "Pretends to sleep");
    const TOTAL: Method<Vec<u32>, u64> = Method::new("total", "The sum");
    const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::MessagePack];

    fn service() -> Service<u64> {
        Service::new("test", "1.2.3", 7)
            .method(&SLEEP, |_, sleep: Sleep, ctx| async move {
                let trace = ctx.metadata("trace").map(str::to_owned);
                Ok(Slept::Done {
                    ms: sleep.ms,
                    trace,
                })
            })
            .method(&TOTAL, |base, items: Vec<u32>, _| async move {
                Ok(items.iter().map(|&n| u64::from(n)).sum::<u64>() + *base)
            })
    }

    async fn call(
        service: &Service<u64>,
        method: &str,
        encoding: Encoding,
        params: Vec<u8>,
    ) -> Result<Bytes, ServiceError> {
        let metadata = vec![("trace".to_owned(), "ab".to_owned())];
        let ctx = ConnectionContext::for_tests(method, metadata);
        service.call(method, encoding, params.into(), ctx).await
    }

    #[tokio::test]
    async fn calls_round_trip_in_both_encodings() {
        let service = service();
        for encoding in ENCODINGS {
            let params = codec::encode(encoding, &Sleep { ms: u64::MAX }).unwrap();
            let result = call(&service, "sleep", encoding, params).await.unwrap();
            let slept: Slept = codec::decode(encoding, &result, "result").unwrap();
            let trace = Some("ab".to_owned());
            assert_eq!(
                slept,
                Slept::Done {
                    ms: u64::MAX,
                    trace
                },
                "{encoding}"
            );
            let params = codec::encode(encoding, &[1u32, 2, 3]).unwrap();
            let result = call(&service, "total", encoding, params).await.unwrap();
            assert_eq!(codec::decode::<u64>(encoding, &result, "result"), Ok(13));
        }
    }

    #[tokio::test]
    async fn results_come_in_the_calls_encoding() {
        let service = service();
        let json = call(&service, "total", Encoding::Json, b"[1]".to_vec()).await;
        assert_eq!(json.unwrap(), "8");
        let msgpack = call(&service, "total", Encoding::MessagePack, vec![0x91, 0x01]).await;
        assert_eq!(msgpack.unwrap().as_ref(), [0x08]);
    }

    #[tokio::test]
    async fn an_unknown_method_is_named() {
        let err = call(&service(), "nap", Encoding::Json, b"{}".to_vec())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::UNKNOWN_METHOD);
        assert!(err.message().contains("\"nap\""), "{err}");
    }

    #[tokio::test]
    async fn bad_params_name_the_field_in_both_encodings() {
        let service = service();
        for encoding in ENCODINGS {
            #[derive(Serialize)]
            struct Wrong {
                ms: &'static str,
            }
            let params = codec::encode(encoding, &Wrong { ms: "x" }).unwrap();
            let err = call(&service, "sleep", encoding, params).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::BAD_REQUEST, "{encoding}");
            let expected = "params.ms: invalid type: string \"x\", expected u64";
            assert!(err.message().starts_with(expected), "{encoding}: {err}");
        }
        let err = call(&service, "sleep", Encoding::Json, b"{".to_vec())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::BAD_REQUEST);
        let err = call(&service, "sleep", Encoding::Json, b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(err.message().contains("missing field `ms`"), "{err}");
    }

    #[test]
    fn the_description_has_every_method_with_both_schemas() {
        let service = service().encodings(&[Encoding::Json]);
        let description: Description = serde_json::from_slice(&service.description()).unwrap();
        assert_eq!(
            (description.service.as_str(), description.version.as_str()),
            ("test", "1.2.3")
        );
        assert_eq!(description.protocol, 2);
        assert_eq!(description.encodings, ["json"]);
        let sleep = description.method("sleep").unwrap();
        assert_eq!(sleep.doc, "Pretends to sleep");
        assert_eq!(sleep.request["type"], "object");
        assert_eq!(sleep.request["required"][0], "ms");
        assert_eq!(sleep.request["properties"]["ms"]["type"], "integer");
        let done = &sleep.response["oneOf"][0];
        assert_eq!(done["required"][0], "Done", "{}", sleep.response);
        let total = description.method("total").unwrap();
        assert_eq!(total.request["type"], "array");
        assert_eq!(total.response["type"], "integer");
        assert_eq!(description.methods.len(), 2);
        // Made once: the same bytes, not a new rendering.
        assert_eq!(
            service.description().as_ptr(),
            service.description().as_ptr()
        );
    }

    #[test]
    #[should_panic(expected = "method \"sleep\" is defined twice")]
    fn a_method_defined_twice_panics() {
        let _ = service().method(&SLEEP, |_, _, _| async {
            Ok(Slept::Done { ms: 0, trace: None })
        });
    }

    #[test]
    #[should_panic(expected = "method \"sleep\" is defined twice")]
    fn a_streaming_method_may_not_take_a_methods_name() {
        const STREAM: StreamMethod<(), (), u32, ()> = StreamMethod::server("sleep", "");
        let _ = service().stream_method(&STREAM, |_, (), _, _, _| async { Ok(()) });
    }

    #[test]
    #[should_panic(expected = "topic \"t\" is defined twice")]
    fn a_topic_defined_twice_panics() {
        const T: Topic<u32> = Topic::new("t", "");
        let _ = service().topic(&T).topic(&T);
    }

    #[test]
    #[should_panic(expected = "1 to 255 bytes")]
    fn an_empty_method_name_panics() {
        const EMPTY: Method<(), ()> = Method::new("", "");
        let _ = Service::new("t", "", ()).method(&EMPTY, |_, (), _| async { Ok(()) });
    }
}
