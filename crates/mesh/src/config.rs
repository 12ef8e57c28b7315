//! The mesh configuration users may change with `--set`, and how it is stored in the
//! cluster: ConfigMap `istio` in `istio-system`, `data.mesh` holding the MeshConfig YAML
//! as Istio writes it, `data.values` holding the chart values that are not part of
//! MeshConfig (as the `istio-sidecar-injector` ConfigMap keeps them).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Namespace of the control plane.
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// Name of the ConfigMap holding the mesh config.
pub const CONFIG_MAP_NAME: &str = "istio";
/// `data` key of the MeshConfig YAML.
pub const MESH_KEY: &str = "mesh";
/// `data` key of the mesh networks YAML (Istio writes an empty one).
pub const MESH_NETWORKS_KEY: &str = "meshNetworks";
/// `data` key of the chart values (JSON).
pub const VALUES_KEY: &str = "values";
/// Where proxies reach the control plane: the plaintext discovery port of `istiod`.
pub const DEFAULT_DISCOVERY_ADDRESS: &str = "istiod.istio-system.svc:15010";
/// The mesh's trust domain (also its mesh id).
pub const TRUST_DOMAIN: &str = "cluster.local";

/// The `--set` keys users may pass, in the order error messages list them.
pub const SET_KEYS: [&str; 7] = [
    "values.pilot.env.ENABLE_NATIVE_SIDECARS",
    "meshConfig.accessLogFile",
    "meshConfig.accessLogEncoding",
    "meshConfig.outboundTrafficPolicy.mode",
    "meshConfig.defaultConfig.terminationDrainDuration",
    "meshConfig.defaultConfig.holdApplicationUntilProxyStarts",
    "values.global.proxy.holdApplicationUntilProxyStarts",
];

/// Why a setting or a stored config could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--set {arg:?}: expected KEY=VALUE")]
    MissingEquals { arg: String },
    #[error("unknown --set key {key:?}; supported keys: {}", SET_KEYS.join(", "))]
    UnknownKey { key: String },
    #[error("invalid value {value:?} for {key}: {allowed}")]
    InvalidValue {
        key: String,
        value: String,
        allowed: String,
    },
    #[error("reading {what}: {message}")]
    Parse { what: String, message: String },
}

/// `values.pilot.env.ENABLE_NATIVE_SIDECARS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NativeSidecars {
    True,
    False,
    /// Native when the kubelet is 1.33 or newer (the default since Istio 1.27).
    #[default]
    Auto,
}

impl NativeSidecars {
    pub fn as_str(self) -> &'static str {
        match self {
            NativeSidecars::True => "true",
            NativeSidecars::False => "false",
            NativeSidecars::Auto => "auto",
        }
    }

    fn parse(key: &str, value: &str) -> Result<Self, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "true" => Ok(NativeSidecars::True),
            "false" => Ok(NativeSidecars::False),
            "auto" => Ok(NativeSidecars::Auto),
            _ => Err(invalid(key, value, "must be one of true, false, auto")),
        }
    }
}

/// `meshConfig.accessLogEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

impl AccessLogEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogEncoding::Text => "TEXT",
            AccessLogEncoding::Json => "JSON",
        }
    }

    fn parse(key: &str, value: &str) -> Result<Self, ConfigError> {
        match value.to_ascii_uppercase().as_str() {
            "TEXT" => Ok(AccessLogEncoding::Text),
            "JSON" => Ok(AccessLogEncoding::Json),
            _ => Err(invalid(key, value, "must be one of TEXT, JSON")),
        }
    }
}

/// `meshConfig.outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboundTrafficPolicy {
    #[default]
    AllowAny,
    RegistryOnly,
}

impl OutboundTrafficPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundTrafficPolicy::AllowAny => "ALLOW_ANY",
            OutboundTrafficPolicy::RegistryOnly => "REGISTRY_ONLY",
        }
    }

    fn parse(key: &str, value: &str) -> Result<Self, ConfigError> {
        match value.to_ascii_uppercase().as_str() {
            "ALLOW_ANY" => Ok(OutboundTrafficPolicy::AllowAny),
            "REGISTRY_ONLY" => Ok(OutboundTrafficPolicy::RegistryOnly),
            _ => Err(invalid(
                key,
                value,
                "must be one of ALLOW_ANY, REGISTRY_ONLY",
            )),
        }
    }
}

/// The part of Istio's `ProxyConfig` tandem models (`meshConfig.defaultConfig`, and the
/// pod annotation `proxy.istio.io/config`). `None` means "not set here".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyConfig {
    pub discovery_address: Option<String>,
    /// The agent's status port (the pod annotation `status.sidecar.istio.io/port`).
    pub status_port: Option<u16>,
    /// Extra environment for the proxy (`proxyMetadata`), e.g. `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`.
    pub proxy_metadata: BTreeMap<String, String>,
    pub termination_drain_duration: Option<Duration>,
    pub hold_application_until_proxy_starts: Option<bool>,
}

impl ProxyConfig {
    /// `over`'s settings on top of `self` (how a pod's `proxy.istio.io/config` applies).
    pub fn merged_with(&self, over: &ProxyConfig) -> ProxyConfig {
        let mut metadata = self.proxy_metadata.clone();
        metadata.extend(over.proxy_metadata.clone());
        ProxyConfig {
            discovery_address: over
                .discovery_address
                .clone()
                .or_else(|| self.discovery_address.clone()),
            status_port: over.status_port.or(self.status_port),
            proxy_metadata: metadata,
            termination_drain_duration: over
                .termination_drain_duration
                .or(self.termination_drain_duration),
            hold_application_until_proxy_starts: over
                .hold_application_until_proxy_starts
                .or(self.hold_application_until_proxy_starts),
        }
    }

    /// Parses a ProxyConfig document (YAML or JSON), as the annotation carries it.
    pub fn from_yaml(text: &str, what: &str) -> Result<ProxyConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ProxyConfig::default());
        }
        let raw: RawProxyConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
        raw.into_model(what)
    }

    /// The JSON Istio puts in the proxy's `PROXY_CONFIG` (fields in protobuf order).
    pub fn to_json(&self) -> String {
        let raw = RawProxyConfig::from_model(self);
        serde_json::to_string(&raw).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// The mesh configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeshConfig {
    /// `values.pilot.env.ENABLE_NATIVE_SIDECARS`.
    pub native_sidecars: NativeSidecars,
    /// `meshConfig.accessLogFile`; empty turns access logs off.
    pub access_log_file: String,
    /// `meshConfig.accessLogEncoding` (`None`: not set, TEXT).
    pub access_log_encoding: Option<AccessLogEncoding>,
    /// `meshConfig.outboundTrafficPolicy.mode` (`None`: not set, ALLOW_ANY).
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// `meshConfig.defaultConfig`.
    pub default_config: ProxyConfig,
    /// `meshConfig.enablePrometheusMerge` (`None`: not set, on).
    pub enable_prometheus_merge: Option<bool>,
    /// `values.global.proxy.holdApplicationUntilProxyStarts`.
    pub values_hold_application_until_proxy_starts: Option<bool>,
}

/// One validated `--set KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    NativeSidecars(NativeSidecars),
    AccessLogFile(String),
    AccessLogEncoding(AccessLogEncoding),
    OutboundTrafficPolicy(OutboundTrafficPolicy),
    TerminationDrainDuration(Duration),
    HoldApplicationUntilProxyStarts(bool),
    ValuesHoldApplicationUntilProxyStarts(bool),
}

/// Parses one `--set KEY=VALUE` argument.
pub fn parse_set(arg: &str) -> Result<Setting, ConfigError> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(ConfigError::MissingEquals {
            arg: arg.to_owned(),
        });
    };
    let key = key.trim();
    match key {
        "values.pilot.env.ENABLE_NATIVE_SIDECARS" => {
            NativeSidecars::parse(key, value).map(Setting::NativeSidecars)
        }
        "meshConfig.accessLogFile" => Ok(Setting::AccessLogFile(value.to_owned())),
        "meshConfig.accessLogEncoding" => {
            AccessLogEncoding::parse(key, value).map(Setting::AccessLogEncoding)
        }
        "meshConfig.outboundTrafficPolicy.mode" => {
            OutboundTrafficPolicy::parse(key, value).map(Setting::OutboundTrafficPolicy)
        }
        "meshConfig.defaultConfig.terminationDrainDuration" => parse_duration(value)
            .map(Setting::TerminationDrainDuration)
            .ok_or_else(|| {
                invalid(
                    key,
                    value,
                    "must be a non-negative duration such as 5s, 30s, 1m30s or 500ms",
                )
            }),
        "meshConfig.defaultConfig.holdApplicationUntilProxyStarts" => {
            parse_bool(key, value).map(Setting::HoldApplicationUntilProxyStarts)
        }
        "values.global.proxy.holdApplicationUntilProxyStarts" => {
            parse_bool(key, value).map(Setting::ValuesHoldApplicationUntilProxyStarts)
        }
        _ => Err(ConfigError::UnknownKey {
            key: key.to_owned(),
        }),
    }
}

impl MeshConfig {
    /// Applies one setting.
    pub fn apply(&mut self, setting: Setting) {
        match setting {
            Setting::NativeSidecars(v) => self.native_sidecars = v,
            Setting::AccessLogFile(v) => self.access_log_file = v,
            Setting::AccessLogEncoding(v) => self.access_log_encoding = Some(v),
            Setting::OutboundTrafficPolicy(v) => self.outbound_traffic_policy = Some(v),
            Setting::TerminationDrainDuration(v) => {
                self.default_config.termination_drain_duration = Some(v);
            }
            Setting::HoldApplicationUntilProxyStarts(v) => {
                self.default_config.hold_application_until_proxy_starts = Some(v);
            }
            Setting::ValuesHoldApplicationUntilProxyStarts(v) => {
                self.values_hold_application_until_proxy_starts = Some(v);
            }
        }
    }

    /// Parses and applies `--set` arguments in order (a later one wins).
    pub fn apply_sets<S: AsRef<str>>(&mut self, args: &[S]) -> Result<(), ConfigError> {
        for arg in args {
            self.apply(parse_set(arg.as_ref())?);
        }
        Ok(())
    }

    /// The effective access log encoding.
    pub fn access_log_encoding(&self) -> AccessLogEncoding {
        self.access_log_encoding.unwrap_or_default()
    }

    /// The effective outbound traffic policy.
    pub fn outbound_traffic_policy(&self) -> OutboundTrafficPolicy {
        self.outbound_traffic_policy.unwrap_or_default()
    }

    /// The discovery address proxies get.
    pub fn discovery_address(&self) -> &str {
        self.default_config
            .discovery_address
            .as_deref()
            .unwrap_or(DEFAULT_DISCOVERY_ADDRESS)
    }

    /// Whether Prometheus metrics merging is on.
    pub fn prometheus_merge(&self) -> bool {
        self.enable_prometheus_merge.unwrap_or(true)
    }

    /// Reads a MeshConfig YAML document (`data.mesh`, or a `--mesh-config` file). Keys
    /// tandem does not model are accepted and ignored.
    pub fn from_mesh_yaml(text: &str) -> Result<MeshConfig, ConfigError> {
        let mut config = MeshConfig::default();
        config.merge_mesh_yaml(text)?;
        Ok(config)
    }

    /// Reads a MeshConfig YAML document on top of this config.
    pub fn merge_mesh_yaml(&mut self, text: &str) -> Result<(), ConfigError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let raw: RawMesh = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            what: "the mesh config".to_owned(),
            message: e.to_string(),
        })?;
        if let Some(file) = raw.access_log_file {
            self.access_log_file = file;
        }
        if let Some(enc) = raw.access_log_encoding {
            self.access_log_encoding = Some(AccessLogEncoding::parse("accessLogEncoding", &enc)?);
        }
        if let Some(mode) = raw.outbound_traffic_policy.and_then(|p| p.mode) {
            self.outbound_traffic_policy = Some(OutboundTrafficPolicy::parse(
                "outboundTrafficPolicy.mode",
                &mode,
            )?);
        }
        if let Some(dc) = raw.default_config {
            let over = dc.into_model("defaultConfig")?;
            self.default_config = self.default_config.merged_with(&over);
        }
        if let Some(merge) = raw.enable_prometheus_merge {
            self.enable_prometheus_merge = Some(merge);
        }
        Ok(())
    }

    /// The MeshConfig YAML Istio would write into `data.mesh`: the chart's defaults plus
    /// what was set.
    pub fn to_mesh_yaml(&self) -> String {
        serde_saphyr::to_string(&self.raw_mesh()).unwrap_or_default()
    }

    /// The same document as compact JSON (what the proxy reads from `MESH_CONFIG`).
    pub fn to_mesh_json(&self) -> String {
        serde_json::to_string(&self.raw_mesh()).unwrap_or_else(|_| "{}".to_owned())
    }

    fn raw_mesh(&self) -> RawMesh {
        RawMesh {
            access_log_encoding: self.access_log_encoding.map(|e| e.as_str().to_owned()),
            access_log_file: (!self.access_log_file.is_empty())
                .then(|| self.access_log_file.clone()),
            default_config: Some({
                let mut dc = RawProxyConfig::from_model(&self.default_config);
                dc.discovery_address
                    .get_or_insert_with(|| DEFAULT_DISCOVERY_ADDRESS.to_owned());
                dc
            }),
            default_providers: Some(RawProviders {
                metrics: vec!["prometheus".to_owned()],
            }),
            enable_prometheus_merge: Some(self.prometheus_merge()),
            outbound_traffic_policy: self.outbound_traffic_policy.map(|p| RawOutbound {
                mode: Some(p.as_str().to_owned()),
            }),
            root_namespace: Some(ISTIO_NAMESPACE.to_owned()),
            trust_domain: Some(TRUST_DOMAIN.to_owned()),
        }
    }

    /// The chart values kept next to the mesh config (`data.values`), as JSON.
    pub fn to_values_json(&self) -> String {
        let raw = RawValues {
            global: self
                .values_hold_application_until_proxy_starts
                .map(|hold| RawGlobal {
                    proxy: RawGlobalProxy {
                        hold_application_until_proxy_starts: Some(hold),
                    },
                }),
            pilot: Some(RawPilot {
                env: BTreeMap::from([(
                    "ENABLE_NATIVE_SIDECARS".to_owned(),
                    serde_json::Value::String(self.native_sidecars.as_str().to_owned()),
                )]),
            }),
        };
        serde_json::to_string_pretty(&raw).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Reads chart values (JSON or YAML) on top of this config.
    pub fn merge_values(&mut self, text: &str) -> Result<(), ConfigError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let raw: RawValues = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            what: "the chart values".to_owned(),
            message: e.to_string(),
        })?;
        if let Some(hold) = raw
            .global
            .and_then(|g| g.proxy.hold_application_until_proxy_starts)
        {
            self.values_hold_application_until_proxy_starts = Some(hold);
        }
        if let Some(v) = raw
            .pilot
            .and_then(|mut p| p.env.remove("ENABLE_NATIVE_SIDECARS"))
        {
            let key = "values.pilot.env.ENABLE_NATIVE_SIDECARS";
            self.native_sidecars = match v {
                serde_json::Value::Bool(true) => NativeSidecars::True,
                serde_json::Value::Bool(false) => NativeSidecars::False,
                serde_json::Value::String(s) => NativeSidecars::parse(key, &s)?,
                other => {
                    return Err(invalid(
                        key,
                        &other.to_string(),
                        "must be one of true, false, auto",
                    ));
                }
            };
        }
        Ok(())
    }

    /// The `data` of the `istio` ConfigMap.
    pub fn to_config_map_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MESH_KEY.to_owned(), self.to_mesh_yaml()),
            (MESH_NETWORKS_KEY.to_owned(), "networks: {}".to_owned()),
            (VALUES_KEY.to_owned(), self.to_values_json()),
        ])
    }

    /// Reads the `data` of the `istio` ConfigMap; missing keys mean defaults.
    pub fn from_config_map_data(
        data: &BTreeMap<String, String>,
    ) -> Result<MeshConfig, ConfigError> {
        let mut config = MeshConfig::default();
        if let Some(mesh) = data.get(MESH_KEY) {
            config.merge_mesh_yaml(mesh)?;
        }
        if let Some(values) = data.get(VALUES_KEY) {
            config.merge_values(values)?;
        }
        Ok(config)
    }
}

fn invalid(key: &str, value: &str, allowed: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        allowed: allowed.to_owned(),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "must be true or false")),
    }
}

/// Parses a Go duration (`5s`, `1m30s`, `1.5h`, `500ms`, `0`) as Istio's YAML accepts it.
/// Negative durations are refused.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if frac.contains('.') {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut nanos = int.checked_mul(scale)?;
        // The fraction, exact to the nanosecond.
        let mut unit_frac = scale;
        for digit in frac.bytes() {
            unit_frac /= 10;
            nanos += u128::from(digit - b'0') * unit_frac;
        }
        total_nanos = total_nanos.checked_add(nanos)?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// A duration as protobuf JSON writes it: seconds with 0, 3, 6 or 9 fractional digits.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}.{:03}s", d.as_secs(), nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}.{:06}s", d.as_secs(), nanos / 1_000)
    } else {
        format!("{}.{:09}s", d.as_secs(), nanos)
    }
}

impl fmt::Display for NativeSidecars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// The documents as stored. Field order is the order Istio writes them in.

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMesh {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_log_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_log_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_config: Option<RawProxyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_providers: Option<RawProviders>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enable_prometheus_merge: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outbound_traffic_policy: Option<RawOutbound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trust_domain: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RawProviders {
    #[serde(default)]
    metrics: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RawOutbound {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
}

/// ProxyConfig as protobuf JSON/YAML spells it; fields in protobuf field-number order.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProxyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    discovery_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_port: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    proxy_metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    termination_drain_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold_application_until_proxy_starts: Option<bool>,
}

impl RawProxyConfig {
    fn from_model(m: &ProxyConfig) -> Self {
        RawProxyConfig {
            discovery_address: m.discovery_address.clone(),
            status_port: m.status_port,
            proxy_metadata: m.proxy_metadata.clone(),
            termination_drain_duration: m.termination_drain_duration.map(format_duration),
            hold_application_until_proxy_starts: m.hold_application_until_proxy_starts,
        }
    }

    fn into_model(self, what: &str) -> Result<ProxyConfig, ConfigError> {
        let termination_drain_duration = match self.termination_drain_duration {
            None => None,
            Some(text) => Some(parse_duration(&text).ok_or_else(|| {
                invalid(
                    &format!("{what}.terminationDrainDuration"),
                    &text,
                    "must be a non-negative duration such as 5s, 30s, 1m30s or 500ms",
                )
            })?),
        };
        Ok(ProxyConfig {
            discovery_address: self.discovery_address,
            status_port: self.status_port,
            proxy_metadata: self.proxy_metadata,
            termination_drain_duration,
            hold_application_until_proxy_starts: self.hold_application_until_proxy_starts,
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RawValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    global: Option<RawGlobal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pilot: Option<RawPilot>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RawGlobal {
    #[serde(default)]
    proxy: RawGlobalProxy,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGlobalProxy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold_application_until_proxy_starts: Option<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RawPilot {
    #[serde(default)]
    env: BTreeMap<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_key_parses_and_applies() {
        let mut c = MeshConfig::default();
        c.apply_sets(&[
            "values.pilot.env.ENABLE_NATIVE_SIDECARS=false",
            "meshConfig.accessLogFile=/dev/stdout",
            "meshConfig.accessLogEncoding=JSON",
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
            "meshConfig.defaultConfig.terminationDrainDuration=1m30s",
            "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true",
            "values.global.proxy.holdApplicationUntilProxyStarts=false",
        ])
        .expect("valid settings");
        assert_eq!(c.native_sidecars, NativeSidecars::False);
        assert_eq!(c.access_log_file, "/dev/stdout");
        assert_eq!(c.access_log_encoding(), AccessLogEncoding::Json);
        assert_eq!(
            c.outbound_traffic_policy(),
            OutboundTrafficPolicy::RegistryOnly
        );
        assert_eq!(
            c.default_config.termination_drain_duration,
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            c.default_config.hold_application_until_proxy_starts,
            Some(true)
        );
        assert_eq!(c.values_hold_application_until_proxy_starts, Some(false));
    }

    #[test]
    fn defaults_are_istios() {
        let c = MeshConfig::default();
        assert_eq!(c.native_sidecars, NativeSidecars::Auto);
        assert_eq!(c.access_log_file, "");
        assert_eq!(c.access_log_encoding(), AccessLogEncoding::Text);
        assert_eq!(c.outbound_traffic_policy(), OutboundTrafficPolicy::AllowAny);
        assert_eq!(c.discovery_address(), "istiod.istio-system.svc:15010");
        assert!(c.prometheus_merge());
    }

    #[test]
    fn unknown_key_lists_the_supported_ones() {
        let err = parse_set("meshConfig.accessLogFormat=x").expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.starts_with("unknown --set key \"meshConfig.accessLogFormat\""),
            "{msg}"
        );
        for key in SET_KEYS {
            assert!(msg.contains(key), "{msg} should list {key}");
        }
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        let cases = [
            (
                "values.pilot.env.ENABLE_NATIVE_SIDECARS=maybe",
                "must be one of true, false, auto",
            ),
            (
                "meshConfig.accessLogEncoding=XML",
                "must be one of TEXT, JSON",
            ),
            (
                "meshConfig.outboundTrafficPolicy.mode=DENY",
                "must be one of ALLOW_ANY, REGISTRY_ONLY",
            ),
            (
                "meshConfig.defaultConfig.terminationDrainDuration=5 seconds",
                "non-negative duration",
            ),
            (
                "meshConfig.defaultConfig.terminationDrainDuration=-5s",
                "non-negative duration",
            ),
            (
                "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=yes",
                "must be true or false",
            ),
            (
                "values.global.proxy.holdApplicationUntilProxyStarts=1",
                "must be true or false",
            ),
        ];
        for (arg, allowed) in cases {
            let err = parse_set(arg).expect_err(arg);
            let msg = err.to_string();
            let value = arg.split_once('=').map(|(_, v)| v).unwrap_or_default();
            assert!(msg.contains(allowed), "{arg}: {msg}");
            assert!(msg.contains(&format!("{value:?}")), "{arg}: {msg}");
        }
    }

    #[test]
    fn a_set_without_equals_is_an_error() {
        let err = parse_set("meshConfig.accessLogFile").expect_err("no =");
        assert_eq!(
            err.to_string(),
            "--set \"meshConfig.accessLogFile\": expected KEY=VALUE"
        );
    }

    #[test]
    fn an_empty_access_log_file_turns_logs_off_and_values_may_contain_equals() {
        assert_eq!(
            parse_set("meshConfig.accessLogFile=").expect("empty is allowed"),
            Setting::AccessLogFile(String::new())
        );
        assert_eq!(
            parse_set("meshConfig.accessLogFile=/tmp/a=b").expect("value with ="),
            Setting::AccessLogFile("/tmp/a=b".to_owned())
        );
    }

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("0", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("1.500s", Duration::from_millis(1500)),
            ("2us", Duration::from_micros(2)),
            ("3ns", Duration::from_nanos(3)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Some(want), "{text}");
        }
        for bad in ["", "5", "s", "1x", "-1s", "1..5s", "1s5"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_format_like_protobuf_json() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(format_duration(Duration::from_micros(1)), "0.000001s");
        assert_eq!(format_duration(Duration::from_nanos(7)), "0.000000007s");
    }

    #[test]
    fn default_config_map_data_looks_like_istios() {
        let data = MeshConfig::default().to_config_map_data();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["mesh", "meshNetworks", "values"]
        );
        let mesh = &data["mesh"];
        assert!(
            mesh.contains("defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15010"),
            "{mesh}"
        );
        assert!(mesh.contains("rootNamespace: istio-system"), "{mesh}");
        assert!(mesh.contains("trustDomain: cluster.local"), "{mesh}");
        assert!(mesh.contains("enablePrometheusMerge: true"), "{mesh}");
        assert!(!mesh.contains("accessLogFile"), "{mesh}");
        let values: serde_json::Value =
            serde_json::from_str(&data["values"]).expect("values is JSON");
        assert_eq!(values["pilot"]["env"]["ENABLE_NATIVE_SIDECARS"], "auto");
    }

    #[test]
    fn config_map_data_round_trips() {
        let mut c = MeshConfig::default();
        c.apply_sets(&[
            "values.pilot.env.ENABLE_NATIVE_SIDECARS=true",
            "meshConfig.accessLogFile=/dev/stdout",
            "meshConfig.accessLogEncoding=JSON",
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
            "meshConfig.defaultConfig.terminationDrainDuration=1.5s",
            "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true",
            "values.global.proxy.holdApplicationUntilProxyStarts=true",
        ])
        .expect("valid");
        let data = c.to_config_map_data();
        let mesh = &data["mesh"];
        assert!(mesh.contains("accessLogFile: /dev/stdout"), "{mesh}");
        assert!(mesh.contains("accessLogEncoding: JSON"), "{mesh}");
        assert!(mesh.contains("mode: REGISTRY_ONLY"), "{mesh}");
        assert!(mesh.contains("terminationDrainDuration: 1.500s"), "{mesh}");
        assert!(
            mesh.contains("holdApplicationUntilProxyStarts: true"),
            "{mesh}"
        );
        let back = MeshConfig::from_config_map_data(&data).expect("reads back");
        // What was written is read back, plus the discovery address the YAML names.
        let mut want = c.clone();
        want.default_config.discovery_address = Some(DEFAULT_DISCOVERY_ADDRESS.to_owned());
        want.enable_prometheus_merge = Some(true);
        assert_eq!(back, want);
        // And writing that again gives the same data.
        assert_eq!(back.to_config_map_data(), data);
    }

    #[test]
    fn mesh_yaml_as_istio_writes_it_is_read() {
        let yaml = "accessLogFile: /dev/stdout\n\
                    defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n  \
                    holdApplicationUntilProxyStarts: true\n  terminationDrainDuration: 30s\n  \
                    proxyMetadata:\n    EXIT_ON_ZERO_ACTIVE_CONNECTIONS: 'true'\n  \
                    tracing:\n    zipkin:\n      address: zipkin:9411\n\
                    defaultProviders:\n  metrics:\n  - prometheus\n\
                    enablePrometheusMerge: false\n\
                    outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n\
                    rootNamespace: istio-system\ntrustDomain: cluster.local\n";
        let c = MeshConfig::from_mesh_yaml(yaml).expect("reads");
        assert_eq!(c.access_log_file, "/dev/stdout");
        assert_eq!(c.discovery_address(), "istiod.istio-system.svc:15012");
        assert_eq!(
            c.default_config.hold_application_until_proxy_starts,
            Some(true)
        );
        assert_eq!(
            c.default_config.termination_drain_duration,
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            c.default_config
                .proxy_metadata
                .get("EXIT_ON_ZERO_ACTIVE_CONNECTIONS"),
            Some(&"true".to_owned())
        );
        assert!(!c.prometheus_merge());
        assert_eq!(
            c.outbound_traffic_policy(),
            OutboundTrafficPolicy::RegistryOnly
        );
    }

    #[test]
    fn bad_stored_values_are_errors() {
        let err = MeshConfig::from_mesh_yaml("outboundTrafficPolicy:\n  mode: SOMETIMES\n")
            .expect_err("bad mode");
        assert!(err.to_string().contains("SOMETIMES"), "{err}");
        let err = MeshConfig::from_mesh_yaml("defaultConfig: [1, 2]\n").expect_err("bad shape");
        assert!(
            err.to_string().starts_with("reading the mesh config: "),
            "{err}"
        );
        let mut c = MeshConfig::default();
        let err = c
            .merge_values(r#"{"pilot":{"env":{"ENABLE_NATIVE_SIDECARS":"sometimes"}}}"#)
            .expect_err("bad env");
        assert!(
            err.to_string().contains("must be one of true, false, auto"),
            "{err}"
        );
    }

    #[test]
    fn mesh_json_is_the_same_document() {
        let mut c = MeshConfig::default();
        c.apply_sets(&[
            "meshConfig.accessLogFile=/dev/stdout",
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        ])
        .expect("set");
        let json: serde_json::Value = serde_json::from_str(&c.to_mesh_json()).expect("json");
        assert_eq!(json["accessLogFile"], "/dev/stdout");
        assert_eq!(json["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
        assert_eq!(
            json["defaultConfig"]["discoveryAddress"],
            "istiod.istio-system.svc:15010"
        );
        let back = MeshConfig::from_mesh_yaml(&c.to_mesh_json()).expect("JSON is YAML");
        assert_eq!(back.access_log_file, "/dev/stdout");
    }

    #[test]
    fn values_accept_booleans_for_native_sidecars() {
        let mut c = MeshConfig::default();
        c.merge_values(r#"{"pilot":{"env":{"ENABLE_NATIVE_SIDECARS":false}}}"#)
            .expect("bool");
        assert_eq!(c.native_sidecars, NativeSidecars::False);
    }

    #[test]
    fn proxy_config_json_is_in_protobuf_field_order() {
        let pc = ProxyConfig {
            discovery_address: Some("istiod.istio-system.svc:15010".into()),
            status_port: Some(15999),
            proxy_metadata: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
            termination_drain_duration: Some(Duration::from_secs(30)),
            hold_application_until_proxy_starts: Some(true),
        };
        assert_eq!(
            pc.to_json(),
            r#"{"discoveryAddress":"istiod.istio-system.svc:15010","statusPort":15999,"proxyMetadata":{"A":"1"},"terminationDrainDuration":"30s","holdApplicationUntilProxyStarts":true}"#
        );
        assert_eq!(ProxyConfig::default().to_json(), "{}");
    }

    #[test]
    fn pod_proxy_config_overrides_the_mesh_default() {
        let mesh = ProxyConfig {
            hold_application_until_proxy_starts: Some(true),
            termination_drain_duration: Some(Duration::from_secs(5)),
            ..ProxyConfig::default()
        };
        let pod = ProxyConfig::from_yaml(
            r#"{"holdApplicationUntilProxyStarts": false}"#,
            "proxy.istio.io/config",
        )
        .expect("json annotation");
        let merged = mesh.merged_with(&pod);
        assert_eq!(merged.hold_application_until_proxy_starts, Some(false));
        assert_eq!(
            merged.termination_drain_duration,
            Some(Duration::from_secs(5))
        );
        let yaml = ProxyConfig::from_yaml("terminationDrainDuration: 10s\n", "a")
            .expect("yaml annotation");
        assert_eq!(
            yaml.termination_drain_duration,
            Some(Duration::from_secs(10))
        );
    }
}
