use clap::Parser;

use super::*;
use crate::Cli;

struct Env(Vec<(&'static str, &'static str)>, Vec<(&'static str, u32)>);

impl Lookup for Env {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
    fn user_uid(&self, name: &str) -> Option<u32> {
        self.1.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
}

fn no_env() -> Env {
    Env(vec![], vec![])
}

fn parse(args: &[&str]) -> Result<CaptureArgs, clap::Error> {
    let argv = std::iter::once("istio-iptables").chain(args.iter().copied());
    Cli::try_parse_from(argv).map(|c| c.args)
}

fn resolve(args: &[&str], env: Env) -> Result<Settings, FlagError> {
    parse(args).expect("flags parse").resolve(&env)
}

#[test]
fn injected_istio_init_args_parse() {
    let s = resolve(
        &[
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
        ],
        no_env(),
    )
    .unwrap();
    assert_eq!(s.proxy_port, "15001");
    assert_eq!(s.inbound_capture_port, "15006");
    assert_eq!(s.inbound_tunnel_port, "15008");
    assert_eq!(s.proxy_uids, ["1337"]);
    assert_eq!(s.proxy_gids, ["1337"]);
    assert_eq!(s.mode, InterceptionMode::Redirect);
    assert_eq!(s.outbound_include, OutboundRanges::All);
    assert!(s.outbound_exclude.is_empty());
    assert_eq!(s.inbound_ports, InboundPorts::All);
    assert_eq!(s.inbound_exclude_ports, ["15090", "15021", "15020"]);
    assert_eq!(s.log_level, LevelFilter::INFO);
    assert!(!s.dry_run && !s.redirect_dns && !s.reconcile);
}

#[test]
fn long_short_equals_and_attached_forms_agree() {
    let forms: [&[&str]; 5] = [
        &["-p", "15001"],
        &["-p=15001"],
        &["-p15001"],
        &["--envoy-port", "15001"],
        &["--envoy-port=15001"],
    ];
    for form in forms {
        assert_eq!(
            parse(form).unwrap().envoy_port.as_deref(),
            Some("15001"),
            "{form:?}"
        );
    }
    let a = parse(&["--istio-service-exclude-cidr=10.0.0.0/8", "-b", "80"]).unwrap();
    let b = parse(&["-x", "10.0.0.0/8", "--istio-inbound-ports=80"]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn every_istio_short_letter_maps_to_its_long_flag() {
    let pairs = [
        ("-p", "--envoy-port"),
        ("-z", "--inbound-capture-port"),
        ("-e", "--inbound-tunnel-port"),
        ("-u", "--proxy-uid"),
        ("-g", "--proxy-gid"),
        ("-m", "--istio-inbound-interception-mode"),
        ("-b", "--istio-inbound-ports"),
        ("-d", "--istio-local-exclude-ports"),
        ("-c", "--istio-exclude-interfaces"),
        ("-i", "--istio-service-cidr"),
        ("-x", "--istio-service-exclude-cidr"),
        ("-q", "--istio-outbound-ports"),
        ("-o", "--istio-local-outbound-ports-exclude"),
        ("-k", "--kube-virt-interfaces"),
        ("-t", "--istio-inbound-tproxy-mark"),
        ("-r", "--istio-inbound-tproxy-route-table"),
    ];
    for (short, long) in pairs {
        // A value that is valid for every one of them.
        assert_eq!(
            parse(&[short, "77"]).unwrap(),
            parse(&[long, "77"]).unwrap()
        );
        assert_ne!(
            parse(&[short, "77"]).unwrap(),
            CaptureArgs::default(),
            "{short}"
        );
    }
    assert_eq!(parse(&["-n"]).unwrap(), parse(&["--dry-run"]).unwrap());
}

#[test]
fn empty_values_are_accepted() {
    let a = parse(&["-x", "", "-b", ""]).unwrap();
    assert_eq!(a.service_exclude_cidr.as_deref(), Some(""));
    let s = a.resolve(&no_env()).unwrap();
    assert_eq!(s.inbound_ports, InboundPorts::None);
    assert!(s.outbound_exclude.is_empty());
}

#[test]
fn booleans_take_go_values_after_equals() {
    assert_eq!(parse(&["--dry-run"]).unwrap().dry_run, Some(true));
    assert_eq!(parse(&["--dry-run=false"]).unwrap().dry_run, Some(false));
    assert_eq!(
        parse(&["--redirect-dns=1"]).unwrap().redirect_dns,
        Some(true)
    );
    assert_eq!(parse(&["--reconcile=F"]).unwrap().reconcile, Some(false));
    assert!(parse(&["--dry-run=maybe"]).is_err());
    assert_eq!(parse(&[]).unwrap().dry_run, None);
}

#[test]
fn a_repeated_flag_takes_the_last_value() {
    let a = parse(&["-b", "*", "-b", "8080"]).unwrap();
    assert_eq!(a.inbound_ports.as_deref(), Some("8080"));
}

#[test]
fn unknown_flags_are_rejected() {
    assert!(parse(&["--no-such-flag"]).is_err());
}

#[test]
fn environment_fills_unset_flags_and_flags_win() {
    let env = Env(
        vec![
            ("ISTIO_SERVICE_CIDR", "10.0.0.0/8"),
            ("ISTIO_INBOUND_PORTS", "9090"),
            ("INBOUND_CAPTURE_PORT", "16006"),
            ("PROXY_UID", "2000"),
        ],
        vec![],
    );
    let s = resolve(&["-b", "*"], env).unwrap();
    assert_eq!(
        s.outbound_include,
        OutboundRanges::Only(vec![Cidr::parse("10.0.0.0/8").unwrap()])
    );
    assert_eq!(s.inbound_ports, InboundPorts::All);
    assert_eq!(s.inbound_capture_port, "16006");
    assert_eq!(s.proxy_uids, ["2000"]);
    assert_eq!(s.proxy_gids, ["2000"]);
}

#[test]
fn envoy_port_has_no_environment_fallback() {
    let s = resolve(&[], Env(vec![("ENVOY_PORT", "16001")], vec![])).unwrap();
    assert_eq!(s.proxy_port, "15001");
}

#[test]
fn boolean_environment_variables_and_their_aliases() {
    let s = resolve(&[], Env(vec![("ISTIO_META_DNS_CAPTURE", "true")], vec![])).unwrap();
    assert!(s.redirect_dns);
    // The alias is read after the primary name, so it wins.
    let s = resolve(
        &[],
        Env(
            vec![
                ("REDIRECT_DNS", "true"),
                ("ISTIO_META_DNS_CAPTURE", "false"),
            ],
            vec![],
        ),
    )
    .unwrap();
    assert!(!s.redirect_dns);
    let s = resolve(&[], Env(vec![("INVALID_DROP", "true")], vec![])).unwrap();
    assert!(s.drop_invalid);
    // Unparsable values are ignored, and a flag beats the environment.
    let s = resolve(&[], Env(vec![("DRY_RUN", "yes please")], vec![])).unwrap();
    assert!(!s.dry_run);
    let s = resolve(&["--dry-run=false"], Env(vec![("DRY_RUN", "true")], vec![])).unwrap();
    assert!(!s.dry_run);
}

#[test]
fn proxy_uid_defaults_to_envoy_user_then_1337() {
    let s = resolve(&[], no_env()).unwrap();
    assert_eq!(s.proxy_uids, ["1337"]);
    let s = resolve(&[], Env(vec![], vec![("istio-proxy", 101)])).unwrap();
    assert_eq!(s.proxy_uids, ["101"]);
    assert_eq!(s.proxy_gids, ["101"]);
    let s = resolve(
        &["-g", "7"],
        Env(vec![("ENVOY_USER", "envoy")], vec![("envoy", 555)]),
    )
    .unwrap();
    assert_eq!(s.proxy_uids, ["555"]);
    assert_eq!(s.proxy_gids, ["7"]);
}

#[test]
fn istio_defaults() {
    let s = resolve(&[], no_env()).unwrap();
    assert_eq!(s.inbound_ports, InboundPorts::None);
    assert_eq!(s.outbound_include, OutboundRanges::Only(vec![]));
    assert_eq!(s.tproxy_mark, 1337);
    assert_eq!(s.tproxy_route_table, 133);
    assert_eq!(s.probe_port, 15002);
    assert_eq!(s.probe_timeout, Duration::from_secs(5));
    assert_eq!(s.loopback_cidr.to_string(), "127.0.0.1/32");
    assert_eq!(
        s.owner_groups,
        OwnerGroups {
            except: true,
            groups: vec![]
        }
    );
}

#[test]
fn bad_values_are_named_in_the_error() {
    let err = resolve(&["-m", "NONE"], no_env()).unwrap_err();
    assert!(
        err.to_string().contains("istio-inbound-interception-mode"),
        "{err}"
    );
    let err = resolve(&["-p", "70000"], no_env()).unwrap_err();
    assert!(err.to_string().contains("envoy-port"), "{err}");
    let err = resolve(&["-d", "15090,abc"], no_env()).unwrap_err();
    assert!(err.to_string().contains("\"abc\""), "{err}");
    let err = resolve(&["-x", "*"], no_env()).unwrap_err();
    assert!(
        err.to_string().contains("istio-service-exclude-cidr"),
        "{err}"
    );
    let err = resolve(&["-i", "10.0.0.1"], no_env()).unwrap_err();
    assert!(err.to_string().contains("istio-service-cidr"), "{err}");
    let err = resolve(
        &[],
        Env(
            vec![("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "10.0.0.1/32")],
            vec![],
        ),
    )
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    let err = resolve(&["--probe-timeout", "soon"], no_env()).unwrap_err();
    assert!(err.to_string().contains("probe-timeout"), "{err}");
}

#[test]
fn lists_drop_empty_items_and_accept_ranges() {
    let s = resolve(
        &["-b", "*", "-d", "6000,7000,", "-o", "8000:8100"],
        no_env(),
    )
    .unwrap();
    assert_eq!(s.inbound_exclude_ports, ["6000", "7000"]);
    assert_eq!(s.outbound_ports_exclude, ["8000:8100"]);
}

#[test]
fn go_durations() {
    assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
    assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_go_duration("5"), None);
    assert_eq!(parse_go_duration(""), None);
}

#[test]
fn log_levels() {
    assert_eq!(parse_log_level("default:info"), Some(LevelFilter::INFO));
    assert_eq!(parse_log_level("debug"), Some(LevelFilter::DEBUG));
    assert_eq!(
        parse_log_level("ads:debug,default:warn"),
        Some(LevelFilter::WARN)
    );
    assert_eq!(parse_log_level("ads:debug"), None);
    assert_eq!(parse_log_level("default:loud"), None);
}
