//! `cargo xtask bench --small`: the report's structure (no timing assertions: the numbers
//! depend on the machine; the report is the product). Needs the tools `.ci/run` installs
//! (dpkg-deb, rpmbuild, rpmsign, apt-ftparchive, createrepo_c, gpg, sha256sum): a missing one
//! would show as SKIP, which fails here.

use std::process::Command;

/// Every benchmark line the report must end with: (id, name).
const EXPECTED: &[(&str, &str)] = &[
    ("B1", "deb-xz"),
    ("B1", "deb-gzip"),
    ("B1", "rpm-xz"),
    ("B2", "dist"),
    ("B3", "noop-rebuild"),
    ("B4", "apt-index"),
    ("B4", "apt-add"),
    ("B4", "dnf-index"),
    ("B4", "dnf-add"),
    ("B5", "sha256-8MiB"),
    ("B6", "deb-xz-8MiB"),
    ("B6", "deb-gzip-8MiB"),
    ("B6", "rpm-xz-8MiB"),
];

/// `B<n> <name> <unit>=<number> target=<t> PASS|MISS` → (id, name, unit, value, verdict).
fn parse_line(l: &str) -> Option<(String, String, String, f64, String)> {
    let f: Vec<&str> = l.split(' ').collect();
    if f.len() != 5 || !f[0].starts_with('B') || !f[3].starts_with("target=") {
        return None;
    }
    let (unit, value) = f[2].split_once('=')?;
    Some((
        f[0].to_string(),
        f[1].to_string(),
        unit.to_string(),
        value.parse().ok()?,
        f[4].to_string(),
    ))
}

#[test]
fn small_bench_reports_every_benchmark() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--small", "--work"])
        .arg(work.path())
        .output()
        .expect("run xtask bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("SKIP("),
        "a benchmark was skipped (tool missing or an error):\n{stdout}\n{stderr}"
    );

    // The machine: core count, CPU model, date.
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        stdout.lines().any(|l| l == format!("cores: {cores}")),
        "no `cores: {cores}` line:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("machine: ") && l.contains(" CPU ")),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("date: ")), "{stdout}");
    assert!(
        stdout.contains("| benchmark")
            && stdout.contains(" ratio |")
            && stdout.contains("RSS ours/them"),
        "no table:\n{stdout}"
    );

    // The report ends with exactly one line per benchmark, in order, each with a number.
    let tail: Vec<&str> = stdout
        .lines()
        .rev()
        .take(EXPECTED.len())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(tail.len(), EXPECTED.len(), "{stdout}");
    for (line, (id, name)) in tail.iter().zip(EXPECTED) {
        let (lid, lname, unit, value, verdict) =
            parse_line(line).unwrap_or_else(|| panic!("not a benchmark line: {line:?}\n{stdout}"));
        assert_eq!((lid.as_str(), lname.as_str()), (*id, *name), "{stdout}");
        assert!(value.is_finite() && value > 0.0, "{line}");
        assert!(verdict == "PASS" || verdict == "MISS", "{line}");
        let want_unit = if *id == "B6" { "rss" } else { "ratio" };
        assert_eq!(unit, want_unit, "{line}");
        // The table has a row for it too.
        assert!(
            stdout.contains(&format!("| {id} {name} ")),
            "no table row for {id} {name}:\n{stdout}"
        );
    }
    // Nothing but the benchmark lines after them.
    assert!(stdout.ends_with('\n'));
}

#[test]
fn bench_refuses_unknown_benchmarks() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--small", "--only", "B1,B9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("B9"), "{err}");
}
