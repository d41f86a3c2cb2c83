//! Compiles every template of a campaign once (strict mode) into four Handlebars registries,
//! which differ only in how a substituted value is escaped: `plain` (subject, headers, text
//! body: as it is), `html` (HTML body: HTML-escaped), `uri` (unsubscribe URL and mailto: every
//! value percent-encoded as a URI component, so a value can neither add a path segment, a query
//! nor another address) and `markdown` (Markdown body before it becomes HTML: Markdown syntax
//! and HTML in values are inert text, so a value cannot become a link or an image).
//! Also owns the static analysis that finds variables a template needs but the CSV header
//! lacks, and partials that do not exist, before any row is rendered, and hands the templates
//! `compiled` can render without Handlebars to it. No message building here.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, JsonRender, RenderContext, RenderError,
    RenderErrorReason, ScopedJson, Template,
};
use serde_json::Value as Json;

use super::Error;
use super::compiled;

mod syntax;

/// Variables every row has besides its CSV columns.
pub const BUILTIN_VARIABLES: &[&str] = &["email", "name", "campaign", "token", "unsubscribe_url"];

/// Where a template's source lives, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    /// For templates embedded in campaign.toml: the line of their key.
    pub(crate) line: Option<u64>,
}

/// A variable a template uses that the CSV header does not provide.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MissingVariable {
    pub template: String,
    pub file: PathBuf,
    pub line: Option<u64>,
    pub variable: String,
}

/// Both registries plus the list of templates compiled into them.
pub(crate) struct Templates {
    pub(crate) plain: Handlebars<'static>,
    pub(crate) html: Handlebars<'static>,
    pub(crate) uri: Handlebars<'static>,
    pub(crate) markdown: Handlebars<'static>,
    pub(crate) sources: Vec<Source>,
    pub(crate) partials: Vec<String>,
    /// Whether a template (by name) or a partial (by `partials/NAME.hbs`) can fail for one row
    /// and not another: see [`Templates::varies_by_row`].
    varies: std::collections::HashMap<String, bool>,
    /// The templates [`compiled`] can render without Handlebars, by name (see
    /// [`Templates::compile`]).
    programs: std::collections::HashMap<String, compiled::Program>,
}

/// Whether a template's source can look up a name taken from a value: the `lookup` helper, or a
/// partial named by a subexpression (`{{> (...)}}`). Conservative: any mention counts.
fn source_varies_by_row(text: &str) -> bool {
    let dynamic_partial = ["{{>", "{{#>", "{{~>", "{{~#>"].iter().any(|open| {
        text.match_indices(open)
            .any(|(i, _)| text[i + open.len()..].trim_start().starts_with('('))
    });
    text.contains("lookup") || dynamic_partial
}

/// How a registry escapes the values it substitutes; names the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    None,
    Html,
    UriComponent,
    Markdown,
}

fn registry(escape: Escape) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    r.set_strict_mode(true);
    match escape {
        Escape::None => r.register_escape_fn(handlebars::no_escape),
        Escape::Html => {}
        Escape::UriComponent => r.register_escape_fn(uri_component),
        Escape::Markdown => r.register_escape_fn(markdown_text),
    }
    r.register_helper("upper", Box::new(CaseHelper { upper: true }));
    r.register_helper("lower", Box::new(CaseHelper { upper: false }));
    r.register_helper("default", Box::new(DefaultHelper));
    r
}

/// Percent-encodes everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
pub(crate) fn uri_component(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

/// A value as literal text inside Markdown (CommonMark): HTML's special characters become
/// entities, every other ASCII punctuation character is backslash-escaped (so no emphasis,
/// link, image, code span or autolink can start), and line breaks become spaces (so no block —
/// heading, list, quote, code block — can start inside a value).
pub(crate) fn markdown_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\r' | '\n' => out.push(' '),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `{{upper x}}` / `{{lower x}}`. Returns a value, so the registry's escaping applies.
struct CaseHelper {
    upper: bool,
}

impl HelperDef for CaseHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let name = if self.upper { "upper" } else { "lower" };
        let p = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
        if p.is_value_missing() && r.strict_mode() {
            return Err(RenderError::strict_error(p.relative_path()));
        }
        let s = p.value().render();
        let out = if self.upper {
            s.to_uppercase()
        } else {
            s.to_lowercase()
        };
        Ok(ScopedJson::Derived(Json::String(out)))
    }
}

/// `{{default x "fallback"}}`: the fallback when x is missing, null or an empty string.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let p = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 0))?;
        let fallback = h
            .param(1)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 1))?;
        let empty = p.is_value_missing()
            || match p.value() {
                Json::Null => true,
                Json::String(s) => s.trim().is_empty(),
                _ => false,
            };
        let v = if empty { fallback.value() } else { p.value() };
        Ok(ScopedJson::Derived(v.clone()))
    }
}

impl Templates {
    pub(crate) fn new() -> Templates {
        Templates {
            plain: registry(Escape::None),
            html: registry(Escape::Html),
            uri: registry(Escape::UriComponent),
            markdown: registry(Escape::Markdown),
            sources: Vec::new(),
            partials: Vec::new(),
            varies: std::collections::HashMap::new(),
            programs: std::collections::HashMap::new(),
        }
    }

    /// The registry that escapes values the `escape` way.
    pub(crate) fn registry(&self, escape: Escape) -> &Handlebars<'static> {
        match escape {
            Escape::None => &self.plain,
            Escape::Html => &self.html,
            Escape::UriComponent => &self.uri,
            Escape::Markdown => &self.markdown,
        }
    }

    /// Compiles the templates made only of what [`compiled`] renders; call once every template
    /// and partial is added. The registries hold the same templates and helpers, so one program
    /// serves all four; only the escaping differs.
    pub(crate) fn compile(&mut self) {
        self.programs =
            compiled::compile_all(&self.plain, self.sources.iter().map(|s| s.name.as_str()));
    }

    /// Renders template `name` with [`compiled`] into `out`, escaping as the `escape` registry
    /// does. `None` when Handlebars must render it: the template is not compiled, or a value is
    /// missing (Handlebars then gives the exact error).
    pub(crate) fn render_direct(
        &self,
        escape: Escape,
        name: &str,
        vars: &dyn compiled::Lookup,
    ) -> Option<String> {
        let program = self.programs.get(name)?;
        let mut out = String::with_capacity(512);
        let rendered = match escape {
            Escape::None => program.render(vars, &|v, out| out.push_str(v), &mut out),
            _ => {
                let registry = self.registry(escape);
                program.render(
                    vars,
                    &|v, out| out.push_str(&registry.get_escape_fn()(v)),
                    &mut out,
                )
            }
        };
        rendered.ok().map(|()| out)
    }

    /// Whether template `name` renders without Handlebars (for tests).
    #[cfg(test)]
    pub(crate) fn is_compiled(&self, name: &str) -> bool {
        self.programs.contains_key(name)
    }

    /// Leaves every template to Handlebars (for tests comparing the two).
    #[cfg(test)]
    pub(crate) fn forget_programs(&mut self) {
        self.programs.clear();
    }

    /// Registers every `*.hbs` in `dir` as a partial named by its file stem.
    pub(crate) fn add_partials(&mut self, dir: &Path) -> Result<(), Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::Read {
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "hbs"))
            .collect();
        files.sort();
        for file in files {
            let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let stem = stem.to_owned();
            let text = read(&file)?;
            let source = Source {
                name: format!("partials/{stem}.hbs"),
                file: file.clone(),
                line: None,
            };
            self.register(Kind::Partial, &stem, &text, &source)?;
            self.partials.push(stem);
        }
        Ok(())
    }

    fn registries(&mut self) -> [&mut Handlebars<'static>; 4] {
        [
            &mut self.plain,
            &mut self.html,
            &mut self.uri,
            &mut self.markdown,
        ]
    }

    /// Compiles `text` under `source.name` into every registry.
    pub(crate) fn add(&mut self, source: Source, text: &str) -> Result<(), Error> {
        self.register(Kind::Template, &source.name, text, &source)?;
        self.sources.push(source);
        Ok(())
    }

    /// Compiles `text` as `name` into every registry, after refusing nesting too deep to render,
    /// and notes whether it varies by row.
    fn register(
        &mut self,
        kind: Kind,
        name: &str,
        text: &str,
        source: &Source,
    ) -> Result<(), Error> {
        // Handlebars compiles nested subexpressions recursively: 5,000 levels overflowed the
        // main thread's stack inside it, so these are counted in the text first.
        if let Some(pos) = calls_nested_deeper_than(text, MAX_NESTING) {
            return Err(too_deep(source, Some(pos)));
        }
        for r in self.registries() {
            match kind {
                Kind::Partial => r.register_partial(name, text),
                Kind::Template => r.register_template_string(name, text),
            }
            .map_err(|e| syntax::syntax_error(source, text, &e))?;
        }
        self.check_nesting(name, source)?;
        self.check_helpers(name, source)?;
        self.varies
            .insert(source.name.clone(), source_varies_by_row(text));
        Ok(())
    }

    /// Refuses a template whose blocks nest deeper than [`MAX_NESTING`]: rendering recurses
    /// once a level, and tens of thousands of levels (a few hundred kilobytes of text)
    /// overflowed a thread's stack, which aborts the process.
    fn check_nesting(&self, name: &str, source: &Source) -> Result<(), Error> {
        let Some(t) = self.plain.get_template(name) else {
            return Ok(());
        };
        // Placed at the outermost element that holds the deep part.
        match t
            .elements
            .iter()
            .position(|e| element_deeper_than(e, MAX_NESTING))
        {
            Some(i) => Err(too_deep(source, t.mapping.get(i).map(|m| (m.0, m.1)))),
            None => Ok(()),
        }
    }

    /// Refuses a call of a helper that does not exist (`{{shout name}}`), and a known helper
    /// called with fewer arguments than it takes (`{{default ref}}`, `{{upper}}`): Handlebars
    /// compiles both and fails only when rendering, so every contact would be refused for what
    /// is a mistake in the template.
    fn check_helpers(&self, name: &str, source: &Source) -> Result<(), Error> {
        match self
            .plain
            .get_template(name)
            .and_then(syntax::helper_problem)
        {
            Some((pos, message)) => Err(template_error(source, pos, message)),
            None => Ok(()),
        }
    }

    /// Fails on the first `{{> partial}}` that names no registered partial.
    pub(crate) fn check_partials(&self) -> Result<(), Error> {
        let known: HashSet<&str> = self.partials.iter().map(String::as_str).collect();
        // Partials already searched without finding a circle, whichever template includes them.
        let mut clear = HashSet::new();
        for s in &self.sources {
            let Some(t) = self.plain.get_template(&s.name) else {
                continue;
            };
            let mut uses = Uses::default();
            walk(t, &mut uses, s.line);
            if let Some((partial, line)) = uses
                .partials
                .iter()
                .find(|(p, _)| !known.contains(p.as_str()))
            {
                return Err(Error::MissingPartial {
                    template: s.name.clone(),
                    path: s.file.clone(),
                    line: *line,
                    partial: partial.clone(),
                });
            }
            // Handlebars refuses only a partial that includes itself directly; a longer circle
            // would recurse until the stack overflows and the process aborts.
            for (partial, line) in &uses.partials {
                let mut path = vec![partial.clone()];
                if let Some(cycle) = self.partial_cycle(&mut path, &mut clear) {
                    return Err(Error::PartialCycle {
                        template: s.name.clone(),
                        path: s.file.clone(),
                        line: *line,
                        cycle: cycle.join(" → "),
                    });
                }
            }
        }
        Ok(())
    }

    /// A circle of partials reachable from the last one of `path` (the partials being included,
    /// outermost first), as the partials in order with the first repeated at the end. `clear`
    /// holds the partials already searched without finding one, so each is searched once.
    fn partial_cycle(
        &self,
        path: &mut Vec<String>,
        clear: &mut HashSet<String>,
    ) -> Option<Vec<String>> {
        let current = path.last()?.clone();
        if clear.contains(&current) {
            return None;
        }
        let template = self.plain.get_template(&current)?;
        let mut uses = Uses::default();
        walk(template, &mut uses, None);
        for (next, _) in uses.partials {
            if let Some(start) = path.iter().position(|p| *p == next) {
                let mut cycle = path[start..].to_vec();
                cycle.push(next);
                return Some(cycle);
            }
            path.push(next);
            let found = self.partial_cycle(path, clear);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        clear.insert(current);
        None
    }

    /// Variables that templates require (outside `if`/`unless`/`default`) and `known` lacks.
    pub(crate) fn missing_variables(&self, known: &HashSet<&str>) -> Vec<MissingVariable> {
        let mut out = Vec::new();
        for s in &self.sources {
            let Some(t) = self.plain.get_template(&s.name) else {
                continue;
            };
            let mut uses = Uses::default();
            walk(t, &mut uses, s.line);
            // Partials render in the caller's context, so their variables count for the caller.
            let mut seen_partials = BTreeSet::new();
            let mut queue: Vec<String> = uses.partials.iter().map(|(p, _)| p.clone()).collect();
            while let Some(p) = queue.pop() {
                if !seen_partials.insert(p.clone()) {
                    continue;
                }
                if let Some(pt) = self.plain.get_template(&p) {
                    let mut inner = Uses::default();
                    walk(pt, &mut inner, None);
                    for (v, _) in inner.required {
                        uses.required.push((v, None));
                    }
                    queue.extend(inner.partials.into_iter().map(|(p, _)| p));
                }
            }
            let mut reported = BTreeSet::new();
            for (var, line) in uses.required {
                if !known.contains(var.as_str()) && reported.insert(var.clone()) {
                    out.push(MissingVariable {
                        template: s.name.clone(),
                        file: s.file.clone(),
                        line,
                        variable: var,
                    });
                }
            }
        }
        out
    }

    /// True if a body template (a file, not a value from campaign.toml) or a partial it
    /// includes refers to `var` anywhere, e.g. `unsubscribe_url` for the visible-link lint.
    pub(crate) fn body_mentions(&self, var: &str) -> bool {
        let bodies = self
            .sources
            .iter()
            .filter(|s| s.line.is_none())
            .map(|s| s.name.clone())
            .collect();
        self.mentioned(bodies).contains(var)
    }

    /// Every variable the templates `names` (and the partials they include) refer to.
    pub(crate) fn mentioned(&self, names: Vec<String>) -> BTreeSet<String> {
        let mut queue = names;
        let mut seen = BTreeSet::new();
        let mut out = BTreeSet::new();
        while let Some(name) = queue.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(t) = self.plain.get_template(&name) else {
                continue;
            };
            let mut uses = Uses::default();
            walk(t, &mut uses, None);
            out.extend(uses.mentioned);
            queue.extend(uses.partials.into_iter().map(|(p, _)| p));
        }
        out
    }

    /// Whether rendering one of `names` can fail for one row and not another. Every value is a
    /// string and every row has every column, so strict mode fails for all rows or none, except
    /// through a name looked up from a value. Partials count whoever includes them.
    pub(crate) fn varies_by_row(&self, names: &[&str]) -> bool {
        let partials_vary = self.partials.iter().any(|p| {
            self.varies
                .get(&format!("partials/{p}.hbs"))
                .copied()
                .unwrap_or(true)
        });
        partials_vary
            || names
                .iter()
                .any(|n| self.varies.get(*n).copied().unwrap_or(true))
    }

    /// Names of the compiled templates and partials, for the check summary.
    pub(crate) fn names(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| s.name.clone())
            .chain(self.partials.iter().map(|p| format!("partials/{p}.hbs")))
            .collect()
    }
}

/// How [`Templates::register`] registers a text: a partial (`{{> name}}`) or a template.
#[derive(Clone, Copy)]
enum Kind {
    Partial,
    Template,
}

/// Deepest nesting of blocks and subexpressions a template may have (an `{{else if}}` and a
/// `(helper ...)` argument each count as one more level).
pub const MAX_NESTING: usize = 256;

/// The nesting error at `pos` (1-based line and column in the template's text).
fn too_deep(source: &Source, pos: Option<(usize, usize)>) -> Error {
    template_error(
        source,
        pos,
        format!(
            "blocks (`{{{{#if}}}}`, ...) or subexpressions (`(helper ...)`) are nested more than {MAX_NESTING} deep; nest fewer levels"
        ),
    )
}

/// Where (1-based line and column) the parentheses inside a `{{...}}` tag of `text` first nest
/// more than `limit` deep (string literals skipped). A look at the text alone, before
/// Handlebars parses it.
fn calls_nested_deeper_than(text: &str, limit: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(open) = text[i..].find("{{").map(|o| i + o) {
        let mut depth = 0usize;
        let mut j = open + 2;
        let mut quote: Option<u8> = None;
        while j < bytes.len() {
            let b = bytes[j];
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None => match b {
                    b'"' | b'\'' => quote = Some(b),
                    b'(' => {
                        depth += 1;
                        if depth > limit {
                            let before = &text[..j];
                            let line_start = before.rfind('\n').map_or(0, |n| n + 1);
                            return Some((before.matches('\n').count() + 1, j - line_start + 1));
                        }
                    }
                    b')' => depth = depth.saturating_sub(1),
                    b'}' if bytes.get(j + 1) == Some(&b'}') => break,
                    _ => {}
                },
            }
            j += 1;
        }
        i = j.max(open + 2);
    }
    None
}

/// Whether `t` nests blocks or subexpressions more than `limit` deep; never recurses more than
/// `limit` levels.
fn nested_deeper_than(t: &Template, limit: usize) -> bool {
    t.elements.iter().any(|e| element_deeper_than(e, limit))
}

fn element_deeper_than(element: &TemplateElement, limit: usize) -> bool {
    let (name, params, hash, inner): (&Parameter, &[Parameter], _, Vec<&Template>) = match element {
        TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
            (&h.name, &h.params, &h.hash, Vec::new())
        }
        TemplateElement::HelperBlock(h) => (
            &h.name,
            &h.params,
            &h.hash,
            [&h.template, &h.inverse].into_iter().flatten().collect(),
        ),
        TemplateElement::DecoratorExpression(d)
        | TemplateElement::PartialExpression(d)
        | TemplateElement::DecoratorBlock(d)
        | TemplateElement::PartialBlock(d) => {
            (&d.name, &d.params, &d.hash, d.template.iter().collect())
        }
        _ => return false,
    };
    let subexpressions: Vec<&TemplateElement> = std::iter::once(name)
        .chain(params)
        .chain(hash.values())
        .filter_map(|p| match p {
            Parameter::Subexpression(s) => Some(s.as_element()),
            _ => None,
        })
        .collect();
    if inner.is_empty() && subexpressions.is_empty() {
        return false;
    }
    limit == 0
        || inner.iter().any(|t| nested_deeper_than(t, limit - 1))
        || subexpressions
            .iter()
            .any(|e| element_deeper_than(e, limit - 1))
}

/// The largest template or campaign.toml read: far beyond any real one, and a bound on what a
/// wrong path (a device, a huge file) can make mailroom hold.
pub const MAX_TEMPLATE_BYTES: u64 = 4 << 20;

/// Why `path` cannot be used as a file to read, if it cannot (said after the path): it does not
/// exist, is a folder, or is not a regular file (a device such as /dev/zero, a pipe).
pub(crate) fn file_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist".into()),
        Err(e) => Some(format!("cannot be read: {e}")),
        Ok(m) if m.is_dir() => Some("is a folder, not a file".into()),
        Ok(m) if !m.is_file() => Some("is not a regular file (a device or a pipe?)".into()),
        Ok(_) => None,
    }
}

pub(crate) fn read(path: &Path) -> Result<String, Error> {
    let fail = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    if let Some(problem) = file_problem(path) {
        return Err(fail(std::io::Error::other(problem)));
    }
    let read = crate::bounded::read_file(path, MAX_TEMPLATE_BYTES).map_err(fail)?;
    let Some(bytes) = read else {
        return Err(fail(std::io::Error::other(format!(
            "larger than {} MiB, which no template needs",
            MAX_TEMPLATE_BYTES >> 20
        ))));
    };
    super::charset::utf8_text(path, bytes)
        .map_err(|why| fail(std::io::Error::new(std::io::ErrorKind::InvalidData, why)))
}

/// A template error at `pos` (1-based line and column in the template's text).
fn template_error(source: &Source, pos: Option<(usize, usize)>, message: String) -> Error {
    let (line, column) = match (pos, source.line) {
        // Templates from campaign.toml are one-line strings: point at the key's line.
        (_, Some(key_line)) => (Some(key_line), None),
        (Some((l, c)), None) => (Some(l as u64), Some(c as u64)),
        (None, None) => (None, None),
    };
    Error::TemplateSyntax {
        template: source.name.clone(),
        path: source.file.clone(),
        line,
        column,
        message,
    }
}

#[derive(Default)]
struct Uses {
    required: Vec<(String, Option<u64>)>,
    /// Every variable referenced anywhere, including `if`/`default` arguments.
    mentioned: Vec<String>,
    partials: Vec<(String, Option<u64>)>,
}

/// The column a path starts from: `first_name` of `first_name.x`, and `First Name` of the
/// segment literal `[First Name]` (Handlebars' way to name a column with spaces or dots, as
/// in exports from Mailchimp or Excel). `None` for `this`, `../`, `@index` and the like.
fn root_of(path: &str) -> Option<String> {
    if path.starts_with("..") || path.starts_with('@') {
        return None;
    }
    let first = match path.strip_prefix('[') {
        Some(literal) => literal.split_once(']').map_or(literal, |(name, _)| name),
        None => {
            let first = path.split(['.', '/']).next().unwrap_or("");
            if first == "this" {
                return None;
            }
            first
        }
    };
    (!first.is_empty()).then(|| first.to_owned())
}

fn path_raw(p: &handlebars::Path) -> &str {
    match p {
        handlebars::Path::Relative((_, raw)) => raw,
        // `@index` and friends: local variables, never CSV columns.
        _ => "@",
    }
}

fn param_root(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Name(n) => root_of(n),
        Parameter::Path(path) => root_of(path_raw(path)),
        _ => None,
    }
}

const CONDITIONAL_HELPERS: &[&str] = &["if", "unless", "default"];
const CONTEXT_HELPERS: &[&str] = &["each", "with"];

fn walk(t: &Template, uses: &mut Uses, fixed_line: Option<u64>) {
    for (i, el) in t.elements.iter().enumerate() {
        let line = fixed_line.or_else(|| t.mapping.get(i).map(|m| m.0 as u64));
        match el {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                let name = match &h.name {
                    Parameter::Name(n) => Some(n.as_str()),
                    Parameter::Path(p) => Some(path_raw(p)),
                    _ => None,
                };
                let is_helper = !h.params.is_empty()
                    || name.is_some_and(|n| {
                        CONDITIONAL_HELPERS.contains(&n) || ["upper", "lower"].contains(&n)
                    });
                uses.mentioned
                    .extend(h.params.iter().filter_map(param_root));
                uses.mentioned.extend(param_root(&h.name));
                if is_helper {
                    if name.is_some_and(|n| !CONDITIONAL_HELPERS.contains(&n)) {
                        for p in &h.params {
                            if let Some(v) = param_root(p) {
                                uses.required.push((v, line));
                            }
                        }
                    }
                } else if let Some(v) = param_root(&h.name) {
                    uses.required.push((v, line));
                }
            }
            TemplateElement::HelperBlock(h) => {
                let name = match &h.name {
                    Parameter::Name(n) => n.as_str(),
                    Parameter::Path(p) => path_raw(p),
                    _ => "",
                };
                uses.mentioned
                    .extend(h.params.iter().filter_map(param_root));
                if CONTEXT_HELPERS.contains(&name) {
                    // The block body sees another context; only the argument must exist.
                    for p in &h.params {
                        if let Some(v) = param_root(p) {
                            uses.required.push((v, line));
                        }
                    }
                    continue;
                }
                for sub in [&h.template, &h.inverse].into_iter().flatten() {
                    walk(sub, uses, fixed_line);
                }
            }
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                if let Some(n) = d.name.as_name() {
                    uses.partials.push((n.to_owned(), line));
                } else if let Parameter::Path(p) = &d.name {
                    uses.partials.push((path_raw(p).to_owned(), line));
                }
                if let Some(sub) = &d.template {
                    walk(sub, uses, fixed_line);
                }
            }
            _ => {}
        }
    }
}

/// A render failure turned into a row-level message naming template, variable and CSV line.
pub(crate) fn render_error(e: &RenderError, template: &str, line: u64) -> String {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(var)) => {
            format!("line {line}: template `{template}` uses `{var}`, which this row does not have")
        }
        RenderErrorReason::MissingVariable(None) => {
            format!("line {line}: template `{template}` uses a variable this row does not have")
        }
        RenderErrorReason::PartialNotFound(p) => {
            format!("line {line}: template `{template}` includes the missing partial `{p}`")
        }
        other => format!("line {line}: template `{template}` failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_file_over_the_cap_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let at_cap = dir.path().join("at.txt");
        let cap = usize::try_from(MAX_TEMPLATE_BYTES).unwrap();
        std::fs::write(&at_cap, "a".repeat(cap)).unwrap();
        assert_eq!(read(&at_cap).unwrap().len(), cap);
        let over = dir.path().join("over.txt");
        std::fs::write(&over, "a".repeat(cap + 1)).unwrap();
        let err = read(&over).unwrap_err().to_string();
        assert!(err.contains("over.txt"), "{err}");
        let cause = match read(&over) {
            Err(Error::Read { source, .. }) => source.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(cause.contains("larger than 4 MiB"), "{cause}");
    }

    fn templates(entries: &[(&str, &str)]) -> Templates {
        let mut t = Templates::new();
        for (name, text) in entries {
            t.add(
                Source {
                    name: (*name).into(),
                    file: PathBuf::from(name),
                    line: None,
                },
                text,
            )
            .unwrap();
        }
        t
    }

    #[test]
    fn only_lookups_and_computed_partials_make_a_body_vary_by_row() {
        for (text, varies) in [
            (
                "Hi {{name}}, {{#if city}}{{upper city}}{{/if}} {{default x \"y\"}}",
                false,
            ),
            ("{{> footer}} {{#each items}}{{this}}{{/each}}", false),
            ("{{lookup this city}}", true),
            ("{{> (concat \"f\" kind)}}", true),
            ("{{#>  (which)}}x{{/inline}}", true),
        ] {
            assert_eq!(source_varies_by_row(text), varies, "{text}");
        }
    }

    #[test]
    fn a_call_of_a_helper_that_does_not_exist_is_refused_where_it_is() {
        let add = |t: &mut Templates, text: &str| {
            let source = Source {
                name: "body.txt.hbs".into(),
                file: PathBuf::from("body.txt.hbs"),
                line: None,
            };
            t.add(source, text)
        };
        for (text, at) in [
            ("Hi {{shout name}}", "1:4"),
            ("Hi\n {{upper (shout name)}}", "2:2"),
            (
                "{{#each items}}\n{{#if x}}{{nope a}}{{/if}}{{/each}}",
                "2:10",
            ),
            ("{{default (shout a) \"x\" fallback=(nope b)}}", "1:1"),
        ] {
            let e = add(&mut Templates::new(), text).unwrap_err().to_string();
            assert!(e.contains(&format!("body.txt.hbs:{at}:")), "{text}: {e}");
            assert!(e.contains("is not a helper"), "{text}: {e}");
        }
        // In a partial: named by the partial's file.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("foot.hbs"), "bye {{shout name}}").unwrap();
        let e = Templates::new()
            .add_partials(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("foot.hbs:1:5:") && e.contains("`shout`"), "{e}");
        // Fields, the known helpers, sections, and fields named like helpers written as segment
        // literals are fine.
        let mut t = Templates::new();
        add(
            &mut t,
            "{{name}} {{upper name}} {{default city \"x\"}} {{#each items}}{{this}}{{/each}} \
             {{#items}}x{{/items}} {{[len]}} {{log}}",
        )
        .unwrap();
    }

    #[test]
    fn every_helper_a_template_may_call_is_registered() {
        let r = registry(Escape::None);
        for helper in syntax::HELPERS.iter().map(|h| h.name) {
            let e = r.render_template(&format!("{{{{{helper} 1}}}}"), &json!({}));
            let not_found = matches!(
                &e,
                Err(e) if matches!(e.reason(), handlebars::RenderErrorReason::HelperNotFound(_))
            );
            assert!(!not_found, "{helper}: {e:?}");
        }
        let e = r.render_template("{{shout 1}}", &json!({}));
        assert!(
            matches!(&e, Err(e) if matches!(e.reason(), handlebars::RenderErrorReason::HelperNotFound(_))),
            "the check itself: {e:?}"
        );
    }

    #[test]
    fn partials_that_include_each_other_are_refused_before_rendering() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("pa", "a {{> pb}}"),
            ("pb", "b {{#if x}}{{> pa}}{{/if}}"),
            ("ok", "fine"),
        ] {
            std::fs::write(dir.path().join(format!("{name}.hbs")), text).unwrap();
        }
        let with_body = |body: &str| {
            let mut t = Templates::new();
            t.add_partials(dir.path()).unwrap();
            let source = Source {
                name: "body.txt.hbs".into(),
                file: PathBuf::from("body.txt.hbs"),
                line: None,
            };
            t.add(source, body).unwrap();
            t.check_partials()
        };
        let e = with_body("Hello\n{{> ok}} {{> pa}}").unwrap_err();
        assert!(
            matches!(&e, Error::PartialCycle { cycle, line: Some(2), .. } if cycle == "pa → pb → pa"),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("Remove one of these `{{> ...}}` includes"),
            "{e}"
        );
        // The same partial twice is no circle.
        assert!(with_body("{{> ok}} {{> ok}}").is_ok());
    }

    #[test]
    fn blocks_nested_too_deep_are_refused_at_load() {
        let nested = |n: usize| format!("{}x{}", "{{#if a}}".repeat(n), "{{/if}}".repeat(n));
        let mut t = Templates::new();
        let source = |name: &str| Source {
            name: name.into(),
            file: PathBuf::from("body.txt.hbs"),
            line: None,
        };
        t.add(source("fine"), &nested(MAX_NESTING)).unwrap();
        let e = t
            .add(source("deep"), &format!("Hi\n{}", nested(MAX_NESTING + 1)))
            .unwrap_err();
        assert!(
            e.to_string().contains("body.txt.hbs:2:1: template `deep`"),
            "{e}"
        );
        assert!(e.to_string().contains("nested more than 256 deep"), "{e}");
        // 20,000 levels used to overflow the stack of the thread that rendered them (the
        // parser's own stack limit may refuse them first, depending on the build).
        assert!(t.add(source("deeper"), &nested(20_000)).is_err());
        // The same for arguments computed by helpers: 5,000 levels overflowed too.
        let calls = |n: usize| format!("{{{{upper {}a{}}}}}", "(lower ".repeat(n), ")".repeat(n));
        t.add(source("calls"), &calls(MAX_NESTING)).unwrap();
        let e = t
            .add(source("deep calls"), &calls(MAX_NESTING + 1))
            .unwrap_err();
        // The column of the parenthesis that goes one level too deep.
        let column = "{{upper ".len() + MAX_NESTING * "(lower ".len() + 1;
        assert!(
            e.to_string().contains(&format!("body.txt.hbs:1:{column}:")),
            "{e}"
        );
        assert!(e.to_string().contains("nested more than 256 deep"), "{e}");
        assert!(t.add(source("deeper calls"), &calls(5_000)).is_err());
        // Parentheses in text or in a string literal are no calls.
        let text = format!(
            "{} {{{{default x \"{}\"}}}}",
            "(".repeat(300),
            "(".repeat(300)
        );
        t.add(source("parentheses"), &text).unwrap();
    }

    #[test]
    fn uri_components_and_markdown_text_are_inert() {
        assert_eq!(
            uri_component("x/admin/delete?all=1#@example.com"),
            "x%2Fadmin%2Fdelete%3Fall%3D1%23%40example.com"
        );
        assert_eq!(uri_component("abcXYZ019-._~"), "abcXYZ019-._~");
        assert_eq!(uri_component("ü z"), "%C3%BC%20z");
        assert_eq!(
            markdown_text("[Verify](javascript:alert(1)) ![](https://t.example/p.gif)"),
            "\\[Verify\\]\\(javascript\\:alert\\(1\\)\\) \\!\\[\\]\\(https\\:\\/\\/t\\.example\\/p\\.gif\\)"
        );
        assert_eq!(markdown_text("a\n# b <i>"), "a \\# b &lt;i&gt;");
        assert_eq!(markdown_text("Grüße"), "Grüße");
    }

    #[test]
    fn html_escapes_plain_does_not() {
        let t = templates(&[("b", "{{name}} & {{upper name}}")]);
        let ctx = Context::from(json!({"name": "<Tom & \"Jerry\">"}));
        assert_eq!(
            t.plain.render_with_context("b", &ctx).unwrap(),
            "<Tom & \"Jerry\"> & <TOM & \"JERRY\">"
        );
        assert_eq!(
            t.html.render_with_context("b", &ctx).unwrap(),
            "&lt;Tom &amp; &quot;Jerry&quot;&gt; & &lt;TOM &amp; &quot;JERRY&quot;&gt;"
        );
    }

    #[test]
    fn helpers_default_upper_lower() {
        let t = templates(&[(
            "b",
            "{{default nick \"friend\"}} {{default name \"x\"}} {{lower city}}",
        )]);
        let ctx = Context::from(json!({"name": "Ann", "city": "OSLO"}));
        assert_eq!(
            t.plain.render_with_context("b", &ctx).unwrap(),
            "friend Ann oslo"
        );
        let ctx = Context::from(json!({"nick": "", "name": "Ann", "city": "X"}));
        assert_eq!(
            t.plain.render_with_context("b", &ctx).unwrap(),
            "friend Ann x"
        );
    }

    #[test]
    fn strict_mode_names_the_missing_variable() {
        let t = templates(&[("b", "Hi {{first_name}}"), ("c", "{{upper city}}")]);
        let ctx = Context::from(json!({"name": "Ann"}));
        let e = t.plain.render_with_context("b", &ctx).unwrap_err();
        let msg = render_error(&e, "b", 7);
        assert_eq!(
            msg,
            "line 7: template `b` uses `first_name`, which this row does not have"
        );
        let e = t.plain.render_with_context("c", &ctx).unwrap_err();
        assert!(render_error(&e, "c", 3).contains("`city`"));
    }

    #[test]
    fn static_analysis_finds_required_variables_only() {
        let t = templates(&[(
            "b",
            "Hi {{first_name}}\n{{#if vip}}VIP {{tier}}{{/if}}\n{{default nick \"x\"}} {{upper city.name}}\n{{#each items}}{{this}} {{price}}{{/each}}\n{{email}}",
        )]);
        let known: HashSet<&str> = ["email"].into_iter().collect();
        let missing: Vec<(String, Option<u64>)> = t
            .missing_variables(&known)
            .into_iter()
            .map(|m| (m.variable, m.line))
            .collect();
        assert_eq!(
            missing,
            vec![
                ("first_name".into(), Some(1)),
                ("tier".into(), Some(2)),
                ("city".into(), Some(3)),
                ("items".into(), Some(4)),
            ]
        );
    }

    #[test]
    fn body_mentions_follows_partials_and_conditionals() {
        let mut t = templates(&[("body", "Hi\n{{> footer}}")]);
        assert!(!t.body_mentions("unsubscribe_url"));
        t.plain
            .register_partial(
                "footer",
                "{{#if unsubscribe_url}}<{{unsubscribe_url}}>{{/if}}",
            )
            .unwrap();
        assert!(t.body_mentions("unsubscribe_url"));
    }

    #[test]
    fn segment_literals_name_columns_with_spaces_everywhere() {
        let t = templates(&[(
            "b",
            "Hi {{[First Name]}} {{default [Nick Name] \"there\"}}\n{{#if [Last Name]}}{{upper [Last Name]}}{{/if}} {{[Email Address]}}",
        )]);
        let ctx = Context::from(json!({
            "First Name": "Zoë", "Nick Name": "", "Last Name": "Lee", "Email Address": "z@x.example"
        }));
        assert_eq!(
            t.plain.render_with_context("b", &ctx).unwrap(),
            "Hi Zoë there\nLEE z@x.example"
        );
        let known: HashSet<&str> = ["First Name", "Last Name", "Nick Name", "Email Address"]
            .into_iter()
            .collect();
        assert!(
            t.missing_variables(&known).is_empty(),
            "{:?}",
            t.missing_variables(&known)
        );
        let known: HashSet<&str> = ["First Name"].into_iter().collect();
        let missing: Vec<String> = t
            .missing_variables(&known)
            .into_iter()
            .map(|m| m.variable)
            .collect();
        // `default` and `if` arguments may be missing; a bare use and `upper`'s may not.
        assert_eq!(
            missing,
            vec!["Last Name".to_owned(), "Email Address".to_owned()]
        );
        assert_eq!(root_of("[a.b].c"), Some("a.b".into()));
        assert_eq!(root_of("this.[x]"), None);
        // A strict-mode error names the column as the template wrote it.
        let e = t
            .plain
            .render_with_context(
                "b",
                &Context::from(json!({"First Name": "Z", "Last Name": "L"})),
            )
            .unwrap_err();
        assert!(
            render_error(&e, "b", 4).contains("Email Address"),
            "{}",
            render_error(&e, "b", 4)
        );
    }

    #[test]
    fn missing_partial_is_named() {
        let t = templates(&[("body.txt", "x\n{{> footer}}")]);
        let e = t.check_partials().unwrap_err().to_string();
        assert!(e.contains("`footer`") && e.contains("body.txt"), "{e}");
    }
}
