//! Events as the controllers record them (the `core/v1` form `kubectl describe` shows).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};

/// The object an event is about.
pub(crate) struct Subject<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
}

/// Records a `Normal` (or `Warning`) event; failures are logged, not returned, since an
/// event lost must not stop a sync.
pub(crate) async fn record(
    client: &kube::Client,
    component: &str,
    subject: &Subject<'_>,
    type_: &str,
    reason: &str,
    message: String,
) {
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", subject.name, now.as_nanosecond())),
            namespace: Some(subject.namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(subject.api_version.to_owned()),
            kind: Some(subject.kind.to_owned()),
            name: Some(subject.name.to_owned()),
            namespace: Some(subject.namespace.to_owned()),
            uid: subject.uid.map(str::to_owned),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message),
        type_: Some(type_.to_owned()),
        source: Some(EventSource {
            component: Some(component.to_owned()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        reporting_component: Some(component.to_owned()),
        reporting_instance: Some(component.to_owned()),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), subject.namespace);
    if let Err(err) = events.create(&PostParams::default(), &event).await {
        tracing::debug!(%err, reason, "recording event");
    }
}
