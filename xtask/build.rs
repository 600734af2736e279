//! Embeds every file under ../templates so the binary has a default for each template.
use std::path::Path;

fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            println!("cargo:rerun-if-changed={}", p.display());
            walk(&p, base, out);
        } else if p.extension().is_some_and(|x| x == "hbs") {
            println!("cargo:rerun-if-changed={}", p.display());
            let rel = p
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push(format!(
                "({:?}, include_str!({:?})),\n",
                rel.trim_end_matches(".hbs"),
                p.canonicalize().unwrap().display()
            ));
        }
    }
}

fn main() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    println!("cargo:rerun-if-changed={}", base.display());
    let mut items = Vec::new();
    if base.is_dir() {
        walk(&base, &base, &mut items);
    }
    let code = format!("&[\n{}]", items.concat());
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("templates.rs");
    std::fs::write(out, code).unwrap();
    // The toolchain, for provenance statements (attest.rs).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let v = std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=XTASK_RUSTC_VERSION={v}");
    // The deflate implementation (flate2 and its zlib-rs backend, as locked): part of the
    // names of cached compressed chunks (apt_repo.rs), so a dependency bump never reuses
    // bytes an older encoder made.
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let locked = |name: &str| -> String {
        let head = format!("name = \"{name}\"\nversion = \"");
        text.split("[[package]]\n")
            .find_map(|p| p.strip_prefix(&head))
            .and_then(|r| r.split('"').next())
            .unwrap_or("unlocked")
            .to_string()
    };
    println!(
        "cargo:rustc-env=XTASK_DEFLATE_VERSION=flate2-{}+zlib-rs-{}",
        locked("flate2"),
        locked("zlib-rs")
    );
}
