//! Pure rule generation: the chains and rules istio-iptables writes, in its order, and their
//! rendering as `iptables-restore` input.

use std::fmt;

use crate::flags::{Cidr, InboundPorts, InterceptionMode, OutboundRanges, Settings};

pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
pub const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
pub const ISTIO_DIVERT: &str = "ISTIO_DIVERT";
pub const ISTIO_TPROXY: &str = "ISTIO_TPROXY";
pub const ISTIO_DROP: &str = "ISTIO_DROP";

/// Mark the proxy's outbound-to-inbound packets carry in TPROXY mode.
pub const OUTBOUND_MARK: &str = "1338";
/// The agent's DNS proxy port.
pub const DNS_PROXY_PORT: &str = "15053";

/// Built-in chains and standard targets: never declared as chains.
const BUILTIN: &[&str] = &[
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "RETURN",
    "DROP",
];

pub fn is_builtin(chain: &str) -> bool {
    BUILTIN.contains(&chain)
}

/// iptables tables, in the order istio-iptables writes them (alphabetical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Mangle,
    Nat,
    Raw,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Filter, Table::Mangle, Table::Nat, Table::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// IP family: `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// One rule: appended to a chain, or inserted at a 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: String,
    pub insert_at: Option<u32>,
    /// Match and target arguments, e.g. `["-p", "tcp", "-j", "ISTIO_INBOUND"]`.
    pub spec: Vec<String>,
}

impl Rule {
    /// The `iptables-restore` line: `-A CHAIN spec…` or `-I CHAIN N spec…`.
    pub fn line(&self) -> String {
        let mut words = match self.insert_at {
            Some(n) => vec!["-I".to_string(), self.chain.clone(), n.to_string()],
            None => vec!["-A".to_string(), self.chain.clone()],
        };
        words.extend(self.spec.iter().cloned());
        words.join(" ")
    }

    /// The chain this rule jumps to when its spec ends in `-j CHAIN`.
    pub fn jump_target(&self) -> Option<&str> {
        match self.spec.as_slice() {
            [.., j, target] if j == "-j" => Some(target.as_str()),
            _ => None,
        }
    }

    /// Arguments for `iptables -t TABLE <op> CHAIN spec…` (used for -C and -D).
    pub fn command(&self, op: &str) -> Vec<String> {
        let mut args = vec![
            "-t".to_string(),
            self.table.name().to_string(),
            op.to_string(),
            self.chain.clone(),
        ];
        args.extend(self.spec.iter().cloned());
        args
    }
}

/// Where the family-specific address goes in a rule template.
const IP: &str = "\u{0}IP";

/// Environment facts the rules depend on (found at run time, fixed in tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// Write ip6tables rules too (the pod has IPv6).
    pub ipv6: bool,
    /// resolv.conf nameservers, for DNS capture without --capture-all-dns.
    pub dns_servers_v4: Vec<String>,
    pub dns_servers_v6: Vec<String>,
}

/// The rules for both families. `v6` is empty when IPv6 is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub v4: Vec<Rule>,
    pub v6: Vec<Rule>,
    pub ipv6: bool,
}

impl RuleSet {
    pub fn rules(&self, family: Family) -> &[Rule] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Families that get rules.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// The `iptables-restore --noflush` input for one family.
    pub fn restore_script(&self, family: Family) -> String {
        restore_script(self.rules(family))
    }
}

/// Chains to declare in one table: the chains that get rules, in the order they first get
/// one, then chains only jumped to.
pub fn declared_chains(rules: &[Rule], table: Table) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    let mut add = |c: &str| {
        if !is_builtin(c) && !chains.iter().any(|x| x == c) {
            chains.push(c.to_string());
        }
    };
    for r in rules.iter().filter(|r| r.table == table) {
        add(&r.chain);
    }
    for r in rules.iter().filter(|r| r.table == table) {
        if let Some(t) = r.jump_target() {
            add(t);
        }
    }
    chains
}

/// Renders rules as `iptables-restore` input: per table `*table`, `:CHAIN - [0:0]`
/// declarations, the rules, `COMMIT`. Tables without rules are left out.
pub fn restore_script(rules: &[Rule]) -> String {
    let mut out = String::new();
    for table in Table::ALL {
        if !rules.iter().any(|r| r.table == table) {
            continue;
        }
        out.push('*');
        out.push_str(table.name());
        out.push('\n');
        for chain in declared_chains(rules, table) {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for r in rules.iter().filter(|r| r.table == table) {
            out.push_str(&r.line());
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

struct Builder {
    v4: Vec<Rule>,
    v6: Vec<Rule>,
    ipv6: bool,
}

fn make(table: Table, chain: &str, insert_at: Option<u32>, spec: &[&str], ip: &str) -> Rule {
    Rule {
        table,
        chain: chain.to_string(),
        insert_at,
        spec: spec
            .iter()
            .map(|s| {
                if *s == IP {
                    ip.to_string()
                } else {
                    s.to_string()
                }
            })
            .collect(),
    }
}

impl Builder {
    fn append_v4(&mut self, table: Table, chain: &str, spec: &[&str]) {
        self.v4.push(make(table, chain, None, spec, ""));
    }

    fn append_v6(&mut self, table: Table, chain: &str, spec: &[&str]) {
        if self.ipv6 {
            self.v6.push(make(table, chain, None, spec, ""));
        }
    }

    fn append(&mut self, table: Table, chain: &str, spec: &[&str]) {
        self.append_v4(table, chain, spec);
        self.append_v6(table, chain, spec);
    }

    /// Appends to both families with `IP` replaced by the family's own address.
    fn append_versioned(&mut self, v4: &str, v6: &str, table: Table, chain: &str, spec: &[&str]) {
        self.v4.push(make(table, chain, None, spec, v4));
        if self.ipv6 {
            self.v6.push(make(table, chain, None, spec, v6));
        }
    }

    fn insert_v4(&mut self, table: Table, chain: &str, pos: u32, spec: &[&str]) {
        self.v4.push(make(table, chain, Some(pos), spec, ""));
    }

    fn insert_v6(&mut self, table: Table, chain: &str, pos: u32, spec: &[&str]) {
        if self.ipv6 {
            self.v6.push(make(table, chain, Some(pos), spec, ""));
        }
    }

    fn insert(&mut self, table: Table, chain: &str, pos: u32, spec: &[&str]) {
        self.insert_v4(table, chain, pos, spec);
        self.insert_v6(table, chain, pos, spec);
    }
}

/// Builds the rules istio-iptables writes for these settings, in the order it writes them.
pub fn build(s: &Settings, host: &Host) -> RuleSet {
    use Table::{Mangle, Nat};

    let mut b = Builder {
        v4: Vec::new(),
        v6: Vec::new(),
        ipv6: host.ipv6,
    };
    let tproxy = s.mode == InterceptionMode::Tproxy;
    let loopback = s.loopback_cidr.to_string();
    let lo4 = loopback.as_str();
    let lo6 = "::1/128";
    let tunnel = s.inbound_tunnel_port.as_str();
    let mark = s.tproxy_mark.to_string();
    let mark = mark.as_str();

    let (include_v4, include_v6) = match &s.outbound_include {
        OutboundRanges::All => (None, None),
        OutboundRanges::Only(cidrs) => (
            Some(
                cidrs
                    .iter()
                    .filter(|c| c.is_v4())
                    .copied()
                    .collect::<Vec<Cidr>>(),
            ),
            Some(
                cidrs
                    .iter()
                    .filter(|c| !c.is_v4())
                    .copied()
                    .collect::<Vec<Cidr>>(),
            ),
        ),
    };
    // When the include list names a loopback range, app traffic over lo is captured too.
    let include_has_loopback = match &s.outbound_include {
        OutboundRanges::All => false,
        OutboundRanges::Only(cidrs) => cidrs.iter().any(|c| c.addr.is_loopback()),
    };

    let mut redirect_dns = s.redirect_dns;
    if redirect_dns
        && !s.capture_all_dns
        && host.dns_servers_v4.is_empty()
        && host.dns_servers_v6.is_empty()
    {
        tracing::warn!(
            "REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled."
        );
        redirect_dns = false;
    }

    // Interfaces that are never captured.
    for nic in &s.exclude_interfaces {
        b.append(Nat, "PREROUTING", &["-i", nic, "-j", "RETURN"]);
        b.append(Nat, "OUTPUT", &["-o", nic, "-j", "RETURN"]);
    }
    if tproxy {
        for nic in &s.exclude_interfaces {
            b.append(Mangle, "PREROUTING", &["-i", nic, "-j", "RETURN"]);
            b.append(Mangle, "OUTPUT", &["-o", nic, "-j", "RETURN"]);
        }
    }

    // Virtual interfaces skip inbound handling.
    for nic in &s.virtual_interfaces {
        b.insert(Nat, "PREROUTING", 1, &["-i", nic, "-j", "RETURN"]);
    }

    if s.drop_invalid {
        b.append(
            Mangle,
            "PREROUTING",
            &["-m", "conntrack", "--ctstate", "INVALID", "-j", ISTIO_DROP],
        );
        b.append(Mangle, ISTIO_DROP, &["-j", "DROP"]);
    }

    b.append(
        Nat,
        ISTIO_INBOUND,
        &["-p", "tcp", "--dport", tunnel, "-j", "RETURN"],
    );
    b.append(
        Nat,
        ISTIO_REDIRECT,
        &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &s.proxy_port],
    );
    b.append(
        Nat,
        ISTIO_IN_REDIRECT,
        &[
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &s.inbound_capture_port,
        ],
    );

    // Inbound.
    if s.inbound_ports != InboundPorts::None {
        let table = if tproxy {
            b.append(Mangle, ISTIO_DIVERT, &["-j", "MARK", "--set-mark", mark]);
            b.append(Mangle, ISTIO_DIVERT, &["-j", "ACCEPT"]);
            let tproxy_mark = format!("{mark}/0xffffffff");
            b.append_versioned(
                lo4,
                lo6,
                Mangle,
                ISTIO_TPROXY,
                &[
                    "!",
                    "-d",
                    IP,
                    "-p",
                    "tcp",
                    "-j",
                    "TPROXY",
                    "--tproxy-mark",
                    &tproxy_mark,
                    "--on-port",
                    &s.inbound_capture_port,
                ],
            );
            Mangle
        } else {
            Nat
        };
        b.append(table, "PREROUTING", &["-p", "tcp", "-j", ISTIO_INBOUND]);
        match &s.inbound_ports {
            InboundPorts::All => {
                for port in &s.inbound_exclude_ports {
                    b.append(
                        table,
                        ISTIO_INBOUND,
                        &["-p", "tcp", "--dport", port, "-j", "RETURN"],
                    );
                }
                if tproxy {
                    b.append(
                        Mangle,
                        ISTIO_INBOUND,
                        &[
                            "-p",
                            "tcp",
                            "-m",
                            "conntrack",
                            "--ctstate",
                            "RELATED,ESTABLISHED",
                            "-j",
                            ISTIO_DIVERT,
                        ],
                    );
                    b.append(Mangle, ISTIO_INBOUND, &["-p", "tcp", "-j", ISTIO_TPROXY]);
                } else {
                    b.append(Nat, ISTIO_INBOUND, &["-p", "tcp", "-j", ISTIO_IN_REDIRECT]);
                }
            }
            InboundPorts::Only(ports) => {
                for port in ports {
                    if tproxy {
                        b.append(
                            Mangle,
                            ISTIO_INBOUND,
                            &[
                                "-p",
                                "tcp",
                                "--dport",
                                port,
                                "-m",
                                "conntrack",
                                "--ctstate",
                                "RELATED,ESTABLISHED",
                                "-j",
                                ISTIO_DIVERT,
                            ],
                        );
                        b.append(
                            Mangle,
                            ISTIO_INBOUND,
                            &["-p", "tcp", "--dport", port, "-j", ISTIO_TPROXY],
                        );
                    } else {
                        b.append(
                            Nat,
                            ISTIO_INBOUND,
                            &["-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT],
                        );
                    }
                }
            }
            InboundPorts::None => {}
        }
    }

    // Outbound. UDP is only ever diverted by the DNS rules.
    b.append(Nat, "OUTPUT", &["-j", ISTIO_OUTPUT]);
    for port in &s.outbound_ports_exclude {
        b.append(
            Nat,
            ISTIO_OUTPUT,
            &["-p", "tcp", "--dport", port, "-j", "RETURN"],
        );
        b.append(
            Nat,
            ISTIO_OUTPUT,
            &["-p", "udp", "--dport", port, "-j", "RETURN"],
        );
    }
    // The inbound proxy calls the app from 127.0.0.6 (::6).
    b.append_versioned(
        "127.0.0.6/32",
        "::6/128",
        Nat,
        ISTIO_OUTPUT,
        &["-o", "lo", "-s", IP, "-j", "RETURN"],
    );

    let dns_and_tunnel = format!("53,{tunnel}");
    for uid in &s.proxy_uids {
        // The proxy calling its own pod IP (app -> VIP -> outbound -> inbound) goes to inbound.
        if redirect_dns {
            b.append_versioned(
                lo4,
                lo6,
                Nat,
                ISTIO_OUTPUT,
                &[
                    "-o",
                    "lo",
                    "!",
                    "-d",
                    IP,
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "!",
                    "--dports",
                    &dns_and_tunnel,
                    "-m",
                    "owner",
                    "--uid-owner",
                    uid,
                    "-j",
                    ISTIO_IN_REDIRECT,
                ],
            );
        } else {
            b.append_versioned(
                lo4,
                lo6,
                Nat,
                ISTIO_OUTPUT,
                &[
                    "-o",
                    "lo",
                    "!",
                    "-d",
                    IP,
                    "-p",
                    "tcp",
                    "!",
                    "--dport",
                    tunnel,
                    "-m",
                    "owner",
                    "--uid-owner",
                    uid,
                    "-j",
                    ISTIO_IN_REDIRECT,
                ],
            );
        }
        // Other processes talking to themselves over lo are left alone.
        if !include_has_loopback {
            if redirect_dns {
                b.append(
                    Nat,
                    ISTIO_OUTPUT,
                    &[
                        "-o",
                        "lo",
                        "-p",
                        "tcp",
                        "!",
                        "--dport",
                        "53",
                        "-m",
                        "owner",
                        "!",
                        "--uid-owner",
                        uid,
                        "-j",
                        "RETURN",
                    ],
                );
            } else {
                b.append(
                    Nat,
                    ISTIO_OUTPUT,
                    &[
                        "-o",
                        "lo",
                        "-m",
                        "owner",
                        "!",
                        "--uid-owner",
                        uid,
                        "-j",
                        "RETURN",
                    ],
                );
            }
        }
        // The proxy's own traffic is never captured (no loops).
        b.append(
            Nat,
            ISTIO_OUTPUT,
            &["-m", "owner", "--uid-owner", uid, "-j", "RETURN"],
        );
    }

    for gid in &s.proxy_gids {
        b.append_versioned(
            lo4,
            lo6,
            Nat,
            ISTIO_OUTPUT,
            &[
                "-o",
                "lo",
                "!",
                "-d",
                IP,
                "-p",
                "tcp",
                "!",
                "--dport",
                tunnel,
                "-m",
                "owner",
                "--gid-owner",
                gid,
                "-j",
                ISTIO_IN_REDIRECT,
            ],
        );
        if !include_has_loopback {
            if redirect_dns {
                b.append(
                    Nat,
                    ISTIO_OUTPUT,
                    &[
                        "-o",
                        "lo",
                        "-p",
                        "tcp",
                        "!",
                        "--dport",
                        "53",
                        "-m",
                        "owner",
                        "!",
                        "--gid-owner",
                        gid,
                        "-j",
                        "RETURN",
                    ],
                );
            } else {
                b.append(
                    Nat,
                    ISTIO_OUTPUT,
                    &[
                        "-o",
                        "lo",
                        "-m",
                        "owner",
                        "!",
                        "--gid-owner",
                        gid,
                        "-j",
                        "RETURN",
                    ],
                );
            }
        }
        b.append(
            Nat,
            ISTIO_OUTPUT,
            &["-m", "owner", "--gid-owner", gid, "-j", "RETURN"],
        );
    }

    // Owner-group filter: either RETURN for each excluded group, or one rule that RETURNs
    // traffic from every group not in the include list.
    if s.owner_groups.except {
        for g in &s.owner_groups.groups {
            b.append(
                Nat,
                ISTIO_OUTPUT,
                &["-m", "owner", "--gid-owner", g, "-j", "RETURN"],
            );
        }
    } else {
        let mut spec: Vec<&str> = Vec::new();
        for g in &s.owner_groups.groups {
            spec.extend(["-m", "owner", "!", "--gid-owner", g.as_str()]);
        }
        spec.extend(["-j", "RETURN"]);
        b.append(Nat, ISTIO_OUTPUT, &spec);
    }

    if redirect_dns {
        dns_rules(&mut b, s, host);
    }

    // Envoy-aware apps and container-to-container traffic use localhost.
    b.append_versioned(lo4, lo6, Nat, ISTIO_OUTPUT, &["-d", IP, "-j", "RETURN"]);
    for cidr in s.outbound_exclude.iter().filter(|c| c.is_v4()) {
        b.append_v4(
            Nat,
            ISTIO_OUTPUT,
            &["-d", &cidr.to_string(), "-j", "RETURN"],
        );
    }
    for cidr in s.outbound_exclude.iter().filter(|c| !c.is_v4()) {
        b.append_v6(
            Nat,
            ISTIO_OUTPUT,
            &["-d", &cidr.to_string(), "-j", "RETURN"],
        );
    }
    for port in &s.outbound_ports_include {
        b.append(
            Nat,
            ISTIO_OUTPUT,
            &["-p", "tcp", "--dport", port, "-j", ISTIO_REDIRECT],
        );
    }
    outbound_include(&mut b, s, include_v4.as_deref(), Family::V4);
    outbound_include(&mut b, s, include_v6.as_deref(), Family::V6);

    if tproxy {
        // Keep the mark set by the proxy's original_src filter on the connection.
        b.append(
            Mangle,
            "PREROUTING",
            &[
                "-p",
                "tcp",
                "-m",
                "mark",
                "--mark",
                mark,
                "-j",
                "CONNMARK",
                "--save-mark",
            ],
        );
        b.append(
            Mangle,
            "OUTPUT",
            &[
                "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN",
            ],
        );
        for uid in &s.proxy_uids {
            b.append_versioned(
                lo4,
                lo6,
                Mangle,
                "OUTPUT",
                &[
                    "!",
                    "-d",
                    IP,
                    "-p",
                    "tcp",
                    "-o",
                    "lo",
                    "-m",
                    "owner",
                    "--uid-owner",
                    uid,
                    "-j",
                    "MARK",
                    "--set-mark",
                    OUTBOUND_MARK,
                ],
            );
        }
        for gid in &s.proxy_gids {
            b.append_versioned(
                lo4,
                lo6,
                Mangle,
                "OUTPUT",
                &[
                    "!",
                    "-d",
                    IP,
                    "-p",
                    "tcp",
                    "-o",
                    "lo",
                    "-m",
                    "owner",
                    "--gid-owner",
                    gid,
                    "-j",
                    "MARK",
                    "--set-mark",
                    OUTBOUND_MARK,
                ],
            );
        }
        b.append(
            Mangle,
            "OUTPUT",
            &[
                "-p",
                "tcp",
                "-m",
                "connmark",
                "--mark",
                mark,
                "-j",
                "CONNMARK",
                "--restore-mark",
            ],
        );
        b.insert(
            Mangle,
            ISTIO_INBOUND,
            1,
            &["-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN"],
        );
        b.insert_v4(
            Mangle,
            ISTIO_INBOUND,
            2,
            &[
                "-p",
                "tcp",
                "-s",
                "127.0.0.6/32",
                "-i",
                "lo",
                "-j",
                "RETURN",
            ],
        );
        b.insert_v6(
            Mangle,
            ISTIO_INBOUND,
            2,
            &["-p", "tcp", "-s", "::6/128", "-i", "lo", "-j", "RETURN"],
        );
        b.insert(
            Mangle,
            ISTIO_INBOUND,
            3,
            &[
                "-p",
                "tcp",
                "-i",
                "lo",
                "-m",
                "mark",
                "!",
                "--mark",
                OUTBOUND_MARK,
                "-j",
                "RETURN",
            ],
        );
    }

    RuleSet {
        v4: b.v4,
        v6: b.v6,
        ipv6: host.ipv6,
    }
}

fn outbound_include(b: &mut Builder, s: &Settings, include: Option<&[Cidr]>, family: Family) {
    let append = |b: &mut Builder, spec: &[&str]| match family {
        Family::V4 => b.append_v4(Table::Nat, ISTIO_OUTPUT, spec),
        Family::V6 => b.append_v6(Table::Nat, ISTIO_OUTPUT, spec),
    };
    let insert = |b: &mut Builder, spec: &[&str]| match family {
        Family::V4 => b.insert_v4(Table::Nat, "PREROUTING", 1, spec),
        Family::V6 => b.insert_v6(Table::Nat, "PREROUTING", 1, spec),
    };
    match include {
        None => {
            append(b, &["-j", ISTIO_REDIRECT]);
            for nic in &s.virtual_interfaces {
                insert(b, &["-i", nic, "-j", ISTIO_REDIRECT]);
            }
        }
        Some(cidrs) => {
            for cidr in cidrs {
                let cidr = cidr.to_string();
                for nic in &s.virtual_interfaces {
                    insert(b, &["-i", nic, "-d", &cidr, "-j", ISTIO_REDIRECT]);
                }
                append(b, &["-d", &cidr, "-j", ISTIO_REDIRECT]);
            }
        }
    }
}

/// DNS capture: TCP/UDP port 53 to the agent on 15053, with the proxy's own lookups and
/// the app's lookups in separate conntrack zones.
fn dns_rules(b: &mut Builder, s: &Settings, host: &Host) {
    use Table::{Nat, Raw};
    let all = s.capture_all_dns;

    b.append(Raw, "OUTPUT", &["-j", ISTIO_OUTPUT_DNS]);
    if all || !host.dns_servers_v4.is_empty() {
        b.append_v4(Nat, ISTIO_OUTPUT, &["-j", ISTIO_OUTPUT_DNS]);
    }
    if all || !host.dns_servers_v6.is_empty() {
        b.append_v6(Nat, ISTIO_OUTPUT, &["-j", ISTIO_OUTPUT_DNS]);
    }

    if all {
        b.append(
            Nat,
            ISTIO_OUTPUT_DNS,
            &[
                "-p",
                "tcp",
                "--dport",
                "53",
                "-j",
                "REDIRECT",
                "--to-ports",
                DNS_PROXY_PORT,
            ],
        );
    } else {
        for server in &host.dns_servers_v4 {
            let dst = format!("{server}/32");
            b.append_v4(
                Nat,
                ISTIO_OUTPUT_DNS,
                &[
                    "-p",
                    "tcp",
                    "--dport",
                    "53",
                    "-d",
                    &dst,
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    DNS_PROXY_PORT,
                ],
            );
        }
        for server in &host.dns_servers_v6 {
            let dst = format!("{server}/128");
            b.append_v6(
                Nat,
                ISTIO_OUTPUT_DNS,
                &[
                    "-p",
                    "tcp",
                    "--dport",
                    "53",
                    "-d",
                    &dst,
                    "-j",
                    "REDIRECT",
                    "--to-ports",
                    DNS_PROXY_PORT,
                ],
            );
        }
    }

    if all {
        b.append(
            Nat,
            ISTIO_OUTPUT_DNS,
            &[
                "-p",
                "udp",
                "--dport",
                "53",
                "-j",
                "REDIRECT",
                "--to-port",
                DNS_PROXY_PORT,
            ],
        );
    } else {
        for server in &host.dns_servers_v4 {
            let dst = format!("{server}/32");
            b.append_v4(
                Nat,
                ISTIO_OUTPUT_DNS,
                &[
                    "-p",
                    "udp",
                    "--dport",
                    "53",
                    "-d",
                    &dst,
                    "-j",
                    "REDIRECT",
                    "--to-port",
                    DNS_PROXY_PORT,
                ],
            );
        }
        for server in &host.dns_servers_v6 {
            let dst = format!("{server}/128");
            b.append_v6(
                Nat,
                ISTIO_OUTPUT_DNS,
                &[
                    "-p",
                    "udp",
                    "--dport",
                    "53",
                    "-d",
                    &dst,
                    "-j",
                    "REDIRECT",
                    "--to-port",
                    DNS_PROXY_PORT,
                ],
            );
        }
    }

    // Conntrack zones: proxy <-> upstream resolvers in zone 1, app <-> proxy in zone 2.
    for (owner, ids) in [
        ("--uid-owner", &s.proxy_uids),
        ("--gid-owner", &s.proxy_gids),
    ] {
        for id in ids {
            b.append(
                Raw,
                ISTIO_OUTPUT_DNS,
                &[
                    "-p", "udp", "--dport", "53", "-m", "owner", owner, id, "-j", "CT", "--zone",
                    "1",
                ],
            );
            b.append(
                Raw,
                ISTIO_OUTPUT_DNS,
                &[
                    "-p",
                    "udp",
                    "--sport",
                    DNS_PROXY_PORT,
                    "-m",
                    "owner",
                    owner,
                    id,
                    "-j",
                    "CT",
                    "--zone",
                    "2",
                ],
            );
        }
    }
    if all {
        b.append(Raw, "PREROUTING", &["-j", ISTIO_INBOUND]);
        b.append(
            Raw,
            ISTIO_OUTPUT_DNS,
            &["-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2"],
        );
        b.append(
            Raw,
            ISTIO_INBOUND,
            &["-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1"],
        );
    } else {
        if !host.dns_servers_v4.is_empty() {
            b.append_v4(Raw, "PREROUTING", &["-j", ISTIO_INBOUND]);
        }
        for server in &host.dns_servers_v4 {
            let addr = format!("{server}/32");
            b.append_v4(
                Raw,
                ISTIO_OUTPUT_DNS,
                &[
                    "-p", "udp", "--dport", "53", "-d", &addr, "-j", "CT", "--zone", "2",
                ],
            );
            b.append_v4(
                Raw,
                ISTIO_INBOUND,
                &[
                    "-p", "udp", "--sport", "53", "-s", &addr, "-j", "CT", "--zone", "1",
                ],
            );
        }
        if !host.dns_servers_v6.is_empty() {
            b.append_v6(Raw, "PREROUTING", &["-j", ISTIO_INBOUND]);
        }
        for server in &host.dns_servers_v6 {
            let addr = format!("{server}/128");
            b.append_v6(
                Raw,
                ISTIO_OUTPUT_DNS,
                &[
                    "-p", "udp", "--dport", "53", "-d", &addr, "-j", "CT", "--zone", "2",
                ],
            );
            b.append_v6(
                Raw,
                ISTIO_INBOUND,
                &[
                    "-p", "udp", "--sport", "53", "-s", &addr, "-j", "CT", "--zone", "1",
                ],
            );
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
