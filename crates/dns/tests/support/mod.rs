//! Shared pieces of the DNS integration tests: Kubernetes objects, a DNS client, and a
//! hickory server that plays the host's upstream nameserver.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::net::client::{Client, ClientHandle};
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::net::{TcpListener, UdpSocket};

pub fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, i32)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: Some(n.to_string()),
                        port: *p,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn external(ns: &str, name: &str, host: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(host.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A slice of `svc` with `(address, ready, hostname)` endpoints on one named port.
pub fn slice(
    ns: &str,
    svc: &str,
    endpoints: &[(&str, Option<bool>, Option<&str>)],
    (port_name, port): (&str, i32),
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{svc}-slice")),
            namespace: Some(ns.into()),
            labels: Some([(dns::SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|(ip, ready, hostname)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                hostname: hostname.map(str::to_string),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some(port_name.into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

/// Asks `server` one question over UDP or TCP with hickory's client.
pub async fn ask(server: SocketAddr, tcp: bool, name: &str, qtype: RecordType) -> Message {
    let name = Name::from_ascii(name).expect("name");
    let provider = TokioRuntimeProvider::default();
    let response = if tcp {
        let (connect, sender) =
            TcpClientStream::new(server, None, Some(Duration::from_secs(5)), provider);
        let stream = connect.await.expect("tcp connect");
        let (mut client, bg) = Client::<TokioRuntimeProvider>::new(stream, sender);
        tokio::spawn(bg);
        client.query(name, DNSClass::IN, qtype).await
    } else {
        let stream = UdpClientStream::builder(server, provider)
            .with_timeout(Some(Duration::from_secs(5)))
            .build();
        let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        client.query(name, DNSClass::IN, qtype).await
    };
    response.expect("dns response").into_message()
}

pub fn rdata(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.data.to_string()).collect()
}

/// A hickory server that knows `example.com` and `example.org` (A only), `big.example`
/// (100 A records, too many for plain UDP) and answers NXDOMAIN for everything else,
/// counting the questions it gets.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub questions: Arc<AtomicUsize>,
    _server: hickory_server::Server<UpstreamHandler>,
}

pub struct UpstreamHandler {
    questions: Arc<AtomicUsize>,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        // The port the kernel picks for UDP may be in use for TCP (another test's
        // connection): pick again until both are free.
        let mut attempts = 0;
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("udp");
            let addr = udp.local_addr().expect("addr");
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if attempts < 20 => {
                    attempts += 1;
                    eprintln!("{addr} is taken for TCP ({e}); picking another port");
                }
                Err(e) => panic!("no port free for both UDP and TCP: {e}"),
            }
        };
        let addr = udp.local_addr().expect("addr");
        let questions = Arc::new(AtomicUsize::new(0));
        let mut server = hickory_server::Server::new(UpstreamHandler {
            questions: questions.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 8);
        Self {
            addr,
            questions,
            _server: server,
        }
    }

    pub fn questions(&self) -> usize {
        self.questions.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl RequestHandler for UpstreamHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.questions.fetch_add(1, Ordering::SeqCst);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let mut answers = Vec::new();
        if let [query] = request.queries.queries() {
            let owner = query.original().name().clone();
            let ip = match query.name().to_string().as_str() {
                "example.com." => Some(Ipv4Addr::new(93, 184, 215, 14)),
                "example.org." => Some(Ipv4Addr::new(93, 184, 215, 15)),
                _ => None,
            };
            if query.name().to_string() == "big.example." {
                for i in 0..100u8 {
                    let ip = Ipv4Addr::new(192, 0, 2, i);
                    answers.push(Record::from_rdata(owner.clone(), 300, RData::A(A(ip))));
                }
            } else {
                match (ip, query.query_type()) {
                    (Some(ip), RecordType::A) => {
                        answers.push(Record::from_rdata(owner, 300, RData::A(A(ip))))
                    }
                    (Some(_), _) => {}
                    (None, _) => metadata.response_code = ResponseCode::NXDomain,
                }
            }
        }
        let builder = MessageResponseBuilder::new(&request.queries, None);
        let none: [Record; 0] = [];
        let response = builder.build(
            metadata,
            answers.iter(),
            none.iter(),
            none.iter(),
            none.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            }),
        }
    }
}
