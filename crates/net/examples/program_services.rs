//! Times programming Services with nftables inside a private network namespace (root):
//! a full sync of N Services (default 500, 3 endpoints each), then one incremental change
//! (one Service's endpoints replaced), then one Service removed.
//!
//! `cargo run --release -p tandem-net --example program_services -- [SERVICES] [ENDPOINTS]`

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use net::netns::Netns;
use net::services::{self, Endpoint, Model, Protocol, ProxyConfig, Service, ServicePort};

fn model(services: usize, endpoints: usize, generation: u8) -> Model {
    let services = (0..services)
        .map(|i| {
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32);
            let endpoints = (0..endpoints)
                .map(|e| Endpoint {
                    ip: Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(10, 244, 0, 2)) + (i * endpoints + e) as u32,
                    ),
                    port: 8080,
                })
                .collect();
            Service {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                cluster_ip: Some(vip),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    endpoints,
                }],
            }
        })
        .collect();
    let mut m = Model { services };
    if generation > 0
        && let Some(first) = m.services.first_mut()
    {
        for ep in &mut first.ports[0].endpoints {
            ep.port = 9000 + u16::from(generation);
        }
    }
    m
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn timed(label: &str, script: &str) -> Result<(), net::Error> {
    let started = Instant::now();
    services::apply(script).await?;
    println!(
        "{label:<28} apply {:>10}  ({} lines)",
        ms(started.elapsed()),
        script.lines().count()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(500);
    let endpoints: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let ns = Netns::new_private()?;
    ns.block_on(move || async move {
        let cfg = ProxyConfig::default();
        let base = model(count, endpoints, 0);
        let changed = model(count, endpoints, 1);
        let mut removed = changed.clone();
        removed.services.pop();

        let started = Instant::now();
        let full = services::render_full(&cfg, &base);
        println!("{count} Services x {endpoints} endpoints");
        println!("{:<28} render {:>9}", "full sync", ms(started.elapsed()));
        timed("full sync", &full).await?;

        let started = Instant::now();
        let update = services::render_update(&cfg, &base, &changed);
        println!(
            "{:<28} render {:>9}",
            "one Service's endpoints",
            ms(started.elapsed())
        );
        timed("one Service's endpoints", &update).await?;

        let update = services::render_update(&cfg, &changed, &removed);
        timed("one Service removed", &update).await?;

        let again = services::render_full(&cfg, &removed);
        timed("full resync (same state)", &again).await?;
        Ok::<(), net::Error>(())
    })??;
    Ok(())
}
