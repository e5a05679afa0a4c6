//! Limits a process's gRPC services share beyond tonic's per-connection
//! ones: calls in progress across every connection and port, bytes of
//! request bodies received and not yet decoded, and the time a request
//! message may take to arrive. Over a limit a call is refused at once with
//! RESOURCE_EXHAUSTED (clients and agents retry those), never queued, so
//! many clients or large bodies cannot grow memory without bound (invariant
//! 6); a client trickling a message is cut off with DEADLINE_EXCEEDED.
//!
//! Services are wrapped one by one ([`GrpcLimits::wrap`]) so the health
//! service, which load balancers need answered under load, stays outside.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;

/// Default calls in progress per process.
pub const GRPC_CALLS_DEFAULT: usize = 1024;
/// Default request bytes in flight per process.
pub const GRPC_IN_FLIGHT_BYTES_DEFAULT: usize = 512 << 20;

/// The shared limits of one process.
#[derive(Debug)]
pub struct GrpcLimits {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    requests_max: usize,
    bytes_max: usize,
    read_timeout: Duration,
}

impl GrpcLimits {
    /// `requests_max` calls at once, `bytes_max` bytes of undecoded request
    /// bodies, each message within `read_timeout` of its first byte (a
    /// unary call's whole body within `read_timeout` of the call).
    pub fn new(requests_max: usize, bytes_max: usize, read_timeout: Duration) -> Arc<GrpcLimits> {
        let (requests_max, bytes_max) = (requests_max.max(1), bytes_max.clamp(1, Semaphore::MAX_PERMITS));
        Arc::new(GrpcLimits {
            requests: Arc::new(Semaphore::new(requests_max)),
            bytes: Arc::new(Semaphore::new(bytes_max)),
            requests_max,
            bytes_max,
            read_timeout,
        })
    }

    /// The defaults, for processes and tests that set none.
    pub fn defaults() -> Arc<GrpcLimits> {
        GrpcLimits::new(GRPC_CALLS_DEFAULT, GRPC_IN_FLIGHT_BYTES_DEFAULT, crate::HTTP_READ_TIMEOUT_DEFAULT)
    }

    /// `service` under these limits; `streaming` when its calls stream
    /// requests (then the time between messages is not limited).
    pub fn wrap<S>(self: &Arc<GrpcLimits>, service: S, streaming: &'static [&'static str]) -> GrpcLimited<S> {
        GrpcLimited { inner: service, limits: self.clone(), streaming }
    }

    fn busy(&self) -> Status {
        Status::resource_exhausted(format!("server busy: {} gRPC calls in progress; retry later", self.requests_max))
    }

    fn full(&self) -> Status {
        Status::resource_exhausted(format!("server busy: request bodies in progress hold {} bytes; retry later", self.bytes_max))
    }
}

/// A service under [`GrpcLimits`].
#[derive(Debug, Clone)]
pub struct GrpcLimited<S> {
    inner: S,
    limits: Arc<GrpcLimits>,
    /// Full method paths (`/pkg.Service/Method`) whose requests stream.
    streaming: &'static [&'static str],
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for GrpcLimited<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<Request<Body>> for GrpcLimited<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Ok(call) = self.limits.requests.clone().try_acquire_owned() else {
            let busy = self.limits.busy().into_http();
            return Box::pin(async move { Ok(busy) });
        };
        let streaming = self.streaming.contains(&req.uri().path());
        let limits = self.limits.clone();
        let req = req.map(|body| Body::new(MeteredBody::new(body, limits, streaming)));
        let answer = self.inner.call(req);
        Box::pin(async move {
            // The call counts until its answer has been sent (a stream's
            // for as long as it runs).
            Ok(answer.await?.map(|body| Body::new(Holding { body, _call: call })))
        })
    }
}

/// An answer's body holding its call's slot.
struct Holding {
    body: Body,
    _call: OwnedSemaphorePermit,
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body charged against the byte limit as it arrives.
///
/// gRPC frames messages as a flag byte, a 4-byte length and the payload;
/// tonic's decoder takes every complete message before it asks for more,
/// so the bytes of messages completed before a poll are released at that
/// poll, and those of the message still arriving stay charged.
struct MeteredBody {
    body: Body,
    limits: Arc<GrpcLimits>,
    streaming: bool,
    /// Bytes of messages completed by the last frame.
    done: Option<OwnedSemaphorePermit>,
    /// Bytes of the message arriving (a frame that ends one message and
    /// starts the next counts with the one it ends: off by one frame at most).
    arriving: Option<OwnedSemaphorePermit>,
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes the arriving message still lacks.
    payload_left: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl MeteredBody {
    fn new(body: Body, limits: Arc<GrpcLimits>, streaming: bool) -> MeteredBody {
        // A unary call's body must arrive whole in time; a stream may wait
        // between messages.
        let deadline = (!streaming).then(|| Box::pin(tokio::time::sleep(limits.read_timeout)));
        MeteredBody { body, limits, streaming, done: None, arriving: None, header: [0; 5], header_len: 0, payload_left: 0, deadline }
    }

    /// Follows the message framing over `data`: true if a message ended in it.
    fn advance(&mut self, mut data: &[u8]) -> bool {
        let mut ended = false;
        while !data.is_empty() {
            if self.header_len < 5 {
                let take = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len == 5 {
                    self.payload_left = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
                }
            } else {
                let take = self.payload_left.min(data.len());
                self.payload_left -= take;
                data = &data[take..];
            }
            if self.header_len == 5 && self.payload_left == 0 {
                self.header_len = 0;
                ended = true;
            }
        }
        ended
    }

    fn charge(&mut self, n: usize) -> Result<(), Status> {
        let permits = u32::try_from(n).map_err(|_| self.limits.full())?;
        let charge = self.limits.bytes.clone().try_acquire_many_owned(permits).map_err(|_| self.limits.full())?;
        match &mut self.arriving {
            Some(p) => p.merge(charge),
            None => self.arriving = Some(charge),
        }
        Ok(())
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        this.done = None;
        if let Some(d) = &mut this.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            this.arriving = None;
            let what = if this.streaming { "a request message" } else { "the request" };
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "{what} was not received within {:?}",
                this.limits.read_timeout
            )))));
        }
        let frame = match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => {
                this.arriving = None;
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref()
            && !data.is_empty()
        {
            if let Err(e) = this.charge(data.len()) {
                this.arriving = None;
                return Poll::Ready(Some(Err(e)));
            }
            let was_idle = this.header_len == 0;
            if this.advance(data) {
                this.done = this.arriving.take();
            }
            if this.streaming {
                if this.header_len == 0 {
                    this.deadline = None;
                } else if was_idle || this.deadline.is_none() {
                    this.deadline = Some(Box::pin(tokio::time::sleep(this.limits.read_timeout)));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::{mpsc, oneshot};

    /// One gRPC message of `n` payload bytes.
    fn message(n: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend((n as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, n));
        m
    }

    /// A request whose body the test sends chunk by chunk.
    fn request(path: &str) -> (Request<Body>, mpsc::Sender<Result<Frame<Bytes>, Status>>) {
        let (tx, rx) = mpsc::channel(16);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        (Request::builder().uri(path).body(Body::new(body)).unwrap(), tx)
    }

    fn data(b: &[u8]) -> Result<Frame<Bytes>, Status> {
        Ok(Frame::data(Bytes::copy_from_slice(b)))
    }

    /// Reads the body as tonic does (message by message), reports how it
    /// ended, then answers once `release` fires.
    #[derive(Clone)]
    struct Reader {
        results: mpsc::UnboundedSender<Result<usize, Status>>,
        release: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
    }

    impl tower_service::Service<Request<Body>> for Reader {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<Response<Body>, std::convert::Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<Body>) -> Self::Future {
            let me = self.clone();
            Box::pin(async move {
                let mut body = req.into_body();
                let mut read = 0;
                let outcome = loop {
                    match body.frame().await {
                        Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                        Some(Err(e)) => break Err(e),
                        None => break Ok(read),
                    }
                };
                let failed = outcome.is_err();
                me.results.send(outcome).unwrap();
                if !failed && let Some(rx) = me.release.lock().await.take() {
                    let _ = rx.await;
                }
                Ok(Response::new(Body::empty()))
            })
        }
    }

    fn reader() -> (Reader, mpsc::UnboundedReceiver<Result<usize, Status>>, oneshot::Sender<()>) {
        let (results, rx) = mpsc::unbounded_channel();
        let (release_tx, release_rx) = oneshot::channel();
        (Reader { results, release: Arc::new(tokio::sync::Mutex::new(Some(release_rx))) }, rx, release_tx)
    }

    fn grpc_code(resp: &Response<Body>) -> Option<String> {
        resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn calls_past_the_limit_are_refused_until_one_finishes() {
        let limits = GrpcLimits::new(1, 1 << 20, Duration::from_secs(30));
        let (r, mut results, release) = reader();
        let mut svc = limits.wrap(r, &[]);
        let (req, tx) = request("/s/M");
        tx.send(data(&message(3))).await.unwrap();
        drop(tx);
        let first = tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        assert_eq!(results.recv().await.unwrap().unwrap(), 8);

        // The first call holds the only slot until it answers.
        let (req, _tx) = request("/s/M");
        let busy = tower_service::Service::call(&mut svc, req).await.unwrap();
        assert_eq!(grpc_code(&busy).as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
        release.send(()).unwrap();
        let answer = first.await.unwrap().unwrap();
        drop(answer);
        let (req, tx) = request("/s/M");
        tx.send(data(&message(1))).await.unwrap();
        drop(tx);
        let ok = tower_service::Service::call(&mut svc, req).await.unwrap();
        assert_eq!(grpc_code(&ok), None, "served once the slot was free");
    }

    #[tokio::test]
    async fn bodies_past_the_byte_limit_are_refused_and_bytes_come_back() {
        let limits = GrpcLimits::new(16, 1000, Duration::from_secs(30));
        let (r, mut results, _release) = reader();
        let svc = limits.wrap(r, &[]);
        // A 600-byte message arriving: 600 + 5 bytes charged.
        let (req, slow) = request("/s/M");
        slow.send(data(&message(600)[..400])).await.unwrap();
        let held = tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        tokio::task::yield_now().await;
        // A second one does not fit beside it.
        let (req, tx) = request("/s/M");
        tx.send(data(&message(600))).await.unwrap();
        drop(tx);
        tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        let err = results.recv().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        // The first completes; its bytes are released once decoded.
        slow.send(data(&message(600)[400..])).await.unwrap();
        drop(slow);
        assert_eq!(results.recv().await.unwrap().unwrap(), 605);
        assert_eq!(limits.bytes.available_permits(), 1000, "every byte given back");
        drop(held);
    }

    #[tokio::test]
    async fn a_stream_is_charged_only_for_the_message_arriving() {
        let limits = GrpcLimits::new(16, 1000, Duration::from_secs(30));
        let (r, mut results, _release) = reader();
        let mut svc = limits.wrap(r, &["/s/Stream"]);
        let (req, tx) = request("/s/Stream");
        tokio::spawn(tower_service::Service::call(&mut svc, req));
        // Ten 300-byte messages: 3,050 bytes in all, never more than one
        // message (and the frame that finished the one before) at a time.
        for _ in 0..10 {
            tx.send(data(&message(300))).await.unwrap();
        }
        drop(tx);
        assert_eq!(results.recv().await.unwrap().unwrap(), 3050);
        assert_eq!(limits.bytes.available_permits(), 1000);
    }

    #[tokio::test]
    async fn a_trickled_message_is_cut_off_but_a_stream_may_idle() {
        let limits = GrpcLimits::new(16, 1 << 20, Duration::from_millis(200));
        let (r, mut results, _release) = reader();
        let svc = limits.wrap(r, &["/s/Stream"]);

        // Unary: half a message, then nothing.
        let (req, unary) = request("/s/M");
        unary.send(data(&message(10)[..6])).await.unwrap();
        tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        let err = results.recv().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");

        // Stream: a whole message, quiet for longer than the deadline,
        // another whole one.
        let (req, stream) = request("/s/Stream");
        tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        let first = message(10);
        stream.send(data(&first[..4])).await.unwrap();
        stream.send(data(&first[4..])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(results.try_recv().is_err(), "a stream waiting between messages is not cut off");
        stream.send(data(&message(10))).await.unwrap();
        // Then half of a third, and nothing.
        stream.send(data(&message(10)[..3])).await.unwrap();
        let err = results.recv().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert_eq!(limits.bytes.available_permits(), 1 << 20);
    }

    #[test]
    fn framing_follows_messages_split_anywhere() {
        let limits = GrpcLimits::new(1, 1 << 20, Duration::from_secs(1));
        let mut b = MeteredBody {
            body: Body::empty(),
            limits,
            streaming: true,
            done: None,
            arriving: None,
            header: [0; 5],
            header_len: 0,
            payload_left: 0,
            deadline: None,
        };
        let mut all = message(7);
        all.extend(message(0));
        all.extend(message(300));
        let mut ended = 0;
        for chunk in all.chunks(3) {
            ended += usize::from(b.advance(chunk));
        }
        assert_eq!(ended, 3, "three messages, each end seen");
        assert_eq!(b.header_len, 0);
    }
}
