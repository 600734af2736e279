//! Templates (handlebars, strict mode) and the files rendered from them.
//!
//! Every template under `templates/` is embedded in the binary at build time; `--templates DIR`
//! overrides them file by file. No HTML escaping is applied implicitly: templates call the
//! escaping helper for the syntax they emit (`xml`, `shq`, `systemd`), and component values are
//! validated before they get here.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use handlebars::{
    Context as HbContext, Handlebars, Helper, HelperResult, Output, RenderContext,
    RenderErrorReason,
};

/// Embedded default templates: (name without .hbs, text).
pub const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/templates.rs"));

pub struct Templates {
    hb: Handlebars<'static>,
    /// name → sha256 of the template text (for provenance / build cache keys).
    pub digests: BTreeMap<String, String>,
}

/// XML text/attribute escaping.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// POSIX shell single-quoting.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Escaping for a value inside a systemd unit file line (specifiers and variables).
pub fn systemd_escape(s: &str) -> String {
    s.replace('\\', r"\\").replace('%', "%%").replace('$', "$$")
}

fn one_arg_helper(f: fn(&str) -> String) -> impl handlebars::HelperDef + Send + Sync + 'static {
    move |h: &Helper<'_>,
          _: &Handlebars<'_>,
          _: &HbContext,
          _: &mut RenderContext<'_, '_>,
          out: &mut dyn Output|
          -> HelperResult {
        let v = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("escape helper", 0))?
            .value();
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.write(&f(&s))?;
        Ok(())
    }
}

impl Templates {
    /// The embedded templates, overridden by any `*.hbs` under `dir` when given.
    pub fn load(dir: Option<&Path>) -> Result<Templates> {
        let mut texts: BTreeMap<String, String> = EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        if let Some(dir) = dir {
            let mut stack = vec![dir.to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d)
                    .with_context(|| format!("{}: cannot read templates", d.display()))?
                {
                    let p = e?.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "hbs") {
                        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                        let text = std::fs::read_to_string(&p)
                            .with_context(|| format!("{}: cannot read template", p.display()))?;
                        texts.insert(rel.trim_end_matches(".hbs").to_string(), text);
                    }
                }
            }
        }
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("xml", Box::new(one_arg_helper(xml_escape)));
        hb.register_helper("shq", Box::new(one_arg_helper(sh_quote)));
        hb.register_helper("systemd", Box::new(one_arg_helper(systemd_escape)));
        let mut digests = BTreeMap::new();
        for (name, text) in &texts {
            hb.register_template_string(name, text)
                .map_err(|e| anyhow::anyhow!("template {name}.hbs: {e}"))?;
            digests.insert(name.clone(), crate::digest::sha256_hex(text.as_bytes()));
        }
        Ok(Templates { hb, digests })
    }

    /// Render template `name` (path below templates/ without `.hbs`, e.g. `deb/postinst`).
    pub fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<String> {
        if !self.hb.has_template(name) {
            anyhow::bail!("template {name}.hbs does not exist");
        }
        self.hb
            .render(name, ctx)
            .map_err(|e| anyhow::anyhow!("template {name}.hbs: {e}"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.hb.has_template(name)
    }
}

/// A rendered file, ready for the package description.
#[derive(Debug, Clone)]
pub struct RenderedFile {
    pub path: String,
    pub mode: u32,
    pub config: bool,
    pub text: String,
}

/// The template context of a component, for one format's layout.
pub fn component_context(
    c: &crate::component::Component,
    layout: &crate::package::Layout,
) -> serde_json::Value {
    use serde_json::json;
    let s = &c.service;
    let unit = c.unit_name();
    let env_file = format!("{}/{}", layout.env_dir, env_file_name(c, layout));
    let port = s
        .listen
        .rsplit_once(':')
        .map(|x| x.1)
        .unwrap_or_default()
        .to_string();
    let mut by_proto: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &c.firewall.ports {
        by_proto
            .entry(p.proto.clone())
            .or_default()
            .push(p.port.to_string());
    }
    let ufw_ports = by_proto
        .iter()
        .map(|(proto, ports)| format!("{}/{}", ports.join(","), proto))
        .collect::<Vec<_>>()
        .join("|");
    let sets: Vec<_> = by_proto
        .iter()
        .map(|(proto, ports)| json!({"proto": proto, "ports": ports.join(", ")}))
        .collect();
    let credential_files: Vec<_> = c
        .config
        .iter()
        .filter(|f| f.credential)
        .map(|f| json!({"path": f.path}))
        .collect();
    let config_flags: Vec<String> = c
        .config
        .iter()
        .filter_map(|f| f.flag.as_ref().map(|fl| format!("{fl}={}", f.path)))
        .collect();
    let env_files: Vec<&str> = c
        .config
        .iter()
        .filter(|f| f.env)
        .map(|f| f.path.as_str())
        .collect();
    // How the listen address reaches the exporter: one host:port flag, or host and port flags.
    let (listen_env, listen_args) = match &s.listen_port_flag {
        None => (
            vec![format!("LISTEN_ADDRESS={}", s.listen)],
            format!("{}=${{LISTEN_ADDRESS}}", s.listen_flag),
        ),
        Some(pf) => {
            let (h, p) = s.listen.rsplit_once(':').unwrap_or_default();
            let h = h.trim_start_matches('[').trim_end_matches(']');
            (
                vec![format!("LISTEN_HOST={h}"), format!("LISTEN_PORT={p}")],
                format!("{}=${{LISTEN_HOST}} {pf}=${{LISTEN_PORT}}", s.listen_flag),
            )
        }
    };
    let home = s
        .state_directory
        .as_ref()
        .map(|d| format!("/var/lib/{d}"))
        .unwrap_or_else(|| "-".into());
    json!({
        "name": c.name,
        "deb_name": c.deb_name,
        "version": c.version,
        "summary": c.summary,
        "homepage": c.homepage,
        "unit": unit,
        "user": s.user,
        "group": s.group,
        "separate_group": s.user != s.group,
        "gecos": format!("{} service user", c.name),
        "home": home,
        "listen": s.listen,
        "listen_flag": s.listen_flag,
        "listen_env": listen_env,
        "listen_args": listen_args,
        "split_listen": s.listen_port_flag.is_some(),
        "subcommand": s.subcommand,
        "env_files": env_files,
        "web_config": c.web_config_path(),
        "web_config_flag": s.web_config_flag,
        "port": port,
        "args": s.args.join(" "),
        "env_file": env_file,
        "marker": crate::component::PLACEHOLDER_MARKER,
        "credential_files": credential_files,
        "config_flags": config_flags,
        "state_directory": s.state_directory,
        "protect_home": s.protect_home,
        "protect_proc": s.protect_proc,
        "proc_subset": s.proc_subset,
        "address_families": s.address_families.join(" "),
        "capabilities": s.capabilities.join(" "),
        "read_write_paths": s.read_write_paths,
        "memory_max": s.memory_max,
        "tasks_max": s.tasks_max,
        "limit_nofile": s.limit_nofile,
        "kill_signal": s.kill_signal,
        "ports": c.firewall.ports,
        "ufw_ports": ufw_ports,
        "set_name": c.name.replace('-', "_"),
        "sets": sets,
    })
}

/// Name of the environment file: the package name of the format.
pub fn env_file_name(c: &crate::component::Component, layout: &crate::package::Layout) -> String {
    match layout.format {
        crate::package::Format::Deb => c.deb_name.clone(),
        crate::package::Format::Rpm => c.name.clone(),
    }
}

/// Render every file of a component for one layout: unit, env file, sysusers entry, firewall
/// files, config/credential files.
pub fn render_component(
    t: &Templates,
    c: &crate::component::Component,
    layout: &crate::package::Layout,
) -> Result<Vec<RenderedFile>> {
    let ctx = component_context(c, layout);
    let r = |name: &str| {
        t.render(name, &ctx)
            .with_context(|| format!("component {}", c.name))
    };
    let mut out = vec![
        RenderedFile {
            path: format!("{}/{}", layout.unit_dir, c.unit_name()),
            mode: 0o644,
            config: false,
            text: r("systemd.service")?,
        },
        RenderedFile {
            path: format!("{}/{}", layout.env_dir, env_file_name(c, layout)),
            mode: 0o644,
            config: true,
            text: r("env")?,
        },
        RenderedFile {
            path: format!("{}/{}.conf", layout.sysusers_dir, c.name),
            mode: 0o644,
            config: false,
            text: r("sysusers.conf")?,
        },
    ];
    if !c.firewall.ports.is_empty() {
        out.push(RenderedFile {
            path: format!("/etc/ufw/applications.d/{}", c.name),
            mode: 0o644,
            config: true,
            text: r("ufw")?,
        });
        out.push(RenderedFile {
            path: format!("/usr/lib/firewalld/services/{}.xml", c.name),
            mode: 0o644,
            config: false,
            text: r("firewalld.xml")?,
        });
        out.push(RenderedFile {
            path: format!("/etc/nftables.d/{}.nft", c.name),
            mode: 0o644,
            config: true,
            text: r("nftables.nft")?,
        });
    }
    if let Some(path) = c.web_config_path() {
        out.push(RenderedFile {
            path,
            mode: 0o640,
            config: true,
            text: r("web-config.yml")?,
        });
    }
    // Archive members installed as configuration are staged from the archive, not rendered.
    for f in c.config.iter().filter(|f| f.source.is_none()) {
        out.push(RenderedFile {
            path: f.path.clone(),
            mode: f.mode,
            config: true,
            text: f.content.clone(),
        });
    }
    Ok(out)
}
