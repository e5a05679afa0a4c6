//! Invoking the query function on AWS Lambda: one fragment per invocation,
//! as the root would send it to a querier, under a concurrency cap. The
//! payload types are shared with the function (`lambda/`), so both ends
//! agree on them by construction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use canopy_api::cluster::v1::{ExecuteShardRequest, ExecuteShardResponse};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::dispatch::LambdaWhen;

/// Largest synchronous invocation payload Lambda accepts (request and
/// response alike); a fragment whose memtable rows would not fit runs on a
/// querier.
pub const LAMBDA_PAYLOAD_MAX: usize = 6 * 1024 * 1024;

/// An invocation: one fragment.
#[derive(Debug, Serialize, Deserialize)]
pub struct Invocation {
    /// A protobuf `canopy.cluster.v1.ExecuteShardRequest`, base64.
    pub request: String,
}

/// The function's answer: what a querier would have answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    /// A protobuf `canopy.cluster.v1.ExecuteShardResponse`, base64.
    pub response: String,
}

impl Invocation {
    /// Encodes a fragment as an invocation.
    pub fn of(req: &ExecuteShardRequest) -> Invocation {
        Invocation { request: B64.encode(req.encode_to_vec()) }
    }

    /// The fragment it carries.
    pub fn decode(&self) -> Result<ExecuteShardRequest, String> {
        decode_b64_proto(&self.request, "request", "ExecuteShardRequest")
    }
}

impl Answer {
    /// Encodes a querier's response as an answer.
    pub fn of(resp: &ExecuteShardResponse) -> Answer {
        Answer { response: B64.encode(resp.encode_to_vec()) }
    }

    /// The response it carries.
    pub fn decode(&self) -> Result<ExecuteShardResponse, String> {
        decode_b64_proto(&self.response, "response", "ExecuteShardResponse")
    }
}

/// A base64 protobuf message of a payload's `field`; errors name both.
fn decode_b64_proto<M: Message + Default>(text: &str, field: &str, message: &str) -> Result<M, String> {
    let bytes = B64.decode(text.as_bytes()).map_err(|e| format!("{field}: not base64: {e}"))?;
    M::decode(bytes.as_slice()).map_err(|e| format!("{field}: not an {message}: {e}"))
}

/// How the root reaches the query function.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// When fragments go to the function at all.
    pub when: LambdaWhen,
    /// Function name or ARN.
    pub function: String,
    /// Endpoint override (a VPC endpoint, or `cargo lambda watch`).
    pub endpoint: Option<String>,
    /// Region; default from the environment, else `us-east-1`.
    pub region: Option<String>,
    /// Invocations in flight at once from this root (keep it within the
    /// function's reserved concurrency, or Lambda throttles).
    pub concurrency: usize,
    /// How long one invocation may take before the root gives up on it and
    /// a querier runs the fragment: well within the query's deadline, so
    /// the fallback has time to answer.
    pub timeout: Duration,
}

/// Counts the operators and the tests read.
#[derive(Debug, Default)]
pub struct LambdaCounters {
    /// Invocations that answered.
    pub invocations: AtomicU64,
    /// Invocations that failed (function error, throttle, network).
    pub errors: AtomicU64,
    in_flight: AtomicU64,
    /// Most invocations in flight at once since start.
    pub in_flight_peak: AtomicU64,
}

impl LambdaCounters {
    /// Invocations in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One invocation counted in flight until dropped — also when the query
/// is cancelled mid-invocation (its deadline, a failed sibling fragment).
struct InFlight<'a>(&'a LambdaCounters);

impl<'a> InFlight<'a> {
    fn enter(c: &'a LambdaCounters) -> InFlight<'a> {
        let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        c.in_flight_peak.fetch_max(now, Ordering::Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client of the query function with its concurrency cap.
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    cfg: LambdaConfig,
    slots: Arc<Semaphore>,
    counters: Arc<LambdaCounters>,
}

impl LambdaInvoker {
    /// A client configured like every AWS SDK client (credentials from the
    /// environment, profile or instance role), with retries left to the
    /// root: a failed invocation falls back to a querier at once.
    pub async fn new(cfg: LambdaConfig) -> LambdaInvoker {
        // Given, or from the environment, else us-east-1: no probing of
        // profiles or the instance metadata service for it.
        let region = cfg
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(region)).load().await;
        let mut b = aws_sdk_lambda::config::Builder::from(&shared)
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_timeout(cfg.timeout)
                    .build(),
            );
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e);
        }
        LambdaInvoker {
            client: aws_sdk_lambda::Client::from_conf(b.build()),
            slots: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg,
            counters: Arc::new(LambdaCounters::default()),
        }
    }

    /// When fragments go to the function.
    pub fn when(&self) -> LambdaWhen {
        self.cfg.when
    }

    /// A slot under the concurrency cap, if one is free now.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// The counters.
    pub fn counters(&self) -> Arc<LambdaCounters> {
        self.counters.clone()
    }

    /// Runs one fragment on the function, holding `slot` until it answers.
    /// Any failure is an error saying what failed; the caller falls back.
    pub async fn invoke(&self, _slot: OwnedSemaphorePermit, req: &ExecuteShardRequest) -> Result<ExecuteShardResponse, String> {
        let c = &self.counters;
        let payload = serde_json::to_vec(&Invocation::of(req)).map_err(|e| e.to_string())?;
        if payload.len() > LAMBDA_PAYLOAD_MAX {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return Err(format!("a {} byte fragment is over Lambda's {LAMBDA_PAYLOAD_MAX} byte payload limit", payload.len()));
        }
        let in_flight = InFlight::enter(c);
        let sent = self.client.invoke().function_name(&self.cfg.function).payload(Blob::new(payload)).send().await;
        drop(in_flight);
        let answered = match sent {
            Err(e) => Err(format!("invoke {}: {}", self.cfg.function, aws_sdk_lambda::error::DisplayErrorContext(&e))),
            Ok(out) => {
                let body = out.payload().map(|p| p.as_ref()).unwrap_or_default();
                match out.function_error() {
                    Some(kind) => Err(format!("{} failed ({kind}): {}", self.cfg.function, String::from_utf8_lossy(body))),
                    None => serde_json::from_slice::<Answer>(body)
                        .map_err(|e| format!("{}: not an answer: {e}", self.cfg.function))
                        .and_then(|a| a.decode()),
                }
            }
        };
        match &answered {
            Ok(_) => c.invocations.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.errors.fetch_add(1, Ordering::Relaxed),
        };
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_named() {
        let req = ExecuteShardRequest { shard: 3, catalog_version: 9, part_paths: vec!["p".into()], ..Default::default() };
        let inv: Invocation = serde_json::from_slice(&serde_json::to_vec(&Invocation::of(&req)).unwrap()).unwrap();
        assert_eq!(inv.decode().unwrap(), req);
        let resp = ExecuteShardResponse { partial: vec![1, 2, 3], stats: None };
        assert_eq!(Answer::of(&resp).decode().unwrap(), resp);
        let err = Invocation { request: "not base64!".into() }.decode().unwrap_err();
        assert!(err.starts_with("request: not base64"), "{err}");
    }
}
