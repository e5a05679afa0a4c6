//! The gRPC side of `auth.rs`: a tower layer on the liaison's gRPC servers
//! that checks each call's `authorization` metadata against the permission
//! its method needs, before the message is decoded.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response};
use futures::future::{Either, Ready, ready};

use crate::auth::{Tokens, credential_of, grpc_permission};

/// Checks tokens on every call; lets everything through without tokens.
#[derive(Debug, Clone)]
pub(crate) struct GrpcAuthLayer(pub(crate) Option<Arc<Tokens>>);

impl<S> tower_layer::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth { inner, tokens: self.0.clone() }
    }
}

/// The service [`GrpcAuthLayer`] wraps around a gRPC server's routes.
#[derive(Debug, Clone)]
pub(crate) struct GrpcAuth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for GrpcAuth<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<ResBody>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let (Some(tokens), Some(need)) = (&self.tokens, grpc_permission(req.uri().path())) {
            let credential = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(credential_of);
            if let Err(e) = tokens.check(credential.as_deref(), need) {
                return Either::Right(ready(Ok(tonic::Status::from(e).into_http())));
            }
        }
        Either::Left(self.inner.call(req))
    }
}
