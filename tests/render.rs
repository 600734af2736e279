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
            assert!(
                !f.text.contains("{{"),
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
            let line = text
                .lines()
                .find(|l| l.contains("Overall exposure level"))
                .unwrap_or_else(|| panic!("{unit}: no exposure score (ok={ok}):\n{text}"));
            let score: f64 = line
                .split(':')
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("cannot parse {line:?}"));
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
        let line = env
            .lines()
            .find(|l| l.starts_with("LISTEN_ADDRESS="))
            .unwrap();
        assert!(
            line.starts_with("LISTEN_ADDRESS=127.0.0.1:"),
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
