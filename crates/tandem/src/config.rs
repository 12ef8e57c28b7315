//! `tandem up --config FILE`: kind's cluster format (`kind: Cluster`,
//! `apiVersion: kind.x-k8s.io/v1alpha4`), for what applies to one node.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use api::validation::FeatureGates;
use serde::Deserialize;

/// What tandem takes from a kind cluster config.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: Option<String>,
    pub feature_gates: FeatureGates,
    /// `networking.apiServerAddress` + `apiServerPort`, if given.
    pub listen: Option<SocketAddr>,
    /// Fields that do not apply to one node on this machine (reported as warnings).
    pub ignored: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    kind: Option<String>,
    api_version: Option<String>,
    name: Option<String>,
    #[serde(default)]
    feature_gates: BTreeMap<String, bool>,
    networking: Option<Networking>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Networking {
    api_server_address: Option<String>,
    api_server_port: Option<u16>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// Reads a kind cluster config. Errors name the file (and position for syntax errors).
pub fn parse(file: &str, text: &str) -> Result<ClusterConfig, String> {
    let raw: Raw = serde_saphyr::from_str(text).map_err(|e| {
        let first = e.to_string();
        format!("{file}: {}", first.lines().next().unwrap_or_default())
    })?;
    if raw.kind.as_deref() != Some("Cluster") {
        return Err(format!(
            "{file}: kind must be \"Cluster\" (kind's cluster config), got {:?}",
            raw.kind.unwrap_or_default()
        ));
    }
    match raw.api_version.as_deref() {
        Some("kind.x-k8s.io/v1alpha4") => {}
        other => {
            return Err(format!(
                "{file}: apiVersion must be \"kind.x-k8s.io/v1alpha4\", got {:?}",
                other.unwrap_or_default()
            ));
        }
    }
    let mut config = ClusterConfig {
        name: raw.name,
        ..ClusterConfig::default()
    };
    for (gate, value) in raw.feature_gates {
        match gate.as_str() {
            "SidecarContainers" => config.feature_gates.sidecar_containers = value,
            other => config.ignored.push(format!("featureGates.{other}")),
        }
    }
    if let Some(net) = raw.networking {
        let address = net.api_server_address.as_deref().unwrap_or("127.0.0.1");
        if let Some(port) = net.api_server_port {
            let addr = format!("{address}:{port}");
            config.listen =
                Some(addr.parse().map_err(|_| {
                    format!("{file}: networking: invalid API server address {addr:?}")
                })?);
        }
        config
            .ignored
            .extend(net.rest.keys().map(|k| format!("networking.{k}")));
    }
    config.ignored.extend(raw.rest.into_keys());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blogs_cluster_config_enables_sidecars() {
        let text = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nfeatureGates:\n  SidecarContainers: true\n";
        let config = parse("kind.yaml", text).unwrap();
        assert!(config.feature_gates.sidecar_containers);
        assert!(config.ignored.is_empty());
    }

    #[test]
    fn gates_can_be_turned_off_and_unknown_parts_are_reported() {
        let text = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: sidecars\nfeatureGates:\n  SidecarContainers: false\n  Other: true\nnodes:\n- role: control-plane\nnetworking:\n  apiServerPort: 7443\n  podSubnet: 10.0.0.0/16\n";
        let config = parse("kind.yaml", text).unwrap();
        assert!(!config.feature_gates.sidecar_containers);
        assert_eq!(config.name.as_deref(), Some("sidecars"));
        assert_eq!(config.listen, Some("127.0.0.1:7443".parse().unwrap()));
        assert_eq!(
            config.ignored,
            vec!["featureGates.Other", "networking.podSubnet", "nodes"]
        );
    }

    #[test]
    fn wrong_kind_or_version_is_an_error() {
        let err = parse("c.yaml", "kind: Pod\napiVersion: v1\n").unwrap_err();
        assert_eq!(
            err,
            "c.yaml: kind must be \"Cluster\" (kind's cluster config), got \"Pod\""
        );
        let err = parse("c.yaml", "kind: Cluster\napiVersion: kind.x-k8s.io/v1\n").unwrap_err();
        assert!(err.contains("kind.x-k8s.io/v1alpha4"), "{err}");
        assert!(
            parse("c.yaml", "kind: [")
                .unwrap_err()
                .starts_with("c.yaml: ")
        );
    }
}
