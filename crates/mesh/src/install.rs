//! `tandem mesh install` and `tandem mesh uninstall`: the cluster objects of the mesh's
//! control plane. The control plane itself runs in `tandem up`; the cluster gets what
//! Istio's install leaves behind for proxies and tools to find: namespace
//! `istio-system`, ConfigMap `istio` (the mesh config), and Service `istiod` with an
//! EndpointSlice pointing at the node.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{CONFIG_MAP_NAME, ConfigError, ISTIO_NAMESPACE, MeshConfig};

/// Name of the control plane's Service and EndpointSlice.
pub const ISTIOD: &str = "istiod";
/// The EndpointSlice is ours, not the EndpointSlice controller's.
pub const MANAGED_BY: &str = "tandem-mesh";

/// `tandem mesh install`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// A mesh setting (repeatable), e.g. meshConfig.accessLogFile=/dev/stdout.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "skip-confirmation")]
    pub skip_confirmation: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `tandem mesh uninstall`.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "skip-confirmation")]
    pub skip_confirmation: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Which cluster to talk to.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// Why the install objects cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no node reports an InternalIP address, so istiod has no endpoint")]
    NoNodeAddress,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn control_plane_labels() -> BTreeMap<String, String> {
    labels(&[
        ("app", ISTIOD),
        ("istio", "pilot"),
        ("istio.io/rev", "default"),
        ("operator.istio.io/component", "Pilot"),
        ("release", "istio"),
    ])
}

/// Namespace `istio-system`.
pub fn namespace() -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(ISTIO_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// ConfigMap `istio`: the mesh config as Istio stores it.
pub fn config_map(mesh: &MeshConfig) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP_NAME.to_owned()),
            namespace: Some(ISTIO_NAMESPACE.to_owned()),
            labels: Some(labels(&[
                ("istio.io/rev", "default"),
                ("operator.istio.io/component", "Pilot"),
                ("release", "istio"),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(mesh.to_config_map_data()),
        ..ConfigMap::default()
    }
}

/// The control plane's ports, named as Istio names them.
const PORTS: [(&str, i32); 3] = [
    ("grpc-xds", 15010),
    ("https-dns", 15012),
    ("http-monitoring", 15014),
];

/// Service `istiod`, without a selector: its endpoints are the node (see
/// [`endpoint_slice`]), where `tandem up` serves discovery.
pub fn service() -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(ISTIOD.to_owned()),
            namespace: Some(ISTIO_NAMESPACE.to_owned()),
            labels: Some(control_plane_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some((*name).to_owned()),
                        port: *port,
                        protocol: Some("TCP".to_owned()),
                        target_port: Some(IntOrString::Int(*port)),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// EndpointSlice `istiod`: the node's address on the Service's ports.
pub fn endpoint_slice(address: IpAddr, node_name: Option<&str>) -> EndpointSlice {
    let mut slice_labels = control_plane_labels();
    slice_labels.insert("kubernetes.io/service-name".to_owned(), ISTIOD.to_owned());
    slice_labels.insert(
        "endpointslice.kubernetes.io/managed-by".to_owned(),
        MANAGED_BY.to_owned(),
    );
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(ISTIOD.to_owned()),
            namespace: Some(ISTIO_NAMESPACE.to_owned()),
            labels: Some(slice_labels),
            ..ObjectMeta::default()
        },
        address_type: match address {
            IpAddr::V4(_) => "IPv4",
            IpAddr::V6(_) => "IPv6",
        }
        .to_owned(),
        endpoints: vec![Endpoint {
            addresses: vec![address.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: node_name.map(str::to_owned),
            ..Endpoint::default()
        }],
        ports: Some(
            PORTS
                .iter()
                .map(|(name, port)| EndpointPort {
                    name: Some((*name).to_owned()),
                    port: Some(*port),
                    protocol: Some("TCP".to_owned()),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

/// The first node with an `InternalIP`: where the control plane listens.
pub fn node_address(nodes: &[Node]) -> Option<(String, IpAddr)> {
    nodes.iter().find_map(|n| {
        let ip = n
            .status
            .as_ref()?
            .addresses
            .iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<IpAddr>().ok())?;
        Some((n.name_any(), ip))
    })
}

/// Asks like istioctl: `y`/`yes` proceeds, `n`/`no`, an empty line, several words or the
/// end of input cancel, anything else asks again.
pub fn confirm(prompt: &str, input: &mut impl BufRead, out: &mut impl Write) -> bool {
    loop {
        let _ = write!(out, "{prompt} ");
        let _ = out.flush();
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [word] = words.as_slice() else {
            return false;
        };
        match word.to_ascii_uppercase().as_str() {
            "Y" | "YES" => return true,
            "N" | "NO" => return false,
            _ => {}
        }
    }
}

async fn ask(prompt: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        let stdout = std::io::stdout();
        confirm(&prompt, &mut stdin.lock(), &mut stdout.lock())
    })
    .await
    .context("reading the answer")
}

/// A client for the kubeconfig named by the flags, `KUBECONFIG`, or `~/.kube/config`.
pub async fn client(args: &ClusterArgs) -> anyhow::Result<Client> {
    let kubeconfig = match &args.kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
        None => match kube::config::Kubeconfig::from_env().context("reading $KUBECONFIG")? {
            Some(kc) => kc,
            None => {
                let home = std::env::var_os("HOME").context("HOME is not set")?;
                let path = PathBuf::from(home).join(".kube").join("config");
                kube::config::Kubeconfig::read_from(&path)
                    .with_context(|| format!("reading the kubeconfig {}", path.display()))?
            }
        },
    };
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("loading the kubeconfig")?;
    Client::try_from(config).context("building the API client")
}

/// Creates `obj`, or replaces the existing one (keeping what `keep` copies over from it).
async fn create_or_replace<K>(
    api: &Api<K>,
    mut obj: K,
    keep: impl FnOnce(&K, &mut K),
) -> Result<(), kube::Error>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_already_exists() || status.code == 409 => {
            let name = obj.name_any();
            let current = api.get(&name).await?;
            obj.meta_mut().resource_version = current.meta().resource_version.clone();
            keep(&current, &mut obj);
            api.replace(&name, &PostParams::default(), &obj)
                .await
                .map(drop)
        }
        Err(e) => Err(e),
    }
}

async fn install_core(client: &Client, mesh: &MeshConfig) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces
        .create(&PostParams::default(), &namespace())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() || s.code == 409 => {}
        Err(e) => return Err(e).context("creating namespace istio-system"),
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    create_or_replace(&config_maps, config_map(mesh), |_, _| {})
        .await
        .context("writing ConfigMap istio")
}

async fn install_istiod(client: &Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    let (node, address) = node_address(&list.items).ok_or(InstallError::NoNodeAddress)?;
    let services: Api<Service> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    create_or_replace(&services, service(), |current, new| {
        // The cluster IP is immutable: keep the one allocated.
        if let (Some(cur), Some(spec)) = (current.spec.as_ref(), new.spec.as_mut()) {
            spec.cluster_ip = cur.cluster_ip.clone();
            spec.cluster_ips = cur.cluster_ips.clone();
            spec.ip_families = cur.ip_families.clone();
        }
    })
    .await
    .context("writing Service istiod")?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ISTIO_NAMESPACE);
    create_or_replace(&slices, endpoint_slice(address, Some(&node)), |_, _| {})
        .await
        .context("writing EndpointSlice istiod")
}

/// Installs the mesh objects through `client`, printing istioctl-style progress to
/// `out`. `Ok(false)` when a component failed (the line says why).
pub async fn install(
    client: &Client,
    mesh: &MeshConfig,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    if let Err(e) = install_core(client, mesh).await {
        writeln!(out, "✘ Istio core encountered an error: {e:#}")?;
        return Ok(false);
    }
    writeln!(out, "✔ Istio core installed ⛵️")?;
    if let Err(e) = install_istiod(client).await {
        writeln!(out, "✘ Istiod encountered an error: {e:#}")?;
        return Ok(false);
    }
    writeln!(out, "✔ Istiod installed 🧠")?;
    writeln!(out, "✔ Installation complete")?;
    Ok(true)
}

/// `tandem mesh install`.
pub async fn run_install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let mut mesh = MeshConfig::default();
    mesh.apply_sets(&args.set)?;
    if !args.skip_confirmation
        && !ask(
            "This will install the Istio profile \"default\" into the cluster. Proceed? (y/N)"
                .to_owned(),
        )
        .await?
    {
        println!("Cancelled.");
        return Ok(ExitCode::FAILURE);
    }
    let client = client(&args.cluster).await?;
    let ok = install(&client, &mesh, &mut std::io::stdout()).await?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Deletes `name`; `Ok(false)` when it was not there (or is already being deleted, like
/// a namespace that is still terminating).
async fn remove<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    match api.get_opt(name).await? {
        None => return Ok(false),
        Some(obj) if obj.meta().deletion_timestamp.is_some() => return Ok(false),
        Some(_) => {}
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the mesh objects, printing each one removed. `Ok(false)` when one could not
/// be removed.
pub async fn uninstall(client: &Client, out: &mut impl Write) -> std::io::Result<bool> {
    let ns = ISTIO_NAMESPACE;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let steps = [
        ("EndpointSlice", ns, ISTIOD, remove(&slices, ISTIOD).await),
        ("Service", ns, ISTIOD, remove(&services, ISTIOD).await),
        (
            "ConfigMap",
            ns,
            CONFIG_MAP_NAME,
            remove(&config_maps, CONFIG_MAP_NAME).await,
        ),
        ("Namespace", "", ns, remove(&namespaces, ns).await),
    ];
    let mut ok = true;
    for (kind, namespace, name, result) in steps {
        match result {
            Ok(true) => writeln!(out, "  Removed {kind}:{namespace}:{name}.")?,
            Ok(false) => {}
            Err(e) => {
                ok = false;
                writeln!(out, "✘ Removing {kind}:{namespace}:{name} failed: {e}")?;
            }
        }
    }
    if ok {
        writeln!(out, "✔ Uninstall complete")?;
    }
    Ok(ok)
}

/// `tandem mesh uninstall`.
pub async fn run_uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    if !args.skip_confirmation
        && !ask("All Istio resources will be pruned from the cluster\nProceed? (y/N)".to_owned())
            .await?
    {
        println!("Cancelled.");
        return Ok(ExitCode::FAILURE);
    }
    let client = client(&args.cluster).await?;
    let ok = uninstall(&client, &mut std::io::stdout()).await?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    #[test]
    fn the_config_map_holds_the_mesh_config_in_istio_system() {
        let mut mesh = MeshConfig::default();
        mesh.apply_sets(&["meshConfig.accessLogFile=/dev/stdout"])
            .expect("set");
        let cm = config_map(&mesh);
        assert_eq!(cm.metadata.name.as_deref(), Some("istio"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("istio-system"));
        let data = cm.data.expect("data");
        assert_eq!(
            MeshConfig::from_config_map_data(&data)
                .expect("reads")
                .access_log_file,
            "/dev/stdout"
        );
    }

    #[test]
    fn istiod_service_is_selectorless_with_istios_port_names() {
        let svc = service();
        assert_eq!(svc.metadata.name.as_deref(), Some("istiod"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("istio-system"));
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.selector, None);
        let ports: Vec<(String, i32)> = spec
            .ports
            .into_iter()
            .flatten()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("grpc-xds".to_owned(), 15010),
                ("https-dns".to_owned(), 15012),
                ("http-monitoring".to_owned(), 15014)
            ]
        );
    }

    #[test]
    fn the_endpoint_slice_points_at_the_node() {
        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        let slice = endpoint_slice(ip, Some("node-1"));
        let l = slice.metadata.labels.clone().expect("labels");
        assert_eq!(l["kubernetes.io/service-name"], "istiod");
        assert_eq!(l["endpointslice.kubernetes.io/managed-by"], "tandem-mesh");
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints[0].addresses, ["10.0.0.7"]);
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));
        let ports: Vec<(Option<String>, Option<i32>)> = slice
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.port))
            .collect();
        assert_eq!(ports[0], (Some("grpc-xds".to_owned()), Some(15010)));
        assert_eq!(ports.len(), 3);
        let v6 = endpoint_slice("fd00::1".parse().expect("ip"), None);
        assert_eq!(v6.address_type, "IPv6");
        // It serialises as discovery.k8s.io/v1.
        let json = serde_json::to_value(&slice).expect("json");
        assert_eq!(json["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(json["kind"], "EndpointSlice");
    }

    #[test]
    fn node_address_is_the_first_internal_ip() {
        let node = |name: &str, addrs: &[(&str, &str)]| Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: (*t).to_owned(),
                            address: (*a).to_owned(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        let nodes = [
            node("a", &[("Hostname", "a")]),
            node("b", &[("Hostname", "b"), ("InternalIP", "192.168.1.5")]),
        ];
        assert_eq!(
            node_address(&nodes),
            Some(("b".to_owned(), "192.168.1.5".parse().expect("ip")))
        );
        assert_eq!(node_address(&nodes[..1]), None);
    }

    #[test]
    fn confirmation_reads_like_istioctl() {
        let ask = |input: &str| {
            let mut out = Vec::new();
            let answer = confirm("Proceed? (y/N)", &mut input.as_bytes(), &mut out);
            (answer, String::from_utf8(out).expect("utf8"))
        };
        assert_eq!(ask("y\n"), (true, "Proceed? (y/N) ".to_owned()));
        assert!(ask("YES\n").0);
        assert!(ask("yes").0, "no trailing newline");
        assert!(!ask("n\n").0);
        assert!(!ask("").0, "end of input cancels");
        assert!(!ask("\n").0, "an empty line cancels");
        assert!(!ask("y please\n").0);
        // An unclear answer asks again.
        assert_eq!(
            ask("maybe\ny\n"),
            (true, "Proceed? (y/N) Proceed? (y/N) ".to_owned())
        );
    }

    #[test]
    fn install_flags_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: InstallArgs,
        }
        let cli = Cli::try_parse_from([
            "install",
            "--set",
            "values.pilot.env.ENABLE_NATIVE_SIDECARS=true",
            "-y",
            "--set",
            "meshConfig.accessLogFile=/dev/stdout",
            "--kubeconfig",
            "/tmp/kc",
        ])
        .expect("parses");
        assert!(cli.args.skip_confirmation);
        assert_eq!(cli.args.set.len(), 2);
        assert_eq!(cli.args.cluster.kubeconfig, Some(PathBuf::from("/tmp/kc")));
    }
}
