//! The cluster zone: a shared handle over the current [`Records`] and the rules that turn a
//! question into an answer, following CoreDNS's `kubernetes` plugin.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::Error;
use crate::records::{Port, Records, ServiceKind, undashed};

/// TTL of every record, CoreDNS's default for the kubernetes plugin.
pub const TTL: u32 = 5;

/// What `dns-version.<domain>` answers (Kubernetes DNS specification version).
const SCHEMA_VERSION: &str = "1.1.0";

/// How many CNAMEs inside the zone are followed before giving up.
const MAX_CNAME_DEPTH: usize = 8;

/// A cheap, cloneable handle on the cluster zone. [`ClusterDns::update`] replaces the
/// records atomically; servers holding a clone see the change on their next question.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    domain: Arc<Domain>,
    current: Arc<RwLock<Arc<Snapshot>>>,
}

#[derive(Debug)]
struct Domain {
    name: Name,
    labels: Vec<String>,
}

#[derive(Debug)]
struct Snapshot {
    records: Records,
    serial: u32,
}

/// The outcome of looking a question up in the zone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolution {
    /// An authoritative answer (possibly NXDOMAIN or NODATA with an SOA).
    Local(Box<LocalAnswer>),
    /// The name ends in a CNAME to a host outside the zone: send `records` and then what the
    /// upstream says about `target`.
    External { records: Vec<Record>, target: Name },
    /// Not ours: ask the upstream servers.
    Forward,
}

/// An answer from the cluster zone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocalAnswer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The SOA for the authority section (NXDOMAIN and NODATA).
    pub soa: Option<Record>,
}

/// What a name in the zone resolves to before the question type is applied: CoreDNS's
/// intermediate "services" list.
#[derive(Debug, Clone)]
struct Entry {
    host: Host,
    /// `None` where the service or endpoint declares no port.
    port: Option<u16>,
    /// The name SRV records point at: the service or the endpoint.
    key: Name,
}

#[derive(Debug, Clone)]
enum Host {
    Ip(IpAddr),
    Name(Name),
}

/// What the labels below the zone apex denote.
enum Found {
    /// The name does not exist.
    Missing,
    /// The name exists; the entries may be empty (NODATA for address questions).
    Entries(Vec<Entry>),
    /// `dns-version.<domain>`.
    Version,
    /// The apex itself.
    Apex,
}

impl ClusterDns {
    /// A zone for `domain` (such as `cluster.local`) with no records yet.
    pub fn new(domain: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidDomain {
            domain: domain.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = domain.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        let labels: Vec<String> = trimmed.split('.').map(str::to_ascii_lowercase).collect();
        if labels.iter().any(String::is_empty) {
            return Err(invalid("empty label"));
        }
        let name = Name::from_ascii(format!("{}.", labels.join(".")))
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            domain: Arc::new(Domain { name, labels }),
            current: Arc::new(RwLock::new(Arc::new(Snapshot {
                records: Records::default(),
                serial: now_serial(),
            }))),
        })
    }

    /// The cluster domain without the trailing dot.
    pub fn domain(&self) -> String {
        self.domain.labels.join(".")
    }

    /// Replaces the records; the SOA serial moves to the current time.
    pub fn update(&self, records: Records) {
        let snapshot = Arc::new(Snapshot {
            records,
            serial: now_serial(),
        });
        // A poisoned lock only means a reader panicked; the value is still whole.
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = snapshot;
    }

    /// The records currently served.
    pub fn records(&self) -> Records {
        self.snapshot().records.clone()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answers `qname`/`qtype` from the zone, or says where else to look. `qname` keeps the
    /// asker's spelling for the owner names of the answers; matching ignores case.
    pub(crate) fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        let snapshot = self.snapshot();
        let labels = lower_labels(qname);
        if let Some(ip) = reverse_ip(&labels) {
            return self.reverse(&snapshot, qname, qtype, ip);
        }
        let zone_len = self.domain.labels.len();
        if labels.len() < zone_len || labels[labels.len() - zone_len..] != self.domain.labels[..] {
            return Resolution::Forward;
        }
        let relative = &labels[..labels.len() - zone_len];
        let resolver = Resolver {
            zone: self,
            snapshot: &snapshot,
        };
        resolver.answer(qname, relative, qtype, 0)
    }

    fn reverse(
        &self,
        snapshot: &Snapshot,
        qname: &Name,
        qtype: RecordType,
        ip: IpAddr,
    ) -> Resolution {
        if qtype != RecordType::PTR {
            return Resolution::Forward;
        }
        let owners = snapshot.records.reverse(ip);
        if owners.is_empty() {
            return Resolution::Forward;
        }
        let answers = owners
            .into_iter()
            .filter_map(|(ns, svc, endpoint)| {
                let target = match endpoint {
                    Some(ep) => self.name(&[&ep, svc, ns, "svc"]),
                    None => self.name(&[svc, ns, "svc"]),
                }?;
                Some(Record::from_rdata(
                    qname.clone(),
                    TTL,
                    RData::PTR(PTR(target)),
                ))
            })
            .collect();
        Resolution::Local(Box::new(LocalAnswer {
            rcode: ResponseCode::NoError,
            answers,
            additionals: Vec::new(),
            soa: None,
        }))
    }

    /// `labels` + the cluster domain as a fully qualified name.
    fn name(&self, labels: &[&str]) -> Option<Name> {
        let mut text = String::new();
        for label in labels {
            text.push_str(label);
            text.push('.');
        }
        text.push_str(&self.domain.labels.join("."));
        text.push('.');
        Name::from_ascii(text).ok()
    }

    fn soa(&self, serial: u32) -> Option<Record> {
        let mname = self.name(&["ns", "dns"])?;
        let rname = self.name(&["hostmaster"])?;
        let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL);
        Some(Record::from_rdata(
            self.domain.name.clone(),
            TTL,
            RData::SOA(soa),
        ))
    }
}

struct Resolver<'a> {
    zone: &'a ClusterDns,
    snapshot: &'a Snapshot,
}

impl Resolver<'_> {
    fn answer(
        &self,
        qname: &Name,
        relative: &[String],
        qtype: RecordType,
        depth: usize,
    ) -> Resolution {
        let found = self.find(relative);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match found {
            Found::Missing => return self.fail(ResponseCode::NXDomain),
            Found::Apex => {
                if qtype == RecordType::SOA
                    && let Some(soa) = self.zone.soa(self.snapshot.serial)
                {
                    answers.push(soa);
                }
            }
            Found::Version => {
                if qtype == RecordType::TXT {
                    answers.push(Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                    ));
                }
            }
            Found::Entries(entries) => match qtype {
                RecordType::A | RecordType::AAAA => {
                    return self.addresses(qname, &entries, qtype, depth);
                }
                RecordType::SRV => self.srv(qname, &entries, &mut answers, &mut additionals),
                RecordType::CNAME => {
                    if let Some(Entry {
                        host: Host::Name(target),
                        ..
                    }) = entries.first()
                    {
                        answers.push(cname(qname, target));
                    }
                }
                _ => {}
            },
        }
        if answers.is_empty() {
            return self.fail(ResponseCode::NoError);
        }
        Resolution::Local(Box::new(LocalAnswer {
            rcode: ResponseCode::NoError,
            answers,
            additionals,
            soa: None,
        }))
    }

    /// NXDOMAIN or NODATA: no records, the zone's SOA in the authority section.
    fn fail(&self, rcode: ResponseCode) -> Resolution {
        Resolution::Local(Box::new(LocalAnswer {
            rcode,
            answers: Vec::new(),
            additionals: Vec::new(),
            soa: self.zone.soa(self.snapshot.serial),
        }))
    }

    fn find(&self, relative: &[String]) -> Found {
        let records = &self.snapshot.records;
        let Some((kind, rest)) = relative.split_last() else {
            return Found::Apex;
        };
        match (kind.as_str(), rest) {
            ("dns-version", []) => Found::Version,
            ("svc", []) | ("pod", []) => Found::Entries(Vec::new()),
            ("svc", [namespace]) => {
                if records.has_namespace(namespace) {
                    Found::Entries(Vec::new())
                } else {
                    Found::Missing
                }
            }
            ("svc", [service, namespace]) => self.service(namespace, service, None, None, None),
            ("svc", [endpoint, service, namespace]) => {
                self.service(namespace, service, Some(endpoint), None, None)
            }
            ("svc", [port, protocol, service, namespace]) => self.service(
                namespace,
                service,
                None,
                Some(strip_underscore(port)),
                Some(strip_underscore(protocol)),
            ),
            // Namespaces are not tracked, so every one may hold pods ("pods insecure").
            ("pod", [_namespace]) => Found::Entries(Vec::new()),
            ("pod", [pod, namespace]) => match undashed(pod) {
                Some(ip) => match self.zone.name(&[pod, namespace, "pod"]) {
                    Some(key) => Found::Entries(vec![Entry {
                        host: Host::Ip(ip),
                        port: None,
                        key,
                    }]),
                    None => Found::Missing,
                },
                None => Found::Missing,
            },
            _ => Found::Missing,
        }
    }

    /// CoreDNS's `findServices`: the entries of one service, filtered by endpoint label or by
    /// port name and protocol.
    fn service(
        &self,
        namespace: &str,
        name: &str,
        endpoint: Option<&str>,
        port: Option<&str>,
        protocol: Option<&str>,
    ) -> Found {
        let Some(service) = self.snapshot.records.service(namespace, name) else {
            return Found::Missing;
        };
        let matches = |p: Option<&Port>| match (port, protocol, p) {
            (None, None, _) => true,
            (Some(want), Some(proto), Some(p)) => {
                p.name.eq_ignore_ascii_case(want) && p.protocol.eq_ignore_ascii_case(proto)
            }
            _ => false,
        };
        let mut entries = Vec::new();
        let mut found = false;
        match &service.kind {
            ServiceKind::ExternalName(host) => {
                // An address is not a valid CNAME target, and endpoints cannot exist.
                if endpoint.is_some() || host.parse::<IpAddr>().is_ok() {
                    return Found::Missing;
                }
                let Ok(target) = Name::from_ascii(format!("{host}.")) else {
                    return Found::Missing;
                };
                let Some(key) = self.zone.name(&[name, namespace, "svc"]) else {
                    return Found::Missing;
                };
                return Found::Entries(vec![Entry {
                    host: Host::Name(target),
                    port: None,
                    key,
                }]);
            }
            ServiceKind::Headless => {
                self.endpoint_entries(
                    namespace,
                    name,
                    &service.endpoints,
                    endpoint,
                    &matches,
                    &mut entries,
                    &mut found,
                );
            }
            ServiceKind::ClusterIp(_) if endpoint.is_some() => {
                self.endpoint_entries(
                    namespace,
                    name,
                    &service.endpoints,
                    endpoint,
                    &matches,
                    &mut entries,
                    &mut found,
                );
            }
            ServiceKind::ClusterIp(ips) => {
                let Some(key) = self.zone.name(&[name, namespace, "svc"]) else {
                    return Found::Missing;
                };
                let ports: Vec<Option<&Port>> = if service.ports.is_empty() {
                    vec![None]
                } else {
                    service.ports.iter().map(Some).collect()
                };
                for p in ports {
                    if !matches(p) {
                        continue;
                    }
                    found = true;
                    for ip in ips {
                        entries.push(Entry {
                            host: Host::Ip(*ip),
                            port: p.map(|p| p.port),
                            key: key.clone(),
                        });
                    }
                }
            }
        }
        if found {
            Found::Entries(entries)
        } else {
            Found::Missing
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn endpoint_entries(
        &self,
        namespace: &str,
        service: &str,
        endpoints: &[crate::records::EndpointRecord],
        endpoint: Option<&str>,
        matches: &dyn Fn(Option<&Port>) -> bool,
        entries: &mut Vec<Entry>,
        found: &mut bool,
    ) {
        for ep in endpoints {
            let label = ep.dns_label();
            if endpoint.is_some_and(|want| !want.eq_ignore_ascii_case(&label)) {
                continue;
            }
            let Some(key) = self.zone.name(&[&label, service, namespace, "svc"]) else {
                continue;
            };
            let ports: Vec<Option<&Port>> = if ep.ports.is_empty() {
                vec![None]
            } else {
                ep.ports.iter().map(Some).collect()
            };
            for p in ports {
                if !matches(p) {
                    continue;
                }
                *found = true;
                entries.push(Entry {
                    host: Host::Ip(ep.ip),
                    port: p.map(|p| p.port),
                    key: key.clone(),
                });
            }
        }
    }

    /// A and AAAA answers; a CNAME is followed inside the zone or handed to the upstream.
    fn addresses(
        &self,
        qname: &Name,
        entries: &[Entry],
        qtype: RecordType,
        depth: usize,
    ) -> Resolution {
        let mut answers = Vec::new();
        let mut seen = HashSet::new();
        for entry in entries {
            match &entry.host {
                Host::Ip(ip) => {
                    let rdata = match (ip, qtype) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    if seen.insert(*ip) {
                        answers.push(Record::from_rdata(qname.clone(), TTL, rdata));
                    }
                }
                Host::Name(target) => {
                    if target.eq_ignore_root_case(qname) || depth >= MAX_CNAME_DEPTH {
                        continue;
                    }
                    let link = cname(qname, target);
                    let labels = lower_labels(target);
                    let zone_len = self.zone.domain.labels.len();
                    let inside = labels.len() >= zone_len
                        && labels[labels.len() - zone_len..] == self.zone.domain.labels[..];
                    if !inside {
                        return Resolution::External {
                            records: vec![link],
                            target: target.clone(),
                        };
                    }
                    let relative = labels[..labels.len() - zone_len].to_vec();
                    if let Resolution::Local(next) =
                        self.answer(target, &relative, qtype, depth + 1)
                        && !next.answers.is_empty()
                    {
                        answers.push(link);
                        answers.extend(next.answers);
                    }
                }
            }
        }
        if answers.is_empty() {
            return self.fail(ResponseCode::NoError);
        }
        Resolution::Local(Box::new(LocalAnswer {
            rcode: ResponseCode::NoError,
            answers,
            additionals: Vec::new(),
            soa: None,
        }))
    }

    /// SRV answers with the targets' addresses as additional records. Weights follow
    /// CoreDNS: 100 split evenly over all entries, at least 1.
    fn srv(
        &self,
        qname: &Name,
        entries: &[Entry],
        answers: &mut Vec<Record>,
        additionals: &mut Vec<Record>,
    ) {
        let total = 100.0 * entries.len() as f64;
        let weight = ((100.0 / total) * 100.0).floor().max(1.0) as u16;
        let mut seen_srv = HashSet::new();
        let mut seen_addr = HashSet::new();
        for entry in entries {
            let Some(port) = entry.port else { continue };
            match &entry.host {
                Host::Ip(ip) => {
                    if seen_srv.insert((entry.key.clone(), port)) {
                        answers.push(Record::from_rdata(
                            qname.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, weight, port, entry.key.clone())),
                        ));
                    }
                    if seen_addr.insert((entry.key.clone(), *ip)) {
                        let rdata = match ip {
                            IpAddr::V4(v4) => RData::A(A(*v4)),
                            IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                        };
                        additionals.push(Record::from_rdata(entry.key.clone(), TTL, rdata));
                    }
                }
                Host::Name(target) => answers.push(Record::from_rdata(
                    qname.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, weight, port, target.clone())),
                )),
            }
        }
    }
}

fn cname(qname: &Name, target: &Name) -> Record {
    Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(target.clone())))
}

fn strip_underscore(label: &str) -> &str {
    label.strip_prefix('_').unwrap_or(label)
}

/// The labels of `name`, lowercased, left to right.
pub(crate) fn lower_labels(name: &Name) -> Vec<String> {
    name.iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect()
}

/// The address of an `in-addr.arpa`/`ip6.arpa` name, when it is a complete one.
fn reverse_ip(labels: &[String]) -> Option<IpAddr> {
    match labels {
        [a, b, c, d, in_addr, arpa] if in_addr == "in-addr" && arpa == "arpa" => {
            let octet = |s: &String| s.parse::<u8>().ok();
            Some(IpAddr::V4(Ipv4Addr::new(
                octet(d)?,
                octet(c)?,
                octet(b)?,
                octet(a)?,
            )))
        }
        [nibbles @ .., ip6, arpa] if nibbles.len() == 32 && ip6 == "ip6" && arpa == "arpa" => {
            let mut value: u128 = 0;
            for nibble in nibbles.iter().rev() {
                if nibble.len() != 1 {
                    return None;
                }
                value = (value << 4) | u128::from_str_radix(nibble, 16).ok()?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

fn now_serial() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(ns: &str, name: &str, spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn port(name: &str, port: i32) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn slice(ns: &str, svc: &str, eps: &[(&str, Option<&str>)], port: i32) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{svc}-x")),
                namespace: Some(ns.into()),
                labels: Some([(crate::SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, host)| Endpoint {
                    addresses: vec![ip.to_string()],
                    hostname: host.map(str::to_string),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn zone() -> ClusterDns {
        let services = [
            service(
                "default",
                "web",
                ServiceSpec {
                    cluster_ip: Some("10.96.0.10".into()),
                    ports: Some(vec![port("http", 80), port("metrics", 9090)]),
                    ..Default::default()
                },
            ),
            service(
                "default",
                "db",
                ServiceSpec {
                    cluster_ip: Some("None".into()),
                    ports: Some(vec![port("http", 80)]),
                    ..Default::default()
                },
            ),
            service(
                "default",
                "empty",
                ServiceSpec {
                    cluster_ip: Some("None".into()),
                    ..Default::default()
                },
            ),
            service(
                "default",
                "ext",
                ServiceSpec {
                    type_: Some("ExternalName".into()),
                    external_name: Some("example.org".into()),
                    ..Default::default()
                },
            ),
            service(
                "default",
                "alias",
                ServiceSpec {
                    type_: Some("ExternalName".into()),
                    external_name: Some("web.default.svc.cluster.local".into()),
                    ..Default::default()
                },
            ),
        ];
        let slices = [
            slice(
                "default",
                "db",
                &[("10.0.0.3", Some("db-0")), ("10.0.0.4", None)],
                8080,
            ),
            slice("default", "web", &[("10.0.0.7", None)], 8080),
        ];
        let dns = ClusterDns::new("Cluster.Local.").expect("domain");
        dns.update(Records::from_objects(&services, &slices));
        dns
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    fn local(resolution: Resolution) -> LocalAnswer {
        match resolution {
            Resolution::Local(answer) => *answer,
            other => panic!("expected a local answer, got {other:?}"),
        }
    }

    fn rdata(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn service_a_record_ignores_case_and_keeps_the_asked_spelling() {
        let qname = name("WEB.Default.svc.CLUSTER.local.");
        let answer = local(zone().resolve(&qname, RecordType::A));
        assert_eq!(answer.rcode, ResponseCode::NoError);
        assert_eq!(rdata(&answer.answers), ["10.96.0.10"]);
        assert_eq!(
            answer.answers[0].name.to_ascii(),
            "WEB.Default.svc.CLUSTER.local."
        );
        assert_eq!(answer.answers[0].ttl, 5);
        assert!(answer.soa.is_none());
    }

    #[test]
    fn headless_service_answers_every_ready_endpoint() {
        let answer = local(zone().resolve(&name("db.default.svc.cluster.local."), RecordType::A));
        assert_eq!(rdata(&answer.answers), ["10.0.0.3", "10.0.0.4"]);
        let host =
            local(zone().resolve(&name("db-0.db.default.svc.cluster.local."), RecordType::A));
        assert_eq!(rdata(&host.answers), ["10.0.0.3"]);
        let dashed = local(zone().resolve(
            &name("10-0-0-4.db.default.svc.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(rdata(&dashed.answers), ["10.0.0.4"]);
    }

    #[test]
    fn srv_for_a_named_port_points_at_the_service() {
        let answer = local(zone().resolve(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ));
        assert_eq!(
            rdata(&answer.answers),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(answer.additionals.len(), 1);
        assert_eq!(
            answer.additionals[0].name.to_ascii(),
            "web.default.svc.cluster.local."
        );
        assert_eq!(rdata(&answer.additionals), ["10.96.0.10"]);
    }

    #[test]
    fn srv_for_headless_lists_each_endpoint_with_split_weight() {
        let answer = local(zone().resolve(
            &name("_http._tcp.db.default.svc.cluster.local."),
            RecordType::SRV,
        ));
        assert_eq!(
            rdata(&answer.answers),
            [
                "0 50 8080 db-0.db.default.svc.cluster.local.",
                "0 50 8080 10-0-0-4.db.default.svc.cluster.local."
            ]
        );
        assert_eq!(rdata(&answer.additionals), ["10.0.0.3", "10.0.0.4"]);
    }

    #[test]
    fn srv_without_port_labels_lists_all_ports() {
        let answer =
            local(zone().resolve(&name("web.default.svc.cluster.local."), RecordType::SRV));
        assert_eq!(
            rdata(&answer.answers),
            [
                "0 50 80 web.default.svc.cluster.local.",
                "0 50 9090 web.default.svc.cluster.local."
            ]
        );
        // One address record for the shared target.
        assert_eq!(answer.additionals.len(), 1);
    }

    #[test]
    fn missing_names_are_nxdomain_with_the_soa() {
        let dns = zone();
        for missing in [
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "other.svc.cluster.local.",
            "_grpc._tcp.web.default.svc.cluster.local.",
            "db-9.db.default.svc.cluster.local.",
            "empty.default.svc.cluster.local.",
            "a.b.c.web.default.svc.cluster.local.",
            "nothing.cluster.local.",
            "not-an-ip.default.pod.cluster.local.",
        ] {
            let answer = local(dns.resolve(&name(missing), RecordType::A));
            assert_eq!(answer.rcode, ResponseCode::NXDomain, "{missing}");
            assert!(answer.answers.is_empty(), "{missing}");
            let soa = answer.soa.expect("soa");
            assert_eq!(soa.name.to_ascii(), "cluster.local.");
            assert_eq!(
                soa.data.to_string(),
                format!(
                    "ns.dns.cluster.local. hostmaster.cluster.local. {} 7200 1800 86400 5",
                    dns.snapshot().serial
                )
            );
        }
    }

    #[test]
    fn existing_names_without_the_type_are_nodata() {
        let dns = zone();
        for (qname, qtype) in [
            ("web.default.svc.cluster.local.", RecordType::AAAA),
            ("web.default.svc.cluster.local.", RecordType::MX),
            ("default.svc.cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("cluster.local.", RecordType::A),
        ] {
            let answer = local(dns.resolve(&name(qname), qtype));
            assert_eq!(answer.rcode, ResponseCode::NoError, "{qname} {qtype}");
            assert!(answer.answers.is_empty(), "{qname} {qtype}");
            assert!(answer.soa.is_some(), "{qname} {qtype}");
        }
        let apex = local(dns.resolve(&name("cluster.local."), RecordType::SOA));
        assert_eq!(apex.answers.len(), 1);
        let version = local(dns.resolve(&name("dns-version.cluster.local."), RecordType::TXT));
        assert_eq!(rdata(&version.answers), ["1.1.0"]);
    }

    #[test]
    fn pod_names_answer_the_dashed_address() {
        let answer =
            local(zone().resolve(&name("10-244-1-7.any.pod.cluster.local."), RecordType::A));
        assert_eq!(rdata(&answer.answers), ["10.244.1.7"]);
    }

    #[test]
    fn external_name_is_a_cname_chased_inside_the_zone_or_upstream() {
        let dns = zone();
        match dns.resolve(&name("ext.default.svc.cluster.local."), RecordType::A) {
            Resolution::External { records, target } => {
                assert_eq!(rdata(&records), ["example.org."]);
                assert_eq!(target.to_ascii(), "example.org.");
            }
            other => panic!("expected an external CNAME, got {other:?}"),
        }
        let alias = local(dns.resolve(&name("alias.default.svc.cluster.local."), RecordType::A));
        assert_eq!(
            rdata(&alias.answers),
            ["web.default.svc.cluster.local.", "10.96.0.10"]
        );
        let cname = local(dns.resolve(&name("ext.default.svc.cluster.local."), RecordType::CNAME));
        assert_eq!(rdata(&cname.answers), ["example.org."]);
    }

    #[test]
    fn reverse_lookups_answer_known_addresses_and_forward_the_rest() {
        let dns = zone();
        let answer = local(dns.resolve(&name("10.0.96.10.in-addr.arpa."), RecordType::PTR));
        assert_eq!(rdata(&answer.answers), ["web.default.svc.cluster.local."]);
        let endpoint = local(dns.resolve(&name("3.0.0.10.in-addr.arpa."), RecordType::PTR));
        assert_eq!(
            rdata(&endpoint.answers),
            ["db-0.db.default.svc.cluster.local."]
        );
        assert_eq!(
            dns.resolve(&name("8.8.8.8.in-addr.arpa."), RecordType::PTR),
            Resolution::Forward
        );
    }

    #[test]
    fn names_outside_the_domain_are_forwarded() {
        let dns = zone();
        for outside in ["example.com.", "local.", "cluster.local.example.com."] {
            assert_eq!(
                dns.resolve(&name(outside), RecordType::A),
                Resolution::Forward
            );
        }
    }

    #[test]
    fn updates_are_visible_through_every_clone() {
        let dns = zone();
        let server_side = dns.clone();
        dns.update(Records::default());
        let answer =
            local(server_side.resolve(&name("web.default.svc.cluster.local."), RecordType::A));
        assert_eq!(answer.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn invalid_domains_are_rejected() {
        assert!(ClusterDns::new("").is_err());
        assert!(ClusterDns::new("a..b").is_err());
        assert_eq!(
            ClusterDns::new("Cluster.Local.").unwrap().domain(),
            "cluster.local"
        );
    }
}
