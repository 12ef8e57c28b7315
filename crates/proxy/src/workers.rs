//! Data-plane worker threads, as Envoy has: each runs a single-threaded runtime with its own
//! listening socket (`SO_REUSEPORT`; the kernel spreads new connections over them), so a
//! connection, its upstream connections and their pool stay on one thread and a request
//! never crosses threads.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

/// Binds `n` listening sockets on one address (the first decides the port when it is 0).
pub fn bind_shared(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_reuseport(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n.max(1) {
        all.push(bind_reuseport(addr)?);
    }
    Ok(all)
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A default worker count: Istio's sidecar `concurrency` of 2, bounded by the CPUs we may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Running worker threads.
#[derive(Debug)]
pub struct Workers {
    halt: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers; worker `i` runs the future `make(i)()` builds on its own thread,
    /// then keeps its runtime (and the connections on it) alive until [`Workers::halt`].
    pub fn spawn<M, F, Fut>(n: usize, name: &str, mut make: M) -> io::Result<Self>
    where
        M: FnMut(usize) -> F,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let halt = CancellationToken::new();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let body = make(i);
            let halt = halt.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            tokio::select! {
                                () = async {
                                    body().await;
                                    std::future::pending::<()>().await;
                                } => {}
                                () = halt.cancelled() => {}
                            }
                        });
                    })?,
            );
        }
        Ok(Self { halt, threads })
    }

    /// Stops the workers (dropping whatever still runs on them) and waits for the threads.
    pub async fn halt(self) {
        self.halt.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}
