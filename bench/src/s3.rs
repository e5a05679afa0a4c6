//! The S3 server of the tests: s3s-fs serving a temporary folder, run in the
//! test process on a thread of its own, with its conditional writes made
//! atomic.
//!
//! s3s-fs checks `If-None-Match: *` / `If-Match` and then writes (a temporary
//! file renamed into place), so two concurrent creates of one key can both
//! succeed and the later rename wins. AWS S3 and MinIO decide conditional
//! writes atomically, and Canopy's catalog commit relies on that: with the
//! race, two compactors could both "commit" version N+1 and one commit
//! (and the claim it released) silently vanish. Conditional writes are
//! serialised here, which makes the check-then-write atomic as a real store's.

use std::net::TcpListener;
use std::path::PathBuf;
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use s3s_fs::FileSystem;

/// Bucket, access key and secret of the test S3 server.
pub const S3_BUCKET: &str = "canopy-test";
pub const S3_KEY: &str = "canopytestkey";
pub const S3_SECRET: &str = "canopytestsecret";

/// A running S3 server with one bucket, [`S3_BUCKET`], on a loopback port.
pub struct S3Server {
    pub port: u16,
    lifecycle: Lifecycle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts serving a fresh folder.
    pub fn start() -> S3Server {
        S3Server::start_with(false)
    }

    /// Starts a server that ignores `If-None-Match` / `If-Match` on writes,
    /// as some S3-compatible servers do: every conditional write succeeds.
    pub fn start_ignoring_conditions() -> S3Server {
        S3Server::start_with(true)
    }

    fn start_with(ignore_conditions: bool) -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(S3_BUCKET)).unwrap();
        // Bound here, before any client learns the port: no race for it.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let fs = FileSystem::new(dir.path()).unwrap();
        let lifecycle = Lifecycle::default();
        let held = lifecycle.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("s3-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                rt.block_on(serve(
                    listener,
                    AtomicConditions { fs, conditional: tokio::sync::Mutex::new(()), ignore_conditions, lifecycle: held },
                    stopped,
                ));
            })
            .unwrap();
        S3Server { port, lifecycle, stop: Some(stop), thread: Some(thread), dir }
    }

    /// The bucket's lifecycle rules, as last put (s3s-fs keeps none; this
    /// server keeps them in memory); `None` if never configured.
    pub fn lifecycle_rules(&self) -> Option<Vec<Rule>> {
        self.lifecycle.lock().expect("lifecycle lock").as_ref().map(|c| c.rules.iter().map(Rule::of).collect())
    }

    /// Sets the bucket's lifecycle rules, as an operator would have.
    pub fn set_lifecycle_rules(&self, rules: Vec<Rule>) {
        let rules = rules.into_iter().map(Rule::into_s3).collect();
        *self.lifecycle.lock().expect("lifecycle lock") = Some(BucketLifecycleConfiguration { rules });
    }

    /// The folder holding the bucket's objects, one file per key.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(S3_BUCKET)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One lifecycle rule, in the terms the tests need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub id: Option<String>,
    /// The filter's prefix ("" for the whole bucket).
    pub prefix: String,
    pub enabled: bool,
    /// Incomplete multipart uploads are aborted this many days after they start.
    pub abort_days: Option<i32>,
    /// Objects expire this many days after creation.
    pub expire_days: Option<i32>,
}

impl Rule {
    fn of(r: &LifecycleRule) -> Rule {
        Rule {
            id: r.id.clone(),
            prefix: r.filter.as_ref().and_then(|f| f.prefix.clone()).or_else(|| r.prefix.clone()).unwrap_or_default(),
            enabled: r.status.as_str() == ExpirationStatus::ENABLED,
            abort_days: r.abort_incomplete_multipart_upload.as_ref().and_then(|a| a.days_after_initiation),
            expire_days: r.expiration.as_ref().and_then(|e| e.days),
        }
    }

    fn into_s3(self) -> LifecycleRule {
        LifecycleRule {
            abort_incomplete_multipart_upload: self.abort_days.map(|d| AbortIncompleteMultipartUpload { days_after_initiation: Some(d) }),
            expiration: self.expire_days.map(|d| LifecycleExpiration { days: Some(d), ..Default::default() }),
            filter: Some(LifecycleRuleFilter { prefix: Some(self.prefix), ..Default::default() }),
            id: self.id,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            status: ExpirationStatus::from_static(if self.enabled { ExpirationStatus::ENABLED } else { ExpirationStatus::DISABLED }),
            transitions: None,
        }
    }
}

/// The bucket's lifecycle configuration, shared by the server and its handle.
type Lifecycle = std::sync::Arc<std::sync::Mutex<Option<BucketLifecycleConfiguration>>>;

async fn serve(listener: TcpListener, s3: AtomicConditions, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(s3);
    b.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
    let service = b.build();
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // Said, since a test then sees only its client's
                    // failures; paused, since an error such as EMFILE
                    // repeats at once.
                    eprintln!("test S3 server: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("test S3 server: connection failed: {e}");
            }
        });
    }
}

/// s3s-fs with every conditional write holding one lock from its check to
/// its rename, and a bucket lifecycle configuration kept in memory.
struct AtomicConditions {
    fs: FileSystem,
    conditional: tokio::sync::Mutex<()>,
    /// Drop the conditions instead (a server that does not support them).
    ignore_conditions: bool,
    /// The bucket's lifecycle configuration (one bucket per server).
    lifecycle: Lifecycle,
}

/// Implements [`S3`] for [`AtomicConditions`]: the conditional writes below
/// take the lock, every other operation s3s-fs implements is passed through.
/// (A macro around the whole impl, since `async_trait` must see the
/// expanded methods.)
macro_rules! s3_impl {
    ($($op:ident($input:ident) -> $output:ident;)*) => {
        #[async_trait::async_trait]
        impl S3 for AtomicConditions {
            async fn put_object(&self, mut req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
                if self.ignore_conditions {
                    req.input.if_none_match = None;
                    req.input.if_match = None;
                }
                let conditional = req.input.if_none_match.is_some() || req.input.if_match.is_some();
                let _held = if conditional { Some(self.conditional.lock().await) } else { None };
                self.fs.put_object(req).await
            }

            async fn complete_multipart_upload(
                &self,
                req: S3Request<CompleteMultipartUploadInput>,
            ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
                let conditional = req.input.if_none_match.is_some() || req.input.if_match.is_some();
                let _held = if conditional { Some(self.conditional.lock().await) } else { None };
                self.fs.complete_multipart_upload(req).await
            }

            async fn get_bucket_lifecycle_configuration(
                &self,
                _req: S3Request<GetBucketLifecycleConfigurationInput>,
            ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
                match self.lifecycle.lock().expect("lifecycle lock").clone() {
                    Some(c) => Ok(S3Response::new(GetBucketLifecycleConfigurationOutput { rules: Some(c.rules), ..Default::default() })),
                    None => Err(s3s::s3_error!(NoSuchLifecycleConfiguration)),
                }
            }

            async fn put_bucket_lifecycle_configuration(
                &self,
                req: S3Request<PutBucketLifecycleConfigurationInput>,
            ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
                *self.lifecycle.lock().expect("lifecycle lock") = req.input.lifecycle_configuration;
                Ok(S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
            }

            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.fs.$op(req).await
                }
            )*
        }
    };
}

s3_impl! {
    create_bucket(CreateBucketInput) -> CreateBucketOutput;
    copy_object(CopyObjectInput) -> CopyObjectOutput;
    delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
    delete_object(DeleteObjectInput) -> DeleteObjectOutput;
    delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
    get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
    get_object(GetObjectInput) -> GetObjectOutput;
    head_bucket(HeadBucketInput) -> HeadBucketOutput;
    head_object(HeadObjectInput) -> HeadObjectOutput;
    list_buckets(ListBucketsInput) -> ListBucketsOutput;
    list_objects(ListObjectsInput) -> ListObjectsOutput;
    list_objects_v2(ListObjectsV2Input) -> ListObjectsV2Output;
    create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
    upload_part(UploadPartInput) -> UploadPartOutput;
    upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
    list_parts(ListPartsInput) -> ListPartsOutput;
    abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
}
