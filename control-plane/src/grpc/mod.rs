//! The gRPC server: admin API (admin token), config discovery and usage reporting
//! (data-plane token), and the unauthenticated standard services grpcurl and probes rely on (health, reflection).

mod admin;
mod convert;
mod discovery;
mod inputs;
mod usage;
mod validate;

pub use admin::Admin;
pub use discovery::Discovery;
pub use usage::Usage;

use gateway_proto::{
    FILE_DESCRIPTOR_SET,
    auth::{Secret, check_bearer},
    v1::{
        admin_service_server::AdminServiceServer, config_discovery_server::ConfigDiscoveryServer,
        usage_service_server::UsageServiceServer,
    },
};
use tonic::{Request, Status, service::Routes};

/// An interceptor that admits only calls bearing `token`.
fn require(
    token: Secret,
    role: &'static str,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        if check_bearer(request.metadata(), &token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(format!(
                "missing or invalid {role} token (send `authorization: Bearer <token>`)"
            )))
        }
    }
}

/// Every service of the control plane, each behind its own token.
pub async fn routes(
    admin: Admin,
    discovery: Discovery,
    usage: Usage,
    admin_token: Secret,
    data_plane_token: Secret,
) -> anyhow::Result<Routes> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServiceServer<Admin>>()
        .await;
    health_reporter
        .set_serving::<ConfigDiscoveryServer<Discovery>>()
        .await;
    health_reporter
        .set_serving::<UsageServiceServer<Usage>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut routes = Routes::new(health);
    routes = routes.add_service(reflection);
    routes = routes.add_service(AdminServiceServer::with_interceptor(
        admin,
        require(admin_token, "admin"),
    ));
    routes = routes.add_service(ConfigDiscoveryServer::with_interceptor(
        discovery,
        require(data_plane_token.clone(), "data-plane"),
    ));
    routes = routes.add_service(UsageServiceServer::with_interceptor(
        usage,
        require(data_plane_token, "data-plane"),
    ));
    Ok(routes)
}
