//! The optional exporter-toolkit web config (`--web.config.file`: TLS and basic auth): shipped
//! disabled by every component whose exporter has the flag, switched on by one env-file line.
//! Offline: the rendered unit, env file and template. Live: the real node_exporter binary of
//! the mirror, run with the shipped template filled in (generated certificate, bcrypt
//! password), serves its metrics over TLS to the right user only.

#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/mirror.rs"]
mod mirror;
#[path = "support/webconfig.rs"]
mod webconfig;

use std::process::{Command, Stdio};

use cmd::workspace;
use mirror::mirror_dir;
use xtask::component;
use xtask::package::Layout;
use xtask::render::{render_component, Templates};

#[test]
fn web_config_is_shipped_disabled_and_switched_on_by_one_line() {
    let t = Templates::load(None).unwrap();
    let comps = component::load_dir(&workspace().join("components")).unwrap();
    let mut with = 0;
    for c in &comps {
        for layout in [Layout::DEB, Layout::RPM] {
            let files = render_component(&t, c, &layout).unwrap();
            let get = |p: &str| files.iter().find(|f| f.path == p).map(|f| f.text.clone());
            let unit = get(&format!("{}/{}", layout.unit_dir, c.unit_name())).unwrap();
            let env_path = format!(
                "{}/{}",
                layout.env_dir,
                xtask::render::env_file_name(c, &layout)
            );
            let env = get(&env_path).unwrap();
            let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
            match (&c.service.web_config_flag, c.web_config_path()) {
                (Some(flag), Some(path)) => {
                    with += 1;
                    let f = files.iter().find(|f| f.path == path).unwrap();
                    assert!(f.config && f.mode == 0o640, "{path}");
                    // Every line a comment: enabling it by mistake changes nothing.
                    assert!(
                        f.text.lines().all(|l| l.is_empty() || l.starts_with('#')),
                        "{path}:\n{}",
                        f.text
                    );
                    assert!(f.text.contains(&format!("WEB_ARGS=\"{flag}={path}\"")));
                    assert!(f.text.contains(&env_path), "{path} names the env file");
                    // Off by default: the unit passes $WEB_ARGS, empty unless the env file sets it.
                    assert!(exec.ends_with(" $WEB_ARGS"), "{exec}");
                    assert!(unit.contains("\nEnvironment=WEB_ARGS=\n"), "{unit}");
                    let switch = format!("#WEB_ARGS=\"{flag}={path}\"");
                    assert!(env.lines().any(|l| l == switch), "{env}");
                    assert!(
                        !env.lines().any(|l| l.starts_with("WEB_ARGS=")),
                        "enabled by default:\n{env}"
                    );
                    assert!(!exec.contains(flag.as_str()), "{exec}");
                }
                _ => {
                    assert!(!exec.contains("WEB_ARGS"), "{}: {exec}", c.name);
                    assert!(!env.contains("WEB_ARGS"), "{}", c.name);
                    assert!(!files.iter().any(|f| f.path.ends_with("/web-config.yml")));
                }
            }
        }
    }
    assert!(
        with >= 10,
        "most of the catalogue has a web config ({with})"
    );
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn enabled_web_config_serves_tls_and_basic_auth_with_a_real_exporter() {
    let mirror = mirror_dir();
    let manifest = std::fs::read_to_string(mirror.join("manifest.tsv")).unwrap();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let row: Vec<&str> = manifest
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f[0] == "node_exporter" && f[2] == arch)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bin = xtask::unpack::extract_members(
        &mirror.join(row[3]),
        xtask::unpack::ArchiveKind::TarGz,
        &[row[5].to_string()],
        tmp.path(),
        &xtask::unpack::Limits::default(),
    )
    .unwrap()
    .remove(0)
    .path;
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // The shipped template of node_exporter, filled in as the admin would.
    let c = component::load_file(&workspace().join("components/node_exporter.toml")).unwrap();
    let t = Templates::load(None).unwrap();
    let shipped = render_component(&t, &c, &Layout::DEB)
        .unwrap()
        .into_iter()
        .find(|f| Some(&f.path) == c.web_config_path().as_ref())
        .unwrap()
        .text;
    let m = webconfig::Material::generate(&tmp.path().join("tls"));
    let text = webconfig::enable(
        &shipped,
        &m.cert.to_string_lossy(),
        &m.key.to_string_lossy(),
        &m,
    );
    let cfg = tmp.path().join("web-config.yml");
    std::fs::write(&cfg, &text).unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let flag = c.service.web_config_flag.clone().unwrap();
    let mut child = Command::new(&bin)
        .arg(format!("{}={addr}", c.service.listen_flag))
        .arg(format!("{flag}={}", cfg.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
    // Wait until it listens.
    let mut up = false;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("node_exporter exited: {status} (web config:\n{text})");
        }
        if std::net::TcpStream::connect(&addr).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _guard = Kill(child);
    assert!(up, "node_exporter did not listen on {addr}");
    webconfig::check_live(
        &webconfig::local,
        &addr,
        &m.cert.to_string_lossy(),
        &m,
        &c.smoke.as_ref().unwrap().metric,
    );
}
