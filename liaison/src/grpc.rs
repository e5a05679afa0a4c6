//! The gRPC front end: registry services, measure write (bidirectional
//! stream, one response per request message, in order) and query, admin.

use std::pin::Pin;

use canopy_api::v1::admin_service_server::AdminService;
use canopy_api::v1::group_registry_service_server::GroupRegistryService;
use canopy_api::v1::measure_registry_service_server::MeasureRegistryService;
use canopy_api::v1::measure_service_server::MeasureService;
use canopy_api::v1::*;
use futures::Stream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

use crate::error::ApiError;
use crate::service::Gateway;

type GrpcResult<T> = Result<Response<T>, GrpcStatus>;

fn ok<T>(v: T) -> GrpcResult<T> {
    Ok(Response::new(v))
}

fn required_md(md: Option<Metadata>) -> Result<Metadata, ApiError> {
    md.ok_or_else(|| ApiError::invalid("metadata", "required"))
}

#[tonic::async_trait]
impl GroupRegistryService for Gateway {
    async fn create(&self, r: Request<GroupRegistryServiceCreateRequest>) -> GrpcResult<GroupRegistryServiceCreateResponse> {
        self.create_group(r.into_inner().group).await?;
        ok(GroupRegistryServiceCreateResponse {})
    }
    async fn update(&self, r: Request<GroupRegistryServiceUpdateRequest>) -> GrpcResult<GroupRegistryServiceUpdateResponse> {
        self.update_group(r.into_inner().group).await?;
        ok(GroupRegistryServiceUpdateResponse {})
    }
    async fn delete(&self, r: Request<GroupRegistryServiceDeleteRequest>) -> GrpcResult<GroupRegistryServiceDeleteResponse> {
        let deleted = self.registry.delete_group(&r.into_inner().group).await.map_err(ApiError::from)?;
        ok(GroupRegistryServiceDeleteResponse { deleted })
    }
    async fn get(&self, r: Request<GroupRegistryServiceGetRequest>) -> GrpcResult<GroupRegistryServiceGetResponse> {
        let g = self.registry.get_group(&r.into_inner().group).await.map_err(ApiError::from)?;
        ok(GroupRegistryServiceGetResponse { group: Some(g) })
    }
    async fn list(&self, _: Request<GroupRegistryServiceListRequest>) -> GrpcResult<GroupRegistryServiceListResponse> {
        ok(GroupRegistryServiceListResponse { group: self.registry.list_groups().await.map_err(ApiError::from)? })
    }
}

#[tonic::async_trait]
impl MeasureRegistryService for Gateway {
    async fn create(&self, r: Request<MeasureRegistryServiceCreateRequest>) -> GrpcResult<MeasureRegistryServiceCreateResponse> {
        ok(MeasureRegistryServiceCreateResponse { mod_revision: self.create_measure(r.into_inner().measure).await? })
    }
    async fn update(&self, r: Request<MeasureRegistryServiceUpdateRequest>) -> GrpcResult<MeasureRegistryServiceUpdateResponse> {
        ok(MeasureRegistryServiceUpdateResponse { mod_revision: self.update_measure(r.into_inner().measure).await? })
    }
    async fn delete(&self, r: Request<MeasureRegistryServiceDeleteRequest>) -> GrpcResult<MeasureRegistryServiceDeleteResponse> {
        let md = required_md(r.into_inner().metadata)?;
        let deleted = self.registry.delete_measure(&md.group, &md.name).await.map_err(ApiError::from)?;
        ok(MeasureRegistryServiceDeleteResponse { deleted })
    }
    async fn get(&self, r: Request<MeasureRegistryServiceGetRequest>) -> GrpcResult<MeasureRegistryServiceGetResponse> {
        let md = required_md(r.into_inner().metadata)?;
        let m = self.registry.get_measure(&md.group, &md.name).await.map_err(ApiError::from)?;
        ok(MeasureRegistryServiceGetResponse { measure: Some(m) })
    }
    async fn list(&self, r: Request<MeasureRegistryServiceListRequest>) -> GrpcResult<MeasureRegistryServiceListResponse> {
        ok(MeasureRegistryServiceListResponse {
            measure: self.registry.list_measures(&r.into_inner().group).await.map_err(ApiError::from)?,
        })
    }
}

type WriteStream = Pin<Box<dyn Stream<Item = Result<WriteResponse, GrpcStatus>> + Send + 'static>>;

#[tonic::async_trait]
impl MeasureService for Gateway {
    async fn query(&self, r: Request<QueryRequest>) -> GrpcResult<QueryResponse> {
        ok(Gateway::query(self, r.into_inner()).await?)
    }

    type WriteStream = WriteStream;

    async fn write(&self, r: Request<Streaming<WriteRequest>>) -> GrpcResult<WriteStream> {
        let gw = self.clone();
        let input = r.into_inner();
        // Requests are handled one at a time so responses keep request order;
        // group commit across concurrent streams keeps the fsync cost shared.
        let out = futures::stream::unfold((gw, input), |(gw, mut input)| async move {
            match input.next().await {
                None => None,
                Some(Err(e)) => Some((Err(e), (gw, input))),
                Some(Ok(req)) => {
                    let resp = Gateway::write(&gw, req).await;
                    Some((Ok(resp), (gw, input)))
                }
            }
        });
        ok(Box::pin(out))
    }
}

#[tonic::async_trait]
impl AdminService for Gateway {
    async fn flush(&self, _: Request<FlushRequest>) -> GrpcResult<FlushResponse> {
        ok(FlushResponse { parts: self.data.flush().await? as u32 })
    }

    async fn compact(&self, _: Request<CompactRequest>) -> GrpcResult<CompactResponse> {
        let r = Gateway::compact(self).await?;
        ok(CompactResponse {
            merges: r.merges as u32,
            parts_merged: r.parts_merged as u32,
            parts_expired: r.parts_expired as u32,
            objects_deleted: r.objects_deleted as u32,
            versions_deleted: r.versions_deleted as u32,
        })
    }
}
