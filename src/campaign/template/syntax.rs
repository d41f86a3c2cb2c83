//! What Handlebars' parser makes of a template, said in a user's words: a compile error
//! placed where its cause starts (an unclosed block, tag or comment) instead of in the grammar
//! rules the parser expected, and the helper calls that compile but could never render (a helper
//! that does not exist, or too few arguments), refused before any contact is read. It only
//! looks at a template's text and parsed form; registering and rendering stay in `template`.

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Template, TemplateError, TemplateErrorReason};

use super::{Error, Source, path_raw, template_error};

/// A template Handlebars cannot compile. Its parser names the grammar rules it expected
/// ("expected escape, expression, html_expression, ..."), which says nothing to a user, and
/// places an unclosed block at the end of the file: the usual mistakes are found here instead
/// and placed where they start.
pub(super) fn syntax_error(source: &Source, text: &str, e: &TemplateError) -> Error {
    if !matches!(e.reason(), TemplateErrorReason::InvalidSyntax(_)) {
        return template_error(source, e.pos(), e.reason().to_string());
    }
    let (pos, message) = match unclosed(text) {
        Some(Unclosed::Block { name, at }) => (
            Some(at),
            format!("`{{{{#{name}}}}}` is never closed: end the block with {{{{/{name}}}}}"),
        ),
        Some(Unclosed::Tag { at }) => (Some(at), "this `{{` is never closed by `}}`".to_owned()),
        Some(Unclosed::Triple { at }) => (
            Some(at),
            "this `{{{` is closed by `}}`: an unescaped value ends with `}}}`".to_owned(),
        ),
        Some(Unclosed::Comment { at, end }) => {
            (Some(at), format!("this comment is never closed by `{end}`"))
        }
        None => (
            e.pos(),
            "this is not valid Handlebars: a tag is a name and its arguments between `{{` and \
             `}}` (`{{{` and `}}}` for unescaped HTML), a block's `{{else}}` comes once, and a \
             literal `{{` is written `\\{{`"
                .to_owned(),
        ),
    };
    template_error(source, pos, message)
}

/// What [`unclosed`] found open at the end of a template.
#[derive(Debug, PartialEq)]
enum Unclosed {
    /// `{{#name ...}}` (or `{{^name}}`) without its `{{/name}}`: the innermost such block.
    Block { name: String, at: (usize, usize) },
    /// `{{` without `}}`.
    Tag { at: (usize, usize) },
    /// `{{{` closed by `}}`.
    Triple { at: (usize, usize) },
    /// `{{!--` without `--}}`, or `{{!` without `}}`.
    Comment {
        at: (usize, usize),
        end: &'static str,
    },
}

/// The first tag or comment of `text` that is never closed, else the innermost block left
/// open, with its 1-based line and column. `None` when nothing is left open, or when a closing
/// tag does not match its block (Handlebars names both then) or a raw block is left open.
fn unclosed(text: &str) -> Option<Unclosed> {
    let at = |i: usize| {
        let before = &text[..i];
        let line = before.matches('\n').count() + 1;
        let start = before.rfind('\n').map_or(0, |n| n + 1);
        (line, before[start..].chars().count() + 1)
    };
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while let Some(found) = text[i..].find("{{") {
        let start = i + found;
        if text[..start].ends_with('\\') {
            // `\{{` is a literal `{{`.
            i = start + 2;
            continue;
        }
        if text[start..].starts_with("{{{{") {
            // A raw block: its content is not Handlebars.
            let (_, after) = text[start..].split_once("}}}}")?;
            let name = text[start + 4..]
                .split(|c: char| c.is_whitespace() || c == '}')
                .next()?;
            let close = format!("{{{{{{{{/{name}}}}}}}}}");
            let rest = text.len() - after.len();
            i = rest + after.find(&close)? + close.len();
            continue;
        }
        let inner = start + 2;
        let body = text[inner..].strip_prefix('~').unwrap_or(&text[inner..]);
        if body.starts_with("!--") {
            let Some(end) = body.find("--}}") else {
                return Some(Unclosed::Comment {
                    at: at(start),
                    end: "--}}",
                });
            };
            i = text.len() - body.len() + end + 4;
            continue;
        }
        let Some(end) = text[inner..].find("}}") else {
            return Some(if body.starts_with('!') {
                Unclosed::Comment {
                    at: at(start),
                    end: "}}",
                }
            } else {
                Unclosed::Tag { at: at(start) }
            });
        };
        // `{{{x}}}` and `{{~{x}~}}` end in `}}}` (a `~` may stand before the last two).
        let closed_by_three = text[inner..inner + end]
            .trim_end_matches('~')
            .ends_with('}')
            || text[inner + end + 2..].starts_with('}');
        if body.starts_with('{') && !closed_by_three {
            return Some(Unclosed::Triple { at: at(start) });
        }
        // Handlebars allows spaces inside the braces: `{{ #if a }}`, `{{~ /if ~}}`.
        let tag = text[inner..inner + end]
            .trim_matches(|c: char| c == '~' || c == '{' || c == '}' || c.is_whitespace());
        i = inner + end + 2;
        let name_after = |rest: &str| {
            rest.trim_start_matches(['>', '*'])
                .split_whitespace()
                .next()
                .map(|n| n.trim_end_matches('~').to_owned())
                .filter(|n| !n.is_empty())
        };
        // `{{^x}}` is an `{{else x}}` inside a block, not a block of its own.
        if let Some(rest) = tag.strip_prefix('#') {
            if let Some(name) = name_after(rest) {
                open.push((name, start));
            }
        } else if let Some(rest) = tag.strip_prefix('/') {
            let name = name_after(rest)?;
            match open.pop() {
                Some((opened, _)) if opened == name => {}
                _ => return None,
            }
        }
    }
    open.pop().map(|(name, start)| Unclosed::Block {
        name,
        at: at(start),
    })
}

/// A helper a template may call: Handlebars' own and mailroom's (registered in
/// [`super::registry`]).
pub(super) struct HelperSpec {
    pub(super) name: &'static str,
    /// The arguments it needs: fewer fail when a message is rendered.
    args: usize,
    /// A call written right, for the error that says how.
    example: &'static str,
}

const fn helper(name: &'static str, args: usize, example: &'static str) -> HelperSpec {
    HelperSpec {
        name,
        args,
        example,
    }
}

/// Every helper a template may call, with the arguments each needs (the `each_helper_needs_`
/// test checks the counts against Handlebars itself).
pub(super) const HELPERS: &[HelperSpec] = &[
    helper("upper", 1, "{{upper name}}"),
    helper("lower", 1, "{{lower name}}"),
    helper("default", 2, "{{default name \"friend\"}}"),
    helper("if", 1, "{{#if city}}...{{/if}}"),
    helper("unless", 1, "{{#unless city}}...{{/unless}}"),
    helper("each", 1, "{{#each items}}...{{/each}}"),
    helper("with", 1, "{{#with address}}...{{/with}}"),
    helper("lookup", 2, "{{lookup this \"First Name\"}}"),
    helper("raw", 0, "{{{{raw}}}}...{{{{/raw}}}}"),
    helper("log", 0, "{{log name}}"),
    helper("eq", 2, "{{#if (eq plan \"pro\")}}...{{/if}}"),
    helper("ne", 2, "{{#if (ne plan \"pro\")}}...{{/if}}"),
    helper("gt", 2, "{{#if (gt visits 3)}}...{{/if}}"),
    helper("gte", 2, "{{#if (gte visits 3)}}...{{/if}}"),
    helper("lt", 2, "{{#if (lt visits 3)}}...{{/if}}"),
    helper("lte", 2, "{{#if (lte visits 3)}}...{{/if}}"),
    helper("and", 0, "{{#if (and city plan)}}...{{/if}}"),
    helper("or", 0, "{{#if (or city plan)}}...{{/if}}"),
    helper("not", 1, "{{#if (not city)}}...{{/if}}"),
    helper("len", 1, "{{len items}}"),
];

fn helper_names() -> String {
    HELPERS
        .iter()
        .map(|h| h.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A call of a helper, or of what may be one, found in a template.
struct Call {
    name: String,
    /// Positional arguments: what a helper's minimum counts.
    args: usize,
    /// Named (`key=value`) arguments.
    named: usize,
    /// 1-based line and column of the template element it is in.
    at: Option<(usize, usize)>,
}

/// The helper calls `t` makes (an expression or block with or without arguments, or a
/// subexpression), with the position of each, everywhere in it (inside blocks and partial
/// blocks too). A name without arguments that is no helper is a field, and a block without
/// arguments a section; they are listed too, and [`helper_problem`] tells them apart.
fn helper_calls(t: &Template, at: Option<(usize, usize)>, out: &mut Vec<Call>) {
    fn name_of(p: &Parameter) -> Option<String> {
        match p {
            Parameter::Name(n) => Some(n.clone()),
            Parameter::Path(p) => Some(path_raw(p).to_owned()),
            _ => None,
        }
    }
    fn call(h: &HelperTemplate, at: Option<(usize, usize)>, out: &mut Vec<Call>) {
        out.extend(name_of(&h.name).map(|name| Call {
            name,
            args: h.params.len(),
            named: h.hash.len(),
            at,
        }));
        for p in h.params.iter().chain(h.hash.values()) {
            if let Parameter::Subexpression(sub) = p
                && let TemplateElement::Expression(inner) = sub.element.as_ref()
            {
                call(inner, at, out);
            }
        }
    }
    for (i, el) in t.elements.iter().enumerate() {
        let at = t.mapping.get(i).map(|m| (m.0, m.1)).or(at);
        match el {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => call(h, at, out),
            TemplateElement::HelperBlock(h) => {
                call(h, at, out);
                for sub in [&h.template, &h.inverse].into_iter().flatten() {
                    helper_calls(sub, at, out);
                }
            }
            TemplateElement::PartialBlock(d) | TemplateElement::DecoratorBlock(d) => {
                if let Some(sub) = &d.template {
                    helper_calls(sub, at, out);
                }
            }
            _ => {}
        }
    }
}

/// The first helper call in `t` that cannot render, where it is and why: a call with arguments
/// of a helper that does not exist, or a helper given fewer arguments than it takes.
pub(super) fn helper_problem(t: &Template) -> Option<(Option<(usize, usize)>, String)> {
    let mut calls = Vec::new();
    helper_calls(t, None, &mut calls);
    calls.into_iter().find_map(|call| {
        let message = match HELPERS.iter().find(|h| h.name == call.name) {
            None if call.args + call.named > 0 => format!(
                "`{}` is not a helper (the helpers are {}); a field is written without \
                 arguments, as {{{{{}}}}}",
                call.name,
                helper_names(),
                call.name
            ),
            Some(h) if call.args < h.args => {
                let given = match call.args {
                    0 => "none".to_owned(),
                    n => n.to_string(),
                };
                let field = if call.args == 0 {
                    format!("; a field named `{0}` is written {{{{[{0}]}}}}", call.name)
                } else {
                    String::new()
                };
                format!(
                    "`{}` takes {} argument{} and is given {given}: write it as {}{field}",
                    h.name,
                    h.args,
                    if h.args == 1 { "" } else { "s" },
                    h.example
                )
            }
            _ => return None,
        };
        Some((call.at, message))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::PathBuf;

    use super::super::{Escape, Templates, registry};
    use super::*;
    use serde_json::json;

    #[test]
    fn a_helper_given_too_few_arguments_is_refused_where_it_is() {
        let add = |text: &str| {
            let source = Source {
                name: "body.txt.hbs".into(),
                file: PathBuf::from("body.txt.hbs"),
                line: None,
            };
            Templates::new().add(source, text).map(|_| ())
        };
        for (text, at, said) in [
            (
                "Hi {{default ref}}",
                "1:4",
                "`default` takes 2 arguments and is given 1",
            ),
            (
                "Hi\n{{upper}}",
                "2:1",
                "`upper` takes 1 argument and is given none",
            ),
            ("{{#if}}x{{/if}}", "1:1", "`if` takes 1 argument"),
            ("{{#if (eq plan)}}x{{/if}}", "1:1", "`eq` takes 2 arguments"),
            (
                "{{#each items}}\n {{lookup this}}{{/each}}",
                "2:2",
                "`lookup` takes 2",
            ),
            // Named arguments are options, not the arguments a helper needs.
            (
                "{{#if includeZero=true}}x{{/if}}",
                "1:1",
                "`if` takes 1 argument and is given none",
            ),
            (
                "{{upper x=1}}",
                "1:1",
                "`upper` takes 1 argument and is given none",
            ),
        ] {
            let e = add(text).unwrap_err().to_string();
            assert!(e.contains(&format!("body.txt.hbs:{at}:")), "{text}: {e}");
            assert!(e.contains(said), "{text}: {e}");
        }
        let e = add("{{len}}").unwrap_err().to_string();
        assert!(
            e.contains("write it as {{len items}}") && e.contains("is written {{[len]}}"),
            "{e}"
        );
        // The way out it names works: a field named like a helper, as a segment literal.
        let mut t = Templates::new();
        t.add(
            Source {
                name: "t".into(),
                file: PathBuf::from("t"),
                line: None,
            },
            "{{[len]}}",
        )
        .unwrap();
        let out = t.plain.render("t", &json!({"len": "42 cm"})).unwrap();
        assert_eq!(out, "42 cm");
    }

    #[test]
    fn what_is_left_open_is_found_where_it_starts() {
        let block = |name: &str, line, column| {
            Some(Unclosed::Block {
                name: name.into(),
                at: (line, column),
            })
        };
        for (text, found) in [
            ("Hi {{#if name}}x", block("if", 1, 4)),
            ("{{#if a}}\n{{#each b}}\nx\n{{/each}}\n", block("if", 1, 1)),
            ("{{#if a}}\n  {{#each b}}x{{/if}}", None),
            ("{{#if a}}{{^b}}x", block("if", 1, 1)),
            (
                "{{ #if a }}y{{~ /if ~}} {{ #each b }}",
                block("each", 1, 25),
            ),
            ("{{~{x}~}} {{{y}}}", None),
            ("{{~#each items~}}x", block("each", 1, 1)),
            ("{{#> layout}}x", block("layout", 1, 1)),
            ("é {{name", Some(Unclosed::Tag { at: (1, 3) })),
            ("x\n {{{html}}", Some(Unclosed::Triple { at: (2, 2) })),
            (
                "{{!-- a }} b",
                Some(Unclosed::Comment {
                    at: (1, 1),
                    end: "--}}",
                }),
            ),
            (
                "{{! a",
                Some(Unclosed::Comment {
                    at: (1, 1),
                    end: "}}",
                }),
            ),
            // Closed, escaped or raw: nothing open.
            ("{{#if a}}{{else}}b{{/if}} {{{x}}} {{!-- {{#if --}}", None),
            ("\\{{#if a}} {{{{raw}}}}{{#if}}{{{{/raw}}}}", None),
        ] {
            assert_eq!(unclosed(text), found, "{text}");
        }
    }

    #[test]
    fn syntax_errors_say_what_is_open_instead_of_grammar_rules() {
        let add = |text: &str| {
            let source = Source {
                name: "body.txt.hbs".into(),
                file: PathBuf::from("body.txt.hbs"),
                line: None,
            };
            Templates::new()
                .add(source, text)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let e = add("Hi\n {{#if name}}\nthere\n");
        assert!(
            e.contains("body.txt.hbs:2:2:") && e.contains("`{{#if}}` is never closed"),
            "{e}"
        );
        assert!(e.contains("end the block with {{/if}}"), "{e}");
        let e = add("{{}}");
        assert!(
            e.contains("body.txt.hbs:1:3:") && e.contains("not valid Handlebars"),
            "{e}"
        );
        assert!(
            !e.contains("expected") && !e.contains("html_expression"),
            "{e}"
        );
        // Handlebars' own words where they are clear: a block closed by another's end.
        let e = add("{{#if a}}x{{/each}}");
        assert!(
            e.contains("\"if\" was opened, but \"each\" is closing"),
            "{e}"
        );
        // The escape the message offers works.
        let r = registry(Escape::None);
        assert_eq!(
            r.render_template("\\{{name}}", &json!({})).unwrap(),
            "{{name}}"
        );
    }

    /// The argument counts in [`HELPERS`] are Handlebars' own: one fewer fails to render, that
    /// many renders.
    #[test]
    fn each_helper_needs_the_arguments_its_entry_says() {
        let r = registry(Escape::None);
        let data = json!({"a": [1]});
        for h in HELPERS.iter().filter(|h| h.args > 0) {
            let call = |n: usize| {
                let args = ["a", "0"][..n].join(" ");
                if ["if", "unless", "each", "with"].contains(&h.name) {
                    format!("{{{{#{} {args}}}}}y{{{{/{}}}}}", h.name, h.name)
                } else {
                    format!("{{{{{} {args}}}}}", h.name)
                }
            };
            assert!(
                r.render_template(&call(h.args - 1), &data).is_err(),
                "{} with {} arguments rendered",
                h.name,
                h.args - 1
            );
            let enough = r.render_template(&call(h.args), &data);
            assert!(enough.is_ok(), "{} with {}: {enough:?}", h.name, h.args);
        }
    }
}
