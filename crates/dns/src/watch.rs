//! Keeps a [`ClusterDns`] current from the API server's Services and EndpointSlices.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::Error;
use crate::records::Records;
use crate::zone::ClusterDns;

/// Watches Services and EndpointSlices in all namespaces and rebuilds the records of
/// `dns` after every change (bursts are coalesced into one rebuild). Watch errors are
/// retried with backoff; the function returns only if a watch stream ends.
pub async fn watch(client: kube::Client, dns: ClusterDns) -> Result<(), Error> {
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();

    let service_events = reflector::reflector(
        service_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|event| (Kind::Services, event.map(|_| ())));
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|event| (Kind::EndpointSlices, event.map(|_| ())));
    let mut events = std::pin::pin!(futures::stream::select(service_events, slice_events));

    loop {
        let Some(first) = events.next().await else {
            return Err(Error::WatchEnded);
        };
        let mut changed = note(first);
        // Take whatever else is already queued so a burst costs one rebuild.
        while let Some(next) = events.next().now_or_never() {
            match next {
                Some(event) => changed |= note(event),
                None => return Err(Error::WatchEnded),
            }
        }
        if changed {
            rebuild(&dns, &services, &slices);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Services,
    EndpointSlices,
}

fn note(event: (Kind, Result<(), watcher::Error>)) -> bool {
    match event {
        (_, Ok(())) => true,
        (kind, Err(error)) => {
            tracing::warn!(?kind, %error, "cluster DNS watch failed; retrying");
            false
        }
    }
}

fn rebuild(dns: &ClusterDns, services: &Store<Service>, slices: &Store<EndpointSlice>) {
    let services = services.state();
    let slices = slices.state();
    let records = Records::from_objects(
        services.iter().map(|s| s.as_ref()),
        slices.iter().map(|s| s.as_ref()),
    );
    tracing::debug!(services = records.len(), "cluster DNS records updated");
    dns.update(records);
}
