//! Component files: `components/<name>.toml`, one exporter each.
//!
//! Loading parses with spans so that every error names `file:line:col`, the field and the
//! value. Validation is strict: every value that ends up in a control file, unit, script or XML
//! is checked against a character set that is safe in all of them, so the renderers never have
//! to guess.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::package::Arch;

/// A component error: where, which field, which value, what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ComponentError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub field: String,
    pub value: String,
    pub message: String,
}

impl fmt::Display for ComponentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`", self.field)?;
            if !self.value.is_empty() {
                write!(f, " = {:?}", self.value)?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.message)
    }
}

/// All errors found in one file (validation goes on past the first one).
#[derive(Debug, thiserror::Error)]
pub struct ComponentErrors(pub Vec<ComponentError>);

impl fmt::Display for ComponentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (as written) schema

type S = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: S,
    version: S,
    revision: Spanned<i64>,
    summary: S,
    description: S,
    license: S,
    homepage: S,
    #[serde(default)]
    copyright: Option<S>,
    #[serde(default)]
    conflicts: RawConflicts,
    source: RawSource,
    service: RawService,
    #[serde(default)]
    config: Vec<RawConfig>,
    #[serde(default)]
    firewall: RawFirewall,
    #[serde(default)]
    smoke: Option<Spanned<RawSmoke>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConflicts {
    #[serde(default)]
    deb: Vec<S>,
    #[serde(default)]
    rpm: Vec<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: S,
    #[serde(default)]
    checksums: Option<S>,
    binary: S,
    #[serde(default)]
    license_file: Option<S>,
    #[serde(default)]
    arch: BTreeMap<String, S>,
    #[serde(default)]
    sha256: BTreeMap<Spanned<String>, S>,
    #[serde(default)]
    signature: Option<Spanned<RawSignature>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    kind: S,
    url: S,
    #[serde(default)]
    over: Option<S>,
    key: S,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    user: S,
    #[serde(default)]
    group: Option<S>,
    listen: S,
    #[serde(default)]
    listen_flag: Option<S>,
    #[serde(default)]
    listen_port_flag: Option<S>,
    #[serde(default)]
    subcommand: Option<S>,
    #[serde(default)]
    web_config_flag: Option<S>,
    #[serde(default)]
    args: Vec<S>,
    #[serde(default)]
    protect_home: Option<S>,
    #[serde(default)]
    protect_proc: Option<S>,
    #[serde(default)]
    proc_subset: Option<S>,
    #[serde(default)]
    capabilities: Vec<S>,
    #[serde(default)]
    extra_address_families: Vec<S>,
    #[serde(default)]
    read_write_paths: Vec<S>,
    #[serde(default)]
    state_directory: Option<S>,
    #[serde(default)]
    memory_max: Option<S>,
    #[serde(default)]
    tasks_max: Option<Spanned<i64>>,
    #[serde(default)]
    limit_nofile: Option<Spanned<i64>>,
    #[serde(default)]
    kill_signal: Option<S>,
    #[serde(default)]
    reason: BTreeMap<Spanned<String>, S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    path: S,
    #[serde(default)]
    mode: Option<S>,
    #[serde(default)]
    owner: Option<S>,
    #[serde(default)]
    group: Option<S>,
    #[serde(default)]
    content: Option<S>,
    #[serde(default)]
    source: Option<S>,
    #[serde(default)]
    credential: Option<Spanned<bool>>,
    #[serde(default)]
    flag: Option<S>,
    #[serde(default)]
    env: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFirewall {
    #[serde(default)]
    ports: Vec<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmoke {
    metric: S,
    #[serde(default)]
    credentials: BTreeMap<Spanned<String>, S>,
}

// ---------------------------------------------------------------------------------------------
// Validated component

/// A validated component. Every string in it is safe to place in a control file, unit file,
/// shell script (single-quoted or bare, as the templates do) and XML text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Component {
    /// File stem and rpm package name, e.g. `node_exporter`.
    pub name: String,
    /// Debian package name, e.g. `node-exporter`.
    pub deb_name: String,
    pub version: String,
    pub revision: u32,
    pub summary: String,
    pub description: String,
    pub license: String,
    pub homepage: String,
    /// Upstream copyright holder (debian/copyright's `Copyright:`).
    pub copyright: String,
    pub conflicts_deb: Vec<String>,
    pub conflicts_rpm: Vec<String>,
    pub source: Source,
    pub service: Service,
    pub config: Vec<ConfigFile>,
    pub firewall: Firewall,
    /// What the booted-host test (tests/host.rs) checks on the running service.
    pub smoke: Option<Smoke>,
    /// The file it was loaded from.
    #[serde(skip)]
    pub file: PathBuf,
    /// sha256 of the file's bytes (for provenance and build caching).
    pub file_sha256: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Source {
    /// URL template with `{version}` and `{arch}`.
    pub url: String,
    /// URL template of the upstream checksum file (read by `pin` only, never at build time).
    pub checksums: Option<String>,
    /// Path of the binary inside the archive (template).
    pub binary: String,
    /// Path of the license file inside the archive (template), if any.
    pub license_file: Option<String>,
    /// Upstream spelling of each arch.
    pub arch_names: BTreeMap<Arch, String>,
    /// The pins: the authority.
    pub sha256: BTreeMap<Arch, String>,
    /// An upstream signature checked besides the pins when an asset is downloaded.
    pub signature: Option<UpstreamSignature>,
}

/// `[source.signature]`: a detached upstream signature over the asset or its checksum file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamSignature {
    pub kind: SignatureKind,
    /// URL template (`{version}`, `{arch}`) of the `.minisig` / `.sig` / `.asc` file.
    pub url: String,
    pub over: SignatureOver,
    /// The key as written (relative to the directory above components/).
    pub key: String,
    /// Where the key file is.
    #[serde(skip)]
    pub key_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureKind {
    Minisign,
    Openpgp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureOver {
    /// The signature is over the asset itself.
    Asset,
    /// Over the checksum file (`source.checksums`), which must list the asset with its pin.
    Checksums,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Service {
    pub user: String,
    pub group: String,
    pub listen: String,
    pub listen_flag: String,
    /// When set, `listen_flag` takes the host and this flag the port (promtail's
    /// `--server.http-listen-address`/`--server.http-listen-port`).
    pub listen_port_flag: Option<String>,
    /// A subcommand written right after the binary (`alloy run`, `php-fpm_exporter server`).
    pub subcommand: Option<String>,
    /// The exporter-toolkit flag that reads the optional TLS/basic-auth web config
    /// (`--web.config.file`); None when the exporter has no such flag.
    pub web_config_flag: Option<String>,
    pub args: Vec<String>,
    pub protect_home: String,
    pub protect_proc: String,
    pub proc_subset: String,
    pub capabilities: Vec<String>,
    pub address_families: Vec<String>,
    pub read_write_paths: Vec<String>,
    pub state_directory: Option<String>,
    pub memory_max: String,
    pub tasks_max: u32,
    pub limit_nofile: u32,
    /// KillSignal= when the exporter does not end cleanly on SIGTERM (None: systemd's SIGTERM).
    pub kill_signal: Option<String>,
    /// Why each widening of the baseline is needed, by directive name.
    pub reasons: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigFile {
    pub path: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// The shipped text (empty when `source` names an archive member instead).
    pub content: String,
    /// Archive member (template) installed as this file instead of `content`
    /// (snmp_exporter's own snmp.yml).
    pub source: Option<String>,
    /// The unit reads this file as an EnvironmentFile= (postgres_exporter's DSN).
    pub env: bool,
    /// A credential file: shipped with a placeholder; the service does not start while the
    /// placeholder marker is in it.
    pub credential: bool,
    /// Command-line flag that points the exporter at this file (`--config.my-cnf`).
    pub flag: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Firewall {
    pub ports: Vec<Port>,
}

/// `[smoke]`: how the booted-host test proves the installed service works.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Smoke {
    /// A metric name the running exporter must serve on its listen address.
    pub metric: String,
    /// Valid content for each credential file (by path), written by the test before it
    /// restarts the service. Every credential file has one.
    pub credentials: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Port {
    pub port: u16,
    pub proto: String,
}

/// The marker a credential placeholder must contain; the unit refuses to start while it is there.
pub const PLACEHOLDER_MARKER: &str = "OBSERVABILITY-STACK-PLACEHOLDER";

/// The `service` fields that widen the hardened baseline, each needing `service.reason.<field>`.
const WIDENINGS: &[&str] = &[
    "protect_home",
    "protect_proc",
    "proc_subset",
    "capabilities",
    "extra_address_families",
    "read_write_paths",
];

/// `service` fields that change no hardening but depart from systemd's defaults for one
/// exporter's behaviour, each needing `service.reason.<field>` too.
const DEPARTURES: &[&str] = &["kill_signal"];

/// Stop signals systemd counts as a clean end when the process dies of them (besides SIGPIPE).
const KILL_SIGNALS: &[&str] = &["SIGTERM", "SIGINT", "SIGHUP"];

const DEFAULT_FAMILIES: [&str; 3] = ["AF_UNIX", "AF_INET", "AF_INET6"];

impl Component {
    /// Arches that have a pin (and so are built).
    pub fn pinned_arches(&self) -> Vec<Arch> {
        self.source.sha256.keys().copied().collect()
    }

    /// Expand a URL/path template for an arch.
    pub fn expand(&self, template: &str, arch: Arch) -> String {
        let upstream = self
            .source
            .arch_names
            .get(&arch)
            .map(String::as_str)
            .unwrap_or(arch.deb());
        template
            .replace("{version}", &self.version)
            .replace("{arch}", upstream)
    }

    pub fn url(&self, arch: Arch) -> String {
        self.expand(&self.source.url, arch)
    }

    /// The unit file name.
    pub fn unit_name(&self) -> String {
        format!("{}.service", self.name)
    }

    /// The optional exporter-toolkit web config file (TLS, basic auth), shipped disabled, when
    /// the exporter has a web config flag.
    pub fn web_config_path(&self) -> Option<String> {
        self.service
            .web_config_flag
            .as_ref()
            .map(|_| format!("/etc/{}/{WEB_CONFIG_FILE}", self.name))
    }
}

/// File name of the optional web config in the component's own /etc directory.
pub const WEB_CONFIG_FILE: &str = "web-config.yml";

// ---------------------------------------------------------------------------------------------
// Loading

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ComponentError>,
}

impl Ctx<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map(|i| before[i + 1..].chars().count() + 1)
            .unwrap_or(before.chars().count() + 1);
        (line, col)
    }

    fn err(&mut self, span: Range<usize>, field: &str, value: &str, message: impl Into<String>) {
        let (line, col) = self.pos(span.start);
        self.errors.push(ComponentError {
            file: self.file.to_path_buf(),
            line,
            col,
            field: field.to_string(),
            value: value.to_string(),
            message: message.into(),
        });
    }

    /// Check a spanned string with a predicate returning an error message.
    fn check(&mut self, s: &S, field: &str, f: impl Fn(&str) -> Result<(), String>) -> String {
        let v = s.get_ref();
        if let Err(m) = f(v) {
            self.err(s.span(), field, v, m);
        }
        v.clone()
    }
}

/// Load and validate every `*.toml` in `dir`, sorted by name. Errors of all files are returned
/// together.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Component>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot read components directory: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        anyhow::bail!("{}: no component files (*.toml)", dir.display());
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match load_file(&p) {
            Ok(c) => out.push(c),
            Err(e) => errors.extend(e.0),
        }
    }
    if !errors.is_empty() {
        return Err(ComponentErrors(errors).into());
    }
    Ok(out)
}

/// Load and validate one component file.
pub fn load_file(path: &Path) -> Result<Component, ComponentErrors> {
    let bytes = std::fs::read(path).map_err(|e| {
        ComponentErrors(vec![ComponentError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            field: String::new(),
            value: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let text = match String::from_utf8(bytes.clone()) {
        Ok(t) => t,
        Err(e) => {
            let mut cx = Ctx {
                file: path,
                text: "",
                errors: vec![],
            };
            let off = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&bytes[..off]).into_owned();
            cx.text = &text;
            cx.err(off..off, "", "", "file is not valid UTF-8");
            return Err(ComponentErrors(cx.errors));
        }
    };
    let digest = crate::digest::sha256_hex(text.as_bytes());
    parse_str(path, &text, digest)
}

/// Parse and validate component text (the file name gives the component name).
pub fn parse_str(
    path: &Path,
    text: &str,
    file_sha256: String,
) -> Result<Component, ComponentErrors> {
    let mut cx = Ctx {
        file: path,
        text,
        errors: vec![],
    };
    let raw: Raw = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            cx.err(span, "", "", e.message().trim().to_string());
            return Err(ComponentErrors(cx.errors));
        }
    };
    let c = validate(&mut cx, raw, file_sha256);
    if cx.errors.is_empty() {
        Ok(c.expect("validated component"))
    } else {
        Err(ComponentErrors(cx.errors))
    }
}

// ---------------------------------------------------------------------------------------------
// Validators. Each returns Err(message) for a bad value.

/// Characters that are not ASCII/C1 controls but still break lines or hide text: Unicode line
/// and paragraph separators, bidirectional overrides/isolates, zero-width characters and the
/// byte order mark. A reader of a control file, unit or script must see what is there.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{2028}' | '\u{2029}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A control character other than those in `allowed`, or an invisible one.
fn bad_char(v: &str, allowed: &[char]) -> Option<char> {
    v.chars()
        .find(|c| (c.is_control() && !allowed.contains(c)) || is_invisible(*c))
}

fn no_controls(v: &str) -> Result<(), String> {
    if let Some(c) = bad_char(v, &[]) {
        return Err(format!(
            "contains the control character U+{:04X}; it would break a control file, unit or script",
            c as u32
        ));
    }
    Ok(())
}

fn charset(v: &str, allowed: impl Fn(char) -> bool, what: &str) -> Result<(), String> {
    no_controls(v)?;
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = v.chars().find(|c| !allowed(*c)) {
        return Err(format!("character {c:?} is not allowed in {what}"));
    }
    Ok(())
}

pub fn valid_component_name(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
        "a component name (a-z, 0-9, _ and -)",
    )?;
    // A leading digit makes the nftables set name (`9x_tcp`) a syntax error, and ufw refuses
    // profile names that do not start with a letter or are `all`.
    if !v.starts_with(|c: char| c.is_ascii_lowercase()) || v.len() < 2 {
        return Err("must start with a-z and be at least 2 characters".into());
    }
    if v == "all" {
        return Err("`all` is reserved (ufw uses it for every profile)".into());
    }
    if v.len() > 64 {
        return Err("longer than 64 characters".into());
    }
    Ok(())
}

pub fn valid_deb_name(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c),
        "a Debian package name ([a-z0-9][a-z0-9+.-]+)",
    )?;
    if v.len() < 2 || !v.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("a Debian package name is [a-z0-9][a-z0-9+.-]+".into());
    }
    Ok(())
}

pub fn valid_rpm_name(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_alphanumeric() || "._+-".contains(c),
        "an RPM package name ([A-Za-z0-9._+-])",
    )?;
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("an RPM package name starts with a letter or digit".into());
    }
    Ok(())
}

pub fn valid_version(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_alphanumeric() || ".+~".contains(c),
        "a version (A-Z a-z 0-9 . + ~; no '-', which separates the revision)",
    )?;
    if !v.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("a version must start with a digit".into());
    }
    if v.len() > 64 {
        return Err("longer than 64 characters".into());
    }
    Ok(())
}

fn valid_summary(v: &str) -> Result<(), String> {
    no_controls(v)?;
    if v.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if v.trim() != v {
        return Err("must not start or end with white space".into());
    }
    if v.chars().count() > 80 {
        return Err("longer than 80 characters (Debian's synopsis limit)".into());
    }
    if v.ends_with('.') {
        return Err("a synopsis does not end with a full stop".into());
    }
    if v.contains(['<', '>', '&', '"', '\'', '`', '$', '\\', '%']) {
        return Err("must not contain < > & \" ' ` $ \\ or %".into());
    }
    Ok(())
}

fn valid_description(v: &str) -> Result<(), String> {
    if let Some(c) = bad_char(v, &['\n']) {
        return Err(format!(
            "contains the control character U+{:04X} (only newlines are allowed)",
            c as u32
        ));
    }
    if v.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if v.contains(['<', '>', '&', '`', '$', '\\', '%']) {
        return Err("must not contain < > & ` $ \\ or %".into());
    }
    Ok(())
}

fn valid_license(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_alphanumeric() || ".+-() ".contains(c),
        "an SPDX license expression",
    )
}

fn url_chars(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!*+,;=%".contains(c)
}

pub fn valid_https_url(v: &str) -> Result<(), String> {
    charset(v, url_chars, "a URL")?;
    let rest = v
        .strip_prefix("https://")
        .ok_or_else(|| "must be an https:// URL".to_string())?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err("URL needs a host (and no user info)".into());
    }
    Ok(())
}

/// The asset URL: `{version}` (so `pin` moves it) and `{arch}` (one asset per arch).
fn valid_asset_url_template(v: &str) -> Result<(), String> {
    valid_url_template(v)?;
    for p in ["{version}", "{arch}"] {
        if !v.contains(p) {
            return Err(format!(
                "must contain {p} (each version and arch has its own asset)"
            ));
        }
    }
    Ok(())
}

/// The checksum file URL: `{version}` (`pin` reads the new version's file).
fn valid_checksums_url_template(v: &str) -> Result<(), String> {
    valid_url_template(v)?;
    if !v.contains("{version}") {
        return Err("must contain {version} (pin reads the new version's checksum file)".into());
    }
    Ok(())
}

fn valid_url_template(v: &str) -> Result<(), String> {
    let probe = v.replace("{version}", "1").replace("{arch}", "x");
    if probe.contains(['{', '}']) {
        return Err("only {version} and {arch} may be used in a URL template".into());
    }
    valid_https_url(&probe)
}

/// `[source.signature]`; the key file is read and parsed here, so that a missing or wrong key
/// is reported against the component file.
fn validate_signature(
    cx: &mut Ctx<'_>,
    s: &Spanned<RawSignature>,
    has_checksums: bool,
) -> Option<UpstreamSignature> {
    let r = s.get_ref();
    let before = cx.errors.len();
    let kind_s = cx.check(&r.kind, "source.signature.kind", |v| {
        one_of(v, &["minisign", "openpgp"])
    });
    let url = cx.check(&r.url, "source.signature.url", valid_checksums_url_template);
    let over_s = match &r.over {
        Some(o) => cx.check(o, "source.signature.over", |v| {
            one_of(v, &["asset", "checksums"])
        }),
        None => "asset".into(),
    };
    if over_s == "checksums" && !has_checksums {
        cx.err(
            r.over.as_ref().map(|o| o.span()).unwrap_or(s.span()),
            "source.signature.over",
            &over_s,
            "a signature over the checksum file needs `source.checksums` (its URL)",
        );
    }
    let key = cx.check(&r.key, "source.signature.key", |v| {
        let rest = v
            .strip_prefix("keys/upstream/")
            .ok_or_else(|| "must be a file under keys/upstream/".to_string())?;
        charset(
            rest,
            |c| c.is_ascii_alphanumeric() || "._-".contains(c),
            "a key file name",
        )?;
        if rest.is_empty() || rest.starts_with('.') {
            return Err("must name a file under keys/upstream/".into());
        }
        Ok(())
    });
    if cx.errors.len() != before {
        return None;
    }
    let base = cx
        .file
        .parent()
        .and_then(|d| d.parent())
        .unwrap_or(Path::new("."));
    let key_path = base.join(&key);
    let kind = if kind_s == "minisign" {
        SignatureKind::Minisign
    } else {
        SignatureKind::Openpgp
    };
    let loaded = match kind {
        SignatureKind::Minisign => crate::minisign::public_key_file(&key_path).map(|_| ()),
        SignatureKind::Openpgp => {
            crate::verify::TrustedKeys::load(std::slice::from_ref(&key_path)).map(|_| ())
        }
    };
    if let Err(e) = loaded {
        cx.err(
            r.key.span(),
            "source.signature.key",
            &key,
            format!("{}: {e:#}", key_path.display()),
        );
        return None;
    }
    Some(UpstreamSignature {
        kind,
        url,
        over: if over_s == "checksums" {
            SignatureOver::Checksums
        } else {
            SignatureOver::Asset
        },
        key,
        key_path,
    })
}

fn valid_member_template(v: &str) -> Result<(), String> {
    let probe = v.replace("{version}", "1").replace("{arch}", "x");
    charset(
        &probe,
        |c| c.is_ascii_alphanumeric() || "._+-/".contains(c),
        "an archive member path",
    )?;
    if probe.starts_with('/')
        || probe
            .split('/')
            .any(|s| s == ".." || s == "." || s.is_empty())
    {
        return Err("must be a relative path without '.', '..' or empty components".into());
    }
    Ok(())
}

pub fn valid_sha256(v: &str) -> Result<(), String> {
    if v.len() != 64
        || !v
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err("must be 64 lowercase hex digits".into());
    }
    Ok(())
}

fn valid_user(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
        "a user or group name (a-z 0-9 _ -)",
    )?;
    if !v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        return Err("must start with a-z or _".into());
    }
    if v.len() > 31 {
        return Err("longer than 31 characters".into());
    }
    if v == "root" {
        return Err("the service must not run as root".into());
    }
    Ok(())
}

/// Accounts and groups that exist on Debian/Fedora systems for other purposes. Running an
/// exporter as one of them shares its files (`nobody`, `daemon`, `mysql`-style accounts are
/// caught only by this list where well known) or grants privileges no hardening setting
/// names: `shadow` reads /etc/shadow, `disk` raw block devices, `adm`/`systemd-journal` every
/// log, `docker`/`lxd` root-equivalent sockets.
const SHARED_ACCOUNTS: &[&str] = &[
    "_apt",
    "adm",
    "audio",
    "backup",
    "bin",
    "cdrom",
    "daemon",
    "dialout",
    "dip",
    "disk",
    "docker",
    "floppy",
    "games",
    "gnats",
    "input",
    "irc",
    "kmem",
    "kvm",
    "libvirt",
    "list",
    "lp",
    "lxd",
    "mail",
    "man",
    "messagebus",
    "netdev",
    "news",
    "nobody",
    "nogroup",
    "operator",
    "plugdev",
    "polkitd",
    "proxy",
    "render",
    "sasl",
    "sgx",
    "shadow",
    "src",
    "staff",
    "sudo",
    "sync",
    "sys",
    "systemd-journal",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "tape",
    "tty",
    "users",
    "utmp",
    "uucp",
    "video",
    "voice",
    "wheel",
    "www-data",
];

/// The service user or group: a valid name that is not a shared or privileged system account.
fn valid_service_account(v: &str) -> Result<(), String> {
    valid_user(v)?;
    if SHARED_ACCOUNTS.contains(&v) {
        return Err(format!(
            "{v:?} is a system account or group shared with other programs (or one that \
             grants privileges); give the service its own"
        ));
    }
    Ok(())
}

fn valid_owner(v: &str) -> Result<(), String> {
    if v == "root" {
        return Ok(());
    }
    valid_user(v)
}

/// A port number as written: decimal digits, no sign or leading zero, 1-65535.
fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("port {p:?} is not a decimal number"));
    }
    if p.len() > 1 && p.starts_with('0') {
        return Err(format!("port {p:?} has a leading zero"));
    }
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("port {p} is outside 1-65535")),
    }
}

/// `host:port`, host an IP address (IPv6 in brackets) or `localhost`.
pub fn valid_listen(v: &str) -> Result<(), String> {
    no_controls(v)?;
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| "must be HOST:PORT".to_string())?;
    parse_port(port)?;
    if let Some(h) = host.strip_prefix('[') {
        let h = h
            .strip_suffix(']')
            .ok_or_else(|| format!("host {host:?}: unbalanced brackets"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "host {host:?}: only an IPv6 address is written in brackets"
            ));
        }
        return Ok(());
    }
    if host.contains(':') {
        return Err("an IPv6 address must be written in brackets".into());
    }
    if host != "localhost" && host.parse::<IpAddr>().is_err() {
        return Err(format!("host {host:?} is not an IP address or localhost"));
    }
    Ok(())
}

fn valid_flag(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_alphanumeric() || ".-_".contains(c),
        "a command-line flag",
    )?;
    if !v.starts_with("--") || v.len() < 3 {
        return Err("a flag starts with --".into());
    }
    Ok(())
}

/// Arguments land in the env file (a double-quoted shell-style value) and so in ExecStart:
/// keep them to characters that mean nothing to systemd, the shell or dpkg.
fn valid_arg(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_alphanumeric() || "-_.,:=/@+^|()[]*?".contains(c),
        "an exporter argument (letters, digits and -_.,:=/@+^|()[]*?)",
    )
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_alphanumeric() || c == '_' || c == ':',
        "a metric name (letters, digits, _ and :)",
    )?;
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("a metric name must not start with a digit".into());
    }
    Ok(())
}

pub fn valid_abs_path(v: &str) -> Result<(), String> {
    charset(
        v,
        |c| c.is_ascii_alphanumeric() || "._+-/".contains(c),
        "a path (letters, digits, . _ + - /)",
    )?;
    if !v.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if v.len() > 1 && v.ends_with('/') {
        return Err("must not end with /".into());
    }
    if v[1..]
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("must not contain empty, '.' or '..' components".into());
    }
    Ok(())
}

fn valid_mode(v: &str) -> Result<u32, String> {
    // from_str_radix accepts a sign ("+640"): only octal digits are a mode.
    if !v.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err("must be an octal mode like \"0640\"".into());
    }
    let m =
        u32::from_str_radix(v, 8).map_err(|_| "must be an octal mode like \"0640\"".to_string())?;
    if v.len() != 4 || m > 0o777 {
        return Err(
            "must be four octal digits without setuid/setgid/sticky bits (e.g. \"0640\")".into(),
        );
    }
    if m & 0o002 != 0 {
        return Err("world-writable files are refused".into());
    }
    Ok(m)
}

/// Capabilities a component may ask for, each with a reason.
const KNOWN_CAPS: &[&str] = &[
    "CAP_NET_RAW",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_ADMIN",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYSLOG",
];

/// Capabilities that amount to root (or bypass file permissions, or other processes'
/// isolation): refused whatever the reason.
const FORBIDDEN_CAPS: &[&str] = &[
    "CAP_SYS_ADMIN",
    "CAP_DAC_OVERRIDE",
    "CAP_SYS_PTRACE",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_LINUX_IMMUTABLE",
    "CAP_KILL",
];

/// Debian packages that are Essential or that boot, log in and install everything: a
/// Conflicts on one would remove the system (or the package manager) to install an exporter.
const ESSENTIAL_DEB: &[&str] = &[
    "adduser",
    "apt",
    "base-files",
    "base-passwd",
    "bash",
    "bsdutils",
    "coreutils",
    "dash",
    "debconf",
    "debianutils",
    "diffutils",
    "dpkg",
    "e2fsprogs",
    "findutils",
    "gpgv",
    "grep",
    "gzip",
    "hostname",
    "init",
    "init-system-helpers",
    "libc-bin",
    "libc6",
    "login",
    "mawk",
    "mount",
    "ncurses-base",
    "ncurses-bin",
    "passwd",
    "perl-base",
    "sed",
    "systemd",
    "systemd-sysv",
    "sysvinit-utils",
    "tar",
    "tzdata",
    "util-linux",
    "zlib1g",
];

/// The RPM counterpart of [`ESSENTIAL_DEB`].
const ESSENTIAL_RPM: &[&str] = &[
    "basesystem",
    "bash",
    "coreutils",
    "dnf",
    "filesystem",
    "glibc",
    "grep",
    "gzip",
    "rpm",
    "sed",
    "setup",
    "shadow-utils",
    "systemd",
    "tar",
    "util-linux",
    "yum",
];

fn not_self_or_essential(v: &str, own: &str, essential: &[&str]) -> Result<(), String> {
    if v == own {
        return Err("names the package itself".into());
    }
    if essential.contains(&v) {
        return Err(format!(
            "{v} is an essential system package: conflicting with it would remove the system"
        ));
    }
    Ok(())
}

const KNOWN_FAMILIES: &[&str] = &["AF_NETLINK", "AF_PACKET", "AF_UNIX", "AF_INET", "AF_INET6"];

fn valid_memory(v: &str) -> Result<(), String> {
    let digits = v.trim_end_matches(['K', 'M', 'G']);
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || v.len() - digits.len() > 1
    {
        return Err("must be a size like 256M or 1G".into());
    }
    Ok(())
}

fn one_of(v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!("must be one of {}", allowed.join(", ")))
    }
}

fn validate(cx: &mut Ctx<'_>, raw: Raw, file_sha256: String) -> Option<Component> {
    let stem = cx
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = cx.check(&raw.name, "name", valid_component_name);
    if name != stem && valid_component_name(&name).is_ok() {
        cx.err(
            raw.name.span(),
            "name",
            &name,
            format!(
                "must equal the file stem {stem:?} (the command line names components by file)"
            ),
        );
    }
    let deb_name = name.replace('_', "-");
    let version = cx.check(&raw.version, "version", valid_version);
    let revision = *raw.revision.get_ref();
    if !(1..=9999).contains(&revision) {
        cx.err(
            raw.revision.span(),
            "revision",
            &revision.to_string(),
            "must be 1-9999",
        );
    }
    let summary = cx.check(&raw.summary, "summary", valid_summary);
    let description = cx.check(&raw.description, "description", valid_description);
    let license = cx.check(&raw.license, "license", valid_license);
    let homepage = cx.check(&raw.homepage, "homepage", |v| {
        valid_https_url(v)?;
        if v.contains('%') {
            return Err(
                "must not contain % (the unit's Documentation= would expand it as a specifier)"
                    .into(),
            );
        }
        Ok(())
    });
    let copyright = raw
        .copyright
        .as_ref()
        .map(|s| cx.check(s, "copyright", valid_summary))
        .unwrap_or_else(|| format!("The {name} authors"));
    let conflicts_deb = raw
        .conflicts
        .deb
        .iter()
        .map(|s| {
            cx.check(s, "conflicts.deb", |v| {
                valid_deb_name(v)?;
                not_self_or_essential(v, &deb_name, ESSENTIAL_DEB)
            })
        })
        .collect();
    let conflicts_rpm = raw
        .conflicts
        .rpm
        .iter()
        .map(|s| {
            cx.check(s, "conflicts.rpm", |v| {
                valid_rpm_name(v)?;
                not_self_or_essential(v, &name, ESSENTIAL_RPM)
            })
        })
        .collect();

    // source
    let url = cx.check(&raw.source.url, "source.url", valid_asset_url_template);
    if !(url.ends_with(".tar.gz") || url.ends_with(".tgz") || url.ends_with(".zip")) {
        cx.err(
            raw.source.url.span(),
            "source.url",
            &url,
            "the asset must be a .tar.gz, .tgz or .zip",
        );
    }
    let checksums = raw
        .source
        .checksums
        .as_ref()
        .map(|s| cx.check(s, "source.checksums", valid_checksums_url_template));
    let binary = cx.check(&raw.source.binary, "source.binary", valid_member_template);
    let license_file = raw
        .source
        .license_file
        .as_ref()
        .map(|s| cx.check(s, "source.license_file", valid_member_template));
    let mut arch_names = BTreeMap::new();
    for (k, v) in &raw.source.arch {
        let field = format!("source.arch.{k}");
        match Arch::parse(k) {
            Some(a) if a.deb() == k => {
                let n = cx.check(v, &field, |s| {
                    charset(s, |c| c.is_ascii_alphanumeric() || c == '_', "an arch name")
                });
                arch_names.insert(a, n);
            }
            _ => cx.err(v.span(), &field, k, "unknown arch (amd64 or arm64)"),
        }
    }
    let mut sha256 = BTreeMap::new();
    for (k, v) in &raw.source.sha256 {
        let field = format!("source.sha256.{}", k.get_ref());
        match Arch::parse(k.get_ref()) {
            Some(a) if a.deb() == k.get_ref() => {
                let d = cx.check(v, &field, valid_sha256);
                sha256.insert(a, d);
            }
            _ => cx.err(
                k.span(),
                &field,
                k.get_ref(),
                "unknown arch (amd64 or arm64)",
            ),
        }
    }

    let signature = raw
        .source
        .signature
        .as_ref()
        .and_then(|s| validate_signature(cx, s, checksums.is_some()));

    // service
    let s = &raw.service;
    let user = cx.check(&s.user, "service.user", valid_service_account);
    let group = s
        .group
        .as_ref()
        .map(|g| cx.check(g, "service.group", valid_service_account))
        .unwrap_or_else(|| user.clone());
    let listen = cx.check(&s.listen, "service.listen", valid_listen);
    let listen_flag = s
        .listen_flag
        .as_ref()
        .map(|f| cx.check(f, "service.listen_flag", valid_flag))
        .unwrap_or_else(|| "--web.listen-address".into());
    let listen_port_flag = s
        .listen_port_flag
        .as_ref()
        .map(|f| cx.check(f, "service.listen_port_flag", valid_flag));
    let subcommand = s.subcommand.as_ref().map(|f| {
        cx.check(f, "service.subcommand", |v| {
            charset(
                v,
                |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
                "a subcommand (a-z 0-9 -)",
            )?;
            if !v.starts_with(|c: char| c.is_ascii_lowercase()) {
                return Err("a subcommand starts with a-z".into());
            }
            Ok(())
        })
    });
    let web_config_flag = s
        .web_config_flag
        .as_ref()
        .map(|f| cx.check(f, "service.web_config_flag", valid_flag));
    // Lint: every address the service binds is its own listen address (localhost by default,
    // widened in the env file by the admin), never one hidden in the default flags.
    if valid_listen(&listen).is_ok() {
        let host = listen.rsplit_once(':').map(|x| x.0).unwrap_or_default();
        if matches!(host, "0.0.0.0" | "[::]" | "[0:0:0:0:0:0:0:0]") {
            cx.err(
                s.listen.span(),
                "service.listen",
                &listen,
                "listens on every interface: the default serves localhost only (the admin \
                 widens it in the env file and opens the firewall)",
            );
        }
    }
    let own_listen_flags: Vec<&str> = std::iter::once(listen_flag.as_str())
        .chain(listen_port_flag.as_deref())
        .collect();
    let mut args: Vec<String> = Vec::new();
    for a in &s.args {
        let v = cx.check(a, "service.args", valid_arg);
        let flag = v.split_once('=').map(|x| x.0).unwrap_or(&v);
        let value = v.split_once('=').map(|x| x.1).unwrap_or("");
        if own_listen_flags.contains(&flag) {
            cx.err(
                a.span(),
                "service.args",
                &v,
                "sets the listen address: that is `service.listen` (the env file's \
                 LISTEN_ADDRESS), not a default flag",
            );
        } else if value.starts_with("0.0.0.0")
            || value.starts_with("[::]")
            || value.starts_with("::")
            || (value.starts_with(':') && value[1..].chars().all(|c| c.is_ascii_digit()))
        {
            cx.err(
                a.span(),
                "service.args",
                &v,
                "binds every interface: default flags listen on localhost only",
            );
        }
        args.push(v);
    }
    let mut reasons = BTreeMap::new();
    for (k, v) in &s.reason {
        let field = format!("service.reason.{}", k.get_ref());
        if !WIDENINGS.contains(&k.get_ref().as_str()) && !DEPARTURES.contains(&k.get_ref().as_str())
        {
            cx.err(
                k.span(),
                &field,
                k.get_ref(),
                format!(
                    "not a widening of the baseline; a reason explains one of: {}",
                    WIDENINGS
                        .iter()
                        .chain(DEPARTURES)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        let r = cx.check(v, &field, |r| {
            no_controls(r)?;
            if r.trim().len() < 10 {
                return Err("give a reason a reader can check (at least 10 characters)".into());
            }
            Ok(())
        });
        reasons.insert(k.get_ref().clone(), r);
    }
    let need_reason = |cx: &mut Ctx<'_>, key: &str, span: Range<usize>, value: &str| {
        if !s.reason.keys().any(|k| k.get_ref() == key) {
            cx.err(
                span,
                &format!("service.{key}"),
                value,
                format!("widens the hardened baseline: add service.reason.{key} saying why"),
            );
        }
    };
    let protect_home = match &s.protect_home {
        Some(v) => {
            let x = cx.check(v, "service.protect_home", |x| {
                one_of(x, &["yes", "read-only", "tmpfs"])
            });
            if x != "yes" {
                need_reason(cx, "protect_home", v.span(), &x);
            }
            x
        }
        None => "yes".into(),
    };
    let protect_proc = match &s.protect_proc {
        Some(v) => {
            let x = cx.check(v, "service.protect_proc", |x| {
                one_of(x, &["invisible", "ptraceable", "noaccess", "default"])
            });
            if x != "invisible" {
                need_reason(cx, "protect_proc", v.span(), &x);
            }
            x
        }
        None => "invisible".into(),
    };
    let proc_subset = match &s.proc_subset {
        Some(v) => {
            let x = cx.check(v, "service.proc_subset", |x| one_of(x, &["pid", "all"]));
            if x != "pid" {
                need_reason(cx, "proc_subset", v.span(), &x);
            }
            x
        }
        None => "pid".into(),
    };
    let mut capabilities = Vec::new();
    for c in &s.capabilities {
        let x = cx.check(c, "service.capabilities", |x| {
            if FORBIDDEN_CAPS.contains(&x) {
                return Err(format!(
                    "{x} is (close to) root: refused even with a reason; find a narrower way"
                ));
            }
            one_of(x, KNOWN_CAPS)
        });
        need_reason(cx, "capabilities", c.span(), &x);
        capabilities.push(x);
    }
    let mut address_families: Vec<String> =
        DEFAULT_FAMILIES.iter().map(|s| s.to_string()).collect();
    for f in &s.extra_address_families {
        let x = cx.check(f, "service.extra_address_families", |x| {
            one_of(x, KNOWN_FAMILIES)
        });
        need_reason(cx, "extra_address_families", f.span(), &x);
        if !address_families.contains(&x) {
            address_families.push(x);
        }
    }
    let mut read_write_paths = Vec::new();
    for p in &s.read_write_paths {
        let x = cx.check(p, "service.read_write_paths", |x| {
            for sys in ["/etc", "/usr", "/boot"] {
                if x == "/" || x == sys || x.starts_with(&format!("{sys}/")) {
                    return Err(format!(
                        "makes {} writable: configuration and programs stay read-only \
                         (state belongs in state_directory)",
                        if x == "/" { "/" } else { sys }
                    ));
                }
            }
            valid_abs_path(x)
        });
        need_reason(cx, "read_write_paths", p.span(), &x);
        read_write_paths.push(x);
    }
    let state_directory = s.state_directory.as_ref().map(|d| {
        cx.check(d, "service.state_directory", |x| {
            valid_member_template(x)?;
            if x.contains(['{', '}']) {
                return Err("a directory name below /var/lib".into());
            }
            // systemd chowns StateDirectory= to the service user, and purge removes it: it
            // must be the component's own directory, never another program's (/var/lib/dpkg).
            if x != name && !x.starts_with(&format!("{name}/")) {
                return Err(format!(
                    "must be the component's own directory {name:?} (or below it): systemd \
                     hands it to the service user and purge removes /var/lib/<it>"
                ));
            }
            Ok(())
        })
    });
    let memory_max = s
        .memory_max
        .as_ref()
        .map(|m| {
            cx.check(m, "service.memory_max", |v| {
                valid_memory(v)?;
                let digits = v.trim_end_matches(['K', 'M', 'G']);
                let n: u64 = digits
                    .parse()
                    .map_err(|_| "must be a size like 256M or 1G")?;
                let bytes = n.saturating_mul(match v.chars().last() {
                    Some('K') => 1 << 10,
                    Some('M') => 1 << 20,
                    Some('G') => 1 << 30,
                    _ => 1,
                });
                if bytes < 16 << 20 {
                    return Err("below 16M: the exporter could not start".into());
                }
                if bytes > 64 << 30 {
                    return Err("above 64G: that is no bound for an exporter".into());
                }
                Ok(())
            })
        })
        .unwrap_or_else(|| "512M".into());
    let int_field =
        |cx: &mut Ctx<'_>, v: &Option<Spanned<i64>>, field: &str, default: u32, max: i64| match v {
            None => default,
            Some(x) => {
                let n = *x.get_ref();
                if !(1..=max).contains(&n) {
                    cx.err(x.span(), field, &n.to_string(), format!("must be 1-{max}"));
                    default
                } else {
                    n as u32
                }
            }
        };
    let kill_signal = s.kill_signal.as_ref().and_then(|v| {
        let x = cx.check(v, "service.kill_signal", |x| one_of(x, KILL_SIGNALS));
        if x == "SIGTERM" {
            return None; // systemd's default
        }
        if !s.reason.keys().any(|k| k.get_ref() == "kill_signal") {
            cx.err(
                v.span(),
                "service.kill_signal",
                &x,
                "departs from systemd's SIGTERM: add service.reason.kill_signal saying why",
            );
        }
        Some(x)
    });
    // A reason for a departure that is not there explains nothing (a leftover, or a typo in the
    // signal's key): refused like a reason for something that is not a widening.
    if kill_signal.is_none() {
        if let Some((_, v)) = s.reason.iter().find(|(k, _)| k.get_ref() == "kill_signal") {
            cx.err(
                v.span(),
                "service.reason.kill_signal",
                v.get_ref(),
                match &s.kill_signal {
                    Some(_) => {
                        "explains no departure: service.kill_signal is systemd's SIGTERM; \
                                remove the reason"
                    }
                    None => {
                        "explains no departure: service.kill_signal is not set; remove the \
                             reason or set the signal it explains"
                    }
                },
            );
        }
    }
    let tasks_max = int_field(cx, &s.tasks_max, "service.tasks_max", 256, 65536);
    let limit_nofile = int_field(cx, &s.limit_nofile, "service.limit_nofile", 8192, 1048576);

    // config files
    let errors_before_config = cx.errors.len();
    let mut config = Vec::new();
    for (i, c) in raw.config.iter().enumerate() {
        let f = |n: &str| format!("config[{i}].{n}");
        let own_etc = format!("/etc/{name}/");
        let path = cx.check(&c.path, &f("path"), |p| {
            valid_abs_path(p)?;
            if !p.starts_with("/etc/") {
                return Err("configuration lives under /etc".into());
            }
            // Anywhere else under /etc a component could ship (and dpkg purge delete)
            // another program's file: /etc/passwd, /etc/sudoers.d/x, /etc/ld.so.preload.
            if !p.starts_with(&own_etc) {
                return Err(format!(
                    "configuration lives in the component's own directory {own_etc}"
                ));
            }
            Ok(())
        });
        let mode = match &c.mode {
            Some(m) => match valid_mode(m.get_ref()) {
                Ok(x) => x,
                Err(e) => {
                    cx.err(m.span(), &f("mode"), m.get_ref(), e);
                    0o640
                }
            },
            None => 0o640,
        };
        // Owned by root or the service's own account: any other account could rewrite it.
        let owner = c
            .owner
            .as_ref()
            .map(|o| {
                cx.check(o, &f("owner"), |v| {
                    valid_owner(v)?;
                    if v != "root" && v != user {
                        return Err(format!("must be root or the service user {user:?}"));
                    }
                    Ok(())
                })
            })
            .unwrap_or_else(|| "root".into());
        let cgroup = c
            .group
            .as_ref()
            .map(|g| {
                cx.check(g, &f("group"), |v| {
                    valid_owner(v)?;
                    if v != "root" && v != group {
                        return Err(format!("must be root or the service group {group:?}"));
                    }
                    Ok(())
                })
            })
            .unwrap_or_else(|| group.clone());
        let content = match &c.content {
            Some(t) => cx.check(t, &f("content"), |t| {
                if let Some(ch) = bad_char(t, &['\n', '\t']) {
                    return Err(format!(
                        "contains the control character U+{:04X}",
                        ch as u32
                    ));
                }
                Ok(())
            }),
            None => String::new(),
        };
        let source = c
            .source
            .as_ref()
            .map(|m| cx.check(m, &f("source"), valid_member_template));
        match (&c.content, &c.source) {
            (Some(_), Some(m)) => cx.err(
                m.span(),
                &f("source"),
                m.get_ref(),
                "give either content or source (an archive member), not both",
            ),
            (None, None) => cx.err(
                c.path.span(),
                &f("content"),
                "",
                "missing: give content (the shipped text) or source (an archive member)",
            ),
            _ => {}
        }
        let env = c.env.as_ref().map(|b| *b.get_ref()).unwrap_or(false);
        if let (true, Some(fl)) = (env, &c.flag) {
            cx.err(
                fl.span(),
                &f("flag"),
                fl.get_ref(),
                "an env file is read by systemd (EnvironmentFile=), not passed with a flag",
            );
        }
        let credential = c.credential.as_ref().map(|b| *b.get_ref()).unwrap_or(false);
        if credential && c.source.is_some() {
            cx.err(
                c.path.span(),
                &f("source"),
                "",
                "a credential file ships our placeholder, not an archive member",
            );
        } else if credential {
            if !content.contains(PLACEHOLDER_MARKER) {
                cx.err(
                    c.content
                        .as_ref()
                        .map(|t| t.span())
                        .unwrap_or(c.path.span()),
                    &f("content"),
                    "",
                    format!(
                        "a credential file ships a placeholder containing {PLACEHOLDER_MARKER}"
                    ),
                );
            }
            if mode & 0o007 != 0 {
                cx.err(
                    c.mode.as_ref().map(|m| m.span()).unwrap_or(c.path.span()),
                    &f("mode"),
                    &format!("{mode:04o}"),
                    "a credential file must not be readable by others",
                );
            }
        }
        let flag = c.flag.as_ref().map(|x| cx.check(x, &f("flag"), valid_flag));
        if config.iter().any(|x: &ConfigFile| x.path == path) {
            cx.err(c.path.span(), &f("path"), &path, "declared twice");
        } else if let Some(x) = config.iter().find(|x: &&ConfigFile| {
            path.starts_with(&format!("{}/", x.path)) || x.path.starts_with(&format!("{path}/"))
        }) {
            cx.err(
                c.path.span(),
                &f("path"),
                &path,
                format!(
                    "one config file cannot be a directory of another ({})",
                    x.path
                ),
            );
        }
        if web_config_flag.is_some() && path == format!("{own_etc}{WEB_CONFIG_FILE}") {
            cx.err(
                c.path.span(),
                &f("path"),
                &path,
                "the web config file is shipped by every component with web_config_flag",
            );
        }
        config.push(ConfigFile {
            path,
            mode,
            owner,
            group: cgroup,
            content,
            source,
            env,
            credential,
            flag,
        });
    }

    // firewall
    let mut ports = Vec::new();
    for p in &raw.firewall.ports {
        let v = p.get_ref();
        let parsed = v.split_once('/').and_then(|(n, pr)| {
            let n = parse_port(n).ok()?;
            (pr == "tcp" || pr == "udp").then(|| Port {
                port: n,
                proto: pr.to_string(),
            })
        });
        match parsed {
            Some(x) => ports.push(x),
            None => cx.err(
                p.span(),
                "firewall.ports",
                v,
                "must be PORT/tcp or PORT/udp with PORT 1-65535",
            ),
        }
    }

    // smoke (its paths are checked against the config files only when those are valid)
    let config_ok = cx.errors.len() == errors_before_config;
    let smoke = raw.smoke.as_ref().map(|sm| {
        let span = sm.span();
        let sm = sm.get_ref();
        let metric = cx.check(&sm.metric, "smoke.metric", valid_metric_name);
        let mut credentials = BTreeMap::new();
        for (k, v) in &sm.credentials {
            let field = format!("smoke.credentials.{:?}", k.get_ref());
            let path = k.get_ref().clone();
            if config_ok && !config.iter().any(|c| c.credential && c.path == path) {
                cx.err(
                    k.span(),
                    &field,
                    &path,
                    "is not the path of a credential file ([[config]] with credential = true)",
                );
            }
            let content = cx.check(v, &field, |t| {
                if let Some(ch) = bad_char(t, &['\n', '\t']) {
                    return Err(format!(
                        "contains the control character U+{:04X}",
                        ch as u32
                    ));
                }
                if t.contains(PLACEHOLDER_MARKER) {
                    return Err(format!(
                        "must be real credentials, without the placeholder marker {PLACEHOLDER_MARKER}"
                    ));
                }
                Ok(())
            });
            credentials.insert(path, content);
        }
        for c in config.iter().filter(|c| c.credential && config_ok) {
            if !credentials.contains_key(&c.path) {
                cx.err(
                    span.clone(),
                    "smoke.credentials",
                    &c.path,
                    "every credential file needs valid test content here (the test writes it, then restarts the service)",
                );
            }
        }
        Smoke {
            metric,
            credentials,
        }
    });

    if raw.smoke.is_none() {
        cx.err(
            raw.name.span(),
            "smoke.metric",
            "",
            "missing: add [smoke] metric = \"…\", a metric the running exporter serves (the \
             live test checks it)",
        );
    }

    if !cx.errors.is_empty() {
        return None;
    }
    Some(Component {
        name,
        deb_name,
        version,
        revision: revision as u32,
        summary,
        description,
        license,
        homepage,
        copyright,
        conflicts_deb,
        conflicts_rpm,
        source: Source {
            url,
            checksums,
            binary,
            license_file,
            arch_names,
            sha256,
            signature,
        },
        service: Service {
            user,
            group,
            listen,
            listen_flag,
            listen_port_flag,
            subcommand,
            web_config_flag,
            args,
            protect_home,
            protect_proc,
            proc_subset,
            capabilities,
            address_families,
            read_write_paths,
            state_directory,
            memory_max,
            tasks_max,
            limit_nofile,
            kill_signal,
            reasons,
        },
        config,
        firewall: Firewall { ports },
        smoke,
        file: cx.file.to_path_buf(),
        file_sha256,
    })
}
