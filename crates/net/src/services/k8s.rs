//! Services and EndpointSlices (k8s-openapi types) -> [`Model`].

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Endpoint, Model, Protocol, Service, ServicePort};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Builds the proxy's model the way kube-proxy reads the API:
/// - only types `ClusterIP` (the default), `NodePort` and `LoadBalancer` get a VIP; a
///   `clusterIP` of `None` or empty means headless (no rules);
/// - a slice belongs to the Service named by its `kubernetes.io/service-name` label in the
///   same namespace; only `IPv4` slices count;
/// - Service ports and slice ports are matched by name and protocol;
/// - an endpoint counts when `conditions.ready` is true or unset.
///
/// The result is sorted by namespace and name, so equal inputs give equal models.
pub fn model_from<S, E>(services: &[S], slices: &[E]) -> Model
where
    S: Borrow<K8sService>,
    E: Borrow<EndpointSlice>,
{
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let slice = slice.borrow();
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        by_service
            .entry((ns, svc.as_str()))
            .or_default()
            .push(slice);
    }

    let mut out: Vec<Service> = services
        .iter()
        .filter_map(|s| convert(s.borrow(), &by_service))
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Model { services: out }
}

fn convert(
    svc: &K8sService,
    slices: &HashMap<(&str, &str), Vec<&EndpointSlice>>,
) -> Option<Service> {
    let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref()?;
    let spec = svc.spec.as_ref()?;
    match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        _ => return None,
    }
    let cluster_ip = cluster_ipv4(spec.cluster_ips.as_deref(), spec.cluster_ip.as_deref());
    let mine = slices
        .get(&(namespace, name))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = Protocol::from_k8s(p.protocol.as_deref().unwrap_or("TCP"))?;
            let port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
            let port_name = p.name.clone().unwrap_or_default();
            Some(ServicePort {
                endpoints: ready_endpoints(mine, &port_name, protocol),
                name: port_name,
                protocol,
                port,
            })
        })
        .collect();
    Some(Service {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        cluster_ip,
        ports,
    })
}

/// The first IPv4 ClusterIP; `None` for headless (`None`/empty) or IPv6-only Services.
fn cluster_ipv4(ips: Option<&[String]>, ip: Option<&str>) -> Option<Ipv4Addr> {
    let candidates: Vec<&str> = match ips {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => ip.into_iter().collect(),
    };
    candidates
        .into_iter()
        .filter(|s| !s.is_empty() && *s != "None")
        .find_map(|s| s.parse().ok())
}

fn ready_endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
) -> Vec<Endpoint> {
    let mut out = BTreeSet::new();
    for slice in slices {
        let target = slice.ports.iter().flatten().find_map(|p| {
            let same_name = p.name.as_deref().unwrap_or("") == port_name;
            let same_proto =
                Protocol::from_k8s(p.protocol.as_deref().unwrap_or("TCP")) == Some(protocol);
            if same_name && same_proto {
                p.port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0)
            } else {
                None
            }
        });
        let Some(port) = target else { continue };
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<Ipv4Addr>() {
                    out.insert(Endpoint { ip, port });
                }
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as K8sPort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as K8sEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(
        name: &str,
        ip: &str,
        type_: Option<&str>,
        ports: &[(&str, &str, i32)],
    ) -> K8sService {
        K8sService {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                type_: type_.map(Into::into),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, proto, port)| K8sPort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            protocol: Some(proto.to_string()),
                            port: *port,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(
        service: &str,
        ns: &str,
        ports: &[(&str, &str, i32)],
        eps: &[(&str, Option<bool>)],
    ) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            metadata: ObjectMeta {
                name: Some(format!("{service}-abc")),
                namespace: Some(ns.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
                ..Default::default()
            },
            ports: Some(
                ports
                    .iter()
                    .map(|(n, proto, port)| EndpointPort {
                        name: Some(n.to_string()),
                        protocol: Some(proto.to_string()),
                        port: Some(*port),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: eps
                .iter()
                .map(|(ip, ready)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn ep(ip: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port,
        }
    }

    #[test]
    fn ports_are_matched_by_name_and_only_ready_endpoints_count() {
        let svc = service(
            "web",
            "10.96.0.10",
            None,
            &[("http", "TCP", 80), ("metrics", "TCP", 9090)],
        );
        let slices = [
            slice(
                "web",
                "shop",
                &[("http", "TCP", 8080), ("metrics", "TCP", 9100)],
                &[
                    ("10.244.0.5", Some(true)),
                    ("10.244.0.6", None),
                    ("10.244.0.7", Some(false)),
                ],
            ),
            // Same name, other namespace: not ours.
            slice(
                "web",
                "other",
                &[("http", "TCP", 1)],
                &[("10.244.9.9", Some(true))],
            ),
        ];
        let model = model_from(&[svc], &slices);
        assert_eq!(model.services.len(), 1);
        let s = &model.services[0];
        assert_eq!(s.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(s.ports[0].name, "http");
        assert_eq!(
            s.ports[0].endpoints,
            vec![ep([10, 244, 0, 5], 8080), ep([10, 244, 0, 6], 8080)]
        );
        assert_eq!(
            s.ports[1].endpoints,
            vec![ep([10, 244, 0, 5], 9100), ep([10, 244, 0, 6], 9100)]
        );
    }

    #[test]
    fn endpoints_merge_across_slices_and_protocols_must_match() {
        let svc = service(
            "dns",
            "10.96.0.53",
            None,
            &[("dns", "UDP", 53), ("dns-tcp", "TCP", 53)],
        );
        let slices = [
            slice(
                "dns",
                "shop",
                &[("dns", "UDP", 5353), ("dns-tcp", "TCP", 5353)],
                &[("10.244.0.2", None)],
            ),
            slice(
                "dns",
                "shop",
                &[("dns", "UDP", 5353)],
                &[("10.244.0.3", None), ("10.244.0.2", None)],
            ),
            // The name matches but the protocol does not.
            slice(
                "dns",
                "shop",
                &[("dns-tcp", "UDP", 5353)],
                &[("10.244.0.4", None)],
            ),
        ];
        let model = model_from(&[svc], &slices);
        let ports = &model.services[0].ports;
        assert_eq!(ports[0].protocol, Protocol::Udp);
        assert_eq!(
            ports[0].endpoints,
            vec![ep([10, 244, 0, 2], 5353), ep([10, 244, 0, 3], 5353)]
        );
        assert_eq!(ports[1].endpoints, vec![ep([10, 244, 0, 2], 5353)]);
    }

    #[test]
    fn unnamed_ports_match_unnamed_slice_ports() {
        let svc = service("one", "10.96.0.2", None, &[("", "TCP", 80)]);
        let mut s = slice("one", "shop", &[("", "TCP", 8080)], &[("10.244.0.9", None)]);
        s.ports.as_mut().unwrap()[0].name = None;
        let model = model_from(&[svc], &[s]);
        assert_eq!(model.services[0].ports[0].name, "");
        assert_eq!(
            model.services[0].ports[0].endpoints,
            vec![ep([10, 244, 0, 9], 8080)]
        );
    }

    #[test]
    fn headless_external_name_and_ipv6_services_get_no_vip() {
        let headless = service("h", "None", None, &[("http", "TCP", 80)]);
        let empty = service("e", "", None, &[("http", "TCP", 80)]);
        let external = service(
            "x",
            "10.96.0.9",
            Some("ExternalName"),
            &[("http", "TCP", 80)],
        );
        let v6 = service("v6", "fd00::1", None, &[("http", "TCP", 80)]);
        let node_port = service("np", "10.96.0.7", Some("NodePort"), &[("http", "TCP", 80)]);
        let model = model_from(
            &[headless, empty, external, v6, node_port],
            &Vec::<EndpointSlice>::new(),
        );
        let vips: Vec<_> = model
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.cluster_ip))
            .collect();
        assert_eq!(
            vips,
            vec![
                ("e", None),
                ("h", None),
                ("np", Some(Ipv4Addr::new(10, 96, 0, 7))),
                ("v6", None),
            ]
        );
    }

    #[test]
    fn dual_stack_uses_the_ipv4_cluster_ip_and_skips_ipv6_slices() {
        let mut svc = service("d", "fd00::10", None, &[("http", "TCP", 80)]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ips = Some(vec!["fd00::10".into(), "10.96.0.44".into()]);
        }
        let mut v6 = slice("d", "shop", &[("http", "TCP", 80)], &[("fd00::5", None)]);
        v6.address_type = "IPv6".into();
        let v4 = slice("d", "shop", &[("http", "TCP", 80)], &[("10.244.0.5", None)]);
        let model = model_from(&[svc], &[v6, v4]);
        assert_eq!(
            model.services[0].cluster_ip,
            Some(Ipv4Addr::new(10, 96, 0, 44))
        );
        assert_eq!(
            model.services[0].ports[0].endpoints,
            vec![ep([10, 244, 0, 5], 80)]
        );
    }

    #[test]
    fn slices_without_the_service_label_are_ignored() {
        let svc = service("web", "10.96.0.10", None, &[("http", "TCP", 80)]);
        let mut s = slice(
            "web",
            "shop",
            &[("http", "TCP", 80)],
            &[("10.244.0.5", None)],
        );
        s.metadata.labels = None;
        let model = model_from(&[svc], &[s]);
        assert!(model.services[0].ports[0].endpoints.is_empty());
    }
}
