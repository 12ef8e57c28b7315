use clap::Parser;

use super::*;
use crate::Cli;
use crate::flags::Lookup;

/// Environment variables for a test; nothing else is set and no user exists.
struct Env(Vec<(&'static str, &'static str)>);

impl Lookup for Env {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
    fn user_uid(&self, _: &str) -> Option<u32> {
        None
    }
}

/// The args Istio's injector gives istio-init (mesh.md test case 5).
const INJECTED: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
];

/// mesh.md §2.2, verbatim: what istio-iptables writes for the injected args.
const SPEC_2_2: &str = "* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT";

fn settings_with(args: &[&str], env: Env) -> Settings {
    let argv = std::iter::once("istio-iptables").chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).expect("flags parse");
    cli.args.resolve(&env).expect("flags resolve")
}

/// The injected args followed by `extra` (a later flag overrides an earlier one).
fn injected_plus<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    INJECTED.iter().chain(extra).copied().collect()
}

fn script(args: &[&str], host: &Host) -> String {
    build(&settings_with(args, Env(vec![])), host).restore_script(Family::V4)
}

/// The rule lines (`-A`/`-I`) of one table in a restore script.
fn table_rules(script: &str, table: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in script.lines() {
        if let Some(t) = line.strip_prefix('*') {
            inside = t == table;
        } else if inside && (line.starts_with("-A ") || line.starts_with("-I ")) {
            out.push(line.to_string());
        }
    }
    out
}

fn table_chains(script: &str, table: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in script.lines() {
        if let Some(t) = line.strip_prefix('*') {
            inside = t == table;
        } else if inside && let Some(decl) = line.strip_prefix(':') {
            out.push(decl.split(' ').next().unwrap_or_default().to_string());
        }
    }
    out
}

fn spec_rules() -> Vec<String> {
    SPEC_2_2
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect()
}

/// `spec_rules()` with `remove` lines taken out at `at` and `insert` put there.
fn spliced(at: usize, remove: usize, insert: &[&str]) -> Vec<String> {
    let mut rules = spec_rules();
    rules.splice(at..at + remove, insert.iter().map(|s| s.to_string()));
    rules
}

#[test]
fn injected_args_give_exactly_the_spec_rules() {
    let got = script(INJECTED, &Host::default());
    // Same content as §2.2, written as iptables-restore declarations.
    let expected: String = SPEC_2_2
        .lines()
        .map(|l| {
            if l == "* nat" {
                "*nat".to_string()
            } else if let Some(chain) = l.strip_prefix("-N ") {
                format!(":{chain} - [0:0]")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_eq!(got, expected);
    assert_eq!(table_chains(&got, "nat").len(), 4);
    assert_eq!(table_rules(&got, "nat").len(), 18);
    assert!(!got.contains("*mangle") && !got.contains("*raw") && !got.contains("*filter"));
}

#[test]
fn inbound_port_list_replaces_the_wildcard_and_ignores_exclusions() {
    let got = script(&injected_plus(&["-b", "80,8080"]), &Host::default());
    let expected = spliced(
        4,
        4,
        &[
            "-A ISTIO_INBOUND -p tcp --dport 80 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
        ],
    );
    assert_eq!(table_rules(&got, "nat"), expected);
}

#[test]
fn empty_inbound_ports_means_no_prerouting_jump() {
    let got = script(&injected_plus(&["-b", ""]), &Host::default());
    assert_eq!(table_rules(&got, "nat"), spliced(3, 5, &[]));
    assert!(!got.contains("PREROUTING"));
}

#[test]
fn excluded_outbound_ports_come_first_for_tcp_and_udp() {
    // Test case 5: the injector adds -o after -d for excludeOutboundPorts.
    let got = script(&injected_plus(&["-o", "5432"]), &Host::default());
    let expected = spliced(
        9,
        0,
        &[
            "-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN",
            "-A ISTIO_OUTPUT -p udp --dport 5432 -j RETURN",
        ],
    );
    assert_eq!(table_rules(&got, "nat"), expected);
}

#[test]
fn excluded_cidr_returns_before_the_final_redirect() {
    let got = script(&injected_plus(&["-x", "10.0.0.0/8"]), &Host::default());
    let expected = spliced(17, 0, &["-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN"]);
    assert_eq!(table_rules(&got, "nat"), expected);
}

#[test]
fn included_cidr_limits_the_final_redirect() {
    let got = script(&injected_plus(&["-i", "10.0.0.0/8"]), &Host::default());
    let expected = spliced(17, 1, &["-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"]);
    assert_eq!(table_rules(&got, "nat"), expected);

    let got = script(&injected_plus(&["-i", ""]), &Host::default());
    assert_eq!(table_rules(&got, "nat"), spliced(17, 1, &[]));
}

#[test]
fn included_outbound_ports_come_after_exclusions_and_before_cidrs() {
    let got = script(
        &injected_plus(&["-x", "10.0.0.0/8", "-q", "9000,9001"]),
        &Host::default(),
    );
    let expected = spliced(
        17,
        0,
        &[
            "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN",
            "-A ISTIO_OUTPUT -p tcp --dport 9000 -j ISTIO_REDIRECT",
            "-A ISTIO_OUTPUT -p tcp --dport 9001 -j ISTIO_REDIRECT",
        ],
    );
    assert_eq!(table_rules(&got, "nat"), expected);
}

#[test]
fn virtual_interfaces_are_inserted_into_prerouting() {
    let got = script(&injected_plus(&["-k", "eth1"]), &Host::default());
    let mut expected = spec_rules();
    expected.insert(0, "-I PREROUTING 1 -i eth1 -j RETURN".into());
    expected.push("-I PREROUTING 1 -i eth1 -j ISTIO_REDIRECT".into());
    assert_eq!(table_rules(&got, "nat"), expected);

    let got = script(
        &injected_plus(&["-k", "eth1", "-i", "10.0.0.0/8"]),
        &Host::default(),
    );
    let rules = table_rules(&got, "nat");
    assert_eq!(
        &rules[rules.len() - 2..],
        [
            "-I PREROUTING 1 -i eth1 -d 10.0.0.0/8 -j ISTIO_REDIRECT",
            "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT",
        ]
    );
}

#[test]
fn excluded_interfaces_return_first() {
    let got = script(&injected_plus(&["-c", "nic"]), &Host::default());
    let expected = spliced(
        0,
        0,
        &[
            "-A PREROUTING -i nic -j RETURN",
            "-A OUTPUT -o nic -j RETURN",
        ],
    );
    assert_eq!(table_rules(&got, "nat"), expected);
}

#[test]
fn each_proxy_uid_and_gid_gets_its_three_rules() {
    let got = script(
        &injected_plus(&["-u", "3,4", "-g", "1,2"]),
        &Host::default(),
    );
    let mut middle = Vec::new();
    for uid in ["3", "4"] {
        middle.push(format!("-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT"));
        middle.push(format!(
            "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"
        ));
        middle.push(format!(
            "-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN"
        ));
    }
    for gid in ["1", "2"] {
        middle.push(format!("-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT"));
        middle.push(format!(
            "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN"
        ));
        middle.push(format!(
            "-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN"
        ));
    }
    let middle: Vec<&str> = middle.iter().map(String::as_str).collect();
    assert_eq!(table_rules(&got, "nat"), spliced(10, 6, &middle));
}

#[test]
fn gid_defaults_to_the_uid() {
    let got = script(&["-u", "2000", "-i", "*", "-b", "*"], &Host::default());
    assert!(got.contains("-m owner --uid-owner 2000 -j RETURN\n"));
    assert!(got.contains("-m owner --gid-owner 2000 -j RETURN\n"));
}

#[test]
fn loopback_include_range_captures_lo_traffic_too() {
    let got = script(&injected_plus(&["-i", "127.1.2.3/32"]), &Host::default());
    let rules = table_rules(&got, "nat");
    assert!(!rules.iter().any(|r| r.contains("! --uid-owner")));
    assert!(!rules.iter().any(|r| r.contains("! --gid-owner")));
    assert_eq!(
        rules.last().map(String::as_str),
        Some("-A ISTIO_OUTPUT -d 127.1.2.3/32 -j ISTIO_REDIRECT")
    );
}

#[test]
fn dns_capture_for_resolv_conf_servers() {
    let host = Host {
        dns_servers_v4: vec!["10.96.0.10".into()],
        ..Host::default()
    };
    let got = script(&injected_plus(&["--redirect-dns"]), &host);
    let middle = [
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS",
        "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 15053",
        "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053",
    ];
    assert_eq!(table_rules(&got, "nat"), spliced(10, 6, &middle));
    assert_eq!(
        table_chains(&got, "nat"),
        [
            "ISTIO_INBOUND",
            "ISTIO_REDIRECT",
            "ISTIO_IN_REDIRECT",
            "ISTIO_OUTPUT",
            "ISTIO_OUTPUT_DNS"
        ]
    );
    assert_eq!(
        table_chains(&got, "raw"),
        ["ISTIO_OUTPUT_DNS", "ISTIO_INBOUND"]
    );
    assert_eq!(
        table_rules(&got, "raw"),
        [
            "-A OUTPUT -j ISTIO_OUTPUT_DNS",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1",
            "-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1337 -j CT --zone 1",
            "-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2",
            "-A PREROUTING -j ISTIO_INBOUND",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j CT --zone 2",
            "-A ISTIO_INBOUND -p udp --sport 53 -s 10.96.0.10/32 -j CT --zone 1",
        ]
    );
}

#[test]
fn capture_all_dns_matches_any_server() {
    let got = script(
        &injected_plus(&["--redirect-dns", "--capture-all-dns"]),
        &Host::default(),
    );
    let nat = table_rules(&got, "nat");
    assert!(nat.contains(
        &"-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053".to_string()
    ));
    assert!(nat.contains(
        &"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053".to_string()
    ));
    let raw = table_rules(&got, "raw");
    assert_eq!(
        &raw[raw.len() - 3..],
        [
            "-A PREROUTING -j ISTIO_INBOUND",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2",
            "-A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1",
        ]
    );
}

#[test]
fn dns_capture_without_servers_is_turned_off() {
    let got = script(&injected_plus(&["--redirect-dns"]), &Host::default());
    assert_eq!(got, script(INJECTED, &Host::default()));
}

#[test]
fn tproxy_mode_uses_the_mangle_table() {
    let args = [
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "TPROXY",
        "-i",
        "*",
        "-b",
        "*",
        "-c",
        "not-istio-nic",
    ];
    let got = script(&args, &Host::default());
    assert_eq!(
        table_chains(&got, "mangle"),
        ["ISTIO_DIVERT", "ISTIO_TPROXY", "ISTIO_INBOUND"]
    );
    assert_eq!(
        table_rules(&got, "mangle"),
        [
            "-A PREROUTING -i not-istio-nic -j RETURN",
            "-A OUTPUT -o not-istio-nic -j RETURN",
            "-A ISTIO_DIVERT -j MARK --set-mark 1337",
            "-A ISTIO_DIVERT -j ACCEPT",
            "-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
            "-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY",
            "-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark",
            "-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN",
            "-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338",
            "-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338",
            "-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark",
            "-I ISTIO_INBOUND 1 -p tcp -m mark --mark 1337 -j RETURN",
            "-I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo -j RETURN",
            "-I ISTIO_INBOUND 3 -p tcp -i lo -m mark ! --mark 1338 -j RETURN",
        ]
    );
    // Inbound no longer goes through nat.
    let nat = table_rules(&got, "nat");
    assert!(!nat.iter().any(|r| r.starts_with("-A PREROUTING -p tcp")));
    assert!(nat.contains(&"-A OUTPUT -j ISTIO_OUTPUT".to_string()));
}

#[test]
fn tproxy_mark_flag_changes_every_mark() {
    let got = script(
        &["-m", "TPROXY", "-b", "8080", "-t", "77", "-i", "*"],
        &Host::default(),
    );
    let mangle = table_rules(&got, "mangle");
    assert!(mangle.contains(&"-A ISTIO_DIVERT -j MARK --set-mark 77".to_string()));
    assert!(mangle.contains(&"-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_TPROXY".to_string()));
    assert!(
        !mangle
            .iter()
            .any(|r| r.contains("1337/") || r.contains("--mark 1337"))
    );
}

#[test]
fn drop_invalid_adds_a_mangle_drop_chain() {
    let got = script(&injected_plus(&["--drop-invalid"]), &Host::default());
    assert_eq!(table_chains(&got, "mangle"), ["ISTIO_DROP"]);
    assert_eq!(
        table_rules(&got, "mangle"),
        [
            "-A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP",
            "-A ISTIO_DROP -j DROP",
        ]
    );
}

#[test]
fn owner_group_filters_from_the_environment() {
    let only = build(
        &settings_with(
            INJECTED,
            Env(vec![("ISTIO_OUTBOUND_OWNER_GROUPS", "java,202")]),
        ),
        &Host::default(),
    )
    .restore_script(Family::V4);
    assert_eq!(
        table_rules(&only, "nat"),
        spliced(
            16,
            0,
            &["-A ISTIO_OUTPUT -m owner ! --gid-owner java -m owner ! --gid-owner 202 -j RETURN"]
        )
    );

    let except = build(
        &settings_with(
            INJECTED,
            Env(vec![("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888,ftp")]),
        ),
        &Host::default(),
    )
    .restore_script(Family::V4);
    assert_eq!(
        table_rules(&except, "nat"),
        spliced(
            16,
            0,
            &[
                "-A ISTIO_OUTPUT -m owner --gid-owner 888 -j RETURN",
                "-A ISTIO_OUTPUT -m owner --gid-owner ftp -j RETURN",
            ]
        )
    );
}

#[test]
fn loopback_cidr_from_the_environment() {
    let got = build(
        &settings_with(
            INJECTED,
            Env(vec![("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8")]),
        ),
        &Host::default(),
    )
    .restore_script(Family::V4);
    assert!(got.contains("-A ISTIO_OUTPUT -d 127.0.0.1/8 -j RETURN\n"));
    assert!(!got.contains("127.0.0.1/32"));
}

#[test]
fn ipv6_rules_use_the_v6_loopback_and_passthrough_addresses() {
    let host = Host {
        ipv6: true,
        ..Host::default()
    };
    let set = build(
        &settings_with(&injected_plus(&["-x", "10.0.0.0/8,fd00::/8"]), Env(vec![])),
        &host,
    );
    let v6 = set.restore_script(Family::V6);
    let rules = table_rules(&v6, "nat");
    assert!(rules.contains(&"-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN".to_string()));
    assert!(rules.contains(&"-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT".to_string()));
    assert!(rules.contains(&"-A ISTIO_OUTPUT -d ::1/128 -j RETURN".to_string()));
    assert!(rules.contains(&"-A ISTIO_OUTPUT -d fd00::/8 -j RETURN".to_string()));
    assert!(!v6.contains("10.0.0.0/8") && !v6.contains("127.0.0"));
    let v4 = set.restore_script(Family::V4);
    assert!(v4.contains("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN\n"));
    assert!(!v4.contains("fd00::"));
    // Without IPv6 there is nothing for ip6tables.
    assert!(
        build(&settings_with(INJECTED, Env(vec![])), &Host::default())
            .v6
            .is_empty()
    );
}
