//! Running `nft`: scripts go to `nft -f -` in one go, so each is one atomic transaction.
//! `nft` starts in the network namespace of the calling thread.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::Error;

/// The binary: the usual sbin locations first (a daemon's PATH often lacks them).
fn binary() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nft")
}

/// Table names are used unquoted in scripts: keep them to a plain identifier.
pub(crate) fn check_table_name(name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let ok = name.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(
            name.to_owned(),
            "a table name starts with a letter and has only letters, digits, '_' and '-'",
        ))
    }
}

/// Applies `script` as one transaction (`nft -f -`). An empty script does nothing.
pub async fn apply(script: &str) -> Result<(), Error> {
    if script.trim().is_empty() {
        return Ok(());
    }
    let mut child = tokio::process::Command::new(binary())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::NftSpawn)?;
    let mut written = Ok(());
    if let Some(mut stdin) = child.stdin.take() {
        // Dropping stdin closes it: nft reads to EOF before it starts.
        written = stdin.write_all(script.as_bytes()).await;
    }
    let out = child.wait_with_output().await.map_err(Error::NftSpawn)?;
    if !out.status.success() {
        // nft's own complaint explains more than the broken pipe it caused.
        return Err(Error::Nft {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    written.map_err(Error::NftSpawn)
}

/// `nft list table ip <table>`; `None` when there is no such table.
pub async fn list_table(table: &str) -> Result<Option<String>, Error> {
    check_table_name(table)?;
    let out = tokio::process::Command::new(binary())
        .args(["list", "table", "ip", table])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(Error::NftSpawn)?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No such file or directory") {
        return Ok(None);
    }
    Err(Error::Nft {
        status: out.status.to_string(),
        stderr: stderr.trim().to_owned(),
    })
}

/// Removes the table if it exists (declaring it first makes the delete unconditional).
pub(crate) fn delete_table_script(table: &str) -> String {
    format!("table ip {table} {{}}\ndelete table ip {table}\n")
}

/// The forward-hook chain that keeps pod traffic on the machine: anything routed from
/// the bridge to another interface is dropped. Idempotent, and identical to what the
/// Service proxy's full sync writes, so the two never fight.
pub(crate) fn isolation_script(table: &str, bridge: &str) -> String {
    let mut s = format!("table ip {table} {{}}\n");
    s.push_str(&format!(
        "add chain ip {table} {ISOLATION_CHAIN} {{ {ISOLATION_HOOK} }}\n"
    ));
    s.push_str(&format!("flush chain ip {table} {ISOLATION_CHAIN}\n"));
    s.push_str(&format!(
        "add rule ip {table} {ISOLATION_CHAIN} {}\n",
        isolation_rule(bridge)
    ));
    s
}

pub(crate) const ISOLATION_CHAIN: &str = "bridge-isolation";
pub(crate) const ISOLATION_HOOK: &str = "type filter hook forward priority filter; policy accept;";

pub(crate) fn isolation_rule(bridge: &str) -> String {
    format!("iifname \"{bridge}\" oifname != \"{bridge}\" drop")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(check_table_name("tandem").is_ok());
        assert!(check_table_name("tandem-test_2").is_ok());
        for bad in ["", "2tandem", "tan dem", "t;flush ruleset", "t\"x"] {
            assert!(check_table_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn isolation_drops_only_traffic_leaving_the_bridge() {
        let s = isolation_script("tandem", "tandem0");
        assert!(s.contains("hook forward"));
        assert!(s.contains("iifname \"tandem0\" oifname != \"tandem0\" drop"));
        // Re-running must not stack duplicate rules.
        assert!(s.find("flush chain").unwrap() < s.find("add rule").unwrap());
    }
}
