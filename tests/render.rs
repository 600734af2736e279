//! Every component in components/ renders, for both layouts, into files that the real tools
//! accept: systemd-analyze (exposure score), nft, firewalld's and ufw's own parsers.

#[path = "support/cmd.rs"]
mod cmd;
use std::path::Path;
use std::process::Command;

use cmd::{run, workspace};
use xtask::component;
use xtask::package::Layout;
use xtask::render::{render_component, Templates};

/// The same bound as tests/host.rs checks on the live host.
const MAX_EXPOSURE: f64 = 1.5;

/// Render every component into `root` for a layout; returns the component names.
fn render_all(root: &Path, layout: &Layout) -> Vec<component::Component> {
    let t = Templates::load(None).unwrap();
    let comps = component::load_dir(&workspace().join("components")).unwrap();
    assert!(comps.len() >= 2, "expected the catalogue in components/");
    for c in &comps {
        for f in render_component(&t, c, layout).unwrap() {
            let dest = root.join(f.path.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(&dest, &f.text).unwrap();
            // (a component's own config text is shipped verbatim and may use braces)
            let verbatim = c.config.iter().any(|x| x.path == f.path);
            assert!(
                verbatim || !f.text.contains("{{"),
                "{}: unrendered template text",
                f.path
            );
        }
    }
    comps
}

#[test]
fn units_score_within_the_hardening_target() {
    for layout in [Layout::DEB, Layout::RPM] {
        let root = tempfile::tempdir().unwrap();
        let comps = render_all(root.path(), &layout);
        for c in comps {
            let unit = c.unit_name();
            let (ok, text) = run(Command::new("systemd-analyze")
                .arg("security")
                .arg("--offline=true")
                .arg(format!("--root={}", root.path().display()))
                .arg(&unit));
            let score = cmd::exposure_score(&format!("{unit} (ok={ok})"), &text);
            println!("{unit} ({:?}): exposure {score}", layout.format);
            assert!(
                score <= MAX_EXPOSURE,
                "{unit}: exposure {score} > {MAX_EXPOSURE}\n{text}"
            );
            let unit_text =
                std::fs::read_to_string(root.path().join("usr/lib/systemd/system").join(&unit))
                    .unwrap();
            for d in [
                "NoNewPrivileges=yes",
                "ProtectSystem=strict",
                "PrivateTmp=yes",
                "SystemCallFilter=@system-service",
                "UMask=0077",
                "MemoryDenyWriteExecute=yes",
            ] {
                assert!(unit_text.contains(d), "{unit}: missing {d}");
            }
            assert!(unit_text.contains(&format!("EnvironmentFile=-{}/", layout.env_dir)));
        }
    }
}

#[test]
fn env_file_listens_on_localhost_by_default() {
    let root = tempfile::tempdir().unwrap();
    for c in render_all(root.path(), &Layout::DEB) {
        let env =
            std::fs::read_to_string(root.path().join("etc/default").join(&c.deb_name)).unwrap();
        // One host:port (LISTEN_ADDRESS) or host and port apart (LISTEN_HOST, LISTEN_PORT).
        let line = env
            .lines()
            .find(|l| l.starts_with("LISTEN_ADDRESS=") || l.starts_with("LISTEN_HOST="))
            .unwrap_or_else(|| panic!("{}: no listen address in\n{env}", c.name));
        assert!(
            line.starts_with("LISTEN_ADDRESS=127.0.0.1:") || line == "LISTEN_HOST=127.0.0.1",
            "{}: {line}",
            c.name
        );
    }
}

#[test]
fn nftables_snippets_pass_nft_check() {
    let root = tempfile::tempdir().unwrap();
    for c in render_all(root.path(), &Layout::DEB) {
        let f = root.path().join(format!("etc/nftables.d/{}.nft", c.name));
        let (ok, text) = run(Command::new("nft").arg("-c").arg("-f").arg(&f));
        assert!(ok, "nft -c -f {}: {text}", f.display());
        // It only defines a set: nothing is accepted or dropped by loading it.
        let body = std::fs::read_to_string(&f).unwrap();
        assert!(
            !body.contains("hook"),
            "{}: must not attach a chain",
            f.display()
        );
    }
    // A broken snippet is refused by the same check (the check can fail).
    let bad = root.path().join("bad.nft");
    std::fs::write(
        &bad,
        "table inet x { set s { type inet_service; elements = { 99999 } } }\n",
    )
    .unwrap();
    assert!(!run(Command::new("nft").arg("-c").arg("-f").arg(&bad)).0);
}

const PY: &str = "/usr/bin/python3";

#[test]
fn firewalld_services_parse_with_firewalld() {
    let root = tempfile::tempdir().unwrap();
    let comps = render_all(root.path(), &Layout::RPM);
    let dir = root.path().join("usr/lib/firewalld/services");
    for c in comps {
        let script = format!(
            "from firewall.core.io.service import service_reader\n\
             s = service_reader('{}.xml', '{}')\n\
             print(s.short, s.ports)",
            c.name,
            dir.display()
        );
        let (ok, text) = run(Command::new(PY).arg("-c").arg(&script));
        assert!(ok, "{}: firewalld rejects the service: {text}", c.name);
        let port = c.firewall.ports[0].port.to_string();
        assert!(text.contains(&port), "{}: {text}", c.name);
    }
}

#[test]
fn ufw_profiles_parse_with_ufw() {
    let root = tempfile::tempdir().unwrap();
    let comps = render_all(root.path(), &Layout::DEB);
    let dir = root.path().join("etc/ufw/applications.d");
    let script = format!(
        "import gettext; gettext.install('ufw')\n\
         import ufw.applications as a\n\
         p = a.get_profiles('{}')\n\
         for n in sorted(p): print(n, ' '.join(a.get_ports(p[n])))",
        dir.display()
    );
    let (ok, text) = run(Command::new(PY).arg("-c").arg(&script));
    assert!(ok, "ufw: {text}");
    for c in comps {
        let want = format!("{} {}/tcp", c.name, c.firewall.ports[0].port);
        assert!(
            text.lines().any(|l| l == want),
            "ufw did not read {want:?}: {text}"
        );
    }
}

/// The unit of component `name` (deb layout), rendered.
fn unit_of(name: &str) -> String {
    let t = Templates::load(None).unwrap();
    let c = component::load_file(&workspace().join(format!("components/{name}.toml"))).unwrap();
    render_component(&t, &c, &Layout::DEB)
        .unwrap()
        .into_iter()
        .find(|f| f.path.ends_with(&format!("/{}", c.unit_name())))
        .unwrap()
        .text
}

fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .collect()
}

/// What each tailored exporter needs, and nothing more, as the unit grants it.
#[test]
fn tailored_hardening_of_blackbox_process_and_systemd_exporters() {
    // blackbox: CAP_NET_RAW for ICMP and no other capability.
    let u = unit_of("blackbox_exporter");
    assert_eq!(directive(&u, "CapabilityBoundingSet"), ["CAP_NET_RAW"]);
    assert_eq!(directive(&u, "AmbientCapabilities"), ["CAP_NET_RAW"]);
    assert_eq!(directive(&u, "ProtectProc"), ["invisible"]);

    // process_exporter: sees every process (and /proc/stat), with no capability.
    let u = unit_of("process_exporter");
    assert_eq!(directive(&u, "ProtectProc"), ["default"]);
    assert_eq!(directive(&u, "ProcSubset"), ["all"]);
    assert_eq!(directive(&u, "CapabilityBoundingSet"), [""]);

    // systemd_exporter reads the system bus: AF_UNIX allowed, the socket's directory not
    // hidden or replaced, no capability, its own user (the bus authenticates that uid; with
    // PrivateUsers=yes systemd maps it 1:1), and the baseline otherwise untouched.
    let u = unit_of("systemd_exporter");
    let families = directive(&u, "RestrictAddressFamilies");
    assert!(
        families[0].split(' ').any(|f| f == "AF_UNIX"),
        "{families:?}"
    );
    for hides in [
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "PrivateIPC",
    ] {
        assert!(
            directive(&u, hides).is_empty(),
            "{hides} would hide /run/dbus"
        );
    }
    assert_eq!(directive(&u, "User"), ["systemd_exporter"]);
    assert_eq!(directive(&u, "PrivateUsers"), ["yes"]);
    assert_eq!(directive(&u, "CapabilityBoundingSet"), [""]);
    assert_eq!(directive(&u, "ProtectProc"), ["invisible"]);
    assert_eq!(directive(&u, "ProtectSystem"), ["strict"]);
    assert!(
        !u.contains("systemd.collector.private"),
        "/run/systemd/private needs root"
    );
}
