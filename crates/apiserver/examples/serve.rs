//! Serves the API alone (in-memory store, no node agent) for trying clients against it:
//! `cargo run -p tandem-apiserver --example serve -- DATA_DIR [ADDR]` writes
//! `DATA_DIR/kubeconfig` and serves HTTPS on ADDR (default 127.0.0.1:6443) until Ctrl-C.

use std::sync::Arc;

use apiserver::{ApiConfig, AppState, ServerConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: serve DATA_DIR [ADDR]")?);
    let addr: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:6443".to_owned())
        .parse()?;
    let pki = apiserver::pki::ensure(&dir, &[])?;
    let server = apiserver::bind(ServerConfig::new(addr, &pki)).await?;
    let addr = server.local_addr()?;
    let kubeconfig = apiserver::pki::kubeconfig(&format!("https://{addr}"), &pki, "tandem");
    apiserver::pki::write_private(&dir.join("kubeconfig"), kubeconfig.as_bytes())?;
    println!(
        "serving on https://{addr}; KUBECONFIG={}",
        dir.join("kubeconfig").display()
    );
    let config = ApiConfig {
        server_address: addr.to_string(),
        ..ApiConfig::default()
    };
    let state = AppState::new(Arc::new(store::MemoryStore::new())).with_config(config);
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    server.run(state, stop).await?;
    Ok(())
}
