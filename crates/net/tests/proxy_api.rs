//! `services::run` against tandem's real API server on loopback, programming nftables in a
//! private network namespace (root).

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Config};
use net::Network;
use net::services::{self, ProxyConfig};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

async fn api_server() -> (Client, CancellationToken) {
    let state = apiserver::AppState::new(Arc::new(store::MemoryStore::new()));
    apiserver::bootstrap(&state).await.expect("seed namespaces");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let until = stop.clone();
    let app = apiserver::router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    let config = Config::new(format!("http://{addr}").parse().expect("uri"));
    (Client::try_from(config).expect("client"), stop)
}

fn web_service() -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(ip: Ipv4Addr, ready: Option<bool>) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        metadata: ObjectMeta {
            name: Some("web-abcde".into()),
            labels: Some([(services::SERVICE_NAME_LABEL.to_owned(), "web".to_owned())].into()),
            ..Default::default()
        },
        endpoints: vec![Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

async fn replace_slice(api: &Api<EndpointSlice>, mut new: EndpointSlice) {
    let current = api.get("web-abcde").await.expect("get slice");
    new.metadata.resource_version = current.metadata.resource_version;
    api.replace("web-abcde", &PostParams::default(), &new)
        .await
        .expect("replace slice");
}

#[test]
fn the_proxy_follows_services_and_endpoint_slices() {
    in_private_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let network = Network::ensure(cfg.clone()).await.expect("ensure");
        let one = Pod::new("one");
        let two = Pod::new("two");
        let client_pod = Pod::new("client");
        let ip1 = network.attach(&one.uid, &one.ns.path()).await.unwrap().ip;
        let ip2 = network.attach(&two.uid, &two.ns.path()).await.unwrap().ip;
        network
            .attach(&client_pod.uid, &client_pod.ns.path())
            .await
            .unwrap();
        let _s1 = one.serve(8080, "one").await;
        let _s2 = two.serve(8080, "two").await;

        let (client, stop_api) = api_server().await;
        let shutdown = CancellationToken::new();
        let proxy = services::run(client.clone(), ProxyConfig::from(&cfg), shutdown.clone());

        let scenario = async {
            let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
            let created = svcs
                .create(&PostParams::default(), &web_service())
                .await
                .expect("create service");
            let vip: Ipv4Addr = created
                .spec
                .and_then(|s| s.cluster_ip)
                .and_then(|ip| ip.parse().ok())
                .expect("a ClusterIP was allocated");
            let vip = SocketAddrV4::new(vip, 80);

            // No slice yet: refused, not hanging.
            assert!(
                eventually(WAIT, async || matches!(
                    client_pod.fetch(vip).await,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
                ))
                .await,
                "a Service without endpoints is not refused"
            );

            slices
                .create(&PostParams::default(), &slice(ip1, Some(true)))
                .await
                .expect("create slice");
            assert!(
                eventually(WAIT, async || client_pod
                    .fetch(vip)
                    .await
                    .is_ok_and(|r| r.starts_with("one ")))
                .await,
                "the VIP never reached pod one"
            );

            replace_slice(&slices, slice(ip2, None)).await;
            assert!(
                eventually(WAIT, async || client_pod
                    .fetch(vip)
                    .await
                    .is_ok_and(|r| r.starts_with("two ")))
                .await,
                "traffic never switched to pod two"
            );
            for _ in 0..5 {
                assert!(client_pod.fetch(vip).await.unwrap().starts_with("two "));
            }

            replace_slice(&slices, slice(ip2, Some(false))).await;
            assert!(
                eventually(WAIT, async || matches!(
                    client_pod.fetch(vip).await,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
                ))
                .await,
                "an endpoint that is not ready still got traffic"
            );

            svcs.delete("web", &DeleteParams::default())
                .await
                .expect("delete service");
            let gone = eventually(WAIT, async || {
                let listed = net::nft::list_table("tandem")
                    .await
                    .unwrap()
                    .unwrap_or_default();
                !listed.contains(&vip.ip().to_string())
            })
            .await;
            assert!(gone, "the deleted Service's rules stayed");
            shutdown.cancel();
        };
        let (outcome, ()) = tokio::join!(proxy, scenario);
        outcome.expect("the proxy loop ends cleanly");
        stop_api.cancel();
    });
}
