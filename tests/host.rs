//! The packages on a real, booted systemd host, the way an administrator meets them.
//!
//! Every component in components/ that the real-binary mirror carries is pinned to the
//! mirror's version in a temporary components copy and built by `dist` twice (revision N and
//! N+1) with a test release key. One booted Debian bookworm host (tests/support/host.rs)
//! serves the repositories to itself over loopback HTTP and is configured with our `.sources`
//! file and key exactly as README says. For every component, sequentially in that one boot:
//! apt install (user, unit enabled and active, credentials flow, metrics, live exposure score
//! ≤ MAX_EXPOSURE, `systemd-analyze verify`), what the exporter is for (`component_probe`:
//! blackbox's ICMP and HTTP probes of the host, nginx_exporter on a real NGINX's stub_status
//! and NGINX stopping under it, process_exporter counting root's and www-data's NGINX
//! processes, postgres/redis exporters with no database: `*_up 0`, a logged connection error,
//! no restart in 10 s; pushgateway's pushed metric across a restart; snmp_exporter's
//! snmp.yml served and an admin's module walking 127.0.0.1), the shipped web config switched
//! on (TLS and bcrypt basic auth live from inside the host, exposure still ≤ MAX_EXPOSURE,
//! then off again), the firewall files read by ufw, firewalld and nft (opening nothing),
//! upgrade to N+1 (restart on the new binary, an admin's env-file edit kept), remove, purge;
//! then the rpm lifecycle with Debian's rpm (install, upgrade, erase).
//! Prints `exposure <unit> <score>` for every unit (the higher of web config off and on).
//!
//! Every restart the test makes resets the unit's start limit first (`systemctl reset-failed`,
//! which fails harmlessly for a unit systemd has unloaded, e.g. one its ExecCondition skipped):
//! the test restarts some units more often than systemd's default start limit (5 starts in
//! 10 s) allows, which an administrator would not, and the refusal would fail the test, not
//! the unit.

#[path = "support/cmd.rs"]
mod cmd;
#[path = "support/gpg.rs"]
mod gpg;
#[path = "support/host.rs"]
mod host;
#[path = "support/mirror.rs"]
mod mirror;
#[path = "support/webconfig.rs"]
mod webconfig;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cmd::{must, workspace};
use host::Host;
use xtask::component::{self, Component};

/// The highest live `systemd-analyze security` exposure any unit may have.
const MAX_EXPOSURE: f64 = 1.5;
/// Where the host serves /srv/obs to itself (its own loopback: the host has its own network
/// namespace). Not 8080: that is NGINX's stub_status, where nginx_exporter scrapes by default.
const REPO_PORT: u16 = 8081;
/// NGINX in the host: the stub_status page at nginx_exporter's default scrape URI and a page
/// for blackbox_exporter's HTTP probe.
const NGINX_PORT: u16 = 8080;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

/// What `dist --json` built, by (format, package name).
struct Built {
    files: BTreeMap<(String, String), String>,
}

/// `dist` for this host's arch; `sde`: SOURCE_DATE_EPOCH (a later release has a later one:
/// the web server answers 304 Not Modified to apt for an index as old as the one it has).
fn dist(
    comps: &Path,
    out: &Path,
    tmp: &Path,
    server: &mirror::Server,
    key: &Path,
    sde: u64,
    compression: &str,
) -> Built {
    let arch = host_arch();
    let (ok, json) = cmd::run(
        xtask()
            .args(["dist", "--json", "--arch", &arch, "--components"])
            .arg(comps)
            .arg("--out")
            .arg(out)
            .arg("--cache")
            .arg(tmp.join("cache"))
            .args(["--mirror", &server.url, "--ca-cert"])
            .arg(&server.ca)
            .arg("--signing-key")
            .arg(key)
            .args([
                "--deb-compression",
                compression,
                "--rpm-compression",
                compression,
            ])
            .arg("--base-url")
            .arg(format!("http://127.0.0.1:{REPO_PORT}/repo"))
            .env("XDG_DATA_HOME", tmp.join("xdg"))
            .env("SOURCE_DATE_EPOCH", sde.to_string()),
    );
    assert!(ok, "dist failed:\n{json}");
    // (stdout's JSON document comes first; stderr's status lines follow it)
    let v: serde_json::Value =
        serde_json::Deserializer::from_str(&json[json.find('{').expect("json")..])
            .into_iter()
            .next()
            .expect("json")
            .unwrap_or_else(|e| panic!("{e}: {json}"));
    let mut files = BTreeMap::new();
    for p in v["packages"].as_array().unwrap() {
        files.insert(
            (
                p["format"].as_str().unwrap().to_string(),
                p["package"].as_str().unwrap().to_string(),
            ),
            p["file"].as_str().unwrap().to_string(),
        );
    }
    Built { files }
}

fn host_arch() -> String {
    must(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string()
}

/// The exporter's address as seen from the host itself.
fn scrape_addr(listen: &str) -> String {
    let (h, p) = listen.rsplit_once(':').unwrap();
    let h = match h {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    format!("{h}:{p}")
}

/// Fail on anything apt, dpkg or a maintainer script reports as an error or a warning.
fn clean_output(what: &str, text: &str) {
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            l.starts_with("E:")
                || l.starts_with("W:")
                || lower.contains("error")
                || lower.contains("warning")
                || lower.contains("failed")
                || lower.contains("not found")
                // dpkg's conffile question ("Configuration file '/etc/…'"): an admin's
                // edit of a file the package did not change must be kept without asking.
                || l.contains("Configuration file '")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what} reported:\n{}\n---\n{text}",
        bad.join("\n")
    );
}

struct Case {
    c: Component,
    rev1: u32,
    unit: String,
    env_file: String,
    /// The listen address the admin's env-file edit moves it to (proves the edit is live).
    moved: String,
}

impl Case {
    fn metric(&self) -> Option<&str> {
        self.c.smoke.as_ref().map(|s| s.metric.as_str())
    }
}

/// The exporter serves real metrics on `addr` (its smoke metric, or at least one sample).
fn metrics_served(h: &Host, case: &Case, addr: &str) {
    let text = h.wait_for(
        &format!(
            "curl -fsS --max-time 20 http://{}/metrics",
            scrape_addr(addr)
        ),
        30,
    );
    match case.metric() {
        Some(m) => assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{m}{{")) || l.starts_with(&format!("{m} "))),
            "{}: {m} not served on {addr}:\n{}",
            case.c.name,
            &text[..text.len().min(3000)]
        ),
        None => assert!(
            text.lines().any(|l| l.starts_with("# TYPE ")),
            "{}: no Prometheus metrics on {addr} (and no [smoke] metric to look for):\n{}",
            case.c.name,
            &text[..text.len().min(3000)]
        ),
    }
}

fn prop(h: &Host, unit: &str, p: &str) -> String {
    h.must(&format!("systemctl show -p {p} --value {unit}"))
        .trim()
        .to_string()
}

/// Active, with a main process running the installed binary (not a deleted older one); its
/// PID. (Right after a start the main process may not have exec'd the binary yet.)
fn running_installed_binary(h: &Host, case: &Case) -> String {
    let unit = &case.unit;
    let bin = format!("/usr/bin/{}", case.c.name);
    let check = format!(
        "systemctl is-active --quiet {unit} && \
         test \"$(readlink /proc/$(systemctl show -p MainPID --value {unit})/exe)\" = {bin}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !h.sh(&check).0 {
        if std::time::Instant::now() > deadline {
            let (_, why) = h.sh(&format!(
                "systemctl status --no-pager -l -n 0 {unit}; journalctl -b --no-pager -n 40 -u {unit}"
            ));
            panic!("{unit} is not running {bin} after 30 s:\n{why}");
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    prop(h, unit, "MainPID")
}

/// Not crash-looping: inactive with its condition failed, no restarts, and the status says
/// which file to fill in.
fn waits_for_credentials(h: &Host, case: &Case) {
    let unit = &case.unit;
    // Time for a would-be crash loop (RestartSec=5s) to show.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let (_, status) = h.sh(&format!("systemctl status --no-pager -l -n 20 {unit}"));
    let (_, active) = h.sh(&format!("systemctl is-active {unit}"));
    assert_eq!(
        active.trim(),
        "inactive",
        "{unit} without credentials:\n{status}"
    );
    assert_eq!(
        prop(h, unit, "NRestarts"),
        "0",
        "{unit} restarts:\n{status}"
    );
    // ExecCondition= failing skips the start; it is not a failure. (systemd 252 records
    // Result=exec-condition only when the unit had not run before in this boot.)
    let result = prop(h, unit, "Result");
    assert!(
        result == "exec-condition" || result == "success",
        "{unit}: Result={result}:\n{status}"
    );
    let last = h.must(&format!("journalctl --no-pager -o cat -n 2 -u {unit}"));
    assert!(
        last.contains("Skipped due to 'exec-condition'"),
        "{unit}: its last start was not skipped by the credential condition:\n{last}"
    );
    for f in case.c.config.iter().filter(|f| f.credential) {
        assert!(
            status.contains(&format!("{} still holds the shipped placeholder", f.path)),
            "{unit}: status does not say what to fill in:\n{status}"
        );
    }
    println!("{unit} before credentials:\n{status}");
}

fn write_credentials(h: &Host, case: &Case) {
    let smoke = case.c.smoke.as_ref().unwrap_or_else(|| {
        panic!(
            "{}: a component with credential files needs [smoke.credentials] (valid content \
             for each)",
            case.c.name
        )
    });
    for (path, content) in &smoke.credentials {
        h.write(path, content);
    }
}

fn exposure(h: &Host, unit: &str) -> f64 {
    let (_, text) = h.sh(&format!("systemd-analyze security --no-pager {unit}"));
    let score = cmd::exposure_score(unit, &text);
    println!("exposure {unit} {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "{unit}: live exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );
    score
}

/// The value of the sample `series` (a metric name, with its labels if it has any, exactly as
/// the exporter writes them) in Prometheus text `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn scrape(h: &Host, addr: &str, path: &str) -> String {
    h.must(&format!("curl -fsS --max-time 20 'http://{addr}{path}'"))
}

/// What each exporter is there for, proven live where that is cheap; after its metrics are
/// served on its default address.
fn component_probe(h: &Host, case: &Case) {
    let addr = scrape_addr(&case.c.service.listen);
    match case.c.name.as_str() {
        "blackbox_exporter" => blackbox_probes(h, &addr),
        "nginx_exporter" => nginx_scraped(h, case, &addr),
        "process_exporter" => processes_seen(h, &addr),
        "postgres_exporter" => database_absent(h, case, &addr, "pg_up", &["127.0.0.1:5432"]),
        "redis_exporter" => {
            database_absent(h, case, &addr, "redis_up", &["redis://127.0.0.1:6379"])
        }
        "pushgateway" => pushed_metric_persists(h, case, &addr),
        "snmp_exporter" => snmp_config_loaded(h, case, &addr),
        _ => {}
    }
}

/// ICMP (a raw socket: CAP_NET_RAW works under the unit's hardening; the host's
/// net.ipv4.ping_group_range allows no unprivileged ICMP) and HTTP probes of the host itself.
fn blackbox_probes(h: &Host, addr: &str) {
    let (_, range) = h.sh("cat /proc/sys/net/ipv4/ping_group_range");
    println!("blackbox_exporter: ping_group_range {}", range.trim());
    for (module, target) in [
        ("icmp", "127.0.0.1".to_string()),
        (
            "http_2xx",
            format!("http://127.0.0.1:{NGINX_PORT}/probe-target"),
        ),
    ] {
        let text = scrape(h, addr, &format!("/probe?module={module}&target={target}"));
        assert_eq!(
            sample(&text, "probe_success"),
            Some(1.0),
            "blackbox_exporter: {module} probe of {target}:\n{text}"
        );
    }
}

/// nginx_up 1 with NGINX's real counters; with NGINX stopped nginx_up 0 and a logged failure,
/// the exporter still running; back to 1 when NGINX is.
fn nginx_scraped(h: &Host, case: &Case, addr: &str) {
    let unit = &case.unit;
    let text = scrape(h, addr, "/metrics");
    assert_eq!(sample(&text, "nginx_up"), Some(1.0), "{text}");
    assert!(
        sample(&text, "nginx_connections_accepted").is_some_and(|n| n >= 1.0),
        "no NGINX counters:\n{text}"
    );
    let pid = prop(h, unit, "MainPID");
    h.must("systemctl stop nginx");
    let text = scrape(h, addr, "/metrics");
    assert_eq!(
        sample(&text, "nginx_up"),
        Some(0.0),
        "with NGINX stopped:\n{text}"
    );
    h.wait_for(
        &format!(
            "journalctl --no-pager -o cat -u {unit} | grep -F 127.0.0.1:{NGINX_PORT}/stub_status \
             | grep -F 'connection refused'"
        ),
        10,
    );
    h.must("systemctl start nginx");
    h.wait_for(
        &format!("curl -fsS -o /dev/null http://127.0.0.1:{NGINX_PORT}/stub_status"),
        30,
    );
    let text = scrape(h, addr, "/metrics");
    assert_eq!(sample(&text, "nginx_up"), Some(1.0), "{text}");
    assert_eq!(prop(h, unit, "MainPID"), pid, "{unit} did not keep running");
    assert_eq!(prop(h, unit, "NRestarts"), "0", "{unit} restarted");
}

/// Named groups of processes of other users are counted in full (ProtectProc is not
/// invisible): NGINX (root's master and www-data's workers), as many as the host has, and
/// systemd.
fn processes_seen(h: &Host, addr: &str) {
    let nginx: f64 = h
        .must("grep -lx nginx /proc/[0-9]*/comm | wc -l")
        .trim()
        .parse()
        .unwrap();
    assert!(nginx >= 2.0, "NGINX has a master and workers: {nginx}");
    let text = scrape(h, addr, "/metrics");
    assert_eq!(
        sample(
            &text,
            "namedprocess_namegroup_num_procs{groupname=\"nginx\"}"
        ),
        Some(nginx),
        "process_exporter does not see every NGINX process"
    );
    assert!(
        sample(
            &text,
            "namedprocess_namegroup_num_procs{groupname=\"systemd\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "process_exporter does not see systemd"
    );
}

/// No database on the host: `up` is 0, the journal has a connection error naming each of
/// `address`, and the unit has run ≥ 10 s without a restart.
fn database_absent(h: &Host, case: &Case, addr: &str, up: &str, address: &[&str]) {
    let unit = &case.unit;
    let text = scrape(h, addr, "/metrics");
    assert_eq!(sample(&text, up), Some(0.0), "{unit}: {up}:\n{text}");
    let grep: String = address
        .iter()
        .map(|a| format!(" | grep -F '{a}'"))
        .collect();
    let line = h.wait_for(
        &format!("journalctl --no-pager -o cat -u {unit} | grep -i error{grep}"),
        10,
    );
    println!(
        "{unit} without its database: {}",
        line.trim().lines().last().unwrap_or_default()
    );
    if let Some((_, dsn)) = case
        .c
        .smoke
        .as_ref()
        .and_then(|s| s.credentials.iter().next())
    {
        // The password of the credentials written does not reach the journal.
        if let Some(pw) = dsn.split("://").nth(1).and_then(|r| r.split_once('@')) {
            let pw = pw.0.split_once(':').map(|x| x.1).unwrap_or_default();
            if !pw.is_empty() {
                let j = h.must(&format!("journalctl --no-pager -o cat -u {unit}"));
                assert!(
                    !j.contains(&format!(":{pw}@")),
                    "{unit} logs the password:\n{j}"
                );
            }
        }
    }
    let pid = prop(h, unit, "MainPID");
    // (no procps on the host: its age from systemd's monotonic start time and /proc/uptime)
    let started: f64 = prop(h, unit, "ExecMainStartTimestampMonotonic")
        .parse::<f64>()
        .unwrap()
        / 1e6;
    let now: f64 = h.must("cut -d' ' -f1 /proc/uptime").trim().parse().unwrap();
    let age = (now - started).max(0.0) as u64;
    if age < 10 {
        std::thread::sleep(std::time::Duration::from_secs(10 - age));
    }
    assert_eq!(prop(h, unit, "NRestarts"), "0", "{unit} restarts");
    assert_eq!(prop(h, unit, "MainPID"), pid, "{unit} did not keep running");
    let text = scrape(h, addr, "/metrics");
    assert_eq!(sample(&text, up), Some(0.0), "{unit}: {up}:\n{text}");
}

/// A pushed metric survives a restart: the persistence file under /var/lib/<StateDirectory>.
fn pushed_metric_persists(h: &Host, case: &Case, addr: &str) {
    let unit = &case.unit;
    let dir = case
        .c
        .service
        .state_directory
        .as_ref()
        .expect("pushgateway keeps its state under /var/lib");
    h.must(&format!(
        "printf 'obs_host_test_pushed 42\\n' | curl -fsS --data-binary @- \
         http://{addr}/metrics/job/obs_host_test"
    ));
    let pushed = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("obs_host_test_pushed{")
                && l.contains("job=\"obs_host_test\"")
                && l.ends_with(" 42")
        })
    };
    let text = scrape(h, addr, "/metrics");
    assert!(pushed(&text), "the pushed metric is not served:\n{text}");
    h.must(&format!(
        "{{ systemctl reset-failed {unit} 2>/dev/null || true; }} && systemctl restart {unit}"
    ));
    running_installed_binary(h, case);
    let text = h.wait_for(
        &format!("curl -fsS --max-time 20 http://{addr}/metrics"),
        30,
    );
    assert!(
        pushed(&text),
        "the pushed metric is lost by a restart:\n{text}"
    );
    let st = h.must(&format!(
        "stat -c '%U %a' $(find /var/lib/{dir} -type f -size +0)"
    ));
    assert_eq!(
        st.trim(),
        format!("{} 600", case.c.service.user),
        "the persistence file in /var/lib/{dir}"
    );
}

/// snmp_exporter serves the configuration file it was given: every module of the shipped
/// snmp.yml, then an admin's own module, which it uses to walk 127.0.0.1 (no agent answers:
/// the walk fails, logged with module and target, proving the UDP request went out).
fn snmp_config_loaded(h: &Host, case: &Case, addr: &str) {
    let unit = &case.unit;
    let path = &case
        .c
        .config
        .iter()
        .find(|f| f.path.ends_with("/snmp.yml"))
        .expect("snmp_exporter ships snmp.yml")
        .path;
    let shipped = h.must(&format!("cat {path}"));
    // Module names: top-level keys (before 0.23) or the keys under `modules:` (since).
    let new_format = shipped.lines().any(|l| l == "modules:");
    let modules: Vec<&str> = if new_format {
        shipped
            .lines()
            .skip_while(|l| *l != "modules:")
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("  ")?.strip_suffix(':'))
            .filter(|k| !k.starts_with([' ', '#']))
            .collect()
    } else {
        shipped
            .lines()
            .filter_map(|l| l.strip_suffix(':'))
            .filter(|k| !k.starts_with([' ', '#', '-']))
            .collect()
    };
    let served = scrape(h, addr, "/config");
    for m in &modules {
        assert!(
            served.lines().any(|l| l.trim_start() == format!("{m}:")),
            "{unit}: module {m} of {path} not in /config:\n{served}"
        );
    }
    println!(
        "{unit}: {path} has {} module(s), all served by /config",
        modules.len()
    );
    // sysUpTime over SNMPv2c, one try of 1 s.
    let walk = "walk: [1.3.6.1.2.1.1.3]\nmetrics:\n- name: sysUpTime\n  oid: 1.3.6.1.2.1.1.3\n  \
                type: gauge\ntimeout: 1s\nretries: 0\n";
    let indent = |text: &str, n: usize| -> String {
        text.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect()
    };
    let (own, query) = if new_format {
        (
            format!(
                "auths:\n  obs_host_test:\n    community: public\n    version: 2\n\
                 modules:\n  obs_host_test:\n{}",
                indent(walk, 4)
            ),
            "&auth=obs_host_test",
        )
    } else {
        (
            format!(
                "obs_host_test:\n{}  version: 2\n  auth:\n    community: public\n",
                indent(walk, 2)
            ),
            "",
        )
    };
    h.write(path, &own);
    h.must(&format!(
        "{{ systemctl reset-failed {unit} 2>/dev/null || true; }} && systemctl restart {unit}"
    ));
    running_installed_binary(h, case);
    let served = h.wait_for(&format!("curl -fsS --max-time 20 http://{addr}/config"), 30);
    assert!(
        served.lines().any(|l| l.trim_start() == "obs_host_test:"),
        "{unit}: the admin's module is not in /config:\n{served}"
    );
    let (_, text) = h.sh(&format!(
        "curl -sS --max-time 20 'http://{addr}/snmp?target=127.0.0.1&module=obs_host_test{query}'"
    ));
    assert!(
        text.contains("127.0.0.1") || text.contains("snmp_scrape_"),
        "{unit}: walk of 127.0.0.1:\n{text}"
    );
    let line = h.wait_for(
        &format!(
            "journalctl --no-pager -o cat -u {unit} | grep -F module=obs_host_test \
             | grep -F target=127.0.0.1"
        ),
        10,
    );
    println!("{unit} walking 127.0.0.1 (no agent): {}", line.trim());
    // Back to the shipped file (unchanged bytes: the upgrade must not ask about it).
    h.write(path, &shipped);
    h.must(&format!(
        "{{ systemctl reset-failed {unit} 2>/dev/null || true; }} && systemctl restart {unit}"
    ));
    running_installed_binary(h, case);
    metrics_served(h, case, &case.c.service.listen);
}

/// Exporters with a web config flag whose mirrored version predates that flag: the file is
/// shipped (for the pinned version) but cannot be enabled on the host.
const WEB_CONFIG_NOT_IN_MIRRORED_VERSION: &[(&str, &str)] =
    &[("nginx_exporter", "0.11 has no --web.config.file (1.x has)")];

/// The shipped, disabled web config switched on as README says: certificate and key in
/// /etc/<name>/, the template's lines uncommented, WEB_ARGS uncommented in the env file; TLS
/// and basic auth live, and the exposure still ≤ MAX_EXPOSURE; then switched off again.
fn web_config_live(h: &Host, case: &Case, m: &webconfig::Material) -> Option<f64> {
    let (c, unit) = (&case.c, &case.unit);
    let wc = c.web_config_path()?;
    let flag = c.service.web_config_flag.as_deref().unwrap();
    let name = &c.name;
    let (has_flag, _) = h.sh(&format!(
        "/usr/bin/{name} --help 2>&1 | grep -q -- '{}'",
        flag.trim_start_matches('-')
    ));
    if let Some((_, why)) = WEB_CONFIG_NOT_IN_MIRRORED_VERSION
        .iter()
        .find(|(n, _)| n == name)
    {
        assert!(
            !has_flag,
            "{name} has {flag} now: take it off WEB_CONFIG_NOT_IN_MIRRORED_VERSION"
        );
        println!("{unit}: web config not tested: {why}");
        return None;
    }
    assert!(has_flag, "{name} --help does not mention {flag}");
    let (crt, key) = (
        format!("/etc/{name}/tls.crt"),
        format!("/etc/{name}/tls.key"),
    );
    h.write(&crt, &std::fs::read_to_string(&m.cert).unwrap());
    h.write(&key, &std::fs::read_to_string(&m.key).unwrap());
    h.must(&format!(
        "chmod 0644 {crt} && chown root:{g} {key} && chmod 0640 {key}",
        g = c.service.group
    ));
    let shipped = h.must(&format!("cat {wc}"));
    h.write(&wc, &webconfig::enable(&shipped, &crt, &key, m));
    let env = &case.env_file;
    h.must(&format!(
        "grep -q '^#WEB_ARGS=' {env} && sed -i 's|^#WEB_ARGS=|WEB_ARGS=|' {env} && \
         {{ systemctl reset-failed {unit} 2>/dev/null || true; }} && systemctl restart {unit}"
    ));
    running_installed_binary(h, case);
    let addr = scrape_addr(&c.service.listen);
    // Up when it answers TLS (401 without credentials).
    h.wait_for(
        &format!("curl -sS -o /dev/null --max-time 5 --cacert {crt} https://{addr}/metrics"),
        30,
    );
    let metric = case.metric().unwrap_or("# TYPE ");
    webconfig::check_live(&|a| h.cmd(a), &addr, &crt, m, metric);
    let score = exposure(h, unit);
    println!("{unit}: TLS + basic auth live (exposure {score} with the web config on)");
    // Off again: the shipped bytes back, the certificate gone (purge leaves no /etc/<name>).
    h.write(&wc, &shipped);
    h.must(&format!(
        "sed -i 's|^WEB_ARGS=|#WEB_ARGS=|' {env} && rm {crt} {key} && {{ systemctl reset-failed {unit} 2>/dev/null || true; }} && systemctl restart {unit}"
    ));
    running_installed_binary(h, case);
    metrics_served(h, case, &c.service.listen);
    Some(score)
}

/// systemd_exporter is not in the mirror, so its binary never runs here; what it needs from
/// its sandbox is proven instead: the [Service] section of its rendered unit (everything but
/// Type/Environment*/ExecStart/Restart*), as its own system user, runs busctl making the calls
/// the exporter makes (Manager.ListUnits and a unit's properties on the system bus). The same
/// sandbox without AF_UNIX must fail the same call, so the check can fail.
fn systemd_exporter_bus_sandbox(h: &Host, tmp: &Path) {
    let out = tmp.join("systemd-exporter-render");
    must(
        xtask()
            .args(["render", "systemd_exporter", "--out"])
            .arg(&out)
            .arg("--components")
            .arg(workspace().join("components")),
    );
    let unit = std::fs::read_to_string(out.join("usr/lib/systemd/system/systemd_exporter.service"))
        .expect("rendered systemd_exporter.service");
    let service = unit
        .split("[Service]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .expect("[Service] section");
    let props: Vec<String> = service
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            !["Type=", "Environment", "ExecStart=", "Restart"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| {
            assert!(!l.contains('\''), "unexpected quote in {l}");
            format!("-p '{l}'")
        })
        .collect();
    assert!(
        props.iter().any(|p| p.contains("User=systemd_exporter"))
            && props.iter().any(|p| p.contains("RestrictAddressFamilies=")),
        "the rendered unit lacks its user or address families:\n{service}"
    );
    h.must(
        "getent passwd systemd_exporter >/dev/null || useradd --system --no-create-home \
         --home-dir /nonexistent --shell /usr/sbin/nologin systemd_exporter",
    );
    let calls = "sh -c 'busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
                 org.freedesktop.systemd1.Manager ListUnits && busctl --system get-property \
                 org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/nginx_2eservice \
                 org.freedesktop.systemd1.Unit ActiveState'";
    let run = |props: &[String]| {
        h.sh(&format!(
            "systemd-run --quiet --wait --pipe --collect {} {calls}",
            props.join(" ")
        ))
    };
    let (ok, text) = run(&props);
    assert!(
        ok && text.contains("a(ssssssouso)")
            && text.contains("nginx.service")
            && text.contains("s \"active\""),
        "systemd_exporter's sandbox cannot list units on the system bus:\n{}",
        &text[..text.len().min(3000)]
    );
    // The same sandbox with AF_UNIX taken out of its address families (the line replaced: a
    // second RestrictAddressFamilies= would be merged with the first).
    let without_unix: Vec<String> = props
        .iter()
        .map(|p| {
            if p.starts_with("-p 'RestrictAddressFamilies=") {
                "-p 'RestrictAddressFamilies=AF_INET AF_INET6'".to_string()
            } else {
                p.clone()
            }
        })
        .collect();
    let (ok, text) = run(&without_unix);
    assert!(
        !ok,
        "the bus call succeeded without AF_UNIX, so the check above proves nothing:\n{}",
        &text[..text.len().min(3000)]
    );
    eprintln!(
        "host: systemd_exporter's sandbox lists units and reads properties on the system bus"
    );
}

#[test]
fn apt_and_rpm_lifecycle_on_a_booted_host() {
    let rootfs = host::rootfs();
    let mirror = mirror::mirror_dir();
    let rows = mirror::manifest(&mirror);
    let arch = host_arch();
    let tmp = tempfile::tempdir().unwrap();

    // Every component the mirror carries, pinned to the mirror's version, as revision N
    // (comps1) and N+1 (comps2).
    let all = component::load_dir(&workspace().join("components")).unwrap();
    let names: Vec<String> = all
        .iter()
        .filter(|c| rows.iter().any(|r| r.component == c.name && r.arch == arch))
        .map(|c| c.name.clone())
        .collect();
    assert!(
        names.iter().any(|n| n == "node_exporter") && names.iter().any(|n| n == "mysqld_exporter"),
        "the mirror lacks the catalogue's exporters: {names:?}"
    );
    let skipped: Vec<&str> = all
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !names.iter().any(|x| x == n))
        .collect();
    if !skipped.is_empty() {
        println!("not in the mirror (not tested on the host): {skipped:?}");
    }
    let server = mirror::Server::start(&mirror);
    let comps1 = tmp.path().join("components1");
    let comps2 = tmp.path().join("components2");
    std::fs::create_dir(&comps1).unwrap();
    std::fs::create_dir(&comps2).unwrap();
    for n in &names {
        let file = format!("{n}.toml");
        std::fs::copy(
            workspace().join("components").join(&file),
            comps1.join(&file),
        )
        .unwrap();
        let version = &rows.iter().find(|r| &r.component == n).unwrap().version;
        must(
            xtask()
                .args(["pin", n, version, "--components"])
                .arg(&comps1)
                .args(["--mirror", &server.url, "--ca-cert"])
                .arg(&server.ca),
        );
        let text = std::fs::read_to_string(comps1.join(&file)).unwrap();
        let bumped: String = text
            .lines()
            .map(|l| match l.strip_prefix("revision = ") {
                Some(r) => format!("revision = {}\n", r.trim().parse::<u32>().unwrap() + 1),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(comps2.join(&file), bumped).unwrap();
    }

    let key = gpg::GpgKey::generate("host test release <host@example.org>");
    let key_file = tmp.path().join("release-key.asc");
    std::fs::write(&key_file, key.export_secret_armored()).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    // /srv/obs in the host: dist1 (revision N), dist2 (N+1) and `repo`, the published URL,
    // switched from the one to the other for the upgrade.
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    // Both revisions are built and the host boots at the same time (the scope joins, and so
    // drops — powers off — the host, also when a build fails).
    let t = std::time::Instant::now();
    let (built1, built2, mut h) = std::thread::scope(|s| {
        let boot = s.spawn(|| Host::boot(&rootfs, &[(share.as_path(), "/srv/obs")]));
        let second = s.spawn(|| {
            dist(
                &comps2,
                &share.join("dist2"),
                &tmp.path().join("2"),
                &server,
                &key_file,
                1_700_086_400,
                // zstd (dpkg >= 1.21.18, rpm >= 4.14): installs, and is fast to build.
                "zstd",
            )
        });
        let built1 = dist(
            &comps1,
            &share.join("dist1"),
            &tmp.path().join("1"),
            &server,
            &key_file,
            1_700_000_000,
            "xz", // the default
        );
        let built2 = second
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let host = boot.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (built1, built2, host)
    });
    eprintln!(
        "host: both revisions built and host up in {:?}",
        t.elapsed()
    );
    drop(server);
    std::os::unix::fs::symlink("dist1/current", share.join("repo")).unwrap();
    let switch_repo = |to: &str| {
        // Published now: the revisions were built in parallel, so the newer one's files may be
        // older than what apt holds, and the web server would answer 304 Not Modified to
        // apt's If-Modified-Since.
        must(
            Command::new("find")
                .arg(share.join(to).join("current/"))
                .args(["-type", "f", "-exec", "touch", "{}", "+"]),
        );
        let t = share.join("repo.new");
        std::os::unix::fs::symlink(format!("{to}/current"), &t).unwrap();
        std::fs::rename(&t, share.join("repo")).unwrap();
    };

    let mut cases = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let c = component::load_file(&comps1.join(format!("{n}.toml"))).unwrap();
        let (host_part, _) = c.service.listen.rsplit_once(':').unwrap();
        cases.push(Case {
            rev1: c.revision,
            unit: c.unit_name(),
            env_file: format!("/etc/default/{}", c.deb_name),
            moved: format!("{host_part}:{}", 19100 + i),
            c,
        });
    }

    h.must(&format!(
        "systemd-run --unit=obs-repo-http \
         python3 -m http.server --bind 127.0.0.1 --directory /srv/obs {REPO_PORT}"
    ));
    let base = format!("http://127.0.0.1:{REPO_PORT}/repo");
    h.wait_for(&format!("curl -fsS -o /dev/null {base}/SHA256SUMS"), 30);

    // A real NGINX serving stub_status where nginx_exporter's default flags scrape it.
    h.write(
        "/etc/nginx/conf.d/obs-test.conf",
        &format!(
            r#"server {{
  listen 127.0.0.1:{NGINX_PORT};
  access_log off;
  location = /stub_status {{ stub_status; }}
  location = /probe-target {{ return 200 "ok\n"; }}
}}
"#
        ),
    );
    h.must("nginx -t 2>&1 && systemctl enable nginx 2>&1 && systemctl restart nginx");
    h.wait_for(
        &format!(
            "curl -fsS http://127.0.0.1:{NGINX_PORT}/stub_status | grep -q '^Active connections'"
        ),
        30,
    );

    // The mirror's binaries are Debian's builds of the upstream sources: Debian's alertmanager
    // reads its notification templates (default.tmpl, email.tmpl) from
    // /usr/share/prometheus/alertmanager, where the upstream release embeds them. Give the
    // host a pair, as Debian's alertmanager package would.
    h.must(
        "mkdir -p /usr/share/prometheus/alertmanager && for t in default email; do \
         printf '{{ define \"__obs_test_%s\" }}{{ end }}\\n' $t > /usr/share/prometheus/alertmanager/$t.tmpl; done",
    );

    // The administrator's steps from README ("On a host").
    h.must(&format!(
        "curl -fsSLo /usr/share/keyrings/observability-stack.gpg {base}/keys/observability-stack.gpg && \
         curl -fsSLo /etc/apt/sources.list.d/observability-stack.sources {base}/observability-stack.sources"
    ));
    let sources = h.must("cat /etc/apt/sources.list.d/observability-stack.sources");
    assert!(
        sources.contains(&format!("URIs: {base}/apt"))
            && sources.contains("Signed-By: /usr/share/keyrings/observability-stack.gpg"),
        "{sources}"
    );
    let update = h.must("apt-get update 2>&1");
    clean_output("apt-get update", &update);

    // One certificate and bcrypt password for every exporter's web config (openssl, htpasswd).
    let tls = webconfig::Material::generate(&tmp.path().join("tls"));
    let mut scores = BTreeMap::new();
    // Install every component (the firewall files of all of them are then in place).
    for case in &cases {
        let (c, unit) = (&case.c, &case.unit);
        let out = h.must(&format!("apt-get install -y {} 2>&1", c.deb_name));
        clean_output(&format!("apt-get install {}", c.deb_name), &out);
        let version = h.must(&format!("dpkg-query -W -f='${{Version}}' {}", c.deb_name));
        assert_eq!(version, format!("{}-{}", c.version, case.rev1));

        // The service account: a system user with no login shell and no home in /home.
        let pw = h.must(&format!("getent passwd {}", c.service.user));
        let f: Vec<&str> = pw.trim().split(':').collect();
        assert_eq!(f[6], "/usr/sbin/nologin", "{pw}");
        assert!(!f[5].starts_with("/home"), "{pw}");
        assert!(
            f[2].parse::<u32>().unwrap() < 1000,
            "not a system user: {pw}"
        );
        h.must(&format!("getent group {}", c.service.group));
        assert_eq!(
            h.must(&format!("systemctl is-enabled {unit}")).trim(),
            "enabled"
        );
        for f in &c.config {
            let st = h.must(&format!("stat -c '%a %U %G' {}", f.path));
            assert_eq!(
                st.trim(),
                format!("{:o} {} {}", f.mode, f.owner, f.group),
                "{}",
                f.path
            );
        }
        if c.config.iter().any(|f| f.credential) {
            waits_for_credentials(&h, case);
            write_credentials(&h, case);
            h.must(&format!(
                "{{ systemctl reset-failed {unit} 2>/dev/null || true; }} && systemctl restart {unit}"
            ));
        }
        running_installed_binary(&h, case);
        metrics_served(&h, case, &c.service.listen);
        component_probe(&h, case);
        // Let a late crash show before judging.
        std::thread::sleep(std::time::Duration::from_secs(1));
        assert_eq!(prop(&h, unit, "NRestarts"), "0", "{unit} restarted");
        let mut score = exposure(&h, unit);
        if let Some(s) = web_config_live(&h, case, &tls) {
            score = score.max(s);
        }
        scores.insert(unit.clone(), score);
        let verify = h.must(&format!(
            "systemd-analyze verify /usr/lib/systemd/system/{unit} 2>&1"
        ));
        assert!(
            verify.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{verify}"
        );
    }

    // Firewall files: each front end reads ours; none opens a port.
    for case in &cases {
        let n = &case.c.name;
        let ports: Vec<String> = case
            .c
            .firewall
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.proto))
            .collect();
        let info = h.must(&format!("ufw app info {n}"));
        let fw = h.must(&format!("firewall-offline-cmd --info-service={n}"));
        for p in &ports {
            assert!(info.contains(p), "ufw app info {n}:\n{info}");
            assert!(
                fw.contains(p),
                "firewall-offline-cmd --info-service={n}:\n{fw}"
            );
        }
        h.must(&format!("nft -c -f /etc/nftables.d/{n}.nft"));
    }
    let ufw = h.must("ufw status");
    assert!(ufw.contains("Status: inactive"), "{ufw}");
    let zone = h.must("firewall-offline-cmd --list-all");
    for case in &cases {
        assert!(
            !zone.contains(&case.c.name),
            "the default zone lists {}:\n{zone}",
            case.c.name
        );
    }
    // Loading the nftables snippets defines port sets and nothing else: no chain, no rule.
    for case in &cases {
        h.must(&format!("nft -f /etc/nftables.d/{}.nft", case.c.name));
    }
    let ruleset = h.must("nft list ruleset");
    assert!(
        ruleset.contains("table inet observability_stack")
            && !ruleset.contains("chain")
            && !ruleset.contains("accept"),
        "{ruleset}"
    );
    h.must("nft delete table inet observability_stack");

    // Upgrade to revision N+1, after an administrator's edit of the env file.
    for case in &cases {
        let (env, unit) = (&case.env_file, &case.unit);
        h.must(&format!(
            "sed -i 's|^LISTEN_ADDRESS=.*|LISTEN_ADDRESS={}|' {env} && echo '# edited by the admin' >> {env} \
             && {{ systemctl reset-failed {unit} 2>/dev/null || true; }} && systemctl restart {unit}",
            case.moved
        ));
        metrics_served(&h, case, &case.moved);
    }
    let before: Vec<String> = cases
        .iter()
        .map(|c| running_installed_binary(&h, c))
        .collect();
    switch_repo("dist2");
    clean_output("apt-get update", &h.must("apt-get update 2>&1"));
    let pkgs: Vec<&str> = cases.iter().map(|c| c.c.deb_name.as_str()).collect();
    let out = h.must(&format!("apt-get install -y {} 2>&1", pkgs.join(" ")));
    clean_output("apt-get upgrade", &out);
    for (case, old_pid) in cases.iter().zip(&before) {
        let c = &case.c;
        let version = h.must(&format!("dpkg-query -W -f='${{Version}}' {}", c.deb_name));
        assert_eq!(version, format!("{}-{}", c.version, case.rev1 + 1));
        let pid = running_installed_binary(&h, case);
        assert_ne!(&pid, old_pid, "{}: not restarted by the upgrade", case.unit);
        let env = h.must(&format!("cat {}", case.env_file));
        assert!(
            env.contains(&format!("LISTEN_ADDRESS={}", case.moved))
                && env.contains("# edited by the admin"),
            "{}: the admin's edit is lost:\n{env}",
            case.env_file
        );
        h.must(&format!(
            "test ! -e {}.dpkg-dist && test ! -e {}.dpkg-old",
            case.env_file, case.env_file
        ));
        metrics_served(&h, case, &case.moved);
    }

    // Remove: stopped, disabled, binary gone, configuration kept. Purge: all of it gone.
    for case in &cases {
        let (c, unit) = (&case.c, &case.unit);
        let out = h.must(&format!("apt-get remove -y {} 2>&1", c.deb_name));
        clean_output(&format!("apt-get remove {}", c.deb_name), &out);
        let (_, active) = h.sh(&format!("systemctl is-active {unit}"));
        assert_eq!(active.trim(), "inactive", "{unit} after remove");
        h.must(&format!(
            "test ! -e /etc/systemd/system/multi-user.target.wants/{unit} && \
             test ! -e /usr/bin/{} && test -f {}",
            c.name, case.env_file
        ));
        for f in &c.config {
            h.must(&format!("test -f {}", f.path));
        }
        let st = h.must(&format!("dpkg-query -W -f='${{Status}}' {}", c.deb_name));
        assert_eq!(st, "deinstall ok config-files");
        let out = h.must(&format!("apt-get purge -y {} 2>&1", c.deb_name));
        clean_output(&format!("apt-get purge {}", c.deb_name), &out);
        h.must(&format!("test ! -e {}", case.env_file));
        for f in &c.config {
            h.must(&format!("test ! -e {}", f.path));
        }
        h.must(&format!("test ! -e /etc/{}", c.name));
        if let Some(d) = &c.service.state_directory {
            h.must(&format!("test ! -e /var/lib/{d}"));
        }
        let (known, _) = h.sh(&format!("dpkg-query -W {} 2>/dev/null", c.deb_name));
        assert!(!known, "{} still known to dpkg after purge", c.deb_name);
    }

    // rpm with Debian's rpm. Its database knows nothing of what dpkg installed (libc, systemd,
    // /bin/sh, shadow's useradd), so every Requires of our package is unmet there although
    // the files are present: --nodeps, for that reason only. Debian's rpm refuses to install
    // on a dpkg system (it points to alien) unless told --force-debian.
    // The key, as README tells a dnf host (rpm's own database; dnf imports the same file).
    h.must(&format!(
        "rpmkeys --import {base}/keys/observability-stack.asc"
    ));
    let rpm_of = |built: &Built, dist: &str, name: &str| {
        format!(
            "/srv/obs/{dist}/current/{}",
            built.files[&("rpm".to_string(), name.to_string())]
        )
    };
    for case in &cases {
        let (c, unit) = (&case.c, &case.unit);
        let out = h.must(&format!(
            "rpm -i --nodeps --force-debian {} 2>&1",
            rpm_of(&built1, "dist1", &c.name)
        ));
        println!("rpm -i {}:\n{out}", c.name);
        clean_output(&format!("rpm -i {}", c.name), &out);
        h.must(&format!("getent passwd {}", c.service.user));
        assert_eq!(
            h.must(&format!("systemctl is-enabled {unit}")).trim(),
            "enabled"
        );
        if c.config.iter().any(|f| f.credential) {
            waits_for_credentials(&h, case);
            write_credentials(&h, case);
            h.must(&format!(
                "{{ systemctl reset-failed {unit} 2>/dev/null || true; }} && systemctl restart {unit}"
            ));
        }
        let old = running_installed_binary(&h, case);
        metrics_served(&h, case, &c.service.listen);
        let out = h.must(&format!(
            "rpm -U --nodeps --force-debian {} 2>&1",
            rpm_of(&built2, "dist2", &c.name)
        ));
        clean_output(&format!("rpm -U {}", c.name), &out);
        let q = h.must(&format!(
            "rpm -q --qf '%{{VERSION}}-%{{RELEASE}}' {}",
            c.name
        ));
        assert_eq!(q, format!("{}-{}", c.version, case.rev1 + 1));
        let pid = running_installed_binary(&h, case);
        assert_ne!(pid, old, "{unit}: not restarted by rpm -U");
        let out = h.must(&format!("rpm -e {} 2>&1", c.name));
        // rpm's rule for a modified %config file (the credentials the test wrote): kept as
        // .rpmsave, with exactly this warning.
        let saved: Vec<String> = c
            .config
            .iter()
            .filter(|f| f.credential)
            .map(|f| format!("warning: {} saved as {}.rpmsave", f.path, f.path))
            .collect();
        for line in &saved {
            assert!(out.contains(line.as_str()), "rpm -e {}:\n{out}", c.name);
        }
        for f in c.config.iter().filter(|f| f.credential) {
            h.must(&format!("test -f {}.rpmsave", f.path));
        }
        let rest: String = out
            .lines()
            .filter(|l| !saved.iter().any(|s| s == l))
            .map(|l| format!("{l}\n"))
            .collect();
        clean_output(&format!("rpm -e {}", c.name), &rest);
        let (_, active) = h.sh(&format!("systemctl is-active {unit}"));
        assert_eq!(active.trim(), "inactive", "{unit} after rpm -e");
        h.must(&format!(
            "test ! -e /usr/bin/{} && test ! -e /usr/lib/systemd/system/{unit} && \
             test ! -e /etc/systemd/system/multi-user.target.wants/{unit}",
            c.name
        ));
        let (known, _) = h.sh(&format!("rpm -q {}", c.name));
        assert!(!known, "{} still installed after rpm -e", c.name);
    }

    // Nothing failed along the way: no unit of ours ever failed, no maintainer script errors
    // reached the journal.
    for case in &cases {
        let j = h.must(&format!("journalctl -b --no-pager -o cat -u {}", case.unit));
        assert!(
            !j.contains("Failed with result") && !j.contains("code=dumped"),
            "{}:\n{j}",
            case.unit
        );
    }
    let (_, failed) = h.sh("systemctl --failed --no-legend --plain");
    assert!(
        !cases.iter().any(|c| failed.contains(&c.unit)),
        "failed units:\n{failed}"
    );
    systemd_exporter_bus_sandbox(&h, tmp.path());
    h.shutdown();
    // Written to the process's stderr itself, not through println!: the test harness captures
    // the print macros of a passing test, and these scores belong in CI's output.
    let mut err = std::io::stderr().lock();
    for (unit, score) in &scores {
        use std::io::Write;
        writeln!(err, "exposure {unit} {score}").unwrap();
    }
}
