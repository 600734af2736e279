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
    Context as HbContext, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
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
                for e in std::fs::read_dir(&d).with_context(|| format!("{}: cannot read templates", d.display()))? {
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
