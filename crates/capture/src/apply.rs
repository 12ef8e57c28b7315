//! Applying rules in the current network namespace with `iptables-restore --noflush`, with
//! istio-iptables' handling of rules left by earlier runs.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::CaptureError;
use crate::flags::{InboundPorts, InterceptionMode, Settings};
use crate::rules::{Family, Rule, RuleSet, Table, declared_chains, is_builtin};
use crate::state::SavedState;

/// Output of a finished command.
#[derive(Debug, Clone, Default)]
pub struct CmdOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The commands capture needs. The system one runs the iptables and iproute2 tools.
pub trait Backend {
    /// `iptables-save` (or `ip6tables-save`) output.
    fn save(&mut self, family: Family) -> Result<String, CaptureError>;
    /// `iptables-restore --noflush` with this input.
    fn restore(&mut self, family: Family, input: &str) -> Result<(), CaptureError>;
    /// `iptables ARGS`; Ok(false) when iptables ran and refused (a failed `-C` check).
    fn iptables(&mut self, family: Family, args: &[String]) -> Result<bool, CaptureError>;
    /// `ip ARGS`.
    fn ip(&mut self, args: &[String]) -> Result<CmdOutput, CaptureError>;
}

fn binary(family: Family, tool: &str) -> String {
    match family {
        Family::V4 => format!("iptables{tool}"),
        Family::V6 => format!("ip6tables{tool}"),
    }
}

/// Runs a tool; a missing binary is reported with the Debian package that provides it.
fn run_tool(
    program: &str,
    package: &'static str,
    args: &[String],
    stdin: Option<&str>,
) -> Result<CmdOutput, CaptureError> {
    let command = format!("{program} {}", args.join(" "));
    let spawn_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CaptureError::MissingBinary {
                binary: program.to_string(),
                package,
            }
        } else {
            CaptureError::Spawn {
                command: command.clone(),
                source,
            }
        }
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| CaptureError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| CaptureError::Spawn {
            command: command.clone(),
            source,
        })?;
    Ok(CmdOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn failed(command: String, out: &CmdOutput) -> CaptureError {
    CaptureError::CommandFailed {
        command,
        stderr: out.stderr.trim().to_string(),
    }
}

/// The real tools, in the network namespace of the calling thread.
#[derive(Debug, Default)]
pub struct SystemBackend;

impl Backend for SystemBackend {
    fn save(&mut self, family: Family) -> Result<String, CaptureError> {
        let program = binary(family, "-save");
        let out = run_tool(&program, "iptables", &[], None)?;
        if !out.success {
            return Err(failed(program, &out));
        }
        Ok(out.stdout)
    }

    fn restore(&mut self, family: Family, input: &str) -> Result<(), CaptureError> {
        let program = binary(family, "-restore");
        let args = ["--noflush".to_string()];
        let out = run_tool(&program, "iptables", &args, Some(input))?;
        if !out.success {
            return Err(failed(format!("{program} --noflush"), &out));
        }
        Ok(())
    }

    fn iptables(&mut self, family: Family, args: &[String]) -> Result<bool, CaptureError> {
        Ok(run_tool(&binary(family, ""), "iptables", args, None)?.success)
    }

    fn ip(&mut self, args: &[String]) -> Result<CmdOutput, CaptureError> {
        run_tool("ip", "iproute2", args, None)
    }
}

/// Re-run handling switches (`--reconcile`, `--cleanup-only`, `--force-apply`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    pub reconcile: bool,
    pub cleanup_only: bool,
    pub force_apply: bool,
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Clean state: the rules were written.
    Applied,
    /// The same rules were already in place; nothing was changed.
    AlreadyInPlace,
    /// Old Istio rules were removed, then the rules were written.
    Reconciled,
    /// `--cleanup-only`: Istio rules were removed.
    CleanedUp,
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Whether the current state differs from the expected rules: an expected Istio chain is
/// missing or holds a different number of rules, an unexpected Istio chain exists, or an
/// expected rule fails `iptables -C`. Rule order is not compared (as in istio-iptables).
fn differs(
    rules: &[Rule],
    state: &SavedState,
    family: Family,
    backend: &mut dyn Backend,
) -> Result<bool, CaptureError> {
    for table in Table::ALL {
        let expected = declared_chains(rules, table);
        for chain in &expected {
            let want = rules
                .iter()
                .filter(|r| r.table == table && &r.chain == chain)
                .count();
            if !state.has_chain(table.name(), chain)
                || state.rule_count(table.name(), chain) != want
            {
                tracing::debug!(%table, %chain, "chain missing or with a different rule count");
                return Ok(true);
            }
        }
    }
    for (table, chain) in state.istio_chains() {
        let Some(t) = Table::from_name(&table) else {
            continue;
        };
        if !declared_chains(rules, t).contains(&chain) {
            tracing::debug!(%table, %chain, "unexpected Istio chain");
            return Ok(true);
        }
    }
    for rule in rules {
        if !backend.iptables(family, &rule.command("-C"))? {
            tracing::debug!(rule = %rule.line(), table = %rule.table, "rule missing");
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes Istio jumps from built-in chains, the expected rules in built-in chains, and all
/// Istio chains (expected or left over). Failures are ignored: things may already be gone.
fn cleanup(
    rules: &[Rule],
    state: &SavedState,
    family: Family,
    backend: &mut dyn Backend,
) -> Result<(), CaptureError> {
    for (table, chain, spec) in state.istio_jumps() {
        let mut args = strings(&["-t", &table, "-D", &chain]);
        args.extend(spec);
        backend.iptables(family, &args)?;
    }
    for rule in rules.iter().rev().filter(|r| is_builtin(&r.chain)) {
        backend.iptables(family, &rule.command("-D"))?;
    }
    let mut chains: Vec<(String, String)> = Vec::new();
    for table in Table::ALL {
        for chain in declared_chains(rules, table) {
            chains.push((table.name().to_string(), chain));
        }
    }
    for found in state.istio_chains() {
        if !chains.contains(&found) {
            chains.push(found);
        }
    }
    // Flush everything first: Istio chains jump to each other, and -X refuses a referenced chain.
    for (table, chain) in &chains {
        backend.iptables(family, &strings(&["-t", table, "-F", chain]))?;
    }
    for (table, chain) in &chains {
        backend.iptables(family, &strings(&["-t", table, "-X", chain]))?;
    }
    Ok(())
}

/// Rules that drop all TCP/UDP while old rules are replaced, so no connection slips past
/// the proxy in between (istio-iptables' "guardrails"). `insert` adds them, else deletes.
fn guardrails(insert: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        for proto in ["tcp", "udp"] {
            let words: &[&str] = if insert {
                &["-t", "filter", "-I", chain, "1", "-p", proto, "-j", "DROP"]
            } else {
                &["-t", "filter", "-D", chain, "-p", proto, "-j", "DROP"]
            };
            out.push(strings(words));
        }
    }
    out
}

fn remove_guardrails(families: &[Family], backend: &mut dyn Backend) {
    for family in families {
        for args in guardrails(false) {
            let _ = backend.iptables(*family, &args);
        }
    }
}

/// Applies `set` the way istio-iptables does on a re-run:
/// * clean state: write the rules;
/// * the same rules already in place: change nothing (unless `force_apply`);
/// * different Istio rules in place: with `reconcile`, remove them (behind drop-all
///   guardrails) and write the new ones; without it, fail before changing anything, as
///   istio-iptables' restore fails on the existing chains;
/// * `cleanup_only`: only remove Istio rules.
pub fn apply(
    set: &RuleSet,
    opts: ApplyOptions,
    backend: &mut dyn Backend,
) -> Result<Outcome, CaptureError> {
    let families = set.families();
    let mut states = Vec::new();
    for family in &families {
        let state = match backend.save(*family) {
            Ok(text) => SavedState::parse(&text),
            Err(e @ CaptureError::MissingBinary { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!("{e}; assuming a clean state");
                SavedState::default()
            }
        };
        states.push(state);
    }

    if opts.cleanup_only {
        for (family, state) in families.iter().zip(&states) {
            cleanup(set.rules(*family), state, *family, backend)?;
        }
        return Ok(Outcome::CleanedUp);
    }

    let residue = states.iter().any(SavedState::has_istio_residue);
    let mut delta = !residue;
    if residue {
        for (family, state) in families.iter().zip(&states) {
            if differs(set.rules(*family), state, *family, backend)? {
                delta = true;
                break;
            }
        }
    }

    if residue && !delta && !opts.force_apply {
        tracing::info!(
            "Found compatible residues of old iptables rules/chains, reconciliation not needed"
        );
        return Ok(Outcome::AlreadyInPlace);
    }
    if residue && delta && !opts.reconcile && !opts.force_apply {
        let mut existing = Vec::new();
        for (family, state) in families.iter().zip(&states) {
            for table in Table::ALL {
                for chain in declared_chains(set.rules(*family), table) {
                    if state.has_chain(table.name(), &chain) {
                        existing.push(format!("{table}/{chain}"));
                    }
                }
            }
        }
        if !existing.is_empty() {
            existing.dedup();
            return Err(CaptureError::Conflict {
                chains: existing.join(", "),
            });
        }
        tracing::info!(
            "reconcile is recommended but no-reconcile flag is set. Unexpected behavior may occur due to preexisting iptables rules"
        );
    }

    let replace = residue && (opts.reconcile || opts.force_apply);
    let result = (|| {
        if replace {
            tracing::info!("Setting up guardrails");
            remove_guardrails(&families, backend);
            for family in &families {
                for args in guardrails(true) {
                    if !backend.iptables(*family, &args)? {
                        return Err(CaptureError::CommandFailed {
                            command: format!("{} {}", binary(*family, ""), args.join(" ")),
                            stderr: "could not add a guardrail rule".into(),
                        });
                    }
                }
            }
            tracing::info!("Performing cleanup of existing iptables");
            for (family, state) in families.iter().zip(&states) {
                cleanup(set.rules(*family), state, *family, backend)?;
            }
        }
        tracing::info!("Applying iptables chains and rules");
        for family in &families {
            backend.restore(*family, &set.restore_script(*family))?;
        }
        Ok(())
    })();
    if replace {
        tracing::info!("Removing guardrails");
        remove_guardrails(&families, backend);
    }
    result?;
    Ok(if replace {
        Outcome::Reconciled
    } else {
        Outcome::Applied
    })
}

fn exists_error(out: &CmdOutput) -> bool {
    out.stderr.to_lowercase().contains("file exists")
}

/// Routing for TPROXY (`ip rule fwmark MARK lookup TABLE`, a local default route in TABLE)
/// and the `::6` inbound source address on lo for IPv6. Safe to repeat.
pub fn configure_routes(
    s: &Settings,
    ipv6: bool,
    backend: &mut dyn Backend,
) -> Result<(), CaptureError> {
    if ipv6 {
        let args = strings(&["-6", "addr", "add", "::6/128", "dev", "lo"]);
        let out = backend.ip(&args)?;
        if !out.success && !exists_error(&out) {
            return Err(failed(format!("ip {}", args.join(" ")), &out));
        }
    }
    if s.mode != InterceptionMode::Tproxy || s.inbound_ports == InboundPorts::None {
        return Ok(());
    }
    let mark = s.tproxy_mark.to_string();
    let table = s.tproxy_route_table.to_string();
    let mut families = vec!["-4"];
    if ipv6 {
        families.push("-6");
    }
    for fam in families {
        // `ip rule add` happily adds duplicates, so look first.
        let shown = backend.ip(&strings(&[fam, "rule", "show"]))?;
        let wanted = format!("fwmark {:#x} lookup {table}", s.tproxy_mark);
        if !shown.stdout.lines().any(|l| l.contains(&wanted)) {
            let args = strings(&[fam, "rule", "add", "fwmark", &mark, "lookup", &table]);
            let out = backend.ip(&args)?;
            if !out.success && !exists_error(&out) {
                return Err(failed(format!("ip {}", args.join(" ")), &out));
            }
        }
        let args = strings(&[
            fam, "route", "add", "local", "default", "dev", "lo", "table", &table,
        ]);
        let out = backend.ip(&args)?;
        if !out.success && !exists_error(&out) {
            return Err(failed(format!("ip {}", args.join(" ")), &out));
        }
    }
    Ok(())
}

/// The `iptables` commands a `--cleanup-only` run issues for the expected rules, for
/// `--dry-run` output (leftovers found at run time are not known here).
pub fn cleanup_commands(set: &RuleSet, family: Family) -> Vec<String> {
    let rules = set.rules(family);
    let program = binary(family, "");
    let mut out = Vec::new();
    for rule in rules.iter().rev().filter(|r| is_builtin(&r.chain)) {
        out.push(format!("{program} {}", rule.command("-D").join(" ")));
    }
    for table in Table::ALL {
        for chain in declared_chains(rules, table) {
            out.push(format!("{program} -t {table} -F {chain}"));
        }
    }
    for table in Table::ALL {
        for chain in declared_chains(rules, table) {
            out.push(format!("{program} -t {table} -X {chain}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{CaptureArgs, Lookup};
    use crate::rules::{Host, build};

    struct NoEnv;
    impl Lookup for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn user_uid(&self, _: &str) -> Option<u32> {
            None
        }
    }

    /// A fake iptables: keeps the restore inputs it was given and answers `-C` from the
    /// lines it holds (exact text; good enough for rules it wrote itself).
    #[derive(Default)]
    struct Fake {
        saved: String,
        restored: Vec<String>,
        commands: Vec<String>,
        lines: Vec<String>,
    }

    impl Backend for Fake {
        fn save(&mut self, _: Family) -> Result<String, CaptureError> {
            Ok(self.saved.clone())
        }
        fn restore(&mut self, _: Family, input: &str) -> Result<(), CaptureError> {
            self.restored.push(input.to_string());
            Ok(())
        }
        fn iptables(&mut self, _: Family, args: &[String]) -> Result<bool, CaptureError> {
            self.commands.push(args.join(" "));
            if args.get(2).map(String::as_str) == Some("-C") {
                let line = format!("-A {}", args[3..].join(" "));
                return Ok(self.lines.contains(&line));
            }
            Ok(true)
        }
        fn ip(&mut self, _: &[String]) -> Result<CmdOutput, CaptureError> {
            Ok(CmdOutput {
                success: true,
                ..Default::default()
            })
        }
    }

    fn default_set() -> RuleSet {
        let args = CaptureArgs {
            envoy_port: Some("15001".into()),
            inbound_ports: Some("*".into()),
            service_cidr: Some("*".into()),
            local_exclude_ports: Some("15090,15021,15020".into()),
            ..Default::default()
        };
        build(&args.resolve(&NoEnv).unwrap(), &Host::default())
    }

    /// A save of exactly what `set` writes (nat only, as with the defaults).
    fn saved_from(set: &RuleSet) -> (String, Vec<String>) {
        let mut save = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
        for chain in declared_chains(&set.v4, Table::Nat) {
            save.push_str(&format!(":{chain} - [0:0]\n"));
        }
        let lines: Vec<String> = set.v4.iter().map(Rule::line).collect();
        for l in &lines {
            save.push_str(l);
            save.push('\n');
        }
        save.push_str("COMMIT\n");
        (save, lines)
    }

    #[test]
    fn a_missing_tool_names_its_debian_package() {
        let err =
            run_tool("iptables-restore-not-installed", "iptables", &[], Some("")).unwrap_err();
        assert!(matches!(err, CaptureError::MissingBinary { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("iptables-restore-not-installed"), "{msg}");
        assert!(msg.contains("Debian package \"iptables\""), "{msg}");
    }

    #[test]
    fn clean_state_is_applied_once() {
        let set = default_set();
        let mut fake = Fake::default();
        let outcome = apply(&set, ApplyOptions::default(), &mut fake).unwrap();
        assert_eq!(outcome, Outcome::Applied);
        assert_eq!(fake.restored, vec![set.restore_script(Family::V4)]);
    }

    #[test]
    fn identical_rules_are_left_alone() {
        let set = default_set();
        let (saved, lines) = saved_from(&set);
        let mut fake = Fake {
            saved,
            lines,
            ..Default::default()
        };
        let outcome = apply(&set, ApplyOptions::default(), &mut fake).unwrap();
        assert_eq!(outcome, Outcome::AlreadyInPlace);
        assert!(fake.restored.is_empty());
    }

    #[test]
    fn different_rules_fail_without_reconcile_and_are_replaced_with_it() {
        let set = default_set();
        let (mut saved, mut lines) = saved_from(&set);
        // An earlier run that also excluded 10.0.0.0/8.
        saved = saved.replace("COMMIT", "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN\nCOMMIT");
        lines.push("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN".into());

        let mut fake = Fake {
            saved: saved.clone(),
            lines: lines.clone(),
            ..Default::default()
        };
        let err = apply(&set, ApplyOptions::default(), &mut fake).unwrap_err();
        assert!(matches!(err, CaptureError::Conflict { .. }), "{err}");
        assert!(fake.restored.is_empty());

        let mut fake = Fake {
            saved,
            lines,
            ..Default::default()
        };
        let opts = ApplyOptions {
            reconcile: true,
            ..Default::default()
        };
        assert_eq!(apply(&set, opts, &mut fake).unwrap(), Outcome::Reconciled);
        assert_eq!(fake.restored.len(), 1);
        // The old jumps were deleted and the chains removed before the restore ...
        assert!(
            fake.commands
                .contains(&"-t nat -D OUTPUT -j ISTIO_OUTPUT".to_string())
        );
        assert!(
            fake.commands
                .contains(&"-t nat -X ISTIO_OUTPUT".to_string())
        );
        // ... behind guardrails that were taken down afterwards.
        let first_guard = fake
            .commands
            .iter()
            .position(|c| c == "-t filter -I INPUT 1 -p tcp -j DROP")
            .unwrap();
        let last_unguard = fake
            .commands
            .iter()
            .rposition(|c| c == "-t filter -D INPUT -p tcp -j DROP")
            .unwrap();
        assert!(first_guard < last_unguard);
    }

    #[test]
    fn force_apply_rewrites_rules_that_are_already_in_place() {
        let set = default_set();
        let (saved, lines) = saved_from(&set);
        let mut fake = Fake {
            saved,
            lines,
            ..Default::default()
        };
        let opts = ApplyOptions {
            force_apply: true,
            ..Default::default()
        };
        assert_eq!(apply(&set, opts, &mut fake).unwrap(), Outcome::Reconciled);
        assert_eq!(fake.restored, vec![set.restore_script(Family::V4)]);
        // The jumps were removed first, so the restore does not duplicate them.
        let delete = fake
            .commands
            .iter()
            .position(|c| c == "-t nat -D OUTPUT -j ISTIO_OUTPUT");
        assert!(delete.is_some());
    }

    #[test]
    fn cleanup_only_writes_nothing() {
        let set = default_set();
        let (saved, lines) = saved_from(&set);
        let mut fake = Fake {
            saved,
            lines,
            ..Default::default()
        };
        let opts = ApplyOptions {
            cleanup_only: true,
            ..Default::default()
        };
        assert_eq!(apply(&set, opts, &mut fake).unwrap(), Outcome::CleanedUp);
        assert!(fake.restored.is_empty());
        assert!(
            fake.commands
                .contains(&"-t nat -D PREROUTING -p tcp -j ISTIO_INBOUND".to_string())
        );
        assert!(
            fake.commands
                .contains(&"-t nat -X ISTIO_INBOUND".to_string())
        );
    }
}
