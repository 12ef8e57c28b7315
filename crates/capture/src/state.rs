//! Reading `iptables-save` output: which chains exist and which rules they hold.

use std::collections::BTreeMap;

/// One table from `iptables-save`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Chains in declaration order (built-in and user chains).
    pub chains: Vec<String>,
    /// Rules in order: (chain, arguments after `-A CHAIN`).
    pub rules: Vec<(String, Vec<String>)>,
}

/// The tables of one family, keyed by table name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedState {
    pub tables: BTreeMap<String, SavedTable>,
}

/// Splits a rule line into words; iptables-save double-quotes words with spaces.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn jump_target(spec: &[String]) -> Option<&str> {
    spec.iter()
        .position(|w| w == "-j" || w == "--jump")
        .and_then(|i| spec.get(i + 1))
        .map(String::as_str)
}

impl SavedState {
    pub fn parse(text: &str) -> SavedState {
        let mut state = SavedState::default();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                let name = name.trim().to_string();
                state.tables.entry(name.clone()).or_default();
                current = Some(name);
                continue;
            }
            let Some(table) = current.as_ref().and_then(|t| state.tables.get_mut(t)) else {
                continue;
            };
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(chain) = decl.split_whitespace().next() {
                    table.chains.push(chain.to_string());
                }
                continue;
            }
            let mut words = split_words(line);
            if words.len() >= 2 && (words[0] == "-A" || words[0] == "--append") {
                let spec = words.split_off(2);
                table.rules.push((words[1].clone(), spec));
            }
        }
        state
    }

    pub fn table(&self, name: &str) -> Option<&SavedTable> {
        self.tables.get(name)
    }

    pub fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.table(table)
            .is_some_and(|t| t.chains.iter().any(|c| c == chain))
    }

    pub fn rule_count(&self, table: &str, chain: &str) -> usize {
        self.table(table)
            .map_or(0, |t| t.rules.iter().filter(|(c, _)| c == chain).count())
    }

    /// `ISTIO_*` chains per table.
    pub fn istio_chains(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, table) in &self.tables {
            for chain in table.chains.iter().filter(|c| c.starts_with("ISTIO_")) {
                out.push((name.clone(), chain.clone()));
            }
        }
        out
    }

    /// Rules in non-Istio chains that jump into an `ISTIO_*` chain: (table, chain, spec).
    pub fn istio_jumps(&self) -> Vec<(String, String, Vec<String>)> {
        let mut out = Vec::new();
        for (name, table) in &self.tables {
            for (chain, spec) in &table.rules {
                if chain.starts_with("ISTIO_") {
                    continue;
                }
                if jump_target(spec).is_some_and(|t| t.starts_with("ISTIO_")) {
                    out.push((name.clone(), chain.clone(), spec.clone()));
                }
            }
        }
        out
    }

    /// Anything an earlier istio-iptables run leaves behind.
    pub fn has_istio_residue(&self) -> bool {
        !self.istio_chains().is_empty() || !self.istio_jumps().is_empty()
    }

    /// The rule lines of one table as `-A CHAIN spec`, in save order (for logs and tests).
    pub fn rule_lines(&self, table: &str) -> Vec<String> {
        self.table(table).map_or_else(Vec::new, |t| {
            t.rules
                .iter()
                .map(|(chain, spec)| format!("-A {chain} {}", spec.join(" ")))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -m comment --comment \"keep this one\" -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
";

    #[test]
    fn parses_chains_rules_and_istio_leftovers() {
        let s = SavedState::parse(SAVE);
        assert!(s.has_chain("nat", "ISTIO_INBOUND"));
        assert!(!s.has_chain("raw", "ISTIO_INBOUND"));
        assert_eq!(s.rule_count("nat", "ISTIO_INBOUND"), 1);
        assert_eq!(s.rule_count("raw", "OUTPUT"), 0);
        assert_eq!(
            s.istio_chains(),
            vec![("nat".to_string(), "ISTIO_INBOUND".to_string())]
        );
        let jumps = s.istio_jumps();
        assert_eq!(jumps.len(), 1);
        assert_eq!(jumps[0].1, "PREROUTING");
        assert_eq!(jumps[0].2, vec!["-p", "tcp", "-j", "ISTIO_INBOUND"]);
        assert!(s.has_istio_residue());
        assert_eq!(
            s.rule_lines("nat")[1],
            "-A OUTPUT -m comment --comment keep this one -j RETURN"
        );
    }

    #[test]
    fn quoted_words_stay_whole() {
        assert_eq!(
            split_words(r#"-m comment --comment "a \"b\" c" -j RETURN"#),
            vec!["-m", "comment", "--comment", "a \"b\" c", "-j", "RETURN"]
        );
    }

    #[test]
    fn empty_tables_are_no_residue() {
        let s = SavedState::parse("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n");
        assert!(!s.has_istio_residue());
    }
}
