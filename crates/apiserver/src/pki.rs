//! The cluster's certificates and admin token: a CA and a serving certificate
//! generated on first start (rcgen, ring) and kept in `<data dir>/pki`, reused on
//! later starts, and the kubeconfig that trusts them.
//!
//! Files holding private keys or the token are written with mode 0600 (the
//! directory with 0700) and replaced atomically.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVING_CERT: &str = "apiserver.crt";
const SERVING_KEY: &str = "apiserver.key";
/// What the serving certificate was issued for (its names and expiry), so a later
/// start can tell whether to reissue it without parsing X.509.
const SERVING_META: &str = "apiserver.meta";
const TOKEN: &str = "token";
/// The service-account token signing key (PKCS#8 PEM, ECDSA P-256).
const SA_KEY: &str = "sa.key";

const CA_NAME: &str = "tandem-ca";
const DAY: i64 = 24 * 3600;
const CA_LIFETIME: i64 = 10 * 365 * DAY;
const SERVING_LIFETIME: i64 = 365 * DAY;
/// Reissue the serving certificate when it has less than this left.
const RENEW_BEFORE: i64 = 30 * DAY;

/// Why the PKI could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("no secure random numbers: {0}")]
    Random(String),
}

/// The CA, the serving certificate and key, the admin bearer token and the
/// service-account signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
    /// The key that signs service account tokens (`tokens::Signer::from_pem`).
    pub service_account_key_pem: String,
}

impl std::fmt::Debug for Pki {
    // Never print the key or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Loads the PKI from `<data_dir>/pki`, creating what is missing: the CA, a serving
/// certificate for localhost, 127.0.0.1, ::1, the host name and `extra_sans` (DNS
/// names or IP addresses), a random token and a service-account signing key. The
/// serving certificate is reissued from the same CA when a name is missing or it is
/// about to expire.
pub fn ensure(data_dir: &Path, extra_sans: &[String]) -> Result<Pki, PkiError> {
    let dir = data_dir.join("pki");
    fs::create_dir_all(&dir).map_err(|source| io(&dir, source))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(|source| io(&dir, source))?;
    let now = now_unix();

    let existing_ca = match (read_opt(&dir.join(CA_CERT))?, read_opt(&dir.join(CA_KEY))?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    let (ca_pem, ca_key, ca_is_new) = match existing_ca {
        Some((cert, key_pem)) => {
            let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Corrupt {
                path: dir.join(CA_KEY),
                why: e.to_string(),
            })?;
            (cert, key, false)
        }
        None => {
            let key = KeyPair::generate()?;
            let mut params = ca_params();
            params.not_before = at(now - 3600)?;
            params.not_after = at(now + CA_LIFETIME)?;
            params.serial_number = Some(serial()?);
            let cert = params.self_signed(&key)?;
            write_private(&dir.join(CA_KEY), key.serialize_pem().as_bytes())?;
            write_public(&dir.join(CA_CERT), cert.pem().as_bytes())?;
            (cert.pem(), key, true)
        }
    };

    let wanted = serving_names(extra_sans);
    let meta_path = dir.join(SERVING_META);
    let serving = match (
        read_opt(&dir.join(SERVING_CERT))?,
        read_opt(&dir.join(SERVING_KEY))?,
        read_opt(&meta_path)?,
    ) {
        (Some(cert), Some(key), Some(meta)) if !ca_is_new => {
            let (not_after, names) = parse_meta(&meta);
            let covers = wanted.iter().all(|n| names.contains(n));
            (covers && not_after - now > RENEW_BEFORE).then_some((cert, key))
        }
        _ => None,
    };
    let (cert_pem, key_pem) = match serving {
        Some(pair) => pair,
        None => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, "tandem-apiserver");
            params.subject_alt_names = wanted.iter().filter_map(|n| san(n)).collect();
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            params.not_before = at(now - 3600)?;
            let not_after = now + SERVING_LIFETIME;
            params.not_after = at(not_after)?;
            params.serial_number = Some(serial()?);
            let issuer = Issuer::new(ca_params(), &ca_key);
            let cert = params.signed_by(&key, &issuer)?;
            let key_pem = key.serialize_pem();
            write_private(&dir.join(SERVING_KEY), key_pem.as_bytes())?;
            write_public(&dir.join(SERVING_CERT), cert.pem().as_bytes())?;
            let mut meta = format!("not_after {not_after}\n");
            for n in &wanted {
                meta.push_str(n);
                meta.push('\n');
            }
            write_public(&meta_path, meta.as_bytes())?;
            (cert.pem(), key_pem)
        }
    };

    let token_path = dir.join(TOKEN);
    let token = match read_opt(&token_path)? {
        Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            let token = random_hex(32)?;
            write_private(&token_path, token.as_bytes())?;
            token
        }
    };

    let sa_path = dir.join(SA_KEY);
    let service_account_key_pem = match read_opt(&sa_path)? {
        Some(pem) => {
            // Fail now rather than on the first token request.
            crate::tokens::Signer::from_pem(&pem).map_err(|e| PkiError::Corrupt {
                path: sa_path.clone(),
                why: e.to_string(),
            })?;
            pem
        }
        None => {
            let pem = crate::tokens::Signer::generate_pem()
                .map_err(|e| PkiError::Random(e.to_string()))?;
            write_private(&sa_path, pem.as_bytes())?;
            pem
        }
    };

    Ok(Pki {
        dir,
        ca_pem,
        cert_pem,
        key_pem,
        token,
        service_account_key_pem,
    })
}

/// A kubeconfig (YAML) for `server_url` that trusts the CA and authenticates with
/// the token; its context is current and defaults to namespace `default`.
pub fn kubeconfig(server_url: &str, pki: &Pki, cluster_name: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem.as_bytes());
    // JSON strings are valid double-quoted YAML scalars, so any name is safe.
    let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let user = format!("{cluster_name}-admin");
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {name}\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: {name}\n  \
           context:\n    \
             cluster: {name}\n    \
             user: {user}\n    \
             namespace: default\n\
         current-context: {name}\n\
         preferences: {{}}\n",
        name = q(cluster_name),
        server = q(server_url),
        user = q(&user),
        token = q(&pki.token),
    )
}

/// Writes a file readable only by its owner (a kubeconfig holds the token).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, contents, 0o644)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A stale temporary file may have looser permissions; start from scratch.
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|source| io(&tmp, source))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| io(&tmp, source))?;
    fs::rename(&tmp, path).map_err(|source| io(path, source))
}

/// The CA's subject, key usages and key id method: the same on every start, so a
/// reloaded CA key signs certificates that chain to the stored CA certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The names the serving certificate must cover, sorted and without duplicates.
fn serving_names(extra: &[String]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if let Some(host) = hostname() {
        names.insert(host);
    }
    names.extend(
        extra
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    );
    // Names rcgen cannot encode would fail the whole certificate; drop them.
    names.retain(|n| san(n).is_some());
    names
}

fn san(name: &str) -> Option<SanType> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Some(SanType::IpAddress(ip)),
        Err(_) => name.to_owned().try_into().ok().map(SanType::DnsName),
    }
}

fn hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn parse_meta(meta: &str) -> (i64, BTreeSet<String>) {
    let mut lines = meta.lines();
    let not_after = lines
        .next()
        .and_then(|l| l.strip_prefix("not_after "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (not_after, lines.map(str::to_owned).collect())
}

fn at(unix: i64) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| PkiError::Random(e.to_string()))
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = random_bytes(16)?;
    // A positive serial number (the DER integer's top bit clear).
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// `n` random bytes, hex-encoded.
pub fn random_hex(n: usize) -> Result<String, PkiError> {
    Ok(random_bytes(n)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn random_bytes(n: usize) -> Result<Vec<u8>, PkiError> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|e| PkiError::Random(e.to_string()))?;
    Ok(buf)
}

fn read_opt(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io(path, source)),
    }
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn first_start_creates_and_later_starts_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure(dir.path(), &[]).expect("ensure");
        assert!(first.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.key_pem.contains("PRIVATE KEY"));
        assert_eq!(first.token.len(), 64);
        assert!(first.token.chars().all(|c| c.is_ascii_hexdigit()));
        for f in [CA_KEY, SERVING_KEY, TOKEN, SA_KEY] {
            assert_eq!(mode(&first.dir.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&first.dir), 0o700);

        let signer = crate::tokens::Signer::from_pem(&first.service_account_key_pem)
            .expect("a usable signing key");

        let second = ensure(dir.path(), &[]).expect("ensure again");
        assert_eq!(first, second);
        let again =
            crate::tokens::Signer::from_pem(&second.service_account_key_pem).expect("signing key");
        assert_eq!(again.key_id(), signer.key_id());

        // A new name reissues the serving certificate from the same CA.
        let third = ensure(dir.path(), &["tandem.example".to_owned()]).expect("ensure");
        assert_eq!(third.ca_pem, first.ca_pem);
        assert_eq!(third.token, first.token);
        assert_ne!(third.cert_pem, first.cert_pem);
        let meta = fs::read_to_string(third.dir.join(SERVING_META)).expect("meta");
        assert!(meta.lines().any(|l| l == "tandem.example"));
    }

    #[test]
    fn kubeconfig_carries_ca_and_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = ensure(dir.path(), &[]).expect("ensure");
        let text = kubeconfig("https://127.0.0.1:6443", &pki, "tandem");
        let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("valid YAML");
        assert_eq!(doc["current-context"], "tandem");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        let ca = doc["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .expect("ca data");
        let ca = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .expect("base64");
        assert_eq!(ca, pki.ca_pem.as_bytes());
        assert_eq!(doc["users"][0]["user"]["token"], pki.token.as_str());
        assert_eq!(doc["contexts"][0]["context"]["user"], "tandem-admin");
    }
}
