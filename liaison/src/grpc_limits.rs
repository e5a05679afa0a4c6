//! Limits a process's gRPC services share beyond tonic's per-connection
//! ones: calls in progress across every connection and port, bytes of
//! request messages received and not yet decoded, and the time a request
//! message may take to arrive. Over a limit a call is refused at once with
//! RESOURCE_EXHAUSTED (clients and agents retry those), never queued, so
//! many clients or large bodies cannot grow memory without bound (invariant
//! 6); a client trickling a message is cut off with DEADLINE_EXCEEDED.
//!
//! A unary call holds its slot until its handler has answered (the answer's
//! bytes then go out at the client's pace, as HTTP answers do). A streaming
//! call holds one only while one of its messages arrives or is handled, so
//! clients keeping write streams open between batches do not crowd out
//! other calls. Services are wrapped one by one ([`GrpcLimits::wrap`]) so
//! the health service, which load balancers need answered under load, stays
//! outside.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::body::Body;

/// Default calls in progress per process.
pub const GRPC_CALLS_DEFAULT: usize = 1024;
/// Default request bytes in flight per process.
pub const GRPC_IN_FLIGHT_BYTES_DEFAULT: usize = 512 << 20;

/// The shared limits of one process.
#[derive(Debug)]
pub struct GrpcLimits {
    calls: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    calls_max: usize,
    bytes_max: usize,
    read_timeout: Duration,
}

impl GrpcLimits {
    /// `calls_max` calls at once, `bytes_max` bytes of undecoded request
    /// messages; a unary call's request, and each message of a stream, may
    /// wait `read_timeout` in all for the client's bytes.
    pub fn new(calls_max: usize, bytes_max: usize, read_timeout: Duration) -> Arc<GrpcLimits> {
        let (calls_max, bytes_max) = (calls_max.max(1), bytes_max.clamp(1, Semaphore::MAX_PERMITS));
        Arc::new(GrpcLimits {
            calls: Arc::new(Semaphore::new(calls_max)),
            bytes: Arc::new(Semaphore::new(bytes_max)),
            calls_max,
            bytes_max,
            read_timeout,
        })
    }

    /// `service` under these limits; `streaming` lists its methods (full
    /// paths, `/pkg.Service/Method`) whose requests stream.
    pub fn wrap<S>(self: &Arc<GrpcLimits>, service: S, streaming: &'static [&'static str]) -> GrpcLimited<S> {
        GrpcLimited { inner: service, limits: self.clone(), streaming }
    }

    fn call_slot(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.calls.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("server busy: {} gRPC calls in progress (--grpc-calls-max); retry later", self.calls_max))
        })
    }

    /// Charges one message of `bytes` (its 5-byte prefix included).
    fn charge(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Status> {
        let too_large = || {
            Status::out_of_range(format!(
                "a request message of {bytes} bytes is larger than the server takes in at once (--grpc-in-flight-bytes-max {})",
                self.bytes_max
            ))
        };
        if bytes > self.bytes_max {
            return Err(too_large());
        }
        let permits = u32::try_from(bytes).map_err(|_| too_large())?;
        self.bytes.clone().try_acquire_many_owned(permits).map_err(|_| {
            Status::resource_exhausted(format!(
                "server busy: request messages in progress hold {} bytes (--grpc-in-flight-bytes-max); retry later",
                self.bytes_max
            ))
        })
    }
}

/// A service under [`GrpcLimits`].
#[derive(Debug, Clone)]
pub struct GrpcLimited<S> {
    inner: S,
    limits: Arc<GrpcLimits>,
    /// Full method paths whose requests stream.
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
        let streaming = self.streaming.contains(&req.uri().path());
        // A stream takes a slot per message (in its body); a unary call one
        // until its handler answers.
        let call = if streaming {
            None
        } else {
            match self.limits.call_slot() {
                Ok(slot) => Some(slot),
                Err(busy) => {
                    let busy = busy.into_http();
                    return Box::pin(async move { Ok(busy) });
                }
            }
        };
        let limits = self.limits.clone();
        let req = req.map(|body| Body::new(MeteredBody::new(body, limits, streaming)));
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            drop(call);
            answer
        })
    }
}

/// A request body metered as it arrives.
///
/// gRPC frames messages as a flag byte, a 4-byte length and the payload; a
/// message is charged its whole length when its prefix has arrived (tonic
/// reserves that much then), and, on a stream, takes a call slot at its
/// first byte. tonic's decoder takes every complete message before it asks
/// for more, and a stream's handler asks for the next message when done
/// with the last, so what completed messages hold is given back at the
/// next poll.
///
/// Only time spent waiting for the client counts towards the read timeout:
/// on a stream from a message's first byte to its last (waiting between
/// messages is free), for a unary call from the call to the body's end. The
/// server's own pauses between polls (a write waiting on its shard) do not.
struct MeteredBody {
    body: Body,
    limits: Arc<GrpcLimits>,
    streaming: bool,
    /// What the messages completed by the last frame hold.
    done: Vec<OwnedSemaphorePermit>,
    /// What the message arriving holds.
    arriving: Vec<OwnedSemaphorePermit>,
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes the arriving message still lacks.
    payload_left: usize,
    /// Time spent waiting for the client, before `pending_since`.
    waited: Duration,
    pending_since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl MeteredBody {
    fn new(body: Body, limits: Arc<GrpcLimits>, streaming: bool) -> MeteredBody {
        MeteredBody {
            body,
            limits,
            streaming,
            done: Vec::new(),
            arriving: Vec::new(),
            header: [0; 5],
            header_len: 0,
            payload_left: 0,
            waited: Duration::ZERO,
            pending_since: None,
            sleep: None,
        }
    }

    /// Follows the message framing over `data`, charging each message.
    fn advance(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.header_len == 0 && self.streaming {
                // A stream's message starts.
                self.arriving.push(self.limits.call_slot()?);
            }
            if self.header_len < 5 {
                let take = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len == 5 {
                    self.payload_left = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
                    self.arriving.push(self.limits.charge(self.payload_left + 5)?);
                }
            } else {
                let take = self.payload_left.min(data.len());
                self.payload_left -= take;
                data = &data[take..];
            }
            if self.header_len == 5 && self.payload_left == 0 {
                self.header_len = 0;
                self.done.append(&mut self.arriving);
                if self.streaming {
                    // The next message's wait counts from nothing.
                    self.waited = Duration::ZERO;
                }
            }
        }
        Ok(())
    }

    /// Whether waiting now counts towards the read timeout.
    fn waiting_counts(&self) -> bool {
        !self.streaming || self.header_len != 0
    }

    /// The inner body has nothing yet: fails once the client has used up
    /// the read timeout, else arranges to be woken when it would have.
    fn still_waiting(&mut self, cx: &mut Context<'_>) -> Result<(), Status> {
        if !self.waiting_counts() {
            self.pending_since = None;
            self.sleep = None;
            return Ok(());
        }
        let since = *self.pending_since.get_or_insert_with(Instant::now);
        let timeout = self.limits.read_timeout;
        if self.waited >= timeout {
            return Err(self.timed_out());
        }
        let until = since + (timeout - self.waited);
        // One timer per body, moved rather than made anew at every wait.
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.deadline() != until {
            sleep.as_mut().reset(until);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Err(self.timed_out()),
            Poll::Pending => Ok(()),
        }
    }

    fn timed_out(&mut self) -> Status {
        self.arriving.clear();
        let what = if self.streaming { "a request message" } else { "the request" };
        Status::deadline_exceeded(format!("{what} was not received within {:?}", self.limits.read_timeout))
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        this.done.clear();
        let Poll::Ready(polled) = Pin::new(&mut this.body).poll_frame(cx) else {
            return match this.still_waiting(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Some(Err(e))),
            };
        };
        if let Some(since) = this.pending_since.take() {
            this.waited += since.elapsed();
        }
        let frame = match polled {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => {
                this.arriving.clear();
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref()
            && let Err(e) = this.advance(data)
        {
            this.arriving.clear();
            return Poll::Ready(Some(Err(e)));
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
        let (tx, rx) = mpsc::channel(64);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        (Request::builder().uri(path).body(Body::new(body)).unwrap(), tx)
    }

    fn data(b: &[u8]) -> Result<Frame<Bytes>, Status> {
        Ok(Frame::data(Bytes::copy_from_slice(b)))
    }

    /// Reads the body frame by frame (pausing `pause` after each, as a
    /// handler busy with a message), reports how it ended, then answers
    /// once `release` fires.
    #[derive(Clone)]
    struct Reader {
        results: mpsc::UnboundedSender<Result<usize, Status>>,
        release: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
        pause: Duration,
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
                    tokio::time::sleep(me.pause).await;
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
        (Reader { results, release: Arc::new(tokio::sync::Mutex::new(Some(release_rx))), pause: Duration::ZERO }, rx, release_tx)
    }

    fn grpc_code(resp: &Response<Body>) -> Option<String> {
        resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string())
    }

    /// Waits (up to a second) for `cond`.
    async fn eventually(cond: impl Fn() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("not within a second");
    }

    #[tokio::test]
    async fn calls_past_the_limit_are_refused_until_one_answers() {
        let limits = GrpcLimits::new(1, 1 << 20, Duration::from_secs(30));
        let (r, mut results, release) = reader();
        let mut svc = limits.wrap(r, &[]);
        let (req, tx) = request("/s/M");
        tx.send(data(&message(3))).await.unwrap();
        drop(tx);
        let first = tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        assert_eq!(results.recv().await.unwrap().unwrap(), 8);

        // The first call holds the only slot until its handler answers.
        let (req, _tx) = request("/s/M");
        let busy = tower_service::Service::call(&mut svc, req).await.unwrap();
        assert_eq!(grpc_code(&busy).as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        let (req, tx) = request("/s/M");
        tx.send(data(&message(1))).await.unwrap();
        drop(tx);
        let ok = tower_service::Service::call(&mut svc, req).await.unwrap();
        assert_eq!(grpc_code(&ok), None, "served once the slot was free");
    }

    #[tokio::test]
    async fn a_stream_holds_a_call_slot_only_while_a_message_arrives() {
        let limits = GrpcLimits::new(1, 1 << 20, Duration::from_secs(30));
        let (r, mut results, _release) = reader();
        let svc = limits.wrap(r, &["/s/Stream"]);
        let (req, stream) = request("/s/Stream");
        tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        // Open, then one whole message: between messages it holds nothing.
        stream.send(data(&message(10))).await.unwrap();
        eventually(|| limits.calls.available_permits() == 1).await;
        // Half a message holds the slot: a unary call is refused meanwhile.
        let next = message(10);
        stream.send(data(&next[..7])).await.unwrap();
        eventually(|| limits.calls.available_permits() == 0).await;
        let (req, _tx) = request("/s/M");
        let busy = tower_service::Service::call(&mut svc.clone(), req).await.unwrap();
        assert_eq!(grpc_code(&busy).as_deref(), Some("8"));
        stream.send(data(&next[7..])).await.unwrap();
        drop(stream);
        assert_eq!(results.recv().await.unwrap().unwrap(), 30);
        assert_eq!(limits.calls.available_permits(), 1);
    }

    #[tokio::test]
    async fn bodies_past_the_byte_limit_are_refused_and_bytes_come_back() {
        let limits = GrpcLimits::new(16, 1000, Duration::from_secs(30));
        let (r, mut results, _release) = reader();
        let svc = limits.wrap(r, &[]);
        // A 600-byte message arriving: 605 bytes charged once its length is known.
        let (req, slow) = request("/s/M");
        slow.send(data(&message(600)[..400])).await.unwrap();
        let held = tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        eventually(|| limits.bytes.available_permits() == 395).await;
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

        // A message larger than the limit can never fit: not "retry later".
        let (req, tx) = request("/s/M");
        tx.send(data(&message(2000)[..5])).await.unwrap();
        tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
        let err = results.recv().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        assert!(err.message().contains("--grpc-in-flight-bytes-max"), "{err:?}");
    }

    #[tokio::test]
    async fn a_stream_is_charged_only_for_the_message_arriving() {
        let limits = GrpcLimits::new(16, 1000, Duration::from_secs(30));
        let (r, mut results, _release) = reader();
        let mut svc = limits.wrap(r, &["/s/Stream"]);
        let (req, tx) = request("/s/Stream");
        tokio::spawn(tower_service::Service::call(&mut svc, req));
        // Ten 300-byte messages: 3,050 bytes in all, one message at a time,
        // some frames ending one message and starting the next.
        let all: Vec<u8> = (0..10).flat_map(|_| message(300)).collect();
        for chunk in all.chunks(250) {
            tx.send(data(chunk)).await.unwrap();
        }
        drop(tx);
        assert_eq!(results.recv().await.unwrap().unwrap(), 3050);
        assert_eq!(limits.bytes.available_permits(), 1000);
        assert_eq!(limits.calls.available_permits(), 16);
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
        assert_eq!(limits.calls.available_permits(), 16);
    }

    #[tokio::test]
    async fn only_the_clients_own_slowness_counts() {
        // A handler taking 300 ms per frame against a 200 ms timeout (the
        // client's bytes wait on the server, which must not count against
        // the client); then a quick handler, the client waiting ~100 ms per
        // frame against a 1 s timeout for 3 s in all (each message waits
        // less than the timeout, the stream far more). The margins leave room
        // for a loaded machine.
        for (pause, timeout, messages) in [(300, 200, 6), (0, 1000, 36)] {
            let limits = GrpcLimits::new(16, 1 << 20, Duration::from_millis(timeout));
            let (mut r, mut results, _release) = reader();
            r.pause = Duration::from_millis(pause);
            let svc = limits.wrap(r, &["/s/Stream"]);
            let (req, stream) = request("/s/Stream");
            tokio::spawn(tower_service::Service::call(&mut svc.clone(), req));
            // 25-byte messages in 30-byte frames, 100 ms apart: a frame ends
            // one message and starts the next.
            let all: Vec<u8> = (0..messages).flat_map(|_| message(20)).collect();
            for chunk in all.chunks(30) {
                stream.send(data(chunk)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(stream);
            assert_eq!(results.recv().await.unwrap().unwrap(), messages * 25, "handler pausing {pause} ms");
        }
    }
}
