//! A user's own `istio-proxy` (or `istio-init`) container overrides the generated one
//! field by field, the way a strategic merge patch of a container would.

use k8s_openapi::api::core::v1::Container;
use serde_json::Value;

/// The image value that keeps the injected image.
const AUTO_IMAGE: &str = "auto";

/// Lists merged by a key, as the Container schema's patch strategy says.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "env" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        _ => None,
    }
}

fn merge_list(base: &mut Vec<Value>, over: &[Value], key: &str) {
    for item in over {
        let id = item.get(key);
        match base.iter_mut().find(|b| id.is_some() && b.get(key) == id) {
            Some(existing) => merge_value(existing, item),
            None => base.push(item.clone()),
        }
    }
}

fn merge_value(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match (b.get_mut(k), merge_key(k), v) {
                    (Some(Value::Array(existing)), Some(key), Value::Array(items)) => {
                        merge_list(existing, items, key);
                    }
                    (Some(existing @ Value::Object(_)), _, Value::Object(_)) => {
                        merge_value(existing, v);
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// `generated` with the fields `user` sets put over it.
pub(crate) fn overlay(generated: &Container, user: &Container) -> Result<Container, String> {
    let mut base = serde_json::to_value(generated).map_err(|e| e.to_string())?;
    let mut over = serde_json::to_value(user).map_err(|e| e.to_string())?;
    if user.image.as_deref() == Some(AUTO_IMAGE)
        && let Value::Object(o) = &mut over
    {
        o.remove("image");
    }
    merge_value(&mut base, &over);
    serde_json::from_value(base).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn env(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    #[test]
    fn user_fields_win_and_keyed_lists_merge() {
        let generated = Container {
            name: "istio-proxy".into(),
            image: Some("tandem/proxy".into()),
            args: Some(vec!["proxy".into(), "sidecar".into()]),
            env: Some(vec![env("A", "1"), env("B", "2")]),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity("2".into())),
                    ("memory".to_owned(), Quantity("1Gi".into())),
                ])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let user = Container {
            name: "istio-proxy".into(),
            image: Some("auto".into()),
            env: Some(vec![env("B", "20"), env("C", "3")]),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "memory".to_owned(),
                    Quantity("2Gi".into()),
                )])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let merged = overlay(&generated, &user).expect("merges");
        assert_eq!(merged.image.as_deref(), Some("tandem/proxy"));
        assert_eq!(merged.args, generated.args);
        assert_eq!(
            merged.env,
            Some(vec![env("A", "1"), env("B", "20"), env("C", "3")])
        );
        let limits = merged.resources.and_then(|r| r.limits).expect("limits");
        assert_eq!(limits["cpu"], Quantity("2".into()));
        assert_eq!(limits["memory"], Quantity("2Gi".into()));
    }
}
