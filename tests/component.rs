//! Component file validation: each bad file gives one clear error naming `file:line:col`, the
//! field and the value, both through the library (`load_file`, `parse_str`) and through the
//! real binary (`cargo xtask check --components DIR`). The bad files are the repository's own
//! components with one edit each, so every case differs from a valid file in one place.

use std::path::{Path, PathBuf};
use std::process::Output;

use xtask::component::{self, ComponentError};

fn repo_component(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../components/{name}.toml"));
    std::fs::read_to_string(p).unwrap()
}

/// `text` with each `(old, new)` applied once (each `old` must occur exactly once).
fn edit(mut text: String, edits: &[(&str, &str)]) -> String {
    for (old, new) in edits {
        assert_eq!(text.matches(old).count(), 1, "{old:?} must occur once");
        text = text.replacen(old, new, 1);
    }
    text
}

/// 1-based line and column (in characters) of the first occurrence of `at`.
fn line_col(text: &str, at: &str) -> (usize, usize) {
    let off = text
        .find(at)
        .unwrap_or_else(|| panic!("{at:?} not in the text"));
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map(|i| i + 1).unwrap_or(0)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

fn check_cli(dir: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["check", "--components"])
        .arg(dir)
        .output()
        .unwrap()
}

struct Case<'a> {
    /// Which repository component to start from.
    base: &'a str,
    /// File stem to write it as (default: `base`).
    stem: Option<&'a str>,
    edits: &'a [(&'a str, &'a str)],
    /// Where the error must point: the first occurrence of this in the edited text.
    at: &'a str,
    field: &'a str,
    /// The offending value as the error reports it (None: no value shown).
    value: Option<&'a str>,
    /// A part of the message.
    message: &'a str,
}

/// Load the edited file through the library and the CLI; both must refuse it with exactly
/// the expected error. Returns the error.
fn refused(c: &Case) -> ComponentError {
    let dir = tempfile::tempdir().unwrap();
    let file = dir
        .path()
        .join(format!("{}.toml", c.stem.unwrap_or(c.base)));
    let text = edit(repo_component(c.base), c.edits);
    std::fs::write(&file, &text).unwrap();
    let (line, col) = line_col(&text, c.at);

    // Library, from the file and from the text.
    let errs = component::load_file(&file)
        .err()
        .unwrap_or_else(|| panic!("{} was accepted:\n{text}", file.display()));
    let again = component::parse_str(&file, &text, "0".repeat(64))
        .err()
        .unwrap();
    assert_eq!(errs.to_string(), again.to_string());
    assert_eq!(
        errs.0.len(),
        1,
        "one edit, one error; got:\n{errs}\nin:\n{text}"
    );
    let e = errs.0[0].clone();
    assert_eq!(e.file, file, "{e}");
    assert_eq!((e.line, e.col), (line, col), "{e}");
    assert_eq!(e.field, c.field, "{e}");
    assert_eq!(e.value, c.value.unwrap_or(""), "{e}");
    assert!(e.message.contains(c.message), "{e}");
    let shown = e.to_string();
    let mut head = format!("{}:{line}:{col}: field `{}`", file.display(), c.field);
    if let Some(v) = c.value.filter(|v| !v.is_empty()) {
        head.push_str(&format!(" = {v:?}"));
    }
    assert!(shown.starts_with(&head), "{shown}\nwanted: {head}");

    // The command line reports the same.
    let o = check_cli(dir.path());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "check accepted it:\n{stderr}");
    assert!(
        stderr.contains(&shown),
        "check said:\n{stderr}\nwanted:\n{shown}"
    );
    e
}

/// The repository's components are valid (so each case below is refused for its one edit).
#[test]
fn repository_components_are_valid() {
    for name in ["node_exporter", "mysqld_exporter"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, repo_component(name)).unwrap();
        let c = component::load_file(&file).unwrap();
        assert_eq!(c.name, name);
        assert_eq!(c.pinned_arches().len(), 2);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../components");
    let o = check_cli(&dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("pinned: amd64, arm64"), "{out}");
    assert!(!out.contains("not built"), "{out}");
}

const NODE_URL: &str = "https://github.com/prometheus/node_exporter/releases/download/v{version}/node_exporter-{version}.linux-{arch}.tar.gz";

#[test]
fn name_must_equal_the_file_stem() {
    refused(&Case {
        base: "node_exporter",
        stem: Some("node"),
        edits: &[],
        at: "\"node_exporter\"",
        field: "name",
        value: Some("node_exporter"),
        message: "must equal the file stem \"node\"",
    });
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[("name = \"node_exporter\"", "name = \"Node_Exporter\"")],
        at: "\"Node_Exporter\"",
        field: "name",
        value: Some("Node_Exporter"),
        message: "character 'N' is not allowed",
    });
}

#[test]
fn bad_versions() {
    for (v, msg) in [
        ("1.10-2", "character '-' is not allowed"),
        ("v1.10.2", "must start with a digit"),
        ("1.10.2 ", "character ' ' is not allowed"),
        ("1.10.2;rm", "character ';' is not allowed"),
        ("", "must not be empty"),
    ] {
        let new = format!("version = \"{v}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("version = \"1.10.2\"", &new)],
            at: &new["version = ".len()..],
            field: "version",
            value: Some(v),
            message: msg,
        });
    }
    // A newline written as a TOML escape.
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[("version = \"1.10.2\"", "version = \"1.10.2\\nEvil: yes\"")],
        at: "\"1.10.2\\n",
        field: "version",
        value: Some("1.10.2\nEvil: yes"),
        message: "control character U+000A",
    });
}

const NODE_SUMMARY: &str = "summary = \"Prometheus exporter for hardware and OS metrics\"";

#[test]
fn control_and_invisible_characters_in_summary_and_description() {
    for (escaped, raw, msg) in [
        ("\\n", "\n", "control character U+000A"),
        ("\\r", "\r", "control character U+000D"),
        ("\\t", "\t", "control character U+0009"),
        ("\\u001b[31m", "\u{1b}[31m", "control character U+001B"),
        ("\\u0085", "\u{85}", "control character U+0085"),
        ("\\u2028", "\u{2028}", "U+2028"),
        ("\\u202e", "\u{202e}", "U+202E"),
        ("\\ufeff", "\u{feff}", "U+FEFF"),
    ] {
        let new = format!("summary = \"Prometheus exporter{escaped}Depends: evil\"");
        let value = format!("Prometheus exporter{raw}Depends: evil");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[(NODE_SUMMARY, &new)],
            at: "\"Prometheus exporter",
            field: "summary",
            value: Some(&value),
            message: msg,
        });
    }
    // Description: newlines are its line breaks; every other control character is refused.
    let desc_start = "description = \"\"\"\nThe node exporter exposes";
    for (escaped, raw, msg) in [
        ("\\r", "\r", "control character U+000D"),
        ("\\t", "\t", "control character U+0009"),
        ("\\u0000", "\0", "control character U+0000"),
        ("\\u2029", "\u{2029}", "U+2029"),
    ] {
        let new = format!("description = \"\"\"\nThe node exporter{escaped} exposes");
        let text = edit(repo_component("node_exporter"), &[(desc_start, &new)]);
        let c = component::parse_str(
            Path::new("/x/node_exporter.toml"),
            &text.replace(&new, desc_start),
            String::new(),
        )
        .unwrap();
        let value = c.description.replacen(
            "The node exporter exposes",
            &format!("The node exporter{raw} exposes"),
            1,
        );
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[(desc_start, &new)],
            at: "\"\"\"\nThe node",
            field: "description",
            value: Some(&value),
            message: msg,
        });
    }
}

#[test]
fn urls_must_be_https_and_templates_complete() {
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "homepage = \"https://github.com/prometheus/node_exporter\"",
            "homepage = \"http://github.com/prometheus/node_exporter\"",
        )],
        at: "\"http://github.com/prometheus/node_exporter\"",
        field: "homepage",
        value: Some("http://github.com/prometheus/node_exporter"),
        message: "must be an https:// URL",
    });
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "homepage = \"https://github.com/prometheus/node_exporter\"",
            "homepage = \"https://github.com/prometheus/node_exporter%n\"",
        )],
        at: "\"https://github.com/prometheus/node_exporter%n\"",
        field: "homepage",
        value: Some("https://github.com/prometheus/node_exporter%n"),
        message: "must not contain %",
    });
    let http_url = NODE_URL.replace("https://", "http://");
    let no_arch = NODE_URL.replace("linux-{arch}", "linux-amd64");
    let no_version = NODE_URL.replace(
        "v{version}/node_exporter-{version}",
        "v1.10.2/node_exporter-1.10.2",
    );
    let unknown = NODE_URL.replace("linux-{arch}", "{os}-{arch}");
    let userinfo = NODE_URL.replace("https://", "https://user@");
    let not_archive = NODE_URL.replace(".tar.gz", ".deb");
    for (url, msg) in [
        (http_url.as_str(), "must be an https:// URL"),
        (no_arch.as_str(), "must contain {arch}"),
        (no_version.as_str(), "must contain {version}"),
        (unknown.as_str(), "only {version} and {arch} may be used"),
        (userinfo.as_str(), "no user info"),
        (not_archive.as_str(), "must be a .tar.gz, .tgz or .zip"),
    ] {
        let old = format!("url = \"{NODE_URL}\"");
        let new = format!("url = \"{url}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[(&old, &new)],
            at: &format!("\"{url}\""),
            field: "source.url",
            value: Some(url),
            message: msg,
        });
    }
    let sums =
        "https://github.com/prometheus/node_exporter/releases/download/v{version}/sha256sums.txt";
    for (url, msg) in [
        (sums.replace("https:", "ftp:"), "must be an https:// URL"),
        (
            sums.replace("v{version}", "latest"),
            "must contain {version}",
        ),
    ] {
        let old = format!("checksums = \"{sums}\"");
        let new = format!("checksums = \"{url}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[(&old, &new)],
            at: &format!("\"{url}\""),
            field: "source.checksums",
            value: Some(&url),
            message: msg,
        });
    }
}

const NODE_AMD64_PIN: &str = "c46e5b6f53948477ff3a19d97c58307394a29fe64a01905646f026ddc32cb65b";

#[test]
fn bad_sha256_pins() {
    let upper = NODE_AMD64_PIN.to_uppercase();
    let short = &NODE_AMD64_PIN[1..];
    let long = format!("{NODE_AMD64_PIN}0");
    let non_hex = NODE_AMD64_PIN.replacen('c', "g", 1);
    let prefixed = format!("sha256:{}", &NODE_AMD64_PIN[7..]);
    for v in [upper.as_str(), short, &long, &non_hex, &prefixed] {
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[(NODE_AMD64_PIN, v)],
            at: &format!("\"{v}\""),
            field: "source.sha256.amd64",
            value: Some(v),
            message: "must be 64 lowercase hex digits",
        });
    }
}

#[test]
fn unknown_arch_keys() {
    for key in ["x86_64", "i386", "AMD64"] {
        let old = format!("amd64 = \"{NODE_AMD64_PIN}\"");
        let new = format!("{key} = \"{NODE_AMD64_PIN}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[(&old, &new)],
            at: &new,
            field: &format!("source.sha256.{key}"),
            value: Some(key),
            message: "unknown arch (amd64 or arm64)",
        });
    }
}

#[test]
fn bad_listen_addresses_and_ports() {
    for (v, msg) in [
        ("127.0.0.1:0", "outside 1-65535"),
        ("127.0.0.1:70000", "outside 1-65535"),
        ("127.0.0.1:+9100", "port \"+9100\" is not a decimal number"),
        ("127.0.0.1:09100", "port \"09100\" has a leading zero"),
        ("127.0.0.1:", "is not a decimal number"),
        ("9100", "must be HOST:PORT"),
        ("localhost", "must be HOST:PORT"),
        ("example.com:9100", "not an IP address or localhost"),
        ("::1:9100", "must be written in brackets"),
        (
            "[127.0.0.1]:9100",
            "only an IPv6 address is written in brackets",
        ),
        ("[::1:9100", "unbalanced brackets"),
        ("127.0.0.1:9100 --evil", "is not a decimal number"),
        ("127.0.0.1:9100\n", "control character U+000A"),
    ] {
        let esc = v.replace('\n', "\\n");
        let new = format!("listen = \"{esc}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("listen = \"127.0.0.1:9100\"", &new)],
            at: &new["listen = ".len()..],
            field: "service.listen",
            value: Some(v),
            message: msg,
        });
    }
    for v in ["[::1]:9100", "localhost:9100", "127.0.0.1:65535"] {
        let text = edit(
            repo_component("node_exporter"),
            &[("listen = \"127.0.0.1:9100\"", &format!("listen = \"{v}\""))],
        );
        component::parse_str(Path::new("node_exporter.toml"), &text, String::new())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    for v in [
        "0/tcp",
        "70000/tcp",
        "+9100/tcp",
        "9100/sctp",
        "9100",
        "9100/TCP",
    ] {
        let new = format!("ports = [\"{v}\"]");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("ports = [\"9100/tcp\"]", &new)],
            at: &format!("\"{v}\""),
            field: "firewall.ports",
            value: Some(v),
            message: "must be PORT/tcp or PORT/udp with PORT 1-65535",
        });
    }
}

#[test]
fn bad_users() {
    for (v, msg) in [
        ("node exporter", "character ' ' is not allowed"),
        ("Node", "character 'N' is not allowed"),
        ("node$x", "character '$' is not allowed"),
        ("node:x", "character ':' is not allowed"),
        ("1node", "must start with a-z or _"),
        ("-node", "must start with a-z or _"),
        ("root", "must not run as root"),
        ("a_very_long_user_name_over_the_limit", "longer than 31"),
    ] {
        let new = format!("user = \"{v}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("user = \"node_exporter\"", &new)],
            at: &format!("\"{v}\""),
            field: "service.user",
            value: Some(v),
            message: msg,
        });
    }
}

#[test]
fn path_traversal_in_config_paths_and_member_templates() {
    for (v, msg) in [
        (
            "/etc/mysqld_exporter/../shadow",
            "must not contain empty, '.' or '..'",
        ),
        (
            "/etc/../root/.my.cnf",
            "must not contain empty, '.' or '..'",
        ),
        (
            "/etc/mysqld_exporter/./my.cnf",
            "must not contain empty, '.' or '..'",
        ),
        ("/etc//my.cnf", "must not contain empty, '.' or '..'"),
        ("etc/mysqld_exporter/my.cnf", "must be an absolute path"),
        (
            "/var/lib/mysqld_exporter/my.cnf",
            "configuration lives under /etc",
        ),
        (
            "/etc/mysqld exporter/my.cnf",
            "character ' ' is not allowed",
        ),
    ] {
        let new = format!("path = \"{v}\"");
        refused(&Case {
            base: "mysqld_exporter",
            stem: None,
            edits: &[("path = \"/etc/mysqld_exporter/my.cnf\"", &new)],
            at: &format!("\"{v}\""),
            field: "config[0].path",
            value: Some(v),
            message: msg,
        });
    }
    let bin = "binary = \"node_exporter-{version}.linux-{arch}/node_exporter\"";
    for v in [
        "../node_exporter",
        "node_exporter-{version}/../../etc/passwd",
        "/usr/bin/node_exporter",
        "./node_exporter",
        "a//node_exporter",
    ] {
        let new = format!("binary = \"{v}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[(bin, &new)],
            at: &format!("\"{v}\""),
            field: "source.binary",
            value: Some(v),
            message: "must be a relative path without '.', '..' or empty components",
        });
    }
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "license_file = \"node_exporter-{version}.linux-{arch}/LICENSE\"",
            "license_file = \"../LICENSE\"",
        )],
        at: "\"../LICENSE\"",
        field: "source.license_file",
        value: Some("../LICENSE"),
        message: "must be a relative path",
    });
}

#[test]
fn credential_files() {
    for mode in ["0644", "0604", "0641"] {
        let new = format!("mode = \"{mode}\"");
        refused(&Case {
            base: "mysqld_exporter",
            stem: None,
            edits: &[("mode = \"0640\"", &new)],
            at: &format!("\"{mode}\""),
            field: "config[0].mode",
            value: Some(mode),
            message: "a credential file must not be readable by others",
        });
    }
    refused(&Case {
        base: "mysqld_exporter",
        stem: None,
        edits: &[("mode = \"0640\"", "mode = \"0666\"")],
        at: "\"0666\"",
        field: "config[0].mode",
        value: Some("0666"),
        message: "world-writable files are refused",
    });
    refused(&Case {
        base: "mysqld_exporter",
        stem: None,
        edits: &[("# OBSERVABILITY-STACK-PLACEHOLDER\n", "")],
        at: "\"\"\"\n# mysqld_exporter does not start",
        field: "config[0].content",
        value: None,
        message: "a credential file ships a placeholder containing OBSERVABILITY-STACK-PLACEHOLDER",
    });
    // Not a credential file: no placeholder needed, 0644 is fine.
    let text = edit(
        repo_component("mysqld_exporter"),
        &[
            ("credential = true\n", ""),
            ("mode = \"0640\"", "mode = \"0644\""),
            ("# OBSERVABILITY-STACK-PLACEHOLDER\n", ""),
            // (and so it has no test credentials)
            (
                "[smoke.credentials]\n\"/etc/mysqld_exporter/my.cnf\" = ",
                "# ",
            ),
        ],
    );
    component::parse_str(Path::new("mysqld_exporter.toml"), &text, String::new()).unwrap();
}

#[test]
fn smoke_table() {
    let c = component::load_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/mysqld_exporter.toml"),
    )
    .unwrap();
    let smoke = c.smoke.expect("mysqld_exporter has [smoke]");
    assert_eq!(smoke.metric, "mysql_up");
    assert!(smoke.credentials["/etc/mysqld_exporter/my.cnf"].starts_with("[client]\n"));
    // Required: a component without it is refused (the live host test needs the metric).
    let text = repo_component("node_exporter");
    let text = text.split("\n[smoke]\n").next().unwrap();
    let e = component::parse_str(Path::new("node_exporter.toml"), text, String::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `smoke.metric`") && e.contains("missing"),
        "{e}"
    );

    let e = component::parse_str(
        Path::new("node_exporter.toml"),
        &edit(
            repo_component("node_exporter"),
            &[("metric = \"node_cpu_seconds_total\"", "metric = \"\"")],
        ),
        String::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("field `smoke.metric`: must not be empty"), "{e}");
    for bad in ["9cpu", "node cpu", "node-cpu"] {
        let new = format!("metric = \"{bad}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("metric = \"node_cpu_seconds_total\"", &new)],
            at: &format!("\"{bad}\"\n"),
            field: "smoke.metric",
            value: Some(bad),
            message: "metric name",
        });
    }
    let e = component::parse_str(
        Path::new("node_exporter.toml"),
        &edit(
            repo_component("node_exporter"),
            &[("[smoke]\n", "[smoke]\nmetrics = \"x\"\n")],
        ),
        String::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `metrics`"), "{e}");
    // Credentials: only for credential files, real content, and every credential file has one.
    refused(&Case {
        base: "mysqld_exporter",
        stem: None,
        edits: &[(
            "\"/etc/mysqld_exporter/my.cnf\" = \"[client]",
            "# \"/etc/mysqld_exporter/my.cnf\" = \"[client]",
        )],
        at: "[smoke]\n",
        field: "smoke.credentials",
        value: Some("/etc/mysqld_exporter/my.cnf"),
        message: "every credential file needs valid test content",
    });
    let e = component::parse_str(
        Path::new("mysqld_exporter.toml"),
        &edit(
            repo_component("mysqld_exporter"),
            &[(
                "\"/etc/mysqld_exporter/my.cnf\" = \"[client]",
                "\"/etc/mysqld_exporter/other.cnf\" = \"[client]",
            )],
        ),
        String::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("\"/etc/mysqld_exporter/other.cnf\": is not the path of a credential file"),
        "{e}"
    );
    refused(&Case {
        base: "mysqld_exporter",
        stem: None,
        edits: &[("= \"[client]\\nuser", "= \"# OBSERVABILITY-STACK-PLACEHOLDER\\n[client]\\nuser")],
        at: "\"# OBSERVABILITY-STACK-PLACEHOLDER\\n[client]",
        field: "smoke.credentials.\"/etc/mysqld_exporter/my.cnf\"",
        value: Some("# OBSERVABILITY-STACK-PLACEHOLDER\n[client]\nuser = exporter\npassword = test\nhost = 127.0.0.1\nport = 3306\n"),
        message: "must be real credentials",
    });
}

#[test]
fn widenings_need_a_reason() {
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "args = []\n",
            "args = []\ncapabilities = [\"CAP_NET_RAW\"]\n",
        )],
        at: "\"CAP_NET_RAW\"",
        field: "service.capabilities",
        value: Some("CAP_NET_RAW"),
        message: "widens the hardened baseline: add service.reason.capabilities saying why",
    });
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "args = []\n",
            "args = []\nread_write_paths = [\"/var/lib/x\"]\n",
        )],
        at: "\"/var/lib/x\"",
        field: "service.read_write_paths",
        value: Some("/var/lib/x"),
        message: "add service.reason.read_write_paths",
    });
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "extra_address_families = \"the netdev and netclass collectors query the kernel over rtnetlink\"\n",
            "",
        )],
        at: "\"AF_NETLINK\"",
        field: "service.extra_address_families",
        value: Some("AF_NETLINK"),
        message: "add service.reason.extra_address_families",
    });
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "protect_home = \"the filesystem collector must stat mount points below /home\"\n",
            "",
        )],
        at: "\"read-only\"",
        field: "service.protect_home",
        value: Some("read-only"),
        message: "add service.reason.protect_home",
    });
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "proc_subset = \"the cpu",
            "proc_subset = \"ok\"\n#\"the cpu",
        )],
        at: "\"ok\"",
        field: "service.reason.proc_subset",
        value: Some("ok"),
        message: "give a reason a reader can check",
    });
    // A reason for something that is not a widening (a typo of one) is refused too.
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "[service.reason]\n",
            "[service.reason]\nprotect_hom = \"the filesystem collector must stat\"\n",
        )],
        at: "protect_hom =",
        field: "service.reason.protect_hom",
        value: Some("protect_hom"),
        message: "not a widening of the baseline",
    });
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[
            (
                "args = []\n",
                "args = []\ncapabilities = [\"CAP_EVERYTHING\"]\n",
            ),
            (
                "[service.reason]\n",
                "[service.reason]\ncapabilities = \"because the test says so\"\n",
            ),
        ],
        at: "\"CAP_EVERYTHING\"",
        field: "service.capabilities",
        value: Some("CAP_EVERYTHING"),
        message: "must be one of CAP_",
    });
}

#[test]
fn kill_signal_needs_a_reason_and_a_clean_signal() {
    // nginx_exporter's SIGHUP comes with its reason; without it the file is refused.
    refused(&Case {
        base: "nginx_exporter",
        stem: None,
        edits: &[("kill_signal = \"0.11", "#kill_signal = \"0.11")],
        at: "\"SIGHUP\"",
        field: "service.kill_signal",
        value: Some("SIGHUP"),
        message: "add service.reason.kill_signal saying why",
    });
    // Only signals whose death systemd counts as a clean end.
    refused(&Case {
        base: "nginx_exporter",
        stem: None,
        edits: &[("kill_signal = \"SIGHUP\"", "kill_signal = \"SIGKILL\"")],
        at: "\"SIGKILL\"",
        field: "service.kill_signal",
        value: Some("SIGKILL"),
        message: "must be one of SIGTERM, SIGINT, SIGHUP",
    });
    // A reason without the departure it explains is refused, naming the reason.
    let reason = "0.11 ends with exit status 1 on SIGTERM and SIGINT (its own signal handler), so every stop and restart would be recorded as a failure; it leaves SIGHUP to Go's default, and a death by SIGHUP is a clean end to systemd";
    refused(&Case {
        base: "nginx_exporter",
        stem: None,
        edits: &[("kill_signal = \"SIGHUP\"\n", "")],
        at: "\"0.11 ends",
        field: "service.reason.kill_signal",
        value: Some(reason),
        message: "explains no departure: service.kill_signal is not set",
    });
    refused(&Case {
        base: "nginx_exporter",
        stem: None,
        edits: &[("kill_signal = \"SIGHUP\"", "kill_signal = \"SIGTERM\"")],
        at: "\"0.11 ends",
        field: "service.reason.kill_signal",
        value: Some(reason),
        message: "explains no departure: service.kill_signal is systemd's SIGTERM",
    });
}

#[test]
fn unknown_fields_are_refused() {
    for (old, new, at, unknown) in [
        (NODE_SUMMARY, "summry = \"x\"", "summry =", "summry"),
        (
            "listen = \"127.0.0.1:9100\"",
            "listn = \"127.0.0.1:9100\"",
            "listn =",
            "listn",
        ),
        ("[firewall]", "[firewal]", "firewal]", "firewal"),
        ("binary = ", "binnary = ", "binnary =", "binnary"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node_exporter.toml");
        let text = edit(repo_component("node_exporter"), &[(old, new)]);
        std::fs::write(&file, &text).unwrap();
        let errs = component::load_file(&file).expect_err("accepted");
        assert_eq!(errs.0.len(), 1, "{errs}");
        let e = &errs.0[0];
        let (line, col) = line_col(&text, at);
        assert_eq!((e.line, e.col), (line, col), "{e}");
        assert!(
            e.message.contains(&format!("unknown field `{unknown}`")),
            "{e}"
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("{}:{line}:{col}: ", file.display())),
            "{shown}"
        );
        let o = check_cli(dir.path());
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(&shown));
    }
}

#[test]
fn check_lists_arches_without_a_pin() {
    let dir = tempfile::tempdir().unwrap();
    let text = edit(
        repo_component("node_exporter"),
        &[(
            "arm64 = \"de69ec8341c8068b7c8e4cfe3eb85065d24d984a3b33007f575d307d13eb89a6\"\n",
            "",
        )],
    );
    std::fs::write(dir.path().join("node_exporter.toml"), text).unwrap();
    let unpinned = edit(
        repo_component("mysqld_exporter"),
        &[
            (
                "amd64 = \"46e8f45654352bdd42d162b2b4a68f00055d45acc168f9c068235b9e3acc39c1\"\n",
                "",
            ),
            (
                "arm64 = \"abdb452600ca086b68244aadf8045fbf0b6a48dcb76eed5576995806c176f6ce\"\n",
                "",
            ),
        ],
    );
    std::fs::write(dir.path().join("mysqld_exporter.toml"), unpinned).unwrap();
    let o = check_cli(dir.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let node = dir.path().join("node_exporter.toml");
    let mysqld = dir.path().join("mysqld_exporter.toml");
    let lines: Vec<&str> = out.lines().collect();
    let want = |s: &str| {
        assert!(
            lines.iter().any(|l| l.trim_end() == s),
            "no line {s:?} in:\n{out}"
        )
    };
    want(&format!(
        "  node_exporter arm64: no sha256 pin in {}: not built",
        node.display()
    ));
    want(&format!(
        "  mysqld_exporter amd64: no sha256 pin in {}: not built",
        mysqld.display()
    ));
    want(&format!(
        "  mysqld_exporter arm64: no sha256 pin in {}: not built",
        mysqld.display()
    ));
    assert!(!out.contains("node_exporter amd64: no sha256 pin"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("node_exporter") && l.ends_with("pinned: amd64")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("mysqld_exporter") && l.ends_with("pinned: none")),
        "{out}"
    );
}

/// All errors of a directory are reported together, each with its own file.
#[test]
fn errors_of_several_files_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let a = edit(
        repo_component("node_exporter"),
        &[("user = \"node_exporter\"", "user = \"root\"")],
    );
    let b = edit(
        repo_component("mysqld_exporter"),
        &[("version = \"0.18.0\"", "version = \"x\"")],
    );
    std::fs::write(dir.path().join("node_exporter.toml"), a).unwrap();
    std::fs::write(dir.path().join("mysqld_exporter.toml"), b).unwrap();
    let e = component::load_dir(dir.path()).err().unwrap().to_string();
    let paths: Vec<PathBuf> = ["mysqld_exporter", "node_exporter"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.toml")))
        .collect();
    assert!(
        e.contains(&format!("{}:", paths[0].display())) && e.contains("field `version` = \"x\""),
        "{e}"
    );
    assert!(
        e.contains(&format!("{}:", paths[1].display()))
            && e.contains("field `service.user` = \"root\""),
        "{e}"
    );
    let o = check_cli(dir.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&e));
}

/// The hostile-input audit: a component may only claim what is its own. Each of these was
/// accepted before and built a package that `rm -rf`s or overwrites another program's files,
/// or runs the exporter with another account's privileges.
#[test]
fn state_directory_is_the_components_own() {
    for v in ["dpkg", "mysql", "apt/lists", "node_exporterx"] {
        let new = format!("args = []\nstate_directory = \"{v}\"\n");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("args = []\n", &new)],
            at: &format!("\"{v}\""),
            field: "service.state_directory",
            value: Some(v),
            message: "must be the component's own directory \"node_exporter\"",
        });
    }
    for v in ["node_exporter", "node_exporter/textfile"] {
        let new = format!("args = []\nstate_directory = \"{v}\"\n");
        let text = edit(repo_component("node_exporter"), &[("args = []\n", &new)]);
        let c = component::parse_str(Path::new("node_exporter.toml"), &text, String::new())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.service.state_directory.as_deref(), Some(v));
    }
}

#[test]
fn config_files_live_in_the_components_own_etc_directory() {
    for v in [
        "/etc/passwd",
        "/etc/sudoers.d/mysqld_exporter",
        "/etc/ld.so.preload",
        "/etc/cron.d/mysqld_exporter",
        "/etc/default/mysqld-exporter",
        "/etc/mysqld_exporterx/my.cnf",
        "/etc/mysqld_exporter",
    ] {
        let new = format!("path = \"{v}\"");
        refused(&Case {
            base: "mysqld_exporter",
            stem: None,
            edits: &[("path = \"/etc/mysqld_exporter/my.cnf\"", &new)],
            at: &format!("\"{v}\""),
            field: "config[0].path",
            value: Some(v),
            message: "configuration lives in the component's own directory /etc/mysqld_exporter/",
        });
    }
    // A config file below another one: no package can hold both.
    let extra = "\n[[config]]\npath = \"/etc/mysqld_exporter/my.cnf/x\"\ncontent = \"x\"\n";
    let text = repo_component("mysqld_exporter") + extra;
    let e = component::parse_str(Path::new("mysqld_exporter.toml"), &text, String::new())
        .expect_err("a config file below another one was accepted");
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].field, "config[1].path", "{e}");
    assert!(
        e.0[0].message.contains("cannot be a directory of another"),
        "{e}"
    );
}

#[test]
fn config_file_owner_and_mode() {
    for (key, v, msg) in [
        (
            "owner",
            "nobody",
            "must be root or the service user \"mysqld_exporter\"",
        ),
        ("owner", "daemon", "must be root or the service user"),
        (
            "group",
            "shadow",
            "must be root or the service group \"mysqld_exporter\"",
        ),
    ] {
        let new = format!("owner = \"root\"\n{key} = \"{v}\"");
        let new = if key == "owner" {
            format!("owner = \"{v}\"")
        } else {
            new
        };
        refused(&Case {
            base: "mysqld_exporter",
            stem: None,
            edits: &[("owner = \"root\"", &new)],
            at: &format!("\"{v}\""),
            field: &format!("config[0].{key}"),
            value: Some(v),
            message: msg,
        });
    }
    for mode in ["+640", "-640", " 640"] {
        let new = format!("mode = \"{mode}\"");
        refused(&Case {
            base: "mysqld_exporter",
            stem: None,
            edits: &[("mode = \"0640\"", &new)],
            at: &format!("\"{mode}\""),
            field: "config[0].mode",
            value: Some(mode),
            message: "must be an octal mode",
        });
    }
}

#[test]
fn shared_and_privileged_accounts_are_refused() {
    for v in ["nobody", "daemon", "www-data", "shadow"] {
        let new = format!("user = \"{v}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("user = \"node_exporter\"", &new)],
            at: &format!("\"{v}\""),
            field: "service.user",
            value: Some(v),
            message: "is a system account or group shared with other programs",
        });
    }
    for v in ["shadow", "disk", "adm", "systemd-journal", "docker", "sudo"] {
        let new = format!("user = \"node_exporter\"\ngroup = \"{v}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("user = \"node_exporter\"", &new)],
            at: &format!("\"{v}\""),
            field: "service.group",
            value: Some(v),
            message: "is a system account or group shared with other programs",
        });
    }
}

#[test]
fn component_names_that_break_nftables_or_ufw() {
    // `9x_tcp` is an nftables syntax error; ufw refuses `all` and names starting with a digit.
    for (stem, msg) in [
        ("9node", "must start with a-z"),
        ("all", "`all` is reserved"),
    ] {
        let new = format!("name = \"{stem}\"");
        refused(&Case {
            base: "node_exporter",
            stem: Some(stem),
            edits: &[("name = \"node_exporter\"", &new)],
            at: &format!("\"{stem}\""),
            field: "name",
            value: Some(stem),
            message: msg,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Hardening lints (`cargo xtask check`): each refused with file:line:col, field and value.

#[test]
fn lint_listen_on_every_interface() {
    for v in ["0.0.0.0:9100", "[::]:9100"] {
        let new = format!("listen = \"{v}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("listen = \"127.0.0.1:9100\"", &new)],
            at: &format!("\"{v}\""),
            field: "service.listen",
            value: Some(v),
            message: "listens on every interface",
        });
    }
}

#[test]
fn lint_listen_flag_or_wildcard_address_in_args() {
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "args = []",
            "args = [\"--web.listen-address=127.0.0.1:9999\"]",
        )],
        at: "\"--web.listen-address=127.0.0.1:9999\"",
        field: "service.args",
        value: Some("--web.listen-address=127.0.0.1:9999"),
        message: "sets the listen address: that is `service.listen`",
    });
    // promtail's port flag is a listen flag too
    refused(&Case {
        base: "promtail",
        stem: None,
        edits: &[(
            "args = [\"--server.grpc",
            "args = [\"--server.http-listen-port=80\", \"--server.grpc",
        )],
        at: "\"--server.http-listen-port=80\"",
        field: "service.args",
        value: Some("--server.http-listen-port=80"),
        message: "sets the listen address",
    });
    for v in [
        "--cluster.listen-address=0.0.0.0:9094",
        "--x=[::]:1",
        "--x=:9094",
    ] {
        let new = format!("args = [\"--storage.path=/var/lib/alertmanager\", \"{v}\"]");
        refused(&Case {
            base: "alertmanager",
            stem: None,
            edits: &[(
                "args = [\"--storage.path=/var/lib/alertmanager\", \"--cluster.listen-address=\"]",
                &new,
            )],
            at: &format!("\"{v}\""),
            field: "service.args",
            value: Some(v),
            message: "binds every interface",
        });
    }
}

#[test]
fn lint_memory_max_bounded() {
    for (v, msg) in [
        ("0", "below 16M"),
        ("0M", "below 16M"),
        ("1K", "below 16M"),
        ("65G", "above 64G"),
        ("infinity", "must be a size"),
    ] {
        let new = format!("args = []\nmemory_max = \"{v}\"");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[("args = []", &new)],
            at: &format!("\"{v}\""),
            field: "service.memory_max",
            value: Some(v),
            message: msg,
        });
    }
}

#[test]
fn lint_read_write_paths_over_system_directories() {
    for v in ["/", "/etc", "/etc/node_exporter", "/usr/local", "/boot"] {
        let new = format!("args = []\nread_write_paths = [\"{v}\"]");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[
                ("args = []", &new),
                (
                    "[service.reason]\n",
                    "[service.reason]\nread_write_paths = \"the test wants it writable\"\n",
                ),
            ],
            at: &format!("\"{v}\"]"),
            field: "service.read_write_paths",
            value: Some(v),
            message: "writable: configuration and programs stay read-only",
        });
    }
}

#[test]
fn lint_forbidden_capabilities_even_with_a_reason() {
    for v in [
        "CAP_SYS_ADMIN",
        "CAP_DAC_OVERRIDE",
        "CAP_SYS_PTRACE",
        "CAP_SETUID",
    ] {
        let new = format!("capabilities = [\"{v}\"]");
        refused(&Case {
            base: "blackbox_exporter",
            stem: None,
            edits: &[("capabilities = [\"CAP_NET_RAW\"]", &new)],
            at: &format!("\"{v}\""),
            field: "service.capabilities",
            value: Some(v),
            message: "refused even with a reason",
        });
    }
    // and a capability without a reason
    refused(&Case {
        base: "blackbox_exporter",
        stem: None,
        edits: &[(
            "capabilities = \"ICMP probes",
            "#capabilities = \"ICMP probes",
        )],
        at: "\"CAP_NET_RAW\"",
        field: "service.capabilities",
        value: Some("CAP_NET_RAW"),
        message: "add service.reason.capabilities",
    });
}

#[test]
fn lint_conflicts_with_itself_or_an_essential_package() {
    for (fmt, old, v, msg) in [
        (
            "deb",
            "deb = [\"prometheus-node-exporter\"]",
            "node-exporter",
            "names the package itself",
        ),
        (
            "deb",
            "deb = [\"prometheus-node-exporter\"]",
            "systemd",
            "essential system package",
        ),
        (
            "deb",
            "deb = [\"prometheus-node-exporter\"]",
            "libc6",
            "essential system package",
        ),
        (
            "rpm",
            "rpm = [\"golang-github-prometheus-node-exporter\"]",
            "node_exporter",
            "names the package itself",
        ),
        (
            "rpm",
            "rpm = [\"golang-github-prometheus-node-exporter\"]",
            "glibc",
            "essential system package",
        ),
    ] {
        let new = format!("{fmt} = [\"{v}\"]");
        refused(&Case {
            base: "node_exporter",
            stem: None,
            edits: &[(old, &new)],
            at: &format!("\"{v}\"]"),
            field: &format!("conflicts.{fmt}"),
            value: Some(v),
            message: msg,
        });
    }
}

#[test]
fn lint_smoke_metric_required_and_valid() {
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[("[smoke]\nmetric = \"node_cpu_seconds_total\"\n", "")],
        at: "\"node_exporter\"",
        field: "smoke.metric",
        value: None,
        message: "missing: add [smoke] metric",
    });
    refused(&Case {
        base: "node_exporter",
        stem: None,
        edits: &[(
            "metric = \"node_cpu_seconds_total\"",
            "metric = \"node-cpu\"",
        )],
        at: "\"node-cpu\"",
        field: "smoke.metric",
        value: Some("node-cpu"),
        message: "is not allowed in a metric name",
    });
    // test credentials are for credential files only, and are real (no placeholder)
    refused(&Case {
        base: "mysqld_exporter",
        stem: None,
        edits: &[(
            "[smoke.credentials]\n",
            "[smoke.credentials]\n\"/etc/mysqld_exporter/other.cnf\" = \"[client]\\n\"\n",
        )],
        at: "\"/etc/mysqld_exporter/other.cnf\"",
        field: "smoke.credentials.\"/etc/mysqld_exporter/other.cnf\"",
        value: Some("/etc/mysqld_exporter/other.cnf"),
        message: "is not the path of a credential file",
    });
}

#[test]
fn config_from_an_archive_member_or_content() {
    refused(&Case {
        base: "snmp_exporter",
        stem: None,
        edits: &[(
            "source = \"snmp_exporter-{version}.linux-{arch}/snmp.yml\"",
            "source = \"../snmp.yml\"",
        )],
        at: "\"../snmp.yml\"",
        field: "config[0].source",
        value: Some("../snmp.yml"),
        message: "must be a relative path without",
    });
    refused(&Case {
        base: "snmp_exporter",
        stem: None,
        edits: &[(
            "source = \"snmp_exporter-{version}.linux-{arch}/snmp.yml\"\n",
            "source = \"snmp_exporter-{version}.linux-{arch}/snmp.yml\"\ncontent = \"x\"\n",
        )],
        at: "\"snmp_exporter-{version}.linux-{arch}/snmp.yml\"",
        field: "config[0].source",
        value: Some("snmp_exporter-{version}.linux-{arch}/snmp.yml"),
        message: "either content or source",
    });
    refused(&Case {
        base: "snmp_exporter",
        stem: None,
        edits: &[(
            "source = \"snmp_exporter-{version}.linux-{arch}/snmp.yml\"\n",
            "",
        )],
        at: "\"/etc/snmp_exporter/snmp.yml\"",
        field: "config[0].content",
        value: None,
        message: "missing: give content",
    });
    // An env file is read by systemd, not passed by a flag.
    refused(&Case {
        base: "postgres_exporter",
        stem: None,
        edits: &[("env = true\n", "env = true\nflag = \"--config.file\"\n")],
        at: "\"--config.file\"",
        field: "config[0].flag",
        value: Some("--config.file"),
        message: "EnvironmentFile=",
    });
}
