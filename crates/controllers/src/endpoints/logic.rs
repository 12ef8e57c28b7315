//! What the endpoints controllers compute: from a Service and the pods its selector
//! picks, the EndpointSlices (`discovery.k8s.io/v1`) and the legacy `Endpoints` object
//! kube-controller-manager would write. Pure functions; the loop only reads and writes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label that ties a slice to its Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label that says which controller owns a slice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY`], the one kube-controller-manager uses.
pub const CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// The most endpoints one slice holds (Kubernetes' default `--max-endpoints-per-slice`).
pub const MAX_PER_SLICE: usize = 100;

/// Whether a Service's (map) selector picks a pod with `labels`.
pub fn map_selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A pod as an endpoint: where it is and whether it takes traffic.
#[derive(Debug, Clone, PartialEq)]
struct PodEndpoint {
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    pod: ObjectReference,
    node: Option<String>,
    hostname: Option<String>,
}

/// Whether the pod's `Ready` condition is `True` (which the node sets only when every
/// container, sidecars included, is ready).
fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn endpoint_of(pod: &Pod, service: &Service) -> Option<PodEndpoint> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = publish || pod_ready(pod);
    let service_name = service.metadata.name.as_deref();
    // A pod gets a DNS name under the Service only when its subdomain names it.
    let hostname = spec.hostname.clone().filter(|_| {
        spec.subdomain.as_deref().is_some() && spec.subdomain.as_deref() == service_name
    });
    Some(PodEndpoint {
        ip,
        ready: serving && !terminating,
        serving,
        terminating,
        pod: ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        node: spec.node_name.clone(),
        hostname,
    })
}

/// The container port a Service port reaches on `pod`: a number as is, a name looked up
/// among the pod's container ports (`None` when the pod has no such port).
pub fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The ports of a slice: each Service port with the number it reaches on its pods.
type PortMap = Vec<(Option<String>, i32, String, Option<String>)>;

fn port_map(service: &Service, pod: &Pod) -> PortMap {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.name.clone(),
                target_port(p, pod)?,
                p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                p.app_protocol.clone(),
            ))
        })
        .collect()
}

/// The slices a Service should have, without names (the caller keeps existing names):
/// pods grouped by the ports they expose for it, at most [`MAX_PER_SLICE`] per slice,
/// endpoints sorted by address so the result is stable.
pub fn desired_slices(service: &Service, pods: &[Pod]) -> Vec<EndpointSlice> {
    let mut groups: BTreeMap<PortMapKey, Vec<PodEndpoint>> = BTreeMap::new();
    for pod in pods {
        if let Some(ep) = endpoint_of(pod, service) {
            groups
                .entry(PortMapKey(port_map(service, pod)))
                .or_default()
                .push(ep);
        }
    }
    let mut slices = Vec::new();
    if groups.is_empty() {
        // Kubernetes keeps one placeholder slice, without ports, per Service.
        slices.push(slice(service, &[], &[]));
        return slices;
    }
    for (ports, mut endpoints) in groups {
        endpoints.sort_by(|a, b| a.ip.cmp(&b.ip));
        for chunk in endpoints.chunks(MAX_PER_SLICE) {
            slices.push(slice(service, &ports.0, chunk));
        }
    }
    slices
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortMapKey(PortMap);

fn slice(
    service: &Service,
    ports: &[(Option<String>, i32, String, Option<String>)],
    endpoints: &[PodEndpoint],
) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.to_owned(), name.clone());
    labels.insert(MANAGED_BY.to_owned(), CONTROLLER.to_owned());
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".to_owned(), String::new());
    }
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner(service)]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: endpoints
            .iter()
            .map(|e| Endpoint {
                addresses: vec![e.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(e.ready),
                    serving: Some(e.serving),
                    terminating: Some(e.terminating),
                }),
                hostname: e.hostname.clone(),
                node_name: e.node.clone(),
                target_ref: Some(e.pod.clone()),
                ..Endpoint::default()
            })
            .collect(),
        ports: (!ports.is_empty()).then(|| {
            ports
                .iter()
                .map(|(name, port, protocol, app)| SlicePort {
                    name: Some(name.clone().unwrap_or_default()),
                    port: Some(*port),
                    protocol: Some(protocol.clone()),
                    app_protocol: app.clone(),
                })
                .collect()
        }),
    }
}

fn owner(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether two slices carry the same content (ignoring names and server fields).
pub fn same_content(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.endpoints == b.endpoints
        && a.ports == b.ports
        && a.address_type == b.address_type
        && a.metadata.labels == b.metadata.labels
}

/// The legacy `Endpoints` object: ready addresses and not-ready ones per port set.
pub fn desired_endpoints(service: &Service, pods: &[Pod]) -> Endpoints {
    let mut subsets: BTreeMap<PortMapKey, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for pod in pods {
        let Some(ep) = endpoint_of(pod, service) else {
            continue;
        };
        if ep.terminating {
            continue;
        }
        let address = EndpointAddress {
            ip: ep.ip.clone(),
            hostname: ep.hostname.clone(),
            node_name: ep.node.clone(),
            target_ref: Some(ep.pod.clone()),
        };
        let entry = subsets
            .entry(PortMapKey(port_map(service, pod)))
            .or_default();
        if ep.ready {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .0
                        .into_iter()
                        .map(|(name, port, protocol, app)| EndpointPort {
                            name,
                            port,
                            protocol: Some(protocol),
                            app_protocol: app,
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".to_owned(), String::new());
    }
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: (!labels.is_empty()).then_some(labels),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn service(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_owned(), "web".to_owned())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                cluster_ip: Some("10.96.0.20".into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node".into()),
                containers: vec![Container {
                    name: "app".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("web".into()),
                        container_port: port,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn ready_pods_are_ready_endpoints_and_not_ready_ones_are_not() {
        let svc = service(IntOrString::Int(8080));
        let pods = [
            pod("b", "10.244.0.3", true, 8080),
            pod("a", "10.244.0.2", false, 8080),
        ];
        let slices = desired_slices(&svc, &pods);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        let labels = s.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[SERVICE_NAME], "web");
        assert_eq!(labels[MANAGED_BY], CONTROLLER);
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        let addrs: Vec<(&str, Option<bool>)> = s
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().and_then(|c| c.ready),
                )
            })
            .collect();
        assert_eq!(
            addrs,
            [("10.244.0.2", Some(false)), ("10.244.0.3", Some(true))]
        );
        let port = &s.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port),
            (Some("http"), Some(8080))
        );

        let ep = desired_endpoints(&svc, &pods);
        let subset = &ep.subsets.expect("subsets")[0];
        assert_eq!(
            subset.addresses.as_ref().expect("ready")[0].ip,
            "10.244.0.3"
        );
        assert_eq!(
            subset.not_ready_addresses.as_ref().expect("not ready")[0].ip,
            "10.244.0.2"
        );
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let svc = service(IntOrString::String("web".into()));
        let pods = [
            pod("a", "10.244.0.2", true, 8080),
            pod("b", "10.244.0.3", true, 9090),
        ];
        let slices = desired_slices(&svc, &pods);
        let mut ports: Vec<i32> = slices
            .iter()
            .map(|s| s.ports.as_ref().expect("ports")[0].port.expect("port"))
            .collect();
        ports.sort();
        assert_eq!(ports, [8080, 9090]);
    }

    #[test]
    fn pods_without_ip_finished_or_terminating_are_handled_like_kubernetes() {
        let svc = service(IntOrString::Int(80));
        let mut no_ip = pod("a", "", true, 80);
        no_ip.status.as_mut().expect("status").pod_ip = None;
        let mut done = pod("b", "10.244.0.3", false, 80);
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        let mut leaving = pod("c", "10.244.0.4", true, 80);
        leaving.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let slices = desired_slices(&svc, &[no_ip, done, leaving.clone()]);
        assert_eq!(slices.len(), 1);
        let e = &slices[0].endpoints;
        assert_eq!(e.len(), 1);
        let c = e[0].conditions.as_ref().expect("conditions");
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
        // Terminating pods leave the legacy object.
        assert_eq!(desired_endpoints(&svc, &[leaving]).subsets, None);
    }

    #[test]
    fn a_service_without_pods_keeps_one_empty_slice() {
        let svc = service(IntOrString::Int(80));
        let slices = desired_slices(&svc, &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
    }
}
