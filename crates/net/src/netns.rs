//! Network namespaces held by a file descriptor, and work run inside them.
//!
//! `setns(2)` changes the namespace of the calling *thread* only, so everything here runs on
//! a dedicated OS thread that enters the namespace, does its work and exits. Sockets
//! (netlink ones included) stay in the namespace of the thread that created them, and child
//! processes start in the namespace of the thread that spawned them.

use std::fs::File;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns, unshare};

use crate::Error;

/// A network namespace, kept alive by an open file descriptor.
#[derive(Debug)]
pub struct Netns {
    file: File,
}

impl Netns {
    /// Opens a namespace file such as `/proc/<pid>/ns/net` or `/run/netns/<name>`.
    pub fn open(path: &Path) -> Result<Netns, Error> {
        let file = File::open(path).map_err(|e| Error::Netns {
            path: path.to_owned(),
            source: e,
        })?;
        Ok(Netns { file })
    }

    /// Creates a new, empty network namespace (only `lo`, down). Nothing else lives in it
    /// until something enters it; it disappears when the last holder closes it.
    pub fn new_private() -> Result<Netns, Error> {
        std::thread::Builder::new()
            .name("netns-new".into())
            .spawn(|| -> Result<Netns, Error> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                    path: PathBuf::from("unshare(CLONE_NEWNET)"),
                    source: e.into(),
                })?;
                // The thread exits right after; the descriptor keeps the namespace alive.
                Netns::open(Path::new("/proc/thread-self/ns/net"))
            })
            .map_err(Error::Thread)?
            .join()
            .map_err(|_| Error::NetnsThread)?
    }

    /// A path naming this namespace for as long as `self` lives, usable by other processes
    /// too (`nsenter --net=PATH`, [`crate::Network::attach`]).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    fn enter(&self) -> Result<(), Error> {
        setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
            path: self.path(),
            source: e.into(),
        })
    }

    fn clone_file(&self) -> Result<Netns, Error> {
        Ok(Netns {
            file: self.file.try_clone().map_err(Error::Thread)?,
        })
    }

    /// Runs blocking `f` on a new thread inside this namespace.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.clone_file()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                let out = ns.enter().map(|()| f());
                let _ = tx.send(out);
            })
            .map_err(Error::Thread)?;
        rx.await.map_err(|_| Error::NetnsThread)?
    }

    /// Runs the future made by `f` on a current-thread runtime on a new thread inside this
    /// namespace. Tasks it spawns, sockets it opens and processes it starts are all inside.
    pub async fn run_async<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        self.run(move || -> Result<T, Error> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Thread)?;
            Ok(rt.block_on(f()))
        })
        .await?
    }

    /// Blocks the calling thread on the future made by `f`, run inside this namespace on a
    /// thread of its own. A panic inside is re-raised here (tests rely on that).
    pub fn block_on<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let ns = self.clone_file()?;
        let handle = std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || -> Result<T, Error> {
                ns.enter()?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::Thread)?;
                Ok(rt.block_on(f()))
            })
            .map_err(Error::Thread)?;
        match handle.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
