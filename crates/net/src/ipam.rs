//! Pod address management, persisted so addresses survive restarts.
//!
//! Layout of the state directory: one file per held address, named after the address and
//! holding the pod uid, plus `last` with the most recently handed out address. A holding file
//! is written under a temporary name, fsync'd, then hard-linked to its final name: `link(2)`
//! fails with `EEXIST` like `O_EXCL`, so two allocators can never both win an address, and
//! a crash never leaves a half-written holder behind.
//!
//! Addresses are handed out round-robin (the next free one after the last handed out) so an
//! address just released is not immediately given to a new pod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;
use crate::cidr::Ipv4Cidr;

const LAST: &str = "last";

/// Keeps temporary names distinct between allocators of one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Who holds which address, and where the round-robin cursor is. No I/O.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    cidr: Ipv4Cidr,
    last: Option<Ipv4Addr>,
    by_ip: BTreeMap<Ipv4Addr, String>,
    by_uid: HashMap<String, Ipv4Addr>,
}

impl Pool {
    pub(crate) fn new(cidr: Ipv4Cidr) -> Self {
        Pool {
            cidr,
            last: None,
            by_ip: BTreeMap::new(),
            by_uid: HashMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, ip: Ipv4Addr, uid: String) {
        self.by_uid.insert(uid.clone(), ip);
        self.by_ip.insert(ip, uid);
    }

    pub(crate) fn remove_uid(&mut self, uid: &str) -> Option<Ipv4Addr> {
        let ip = self.by_uid.remove(uid)?;
        self.by_ip.remove(&ip);
        Some(ip)
    }

    pub(crate) fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.by_uid.get(uid).copied()
    }

    pub(crate) fn set_last(&mut self, ip: Ipv4Addr) {
        self.last = Some(ip);
    }

    /// Free pod addresses in the order they should be tried: starting after the cursor,
    /// wrapping around once.
    pub(crate) fn candidates(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let first = self.cidr.first_pod();
        let count = self.cidr.pod_capacity();
        let start = match self.last {
            Some(ip) if self.cidr.is_pod_address(ip) => u32::from(ip) - first + 1,
            _ => 0,
        };
        (0..count)
            .map(move |i| Ipv4Addr::from(first + (start + i) % count))
            .filter(|ip| !self.by_ip.contains_key(ip))
    }

    pub(crate) fn allocations(&self) -> Vec<(String, Ipv4Addr)> {
        self.by_ip
            .iter()
            .map(|(ip, uid)| (uid.clone(), *ip))
            .collect()
    }
}

/// The persistent allocator. Not `Sync` by itself: [`crate::Network`] wraps it in a mutex.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    pool: Pool,
}

impl Ipam {
    /// Opens (creating if needed) the state directory and loads what is held.
    pub fn open(dir: impl Into<PathBuf>, cidr: Ipv4Cidr) -> Result<Self, Error> {
        cidr.check_pod_range()?;
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::state(&dir, e))?;
        let mut pool = Pool::new(cidr);
        for entry in fs::read_dir(&dir).map_err(|e| Error::state(&dir, e))? {
            let entry = entry.map_err(|e| Error::state(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                // A temporary file from an allocation that never finished.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            if name == LAST {
                if let Ok(text) = fs::read_to_string(entry.path())
                    && let Ok(ip) = text.trim().parse()
                {
                    pool.set_last(ip);
                }
                continue;
            }
            let Ok(ip) = name.parse::<Ipv4Addr>() else {
                continue;
            };
            let uid =
                fs::read_to_string(entry.path()).map_err(|e| Error::state(&entry.path(), e))?;
            // Addresses outside the current CIDR stay listed so the caller can release them.
            pool.insert(ip, uid.trim().to_owned());
        }
        Ok(Ipam { dir, pool })
    }

    /// The address held by `uid`, allocating the next free one if it holds none.
    pub fn allocate(&mut self, uid: &str) -> Result<Ipv4Addr, Error> {
        if uid.is_empty() || uid.contains(['\n', '/']) {
            return Err(Error::InvalidUid(uid.to_owned()));
        }
        if let Some(ip) = self.pool.get(uid) {
            return Ok(ip);
        }
        let tmp = self.dir.join(format!(
            ".alloc-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        write_synced(&tmp, uid.as_bytes()).map_err(|e| Error::state(&tmp, e))?;
        // Candidates are taken one at a time: the next one after the cursor is nearly
        // always free, and listing all of a /16 for each pod costs milliseconds.
        let mut taken = HashSet::new();
        let mut won = None;
        loop {
            let next = self.pool.candidates().find(|ip| !taken.contains(ip));
            let Some(ip) = next else { break };
            let path = self.dir.join(ip.to_string());
            match fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    won = Some(ip);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Held by someone this process did not know about: learn it and go on.
                    taken.insert(ip);
                    if let Ok(holder) = fs::read_to_string(&path) {
                        self.pool.insert(ip, holder.trim().to_owned());
                    }
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(Error::state(&path, e));
                }
            }
        }
        let _ = fs::remove_file(&tmp);
        let ip = won.ok_or(Error::Exhausted(self.pool.cidr))?;
        sync_dir(&self.dir).map_err(|e| Error::state(&self.dir, e))?;
        self.pool.insert(ip, uid.to_owned());
        self.pool.set_last(ip);
        // The cursor is a hint: losing it only weakens round-robin, never uniqueness, so
        // it is not synced (a torn file after a crash is ignored when read).
        let last_tmp = self.dir.join(".last");
        if fs::write(&last_tmp, ip.to_string()).is_ok() {
            let _ = fs::rename(&last_tmp, self.dir.join(LAST));
        }
        Ok(ip)
    }

    /// Frees the address held by `uid`; `None` when it held none.
    pub fn release(&mut self, uid: &str) -> Result<Option<Ipv4Addr>, Error> {
        let Some(ip) = self.pool.get(uid) else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::state(&path, e)),
        }
        sync_dir(&self.dir).map_err(|e| Error::state(&self.dir, e))?;
        self.pool.remove_uid(uid);
        Ok(Some(ip))
    }

    /// The address `uid` holds, if any.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.pool.get(uid)
    }

    /// Every held address with its pod uid, ordered by address.
    pub fn allocations(&self) -> Vec<(String, Ipv4Addr)> {
        self.pool.allocations()
    }
}

fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn candidates_start_after_the_cursor_and_wrap() {
        let mut pool = Pool::new(cidr("10.0.0.0/29"));
        let all: Vec<_> = pool.candidates().collect();
        assert_eq!(all.first(), Some(&ip("10.0.0.2")));
        assert_eq!(all.last(), Some(&ip("10.0.0.6")));
        assert_eq!(all.len(), 5);

        pool.set_last(ip("10.0.0.4"));
        pool.insert(ip("10.0.0.6"), "b".into());
        let order: Vec<_> = pool.candidates().collect();
        assert_eq!(
            order,
            vec![
                ip("10.0.0.5"),
                ip("10.0.0.2"),
                ip("10.0.0.3"),
                ip("10.0.0.4")
            ]
        );
    }

    #[test]
    fn a_cursor_outside_the_range_starts_from_the_beginning() {
        let mut pool = Pool::new(cidr("10.0.0.0/29"));
        pool.set_last(ip("192.168.0.9"));
        assert_eq!(pool.candidates().next(), Some(ip("10.0.0.2")));
    }

    #[test]
    fn allocation_is_idempotent_per_uid_and_round_robin() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/29")).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        let b = ipam.allocate("pod-b").unwrap();
        assert_ne!(a, b);
        ipam.release("pod-a").unwrap();
        // The freed address is not the next one handed out.
        let c = ipam.allocate("pod-c").unwrap();
        assert_ne!(c, a);
        assert_ne!(c, b);
        assert_eq!(ipam.get("pod-a"), None);
    }

    #[test]
    fn exhaustion_is_an_error_and_release_makes_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/30")).unwrap();
        assert_eq!(ipam.allocate("one").unwrap(), ip("10.0.0.2"));
        assert!(matches!(ipam.allocate("two"), Err(Error::Exhausted(_))));
        assert_eq!(ipam.release("one").unwrap(), Some(ip("10.0.0.2")));
        assert_eq!(ipam.release("one").unwrap(), None);
        assert_eq!(ipam.allocate("two").unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn state_survives_reopen_and_held_addresses_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let net = cidr("10.1.0.0/24");
        let mut held = Vec::new();
        {
            let mut ipam = Ipam::open(dir.path(), net).unwrap();
            for i in 0..5 {
                held.push((
                    format!("uid-{i}"),
                    ipam.allocate(&format!("uid-{i}")).unwrap(),
                ));
            }
            ipam.release("uid-4").unwrap();
            held.pop();
        }
        let mut ipam = Ipam::open(dir.path(), net).unwrap();
        let mut listed = ipam.allocations();
        listed.sort();
        assert_eq!(listed, held);
        for i in 5..200 {
            let fresh = ipam.allocate(&format!("uid-{i}")).unwrap();
            assert!(held.iter().all(|(_, ip)| *ip != fresh), "{fresh} reused");
        }
    }

    #[test]
    fn two_allocators_on_one_directory_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let net = cidr("10.2.0.0/28");
        // Both start from the same (empty) view of the directory.
        let mut first = Ipam::open(dir.path(), net).unwrap();
        let mut second = Ipam::open(dir.path(), net).unwrap();
        let a = first.allocate("a").unwrap();
        let b = second.allocate("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(second.allocations().len(), 2);
    }

    #[test]
    fn bad_uids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), cidr("10.0.0.0/24")).unwrap();
        assert!(matches!(ipam.allocate(""), Err(Error::InvalidUid(_))));
        assert!(matches!(ipam.allocate("a/b"), Err(Error::InvalidUid(_))));
    }
}
