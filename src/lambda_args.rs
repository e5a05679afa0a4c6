//! Options of the root's dispatch to the query function on AWS Lambda.

use std::sync::Arc;
use std::time::Duration;

use canopy_cluster::dispatch::LambdaWhen;
use canopy_cluster::metrics::RoleMetrics;
use canopy_cluster::{LambdaConfig, LambdaInvoker};

/// When and how a liaison sends query fragments to the query function.
#[derive(Debug, clap::Args)]
pub(crate) struct LambdaArgs {
    /// When fragments go to the query function: `never`, `always` (every
    /// segment that reads parts), or `over:BYTES` (a shard whose estimated
    /// bytes exceed BYTES). Fragments the function fails or is throttled
    /// on run on queriers.
    #[arg(long, env = "CANOPY_LAMBDA_WHEN", default_value = "never")]
    lambda_when: LambdaWhen,
    /// The function's name or ARN (`cargo lambda watch --only-lambda-apis`: `_`).
    #[arg(long, env = "CANOPY_LAMBDA_FUNCTION", default_value = "canopy-query")]
    lambda_function: String,
    /// Endpoint override (a VPC endpoint, or `http://127.0.0.1:9000` for
    /// `cargo lambda watch`); default: the region's Lambda endpoint.
    #[arg(long, env = "CANOPY_LAMBDA_ENDPOINT")]
    lambda_endpoint: Option<String>,
    /// Region of the function; default from the AWS environment, else us-east-1.
    #[arg(long, env = "CANOPY_LAMBDA_REGION")]
    lambda_region: Option<String>,
    /// Invocations in flight at once from this liaison; keep the sum over
    /// liaisons within the function's reserved concurrency.
    #[arg(long, env = "CANOPY_LAMBDA_CONCURRENCY", default_value_t = 100)]
    lambda_concurrency: usize,
}

impl LambdaArgs {
    /// The invoker, when fragments may go to the function; its counters
    /// are served on `/metrics`. An invocation may take half the query
    /// deadline, leaving the other half to a querier if it fails.
    pub(crate) async fn invoker(&self, metrics: &RoleMetrics, query_timeout: Duration) -> Option<Arc<LambdaInvoker>> {
        if self.lambda_when == LambdaWhen::Never {
            return None;
        }
        let invoker = Arc::new(
            LambdaInvoker::new(LambdaConfig {
                when: self.lambda_when,
                function: self.lambda_function.clone(),
                endpoint: self.lambda_endpoint.clone(),
                region: self.lambda_region.clone(),
                concurrency: self.lambda_concurrency,
                timeout: (query_timeout / 2).max(Duration::from_secs(1)),
            })
            .await,
        );
        let c = invoker.counters();
        let read = |f: fn(&canopy_cluster::LambdaCounters) -> u64| {
            let c = c.clone();
            move || f(&c) as f64
        };
        use std::sync::atomic::Ordering::Relaxed;
        metrics.counter(
            "canopy_lambda_invocations_total",
            "Query fragments the query function answered.",
            read(|c| c.invocations.load(Relaxed)),
        );
        metrics.counter(
            "canopy_lambda_errors_total",
            "Invocations that failed (function error, throttle, network); a querier ran the fragment.",
            read(|c| c.errors.load(Relaxed)),
        );
        metrics.gauge("canopy_lambda_in_flight", "Invocations in flight now.", read(|c| c.in_flight()));
        metrics.gauge(
            "canopy_lambda_in_flight_peak",
            "Most invocations in flight at once since start.",
            read(|c| c.in_flight_peak.load(Relaxed)),
        );
        Some(invoker)
    }
}
