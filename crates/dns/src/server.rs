//! The UDP/TCP listeners: hickory-server's `Server` with our own request handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::forward::{ForwardError, Upstream};
use crate::zone::{ClusterDns, LocalAnswer, Resolution};

/// Idle TCP connections are closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Outgoing buffer per TCP connection, in responses.
const TCP_RESPONSE_BUFFER: usize = 32;
/// The largest UDP payload we send, whatever the asker advertises (DNS flag day 2020).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// How often binding UDP and TCP to the same free port is attempted for port 0.
const BIND_ATTEMPTS: usize = 16;

/// A running DNS server. Listening starts in [`DnsServer::bind`]; [`DnsServer::run`] waits
/// for the shutdown signal. Dropping it stops the listeners too.
pub struct DnsServer {
    server: hickory_server::Server<Handler>,
    local_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addrs", &self.local_addrs)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Listens on UDP and TCP at every address of `addrs`. Port 0 picks one free port that
    /// UDP and TCP share; [`DnsServer::local_addrs`] tells which.
    pub async fn bind(
        addrs: &[SocketAddr],
        dns: ClusterDns,
        upstream: Upstream,
    ) -> Result<Self, Error> {
        if addrs.is_empty() {
            return Err(Error::NoAddress);
        }
        let mut sockets = Vec::new();
        for addr in addrs {
            sockets.push(bind_pair(*addr).await?);
        }
        let mut server = hickory_server::Server::new(Handler {
            dns,
            upstream: Arc::new(upstream),
        });
        let mut local_addrs = Vec::new();
        for (udp, tcp, local) in sockets {
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
            local_addrs.push(local);
        }
        tracing::info!(addrs = ?local_addrs, "cluster DNS listening");
        Ok(Self {
            server,
            local_addrs,
        })
    }

    /// The addresses served (UDP and TCP on each).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Serves until `shutdown` is cancelled, then stops the listeners. Returns early with
    /// an error if a listener fails on its own.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let failed = tokio::select! {
            _ = shutdown.cancelled() => None,
            done = self.server.block_until_done() => Some(done),
        };
        match failed {
            Some(done) => {
                done?;
                Err(Error::ListenersStopped)
            }
            None => Ok(self.server.shutdown_gracefully().await?),
        }
    }
}

/// Binds `addrs` ([`DnsServer::bind`]) and serves until `shutdown` is cancelled.
pub async fn serve(
    addrs: &[SocketAddr],
    dns: ClusterDns,
    upstream: Upstream,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    DnsServer::bind(addrs, dns, upstream)
        .await?
        .run(shutdown)
        .await
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), Error> {
    let bind_error = |protocol, source| Error::Bind {
        protocol,
        addr,
        source,
    };
    let attempts = if addr.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| bind_error("UDP", e))?;
        let local = udp.local_addr().map_err(|e| bind_error("UDP", e))?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp, local)),
            // Someone holds the TCP side of the port UDP got; try another port.
            Err(e) => last = Some(e),
        }
    }
    let source = last.unwrap_or_else(|| std::io::Error::other("no port"));
    Err(bind_error("TCP", source))
}

struct Handler {
    dns: ClusterDns,
    upstream: Arc<Upstream>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let failed = failure_info(request);
        let result = match self.respond(request, &mut response_handle).await {
            Ok(info) => Ok(info),
            Err(error) => {
                tracing::debug!(%error, "could not send DNS response");
                Err(error)
            }
        };
        result.unwrap_or(failed)
    }
}

impl Handler {
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: &mut R,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let edns = response_edns(request, None);
        if request.metadata.message_type != MessageType::Query {
            return send_error(
                request,
                response_handle,
                ResponseCode::FormErr,
                edns.as_ref(),
            )
            .await;
        }
        if request.metadata.op_code != OpCode::Query {
            return send_error(
                request,
                response_handle,
                ResponseCode::NotImp,
                edns.as_ref(),
            )
            .await;
        }
        let [query] = request.queries.queries() else {
            return send_error(
                request,
                response_handle,
                ResponseCode::FormErr,
                edns.as_ref(),
            )
            .await;
        };
        let question = query.original().clone();
        let resolution = if question.query_class() == DNSClass::IN {
            self.dns.resolve(question.name(), question.query_type())
        } else {
            Resolution::Forward
        };
        match resolution {
            Resolution::Local(answer) => {
                send_local(request, response_handle, &answer, edns.as_ref()).await
            }
            Resolution::External { records, target } => {
                let mut answers = records;
                let query = Query::query(target, question.query_type());
                if let Ok(reply) = self.ask_upstream(&query).await {
                    answers.extend(reply.answers);
                }
                let answer = LocalAnswer {
                    rcode: ResponseCode::NoError,
                    answers,
                    additionals: Vec::new(),
                    soa: None,
                };
                send_local(request, response_handle, &answer, edns.as_ref()).await
            }
            Resolution::Forward => {
                let over_tcp = request.protocol() == Protocol::Tcp;
                match self
                    .upstream
                    .exchange(request.as_slice(), &question, over_tcp)
                    .await
                {
                    Ok(reply) => send_forwarded(request, response_handle, reply).await,
                    Err(ForwardError::NoUpstream) => {
                        send_error(
                            request,
                            response_handle,
                            ResponseCode::NXDomain,
                            edns.as_ref(),
                        )
                        .await
                    }
                    Err(ForwardError::Failed) => {
                        send_error(
                            request,
                            response_handle,
                            ResponseCode::ServFail,
                            edns.as_ref(),
                        )
                        .await
                    }
                }
            }
        }
    }

    /// Resolves a CNAME target through the upstream servers.
    async fn ask_upstream(&self, query: &Query) -> Result<Message, ForwardError> {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(query.clone());
        let bytes = message.to_vec().map_err(|_| ForwardError::Failed)?;
        self.upstream.exchange(&bytes, query, false).await
    }
}

/// The OPT record of a response: present when the question had one.
fn response_edns(request: &Request, upstream: Option<&Edns>) -> Option<Edns> {
    request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(request.max_payload().min(MAX_UDP_PAYLOAD));
    if let Some(upstream) = upstream {
        edns.set_dnssec_ok(upstream.flags().dnssec_ok);
    }
    Some(edns)
}

fn failure_info(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

async fn send_local<R: ResponseHandler>(
    request: &Request,
    response_handle: &mut R,
    answer: &LocalAnswer,
    edns: Option<&Edns>,
) -> Result<ResponseInfo, hickory_server::net::NetError> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    metadata.recursion_available = true;
    metadata.response_code = answer.rcode;
    let builder = MessageResponseBuilder::new(&request.queries, edns);
    let none: [Record; 0] = [];
    let response = builder.build(
        metadata,
        answer.answers.iter(),
        none.iter(),
        answer.soa.iter(),
        answer.additionals.iter(),
    );
    response_handle.send_response(response).await
}

async fn send_forwarded<R: ResponseHandler>(
    request: &Request,
    response_handle: &mut R,
    reply: Message,
) -> Result<ResponseInfo, hickory_server::net::NetError> {
    let edns = response_edns(request, reply.edns.as_ref());
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = reply.metadata.authoritative;
    metadata.truncation = reply.metadata.truncation;
    metadata.recursion_available = true;
    metadata.authentic_data = reply.metadata.authentic_data;
    metadata.response_code = reply.metadata.response_code;
    let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
    let none: [Record; 0] = [];
    let response = builder.build(
        metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        none.iter(),
        reply.additionals.iter(),
    );
    response_handle.send_response(response).await
}

async fn send_error<R: ResponseHandler>(
    request: &Request,
    response_handle: &mut R,
    rcode: ResponseCode,
    edns: Option<&Edns>,
) -> Result<ResponseInfo, hickory_server::net::NetError> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.recursion_available = true;
    metadata.response_code = rcode;
    let builder = MessageResponseBuilder::new(&request.queries, edns);
    response_handle
        .send_response(builder.build_no_records(metadata))
        .await
}
