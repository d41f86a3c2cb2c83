//! A direct renderer for the part of Handlebars that campaigns write: text, `{{value}}`,
//! `{{{value}}}`, comments, `{{#if}}` / `{{#unless}}` with `{{else}}`, the `default`, `upper`
//! and `lower` helpers and `{{> partial}}`. A template made only of these is compiled once into
//! a [`Program`] that writes its output straight from the row's strings: no JSON context per
//! row, no render-context bookkeeping. Rendering through Handlebars cost about a quarter of
//! `send`'s CPU before this.
//!
//! It never decides anything Handlebars would decide differently. A template using anything
//! else (other helpers, `each`/`with`, paths such as `a.b` or `../x`, hashes, block params,
//! partial blocks, indented partials, decorators) compiles to nothing and Handlebars renders it.
//! A lookup that finds nothing makes [`Program::render`] give up, and the caller renders with
//! Handlebars, which produces the exact strict-mode error. Owns no templates and no escaping
//! rules of its own: the registry compiled the templates, and the escaping functions are
//! `template`'s.

use std::collections::HashMap;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Handlebars, JsonRender, Path, PathSeg, Template};

/// Where a program reads a row's values: a column or a built-in variable by name.
pub(crate) trait Lookup {
    fn get(&self, name: &str) -> Option<&str>;
}

/// A value was looked up that the row does not have: Handlebars must render this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Missing;

/// A compiled template (its partials inlined).
#[derive(Debug, Clone)]
pub(crate) struct Program(Vec<Node>);

#[derive(Debug, Clone)]
enum Node {
    Text(Box<str>),
    /// `{{x}}` (escaped) or `{{{x}}}`.
    Value {
        arg: Arg,
        escape: bool,
    },
    /// `{{default x "fallback"}}`: the fallback when x is empty or only whitespace.
    Default {
        value: Arg,
        fallback: Arg,
        escape: bool,
    },
    /// `{{upper x}}` / `{{lower x}}`.
    Case {
        arg: Arg,
        upper: bool,
        escape: bool,
    },
    /// `{{#if x}}` (`positive`) or `{{#unless x}}`: an empty string is false.
    If {
        name: Box<str>,
        positive: bool,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
enum Arg {
    Var(Box<str>),
    /// A literal as Handlebars renders it.
    Literal(Box<str>),
}

impl Arg {
    fn get<'a>(&'a self, vars: &'a dyn Lookup) -> Result<&'a str, Missing> {
        match self {
            Arg::Var(name) => vars.get(name).ok_or(Missing),
            Arg::Literal(text) => Ok(text),
        }
    }
}

/// Partials nested deeper than this are left to Handlebars.
const MAX_DEPTH: usize = 16;

/// Compiles every template `names` lists that is made only of the supported subset.
pub(crate) fn compile_all<'a>(
    registry: &Handlebars<'static>,
    names: impl IntoIterator<Item = &'a str>,
) -> HashMap<String, Program> {
    let mut probes = HashMap::new();
    names
        .into_iter()
        .filter_map(|name| {
            let template = registry.get_template(name)?;
            let mut stack = vec![name.to_owned()];
            let nodes = compile(registry, template, &mut stack, &mut probes)?;
            Some((name.to_owned(), Program(nodes)))
        })
        .collect()
}

fn compile(
    registry: &Handlebars<'static>,
    template: &Template,
    stack: &mut Vec<String>,
    probes: &mut HashMap<String, bool>,
) -> Option<Vec<Node>> {
    let mut nodes = Vec::with_capacity(template.elements.len());
    for element in &template.elements {
        match element {
            TemplateElement::RawString(text) => nodes.push(Node::Text(text.as_str().into())),
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                let escape = matches!(element, TemplateElement::Expression(_));
                if h.block || !h.hash.is_empty() || h.block_param.is_some() {
                    return None;
                }
                if h.params.is_empty() {
                    // `{{x}}` is a value unless a helper is named x: ask the registry.
                    let Parameter::Path(path) = &h.name else {
                        return None;
                    };
                    let name = simple_name(path)?;
                    if !is_plain_value(registry, path, name, probes) {
                        return None;
                    }
                    nodes.push(Node::Value {
                        arg: Arg::Var(name.into()),
                        escape,
                    });
                    continue;
                }
                let node = match (helper_name(&h.name)?, h.params.as_slice()) {
                    ("default", [value, fallback]) => Node::Default {
                        value: arg(value)?,
                        fallback: arg(fallback)?,
                        escape,
                    },
                    (case @ ("upper" | "lower"), [value]) => Node::Case {
                        arg: arg(value)?,
                        upper: case == "upper",
                        escape,
                    },
                    _ => return None,
                };
                nodes.push(node);
            }
            TemplateElement::HelperBlock(h) => {
                if !h.hash.is_empty() || h.block_param.is_some() {
                    return None;
                }
                let positive = match helper_name(&h.name)? {
                    "if" => true,
                    "unless" => false,
                    _ => return None,
                };
                let [Parameter::Path(path)] = h.params.as_slice() else {
                    return None;
                };
                let name = simple_name(path)?;
                let mut branch = |t: &Option<Template>| match t {
                    Some(t) => compile(registry, t, stack, probes),
                    None => Some(Vec::new()),
                };
                nodes.push(Node::If {
                    name: name.into(),
                    positive,
                    then: branch(&h.template)?,
                    otherwise: branch(&h.inverse)?,
                });
            }
            TemplateElement::PartialExpression(d) => {
                // Indentation of a standalone partial is applied while rendering; leave any
                // non-empty indent to Handlebars.
                if !d.params.is_empty()
                    || !d.hash.is_empty()
                    || d.template.is_some()
                    || d.indent.as_deref().is_some_and(|i| !i.is_empty())
                    || stack.len() > MAX_DEPTH
                {
                    return None;
                }
                let name = match &d.name {
                    Parameter::Name(n) => n.as_str(),
                    Parameter::Path(p) => simple_name(p)?,
                    _ => return None,
                };
                if stack.iter().any(|s| s == name) {
                    return None;
                }
                let partial = registry.get_template(name)?;
                stack.push(name.to_owned());
                let inner = compile(registry, partial, stack, probes);
                stack.pop();
                nodes.extend(inner?);
            }
            _ => return None,
        }
    }
    Some(nodes)
}

fn helper_name(p: &Parameter) -> Option<&str> {
    match p {
        Parameter::Name(n) => Some(n),
        Parameter::Path(p) => simple_name(p),
        _ => None,
    }
}

/// The key of a one-segment path (`x`, `[First Name]`); `None` for `this`, `a.b`, `../x`, `@x`.
fn simple_name(path: &Path) -> Option<&str> {
    match path {
        Path::Relative((segs, _)) => match segs.as_slice() {
            [PathSeg::Named(name)] if name != "this" => Some(name),
            _ => None,
        },
        Path::Local(_) => None,
    }
}

fn arg(p: &Parameter) -> Option<Arg> {
    match p {
        Parameter::Path(path) => simple_name(path).map(|n| Arg::Var(n.into())),
        Parameter::Literal(json) => Some(Arg::Literal(json.render().into())),
        _ => None,
    }
}

/// Whether `{{path}}` renders the value under `name`, as this program would: false when a
/// helper has that name (or Handlebars reads the path another way). Asked of the registry
/// itself rather than of a list of helper names, which a Handlebars upgrade could extend.
fn is_plain_value(
    registry: &Handlebars<'static>,
    path: &Path,
    name: &str,
    probes: &mut HashMap<String, bool>,
) -> bool {
    let raw = match path {
        Path::Relative((_, raw)) => raw.as_str(),
        Path::Local(_) => return false,
    };
    *probes.entry(raw.to_owned()).or_insert_with(|| {
        const PROBE: &str = "mailroomprobe";
        let data = serde_json::json!({ name: PROBE });
        registry
            .render_template(&format!("{{{{{{{raw}}}}}}}"), &data)
            .is_ok_and(|out| out == PROBE)
    })
}

impl Program {
    /// Appends the output to `out`, escaping substituted values with `escape` (unless written
    /// with triple braces). On [`Missing`], `out` holds a partial output: discard it.
    pub(crate) fn render(
        &self,
        vars: &dyn Lookup,
        escape: &dyn Fn(&str, &mut String),
        out: &mut String,
    ) -> Result<(), Missing> {
        run(&self.0, vars, escape, out)
    }
}

fn run(
    nodes: &[Node],
    vars: &dyn Lookup,
    escape: &dyn Fn(&str, &mut String),
    out: &mut String,
) -> Result<(), Missing> {
    let put = |value: &str, escaped: bool, out: &mut String| {
        if escaped {
            escape(value, out);
        } else {
            out.push_str(value);
        }
    };
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Value { arg, escape } => put(arg.get(vars)?, *escape, out),
            Node::Default {
                value,
                fallback,
                escape,
            } => {
                let v = value.get(vars)?;
                let v = if v.trim().is_empty() {
                    fallback.get(vars)?
                } else {
                    v
                };
                put(v, *escape, out);
            }
            Node::Case { arg, upper, escape } => {
                let v = arg.get(vars)?;
                let v = if *upper {
                    v.to_uppercase()
                } else {
                    v.to_lowercase()
                };
                put(&v, *escape, out);
            }
            Node::If {
                name,
                positive,
                then,
                otherwise,
            } => {
                let truthy = !vars.get(name).ok_or(Missing)?.is_empty();
                let branch = if truthy == *positive { then } else { otherwise };
                run(branch, vars, escape, out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::super::template::{Escape, Source, Templates};
    use super::*;

    impl Lookup for BTreeMap<String, String> {
        fn get(&self, name: &str) -> Option<&str> {
            BTreeMap::get(self, name).map(String::as_str)
        }
    }

    /// Templates named `t0`, `t1`, ... plus partials `foot` (plain), `deep` (includes `foot`),
    /// `indented` (includes `foot` indented) and `self` (includes itself).
    fn templates(texts: &[&str]) -> (tempfile::TempDir, Templates) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("foot", "-- \n{{email}} {{#if city}}in {{city}}{{/if}}\n"),
            ("deep", "[\n{{> foot}}\n]"),
            ("indented", "<div>\n  {{> foot}}\n</div>"),
            ("self", "x{{> self}}"),
        ] {
            std::fs::write(dir.path().join(format!("{name}.hbs")), text).unwrap();
        }
        let mut t = Templates::new();
        t.add_partials(dir.path()).unwrap();
        for (i, text) in texts.iter().enumerate() {
            let source = Source {
                name: format!("t{i}"),
                file: PathBuf::from("t"),
                line: None,
            };
            t.add(source, text).unwrap();
        }
        t.compile();
        (dir, t)
    }

    fn row(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const SUPPORTED: &[&str] = &[
        "",
        "plain text, no tags",
        "Hi {{name}}!",
        "{{{name}}} and {{&name}} and {{name}}",
        "{{! a comment }}{{!-- another --}}{{name}}",
        "{{default name \"there\"}}, {{default nick name}} {{{default nick \"<b>\"}}}",
        "{{default nick 5}} {{default nick true}} {{default nick null}}",
        "{{upper name}} {{lower city}} {{{upper name}}} {{upper \"lit<\"}}",
        "{{#if city}}in {{city}}{{/if}}",
        "{{#if nick}}{{nick}}{{else}}no nick{{/if}}",
        "{{#unless nick}}none{{else}}{{nick}}{{/unless}}",
        "{{#if nick}}a{{else if city}}b {{city}}{{else}}c{{/if}}",
        "{{#if city}}{{#unless nick}}{{#if name}}deep {{name}}{{/if}}{{/unless}}{{/if}}",
        "{{[First Name]}} / {{default [First Name] \"x\"}}",
        "Hello\n{{> foot}}\nbye",
        "{{> foot}}",
        "  text before\n{{> deep}}",
        "a {{~name~}} b\n  {{#if city~}}\n  {{city}}\n{{~/if}}\n",
        "\\{{name}} is literal",
        "{{name}}\r\n{{city}}\r\n",
        "{{this.city}} is {{city}} at the top level",
    ];

    const UNSUPPORTED: &[&str] = &[
        "{{#each items}}{{this}}{{/each}}",
        "{{#with city}}{{this}}{{/with}}",
        "{{lookup this \"city\"}}",
        "{{a.b}}",
        "{{this}}",
        "{{@root.city}}",
        "{{len city}}",
        "{{eq city \"x\"}}",
        "{{#if (eq city \"x\")}}y{{/if}}",
        "{{#if city includeZero=true}}y{{/if}}",
        "{{upper name city}}",
        "{{#*inline \"p\"}}x{{/inline}}{{> p}}",
        "{{#> foot}}fallback{{/foot}}",
        "{{> foot city}}",
        "{{> foot x=\"y\"}}",
        "<div>\n  {{> foot}}\n</div>",
        "{{> indented}}",
        "{{> self}}",
    ];

    fn rows() -> Vec<BTreeMap<String, String>> {
        let mut out = Vec::new();
        for name in [
            "Ann",
            "",
            "  ",
            "<Tom & \"Jerry\"> 'x' `y` =z",
            "Zoë Ünal",
            "a\nb",
        ] {
            for city in ["Oslo", "", "São Paulo & <Rio>"] {
                for nick in [None, Some(""), Some("Nico \u{1F600}")] {
                    let mut r = row(&[
                        ("name", name),
                        ("city", city),
                        ("email", "ann@example.com"),
                        ("First Name", "Ann Marie"),
                    ]);
                    if let Some(n) = nick {
                        r.insert("nick".into(), n.into());
                    }
                    out.push(r);
                }
            }
        }
        out
    }

    #[test]
    fn compiles_the_common_subset_and_leaves_the_rest_to_handlebars() {
        let all: Vec<&str> = SUPPORTED.iter().chain(UNSUPPORTED).copied().collect();
        let (_dir, t) = templates(&all);
        for (i, text) in all.iter().enumerate() {
            let expected = i < SUPPORTED.len();
            assert_eq!(t.is_compiled(&format!("t{i}")), expected, "{text:?}");
        }
    }

    #[test]
    fn direct_output_is_what_handlebars_renders() {
        let (_dir, t) = templates(SUPPORTED);
        let mut direct = 0;
        for (i, text) in SUPPORTED.iter().enumerate() {
            let name = format!("t{i}");
            for escape in [
                Escape::None,
                Escape::Html,
                Escape::UriComponent,
                Escape::Markdown,
            ] {
                for vars in rows() {
                    let json = serde_json::to_value(&vars).unwrap();
                    let expected = t.registry(escape).render(&name, &json);
                    match t.render_direct(escape, &name, &vars) {
                        Some(out) => {
                            direct += 1;
                            assert_eq!(Ok(out), expected.map_err(|e| e.to_string()), "{text:?}")
                        }
                        // Only a missing value (`nick`) sends a compiled template back.
                        None => assert!(!vars.contains_key("nick"), "{text:?} {vars:?}"),
                    }
                }
            }
        }
        assert!(direct > SUPPORTED.len() * 4 * 18, "{direct}");
    }

    #[test]
    fn a_missing_value_leaves_the_error_to_handlebars() {
        let (_dir, t) = templates(&["{{nick}}", "{{#if nick}}x{{/if}}", "{{default nick \"y\"}}"]);
        let vars = row(&[("name", "Ann")]);
        for i in 0..3 {
            assert!(t.is_compiled(&format!("t{i}")));
            assert_eq!(t.render_direct(Escape::Html, &format!("t{i}"), &vars), None);
        }
        let with = row(&[("nick", "N")]);
        assert_eq!(
            t.render_direct(Escape::None, "t0", &with).as_deref(),
            Some("N")
        );
    }
}
