use std::io;
use std::path::{Path, PathBuf};

use crate::cidr::Ipv4Cidr;

/// Everything that can go wrong in pod networking and the Service proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid CIDR {0}")]
    InvalidCidr(String),
    #[error("invalid name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("invalid pod uid {0:?}")]
    InvalidUid(String),
    #[error("no free pod address left in {0}")]
    Exhausted(Ipv4Cidr),
    #[error("IPAM state {path}: {source}")]
    State { path: PathBuf, source: io::Error },
    #[error("network namespace {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
    #[error("starting a thread: {0}")]
    Thread(#[source] io::Error),
    #[error("the network namespace thread died")]
    NetnsThread,
    #[error("the address allocation task died")]
    IpamTask,
    #[error("netlink: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("opening a netlink socket: {0}")]
    NetlinkSocket(#[source] io::Error),
    #[error("interface {0} exists and is not a bridge")]
    NotABridge(String),
    #[error("interface {name} belongs to pod {owner:?}, not {uid:?}")]
    NameClash {
        name: String,
        owner: String,
        uid: String,
    },
    #[error("the pod end of {0} disappeared while it was being configured")]
    PodEndMissing(String),
    #[error("sysctl {path}: {source}")]
    Sysctl { path: PathBuf, source: io::Error },
    #[error("running nft: {0}")]
    NftSpawn(#[source] io::Error),
    #[error("nft -f failed ({status}): {stderr}")]
    Nft { status: String, stderr: String },
}

impl Error {
    pub(crate) fn state(path: &Path, source: io::Error) -> Error {
        Error::State {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Error {
        Error::Netlink {
            context: context.into(),
            source,
        }
    }
}

/// The errno of a netlink NACK, if that is what `e` is.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().raw_os_error(),
        _ => None,
    }
}
