//! Pod volumes on disk: `emptyDir` directories, `configMap`/`secret`/`downwardAPI`/
//! `projected` files (service account tokens included) rendered as the kubelet does,
//! and `hostPath` type checks with the kubelet's messages. Containers get them through
//! bind mounts made by the shim.
//!
//! Rendered volumes are written in the kubelet's atomic writer layout (see [`DATA_LINK`])
//! so that they can be updated while containers run: the shim bind-mounts the volume
//! directory, which shows the swap of `..data`, while a `subPath` mount holds the file
//! it was given and keeps the old content, as in Kubernetes.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccountTokenProjection, Volume,
};

use super::RuntimeError;
use super::resolve::{
    ResolveContext, VolumeSources, config_map_value, pod_field, resource_field, safe_relative,
    secret_keys, secret_value,
};

/// The kubelet's default file mode for projected files (0644).
const DEFAULT_MODE: i32 = 0o644;

/// One file of a rendered volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileEntry {
    /// Relative path inside the volume (may contain directories).
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
    /// The owner to give the file (the kubelet's `FsUser` for tokens); `None` keeps
    /// the writer's.
    pub owner: Option<u32>,
}

fn mode_of(item: Option<i32>, default: i32) -> u32 {
    (item.unwrap_or(default) as u32) & 0o7777
}

/// Files for a ConfigMap source; `Ok(vec![])` for a missing optional one.
fn config_map_files(
    sources: &VolumeSources,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: i32,
) -> Result<Vec<FileEntry>, String> {
    let Some(cm) = sources.config_map(namespace, name) else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(format!("configmap {name:?} not found"))
        };
    };
    let mut files = Vec::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            let keys = cm
                .data
                .iter()
                .flat_map(|d| d.keys())
                .chain(cm.binary_data.iter().flat_map(|d| d.keys()));
            for key in keys {
                files.push(FileEntry {
                    path: key.clone(),
                    data: config_map_value(cm, key).unwrap_or_default(),
                    mode: mode_of(None, default_mode),
                    owner: None,
                });
            }
        }
        Some(items) => {
            for item in items {
                match config_map_value(cm, &item.key) {
                    Some(data) => files.push(FileEntry {
                        path: item.path.clone(),
                        data,
                        mode: mode_of(item.mode, default_mode),
                        owner: None,
                    }),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "configmap references non-existent config key: {}",
                            item.key
                        ));
                    }
                }
            }
        }
    }
    Ok(files)
}

/// Files for a Secret source; `Ok(vec![])` for a missing optional one.
fn secret_files(
    sources: &VolumeSources,
    namespace: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: i32,
) -> Result<Vec<FileEntry>, String> {
    let Some(secret) = sources.secret(namespace, name) else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(format!("secret {name:?} not found"))
        };
    };
    let mut files = Vec::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for key in secret_keys(secret) {
                files.push(FileEntry {
                    data: secret_value(secret, &key).unwrap_or_default(),
                    path: key,
                    mode: mode_of(None, default_mode),
                    owner: None,
                });
            }
        }
        Some(items) => {
            for item in items {
                match secret_value(secret, &item.key) {
                    Some(data) => files.push(FileEntry {
                        path: item.path.clone(),
                        data,
                        mode: mode_of(item.mode, default_mode),
                        owner: None,
                    }),
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "secret references non-existent secret key: {}",
                            item.key
                        ));
                    }
                }
            }
        }
    }
    Ok(files)
}

/// Files for downward API items (`metadata.*` field paths, or container resources).
fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    ctx: &ResolveContext<'_>,
) -> Result<Vec<FileEntry>, String> {
    let mut files = Vec::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            if !f.field_path.starts_with("metadata.") {
                return Err(format!("unsupported fieldPath: {}", f.field_path));
            }
            pod_field(pod, &f.field_path, ctx)?
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or_default();
            let spec = pod.spec.as_ref();
            let container = spec
                .into_iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .ok_or_else(|| format!("container {name:?} not found"))?;
            resource_field(
                container,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                ctx,
            )?
        } else {
            String::new()
        };
        files.push(FileEntry {
            path: item.path.clone(),
            data: value.into_bytes(),
            mode: mode_of(item.mode, default_mode),
            owner: None,
        });
    }
    Ok(files)
}

/// The kubelet's `FsUser`: the run-as user every init and regular container shares,
/// if they all name one (their own `runAsUser` or the pod's).
fn fs_user(pod: &Pod) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut common = None;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let user = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_user)?;
        match common {
            Some(u) if u != user => return None,
            _ => common = Some(user),
        }
    }
    common.and_then(|u| u32::try_from(u).ok())
}

/// The file of a `serviceAccountToken` projection. Like the kubelet: the volume's
/// `defaultMode`, or 0600 owned by the pods' common user when there is one or an
/// `fsGroup` (which then adds group read).
fn token_file(
    pod: &Pod,
    sources: &VolumeSources,
    volume: &str,
    projection: &ServiceAccountTokenProjection,
    default_mode: i32,
) -> Result<FileEntry, String> {
    let token = match sources.service_account_token(volume, &projection.path) {
        Some(Ok(token)) => token,
        Some(Err(why)) => return Err(format!("failed to fetch token: {why}")),
        None => {
            return Err(
                "failed to fetch token: no API server to request a service account token from"
                    .into(),
            );
        }
    };
    let owner = fs_user(pod);
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group);
    let mode = if owner.is_some() || fs_group.is_some() {
        0o600
    } else {
        mode_of(None, default_mode)
    };
    Ok(FileEntry {
        path: projection.path.clone(),
        data: token.as_bytes().to_vec(),
        mode,
        owner,
    })
}

/// The files of a volume that is rendered from objects, or `None` for other kinds.
pub(crate) fn render(
    pod: &Pod,
    volume: &Volume,
    ctx: &ResolveContext<'_>,
) -> Result<Option<Vec<FileEntry>>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sources = ctx.sources;
    let files = if let Some(cm) = &volume.config_map {
        config_map_files(
            sources,
            namespace,
            &cm.name,
            cm.items.as_deref(),
            cm.optional == Some(true),
            cm.default_mode.unwrap_or(DEFAULT_MODE),
        )?
    } else if let Some(s) = &volume.secret {
        let name = s.secret_name.as_deref().unwrap_or_default();
        secret_files(
            sources,
            namespace,
            name,
            s.items.as_deref(),
            s.optional == Some(true),
            s.default_mode.unwrap_or(DEFAULT_MODE),
        )?
    } else if let Some(d) = &volume.downward_api {
        downward_files(
            pod,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode.unwrap_or(DEFAULT_MODE),
            ctx,
        )?
    } else if let Some(p) = &volume.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        let mut files = Vec::new();
        for source in p.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                files.extend(config_map_files(
                    sources,
                    namespace,
                    &cm.name,
                    cm.items.as_deref(),
                    cm.optional == Some(true),
                    mode,
                )?);
            } else if let Some(s) = &source.secret {
                files.extend(secret_files(
                    sources,
                    namespace,
                    &s.name,
                    s.items.as_deref(),
                    s.optional == Some(true),
                    mode,
                )?);
            } else if let Some(d) = &source.downward_api {
                files.extend(downward_files(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                    ctx,
                )?);
            } else if let Some(token) = &source.service_account_token {
                files.push(token_file(pod, sources, &volume.name, token, mode)?);
            } else {
                return Err(
                    "only configMap, secret, downwardAPI and serviceAccountToken \
                     projections are supported"
                        .into(),
                );
            }
        }
        files
    } else {
        return Ok(None);
    };
    if let Some(bad) = files.iter().find(|f| !safe_relative(&f.path)) {
        return Err(format!(
            "invalid path {:?}: must be relative without '..'",
            bad.path
        ));
    }
    // Names starting with `..` belong to the atomic writer (`..data`), as in the kubelet.
    if let Some(bad) = files
        .iter()
        .find(|f| top_level(&f.path).is_some_and(|t| t.starts_with("..")))
    {
        return Err(format!(
            "invalid path {:?}: must not start with '..'",
            bad.path
        ));
    }
    Ok(Some(files))
}

/// The kubelet's `hostPath` type check; `*OrCreate` types create what is missing.
pub(crate) fn check_host_path(path: &Path, kind: Option<&str>) -> Result<(), String> {
    let shown = path.display();
    let meta = fs::metadata(path).ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    let fail = |what: &str| Err(format!("hostPath type check failed: {shown} is not {what}"));
    match kind.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => {
            fs::create_dir_all(path).map_err(|e| format!("failed to create {shown}: {e}"))
        }
        "FileOrCreate" if meta.is_none() => fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("failed to create {shown}: {e}")),
        "Directory" | "DirectoryOrCreate" => {
            if ft.is_some_and(|t| t.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "File" | "FileOrCreate" => {
            if ft.is_some_and(|t| t.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "Socket" => {
            if ft.is_some_and(|t| t.is_socket()) {
                Ok(())
            } else {
                fail("a socket file")
            }
        }
        "CharDevice" => {
            if ft.is_some_and(|t| t.is_char_device()) {
                Ok(())
            } else {
                fail("a character device")
            }
        }
        "BlockDevice" => {
            if ft.is_some_and(|t| t.is_block_device()) {
                Ok(())
            } else {
                fail("a block device")
            }
        }
        other => Err(format!("{other} is an invalid volume type")),
    }
}

/// The kubelet's atomic writer layout: the files live in a timestamped directory
/// (`..2006_01_02_15_04_05.<n>`), `..data` is a symlink to it, and each top-level name of
/// the payload is a symlink into `..data`. An update writes a new timestamped directory and
/// swaps `..data` with one rename, so a reader (the container sees the volume directory
/// through a bind mount, which shows renames inside it) never sees a half-written set.
pub(crate) const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";
const LINK_TMP: &str = "..link_tmp";

/// How [`write_atomic`] treats what is already in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Volume setup (before containers start): creates the directory, always writes, and
    /// removes everything that is not part of the new payload.
    Setup,
    /// An update of a mounted volume: the directory must exist, an unchanged payload is
    /// not written again, and only names of the previous payload are removed (as the
    /// kubelet, which leaves what others created there, such as `subPath` directories).
    Update,
}

/// What [`write_atomic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeWrite {
    Written,
    /// The payload on disk is the same: nothing was written.
    Unchanged,
    /// An update of a volume whose directory is not there (not set up yet, or removed
    /// with its pod): nothing was written.
    Missing,
}

/// The first path component of a payload path (the name visible at the top).
fn top_level(path: &str) -> Option<&str> {
    Path::new(path).components().find_map(|c| match c {
        std::path::Component::Normal(name) => name.to_str(),
        _ => None,
    })
}

/// Regular files under `dir`, as sorted relative paths.
fn payload_paths(dir: &Path) -> io::Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &entry.path(), out)?;
            } else if kind.is_file()
                && let Ok(rel) = entry.path().strip_prefix(root)
            {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Whether the timestamped directory `ts_dir` holds exactly `files` (contents only, as
/// the kubelet compares: modes and owners follow from the pod spec, which does not change).
fn same_payload(ts_dir: &Path, files: &[FileEntry]) -> bool {
    let Ok(on_disk) = payload_paths(ts_dir) else {
        return false;
    };
    let mut wanted: Vec<String> = files
        .iter()
        .map(|f| {
            Path::new(&f.path)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect::<std::path::PathBuf>()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    on_disk == wanted
        && files
            .iter()
            .all(|f| fs::read(ts_dir.join(&f.path)).is_ok_and(|data| data == f.data))
}

/// Creates the directories of `rel` below `base` (never `base` or anything above it, so
/// a volume removed meanwhile is not brought back).
fn create_below(base: &Path, rel: &Path) -> io::Result<()> {
    let mut dir = base.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A new, empty timestamped directory in `dir` (mode 0755); its name.
fn new_timestamped_dir(dir: &Path) -> io::Result<String> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y_%m_%d_%H_%M_%S").to_string();
    loop {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("..{stamp}.{:09}{n}", now.subsec_nanosecond());
        match fs::create_dir(dir.join(&name)) {
            Ok(()) => {
                fs::set_permissions(dir.join(&name), fs::Permissions::from_mode(0o755))?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Points `link` at `target`, replacing whatever is there with one rename when possible.
fn replace_with_symlink(dir: &Path, name: &str, target: &Path) -> io::Result<()> {
    let link = dir.join(name);
    if fs::read_link(&link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if fs::symlink_metadata(&link).is_ok_and(|m| m.is_dir()) {
        // rename(2) cannot put a symlink over a directory.
        fs::remove_dir_all(&link)?;
    }
    // One writer per volume at a time (the runtime's per-pod lock): a fixed name will do,
    // and keeps within NAME_MAX whatever the length of `name`.
    let tmp = dir.join(LINK_TMP);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, &link)
}

/// Writes `files` into `dir` in the kubelet's atomic writer layout (see [`DATA_LINK`]).
/// With `fs_group`, the new files get the group before they become visible.
pub(crate) fn write_atomic(
    dir: &Path,
    files: &[FileEntry],
    fs_group: Option<u32>,
    mode: WriteMode,
) -> io::Result<VolumeWrite> {
    match mode {
        WriteMode::Setup => fs::create_dir_all(dir)?,
        WriteMode::Update if !dir.is_dir() => return Ok(VolumeWrite::Missing),
        WriteMode::Update => {}
    }
    let old_ts = fs::read_link(dir.join(DATA_LINK))
        .ok()
        .and_then(|t| t.to_str().map(str::to_owned))
        .filter(|t| t.starts_with("..") && !t.contains('/'));
    if mode == WriteMode::Update
        && let Some(old) = &old_ts
        && same_payload(&dir.join(old), files)
    {
        return Ok(VolumeWrite::Unchanged);
    }
    let old_names: Vec<String> = match &old_ts {
        Some(old) => payload_paths(&dir.join(old))
            .unwrap_or_default()
            .iter()
            .filter_map(|p| top_level(p).map(str::to_owned))
            .collect(),
        None => Vec::new(),
    };

    let ts = new_timestamped_dir(dir)?;
    let ts_dir = dir.join(&ts);
    let written = (|| {
        for f in files {
            let rel = Path::new(&f.path);
            if let Some(parent) = rel.parent() {
                create_below(&ts_dir, parent)?;
            }
            let path = ts_dir.join(rel);
            fs::write(&path, &f.data)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(f.mode))?;
            if let Some(uid) = f.owner {
                std::os::unix::fs::lchown(&path, Some(uid), None)?;
            }
        }
        if let Some(gid) = fs_group {
            apply_fs_group(&ts_dir, gid, true)?;
        }
        // The swap: a new `..data` link renamed over the old one.
        let tmp = dir.join(DATA_LINK_TMP);
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&ts, &tmp)?;
        fs::rename(&tmp, dir.join(DATA_LINK))
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&ts_dir);
        return Err(e);
    }

    let mut names: Vec<&str> = files.iter().filter_map(|f| top_level(&f.path)).collect();
    names.sort_unstable();
    names.dedup();
    for name in &names {
        replace_with_symlink(dir, name, &Path::new(DATA_LINK).join(name))?;
    }
    match mode {
        WriteMode::Update => {
            for old in old_names.iter().filter(|n| !names.contains(&n.as_str())) {
                let _ = fs::remove_file(dir.join(old));
            }
            if let Some(old) = old_ts.filter(|old| *old != ts) {
                fs::remove_dir_all(dir.join(old))?;
            }
        }
        WriteMode::Setup => {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name == DATA_LINK || name == ts || names.contains(&name.as_ref()) {
                    continue;
                }
                if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(entry.path())?;
                } else {
                    fs::remove_file(entry.path())?;
                }
            }
        }
    }
    Ok(VolumeWrite::Written)
}

/// Gives `fs_group` group ownership of everything under `dir`, as the kubelet does for
/// `fsGroup`: files get group read (and write unless read-only), directories setgid.
pub(crate) fn apply_fs_group(dir: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    std::os::unix::fs::lchown(dir, None, Some(gid))?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_dir() {
        let extra = if read_only { 0o2550 } else { 0o2770 };
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | extra))?;
        for entry in fs::read_dir(dir)? {
            apply_fs_group(&entry?.path(), gid, read_only)?;
        }
    } else if meta.is_file() {
        let extra = if read_only { 0o440 } else { 0o660 };
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | extra))?;
    }
    Ok(())
}

fn volume_error(volume: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Volume {
        volume: volume.to_owned(),
        message: message.into(),
    }
}

/// Sets up every volume of `pod` under `volumes_dir`.
pub(crate) fn prepare(
    pod: &Pod,
    volumes_dir: &Path,
    ctx: &ResolveContext<'_>,
) -> Result<(), RuntimeError> {
    let spec = pod.spec.as_ref();
    let fs_group = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for volume in spec.and_then(|s| s.volumes.as_deref()).unwrap_or_default() {
        let name = &volume.name;
        if !safe_relative(name) || name.contains('/') {
            return Err(volume_error(name, "invalid volume name"));
        }
        let dir = volumes_dir.join(name);
        if let Some(hp) = &volume.host_path {
            check_host_path(Path::new(&hp.path), hp.type_.as_deref())
                .map_err(|m| volume_error(name, m))?;
            continue;
        }
        if volume.empty_dir.is_some() {
            let io = |e: io::Error| volume_error(name, format!("creating {}: {e}", dir.display()));
            fs::create_dir_all(&dir).map_err(io)?;
            // emptyDir is world-writable, like the kubelet's.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).map_err(io)?;
            if let Some(gid) = fs_group {
                apply_fs_group(&dir, gid, false).map_err(io)?;
            }
            continue;
        }
        let files = render(pod, volume, ctx)
            .map_err(|m| volume_error(name, m))?
            .ok_or_else(|| {
                volume_error(
                    name,
                    "unsupported volume type (tandem supports emptyDir, hostPath, configMap, \
                     secret, downwardAPI and projected)",
                )
            })?;
        let io = |e: io::Error| volume_error(name, format!("writing {}: {e}", dir.display()));
        write_atomic(&dir, &files, fs_group, WriteMode::Setup).map_err(io)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io)?;
        if let Some(gid) = fs_group {
            apply_fs_group(&dir, gid, true).map_err(io)?;
        }
    }
    Ok(())
}

/// Writes volume `name` of a running pod again from `ctx`'s sources, atomically, if its
/// files changed. Only volumes rendered from objects (configMap, secret, downwardAPI,
/// projected) can be refreshed.
pub(crate) fn refresh(
    pod: &Pod,
    volumes_dir: &Path,
    name: &str,
    ctx: &ResolveContext<'_>,
) -> Result<VolumeWrite, RuntimeError> {
    let spec = pod.spec.as_ref();
    let volume = spec
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|v| v.name == name)
        .ok_or_else(|| volume_error(name, "no such volume"))?;
    if !safe_relative(name) || name.contains('/') {
        return Err(volume_error(name, "invalid volume name"));
    }
    let files = render(pod, volume, ctx)
        .map_err(|m| volume_error(name, m))?
        .ok_or_else(|| volume_error(name, "only rendered volumes are refreshed"))?;
    let fs_group = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let dir = volumes_dir.join(name);
    write_atomic(&dir, &files, fs_group, WriteMode::Update).map_err(|source| RuntimeError::Io {
        context: format!("updating {}", dir.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                         "labels": {"tier": "front", "app": "web"},
                         "annotations": {"msg": "a \"quoted\"\nvalue"}},
            "spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "64Mi"}}}],
                     "volumes": [
                        {"name": "cfg", "configMap": {"name": "settings", "defaultMode": 256,
                            "items": [{"key": "mode", "path": "conf/mode.txt", "mode": 384}, {"key": "bin", "path": "b"}]}},
                        {"name": "all", "configMap": {"name": "settings"}},
                        {"name": "creds", "secret": {"secretName": "creds"}},
                        {"name": "info", "downwardAPI": {"items": [
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                            {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}}
                        ]}},
                        {"name": "proj", "projected": {"sources": [
                            {"configMap": {"name": "settings", "items": [{"key": "mode", "path": "m"}]}},
                            {"secret": {"name": "creds"}}
                        ]}},
                        {"name": "missing", "configMap": {"name": "nope"}},
                        {"name": "maybe", "secret": {"secretName": "nope", "optional": true}},
                        {"name": "badkey", "configMap": {"name": "settings", "items": [{"key": "zzz", "path": "z"}]}}
                     ]}
        }))
        .expect("pod")
    }

    fn sources() -> VolumeSources {
        let mut s = VolumeSources::default();
        s.add_config_map(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "settings", "namespace": "shop"},
                "data": {"mode": "fast"}, "binaryData": {"bin": "AAEC"}
            }))
            .expect("cm"),
        );
        s.add_secret(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "creds", "namespace": "shop"},
                "data": {"password": "czNjcjN0"}
            }))
            .expect("secret"),
        );
        s
    }

    fn ctx(sources: &VolumeSources) -> ResolveContext<'_> {
        ResolveContext {
            node_name: "n".into(),
            pod_ip: "127.0.0.1".into(),
            host_ip: "127.0.0.1".into(),
            sources,
            node_cpu_millis: 2000,
            node_memory_bytes: 1 << 30,
        }
    }

    fn files(name: &str) -> Result<Option<Vec<FileEntry>>, String> {
        let p = pod();
        let s = sources();
        let v = p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == name))
            .cloned()
            .expect("volume");
        render(&p, &v, &ctx(&s))
    }

    fn entry(path: &str, data: &[u8], mode: u32) -> FileEntry {
        FileEntry {
            path: path.into(),
            data: data.to_vec(),
            mode,
            owner: None,
        }
    }

    #[test]
    fn config_map_items_and_modes() {
        assert_eq!(
            files("cfg").expect("ok"),
            Some(vec![
                entry("conf/mode.txt", b"fast", 0o600),
                entry("b", &[0, 1, 2], 0o400)
            ])
        );
        assert_eq!(
            files("all").expect("ok"),
            Some(vec![
                entry("mode", b"fast", 0o644),
                entry("bin", &[0, 1, 2], 0o644)
            ])
        );
        assert_eq!(
            files("badkey"),
            Err("configmap references non-existent config key: zzz".into())
        );
        assert_eq!(files("missing"), Err("configmap \"nope\" not found".into()));
        assert_eq!(files("maybe"), Ok(Some(vec![])));
    }

    #[test]
    fn secrets_are_decoded_and_projected_volumes_combine_sources() {
        assert_eq!(
            files("creds").expect("ok"),
            Some(vec![entry("password", b"s3cr3t", 0o644)])
        );
        assert_eq!(
            files("proj").expect("ok"),
            Some(vec![
                entry("m", b"fast", 0o644),
                entry("password", b"s3cr3t", 0o644)
            ])
        );
    }

    /// A pod with Istio's token volume; `security` is merged into the pod spec.
    fn token_pod(security: serde_json::Value) -> Pod {
        let mut spec = serde_json::json!({
            "serviceAccountName": "web",
            "initContainers": [{"name": "istio-proxy", "restartPolicy": "Always",
                                "securityContext": {"runAsUser": 1337}}],
            "containers": [{"name": "app"}],
            "volumes": [{"name": "istio-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200,
                                         "path": "istio-token"}}
            ]}}]
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), security.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1"},
            "spec": spec
        }))
        .expect("pod")
    }

    fn token_files(pod: &Pod, sources: &VolumeSources) -> Result<Vec<FileEntry>, String> {
        let volume = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.first())
            .cloned()
            .expect("volume");
        render(pod, &volume, &ctx(sources)).map(|f| f.expect("rendered"))
    }

    fn with_token() -> VolumeSources {
        let mut s = VolumeSources::default();
        s.add_service_account_token("istio-token", "istio-token", Ok("eyJ.a.b".into()));
        s
    }

    #[test]
    fn service_account_tokens_are_written_with_the_kubelets_modes() {
        // No common user and no fsGroup: the projected volume's default mode.
        let plain = token_pod(serde_json::json!({}));
        assert_eq!(
            token_files(&plain, &with_token()),
            Ok(vec![entry("istio-token", b"eyJ.a.b", 0o644)])
        );
        let mut custom = plain.clone();
        if let Some(p) = custom
            .spec
            .as_mut()
            .and_then(|s| s.volumes.as_mut())
            .and_then(|v| v.first_mut())
            .and_then(|v| v.projected.as_mut())
        {
            p.default_mode = Some(0o440);
        }
        assert_eq!(
            token_files(&custom, &with_token()),
            Ok(vec![entry("istio-token", b"eyJ.a.b", 0o440)])
        );
        // An fsGroup: 0600, opened to the group when ownership is applied.
        let grouped = token_pod(serde_json::json!({"securityContext": {"fsGroup": 1337}}));
        assert_eq!(
            token_files(&grouped, &with_token()),
            Ok(vec![entry("istio-token", b"eyJ.a.b", 0o600)])
        );
        // Every container runs as 1337 (the pod's user for the app): owned by it, 0600.
        let shared = token_pod(serde_json::json!({"securityContext": {"runAsUser": 1337}}));
        let files = token_files(&shared, &with_token()).expect("rendered");
        assert_eq!(files[0].mode, 0o600);
        assert_eq!(files[0].owner, Some(1337));
        // Different users: no common owner.
        let mixed = token_pod(serde_json::json!({"securityContext": {"runAsUser": 1000}}));
        assert_eq!(
            token_files(&mixed, &with_token()).expect("rendered")[0].owner,
            None
        );
    }

    #[test]
    fn missing_tokens_fail_the_mount_with_the_reason() {
        let pod = token_pod(serde_json::json!({}));
        assert_eq!(
            token_files(&pod, &VolumeSources::default()),
            Err(
                "failed to fetch token: no API server to request a service account token from"
                    .into()
            )
        );
        let mut refused = VolumeSources::default();
        refused.add_service_account_token(
            "istio-token",
            "istio-token",
            Err("serviceaccounts \"web\" not found".into()),
        );
        assert_eq!(
            token_files(&pod, &refused),
            Err("failed to fetch token: serviceaccounts \"web\" not found".into())
        );
        // The token of another volume does not count.
        let mut elsewhere = VolumeSources::default();
        elsewhere.add_service_account_token("other", "istio-token", Ok("t".into()));
        assert!(token_files(&pod, &elsewhere).is_err());

        let dir = tempfile::tempdir().expect("tempdir");
        let err = prepare(&pod, dir.path(), &ctx(&VolumeSources::default())).expect_err("no token");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"istio-token\" : failed to fetch token: \
             no API server to request a service account token from"
        );
    }

    #[test]
    fn prepare_writes_tokens_and_opens_them_to_the_fs_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o7777;
        let file = dir.path().join("istio-token/istio-token");

        prepare(
            &token_pod(serde_json::json!({})),
            dir.path(),
            &ctx(&with_token()),
        )
        .expect("prepared");
        assert_eq!(fs::read(&file).expect("token"), b"eyJ.a.b");
        assert_eq!(mode(&file), 0o644);

        // Our own group, so that no privilege is needed to hand it over.
        let gid = rustix::process::getgid().as_raw();
        let uid = rustix::process::getuid().as_raw();
        let pod =
            token_pod(serde_json::json!({"securityContext": {"fsGroup": gid, "runAsUser": uid}}));
        prepare(&pod, dir.path(), &ctx(&with_token())).expect("prepared");
        assert_eq!(mode(&file), 0o640);
        let meta = fs::metadata(&file).expect("meta");
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
    }

    #[test]
    fn downward_api_files_use_kubernetes_formats() {
        let f = files("info").expect("ok").expect("rendered");
        assert_eq!(f[0], entry("labels", b"app=\"web\"\ntier=\"front\"", 0o644));
        assert_eq!(
            f[1],
            entry("annotations", b"msg=\"a \\\"quoted\\\"\\nvalue\"", 0o644)
        );
        assert_eq!(f[2], entry("name", b"web", 0o644));
        assert_eq!(f[3], entry("mem", b"64", 0o644));
    }

    #[test]
    fn host_path_types_are_checked_with_kubelet_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, "x").expect("write");
        assert_eq!(check_host_path(dir.path(), Some("Directory")), Ok(()));
        assert_eq!(
            check_host_path(&file, Some("Directory")),
            Err(format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            ))
        );
        assert_eq!(
            check_host_path(dir.path(), Some("File")),
            Err(format!(
                "hostPath type check failed: {} is not a file",
                dir.path().display()
            ))
        );
        let created = dir.path().join("new/sub");
        assert_eq!(check_host_path(&created, Some("DirectoryOrCreate")), Ok(()));
        assert!(created.is_dir());
        let new_file = dir.path().join("nf");
        assert_eq!(check_host_path(&new_file, Some("FileOrCreate")), Ok(()));
        assert!(new_file.is_file());
        assert_eq!(
            check_host_path(&file, Some("Socket")),
            Err(format!(
                "hostPath type check failed: {} is not a socket file",
                file.display()
            ))
        );
        assert_eq!(
            check_host_path(&file, Some("Weird")),
            Err("Weird is an invalid volume type".into())
        );
    }

    #[test]
    fn prepare_writes_volume_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = pod();
        if let Some(vs) = p.spec.as_mut().and_then(|s| s.volumes.as_mut()) {
            vs.retain(|v| !matches!(v.name.as_str(), "missing" | "badkey"));
            vs.push(
                serde_json::from_value(serde_json::json!({"name": "scratch", "emptyDir": {}}))
                    .expect("vol"),
            );
        }
        let s = sources();
        prepare(&p, dir.path(), &ctx(&s)).expect("prepared");
        let read = |p: &str| fs::read(dir.path().join(p)).expect("read");
        assert_eq!(read("cfg/conf/mode.txt"), b"fast");
        let mode = |p: &str| {
            fs::metadata(dir.path().join(p))
                .expect("meta")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("cfg/conf/mode.txt"), 0o600);
        assert_eq!(read("creds/password"), b"s3cr3t");
        assert_eq!(read("info/name"), b"web");
        assert_eq!(mode("scratch"), 0o777);

        // Preparing again replaces stale files.
        fs::write(dir.path().join("cfg/stale"), "old").expect("write");
        prepare(&p, dir.path(), &ctx(&s)).expect("prepared again");
        assert!(!dir.path().join("cfg/stale").exists());

        let mut bad = pod();
        if let Some(vs) = bad.spec.as_mut().and_then(|s| s.volumes.as_mut()) {
            vs.retain(|v| v.name == "missing");
        }
        let err = prepare(&bad, dir.path(), &ctx(&s)).expect_err("missing configmap");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"missing\" : configmap \"nope\" not found"
        );
    }

    fn link(p: &Path) -> String {
        fs::read_link(p)
            .expect("symlink")
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn volumes_are_written_in_the_atomic_writer_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("cfg");
        let files = [
            entry("conf/mode.txt", b"fast", 0o600),
            entry("b", &[0, 1, 2], 0o400),
        ];
        let written = write_atomic(&vol, &files, None, WriteMode::Setup).expect("written");
        assert_eq!(written, VolumeWrite::Written);
        let ts = link(&vol.join(DATA_LINK));
        assert!(ts.starts_with(".."), "{ts}");
        assert!(vol.join(&ts).is_dir());
        assert_eq!(link(&vol.join("conf")), "..data/conf");
        assert_eq!(link(&vol.join("b")), "..data/b");
        assert_eq!(fs::read(vol.join("conf/mode.txt")).expect("read"), b"fast");
        let mut names: Vec<String> = fs::read_dir(&vol)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [ts.as_str(), "..data", "b", "conf"]);
    }

    #[test]
    fn updates_swap_the_whole_set_and_leave_what_others_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("cfg");
        let v1 = [entry("a", b"1", 0o644), entry("gone", b"x", 0o644)];
        write_atomic(&vol, &v1, None, WriteMode::Setup).expect("setup");
        let first = link(&vol.join(DATA_LINK));
        // What a reader (or a subPath bind mount) opened before the update.
        let mut held = fs::File::open(vol.join("a")).expect("open");
        // A subPath directory created in the volume by the runtime.
        fs::create_dir(vol.join("sub")).expect("mkdir");

        // The same payload: nothing is written.
        assert_eq!(
            write_atomic(&vol, &v1, None, WriteMode::Update).expect("same"),
            VolumeWrite::Unchanged
        );
        assert_eq!(link(&vol.join(DATA_LINK)), first);

        let v2 = [entry("a", b"2", 0o644), entry("new/deep", b"n", 0o600)];
        assert_eq!(
            write_atomic(&vol, &v2, None, WriteMode::Update).expect("update"),
            VolumeWrite::Written
        );
        let second = link(&vol.join(DATA_LINK));
        assert_ne!(second, first);
        assert!(!vol.join(&first).exists(), "the old set is removed");
        assert_eq!(fs::read(vol.join("a")).expect("a"), b"2");
        assert_eq!(fs::read(vol.join("new/deep")).expect("deep"), b"n");
        let mode = fs::metadata(vol.join("new/deep"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
        assert!(
            fs::symlink_metadata(vol.join("gone")).is_err(),
            "removed key"
        );
        assert!(vol.join("sub").is_dir(), "left alone");
        let mut old = String::new();
        std::io::Read::read_to_string(&mut held, &mut old).expect("read");
        assert_eq!(old, "1", "an open file keeps the old content");
    }

    #[test]
    fn updates_never_create_a_volume_that_is_not_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("gone");
        let files = [entry("a", b"1", 0o644)];
        assert_eq!(
            write_atomic(&vol, &files, None, WriteMode::Update).expect("update"),
            VolumeWrite::Missing
        );
        assert!(!vol.exists());
    }

    #[test]
    fn updates_take_over_plainly_written_volumes() {
        // A volume written before the atomic layout: plain files at the top.
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("cfg");
        fs::create_dir_all(vol.join("conf")).expect("mkdir");
        fs::write(vol.join("a"), "old").expect("write");
        fs::write(vol.join("conf/x"), "old").expect("write");
        let files = [entry("a", b"new", 0o644), entry("conf/x", b"new", 0o644)];
        write_atomic(&vol, &files, None, WriteMode::Update).expect("update");
        assert_eq!(link(&vol.join("a")), "..data/a");
        assert_eq!(link(&vol.join("conf")), "..data/conf");
        assert_eq!(fs::read(vol.join("conf/x")).expect("x"), b"new");
    }

    #[test]
    fn updates_give_new_files_the_fs_group_before_they_show() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("tok");
        let gid = rustix::process::getgid().as_raw();
        write_atomic(
            &vol,
            &[entry("t", b"1", 0o600)],
            Some(gid),
            WriteMode::Setup,
        )
        .expect("setup");
        write_atomic(
            &vol,
            &[entry("t", b"2", 0o600)],
            Some(gid),
            WriteMode::Update,
        )
        .expect("update");
        let meta = fs::metadata(vol.join("t")).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
    }

    #[test]
    fn refresh_rewrites_a_volume_from_new_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = pod();
        if let Some(vs) = p.spec.as_mut().and_then(|s| s.volumes.as_mut()) {
            vs.retain(|v| matches!(v.name.as_str(), "cfg" | "info" | "proj"));
        }
        let s = sources();
        prepare(&p, dir.path(), &ctx(&s)).expect("prepared");
        assert_eq!(
            refresh(&p, dir.path(), "cfg", &ctx(&s)).expect("same"),
            VolumeWrite::Unchanged
        );

        let mut changed = s.clone();
        changed.add_config_map(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "settings", "namespace": "shop"},
                "data": {"mode": "slow"}, "binaryData": {"bin": "AAEC"}
            }))
            .expect("cm"),
        );
        assert_eq!(
            refresh(&p, dir.path(), "cfg", &ctx(&changed)).expect("cfg"),
            VolumeWrite::Written
        );
        assert_eq!(
            fs::read(dir.path().join("cfg/conf/mode.txt")).expect("read"),
            b"slow"
        );
        // Item modes and defaultMode hold after an update.
        let mode = |rel: &str| {
            fs::metadata(dir.path().join(rel))
                .expect("meta")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("cfg/conf/mode.txt"), 0o600);
        assert_eq!(mode("cfg/b"), 0o400);
        refresh(&p, dir.path(), "proj", &ctx(&changed)).expect("proj");
        assert_eq!(fs::read(dir.path().join("proj/m")).expect("m"), b"slow");

        // New labels reach the downward API volume.
        p.metadata.labels = Some([("tier".to_owned(), "back".to_owned())].into());
        refresh(&p, dir.path(), "info", &ctx(&changed)).expect("info");
        assert_eq!(
            fs::read(dir.path().join("info/labels")).expect("labels"),
            b"tier=\"back\""
        );

        // A ConfigMap that is gone fails the update and leaves the files as they were.
        let err =
            refresh(&p, dir.path(), "cfg", &ctx(&VolumeSources::default())).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"settings\" not found"
        );
        assert_eq!(
            fs::read(dir.path().join("cfg/conf/mode.txt")).expect("read"),
            b"slow"
        );
    }

    #[test]
    fn paths_of_the_atomic_writer_are_refused() {
        let mut s = VolumeSources::default();
        s.add_config_map(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "settings", "namespace": "shop"},
                "data": {"..data": "x"}
            }))
            .expect("cm"),
        );
        let p = pod();
        let v = p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == "all"))
            .cloned()
            .expect("volume");
        assert_eq!(
            render(&p, &v, &ctx(&s)),
            Err("invalid path \"..data\": must not start with '..'".into())
        );
    }
}
