//! The text/plain alternative generated from an HTML body (`[campaign] generate_text`, on by
//! default for a campaign with only `html`): readable text, links kept as `label (url)`, images
//! as their alt text, lists as `- ` / `1. ` items, block elements on their own lines, and what a
//! reader never sees (`<head>`, `<script>`, `<style>`, elements with `display:none`, such as a
//! preheader) left out.
//!
//! Why our own, over html5gum's tokenizer, rather than the html2text crate: html2text builds a
//! DOM with html5ever (about a dozen more crates: markup5ever, tendril, string_cache, phf, …) to
//! lay out tables and wrap lines, neither of which a text part needs (quoted-printable wraps;
//! a newsletter's tables are layout, read best as a run of blocks). html5gum is a maintained,
//! WHATWG-conformant tokenizer with no dependencies; this module is a small state machine over
//! its tokens. Pure function, no I/O.

use html5gum::{DefaultEmitter, Token, Tokenizer};

/// Elements whose content is never shown.
const SKIPPED: &[&str] = &["head", "script", "style", "title", "template", "noscript"];
/// Elements that never have an end tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];
/// Blocks set off by a blank line.
const PARAGRAPHS: &[&str] = &[
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "table",
    "dl",
    "figure",
];
/// Blocks on their own line.
const LINES: &[&str] = &[
    "div",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "main",
    "aside",
    "address",
    "tr",
    "dt",
    "dd",
    "figcaption",
    "form",
    "fieldset",
    "center",
    "caption",
    "ul",
    "ol",
    "li",
    "body",
];

/// The plain-text rendering of `html` (see the module doc). Ends with one newline, or is empty.
pub(crate) fn to_text(html: &str) -> String {
    let mut emitter = DefaultEmitter::default();
    // script, style, title, textarea and the like are raw text: tokenizing them as markup
    // would turn `a < b` in a script into a tag.
    emitter.naively_switch_states(true);
    let mut w = Writer::default();
    for token in Tokenizer::new_with_emitter(html, emitter).flatten() {
        match token {
            Token::StartTag(tag) => {
                let name = lower(&tag.name);
                let attr = |key: &str| {
                    tag.attributes
                        .get(key.as_bytes())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let hidden = attr("style").is_some_and(|s| {
                    s.to_ascii_lowercase()
                        .replace(char::is_whitespace, "")
                        .contains("display:none")
                }) || attr("hidden").is_some();
                let void = VOID.contains(&name.as_str()) || tag.self_closing;
                w.start(&name, hidden && !void, void, attr("href"), attr("alt"));
            }
            Token::EndTag(tag) => w.end(&lower(&tag.name)),
            Token::String(s) => w.text(&String::from_utf8_lossy(&s)),
            _ => {}
        }
    }
    w.finish()
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

#[derive(Default)]
struct Writer {
    out: String,
    /// Whitespace seen since the last character written (collapsed to one space).
    space: bool,
    /// Line breaks owed before the next character: 1 ends the line, 2 leaves a blank line.
    breaks: u8,
    /// Inside an element that is not shown: its name and how deep the same name nests.
    hidden: Option<(String, u32)>,
    /// Inside `<pre>`: whitespace is kept.
    pre: u32,
    /// Open links: their target and where their label starts in `out`.
    links: Vec<(Option<String>, usize)>,
    /// Open lists: `Some(next number)` for `<ol>`, `None` for `<ul>`.
    lists: Vec<Option<u32>>,
}

impl Writer {
    fn start(
        &mut self,
        name: &str,
        hidden: bool,
        void: bool,
        href: Option<String>,
        alt: Option<String>,
    ) {
        if let Some((hidden_name, depth)) = &mut self.hidden {
            if hidden_name == name && !void {
                *depth += 1;
            }
            return;
        }
        if hidden || SKIPPED.contains(&name) {
            if !void {
                self.hidden = Some((name.to_owned(), 1));
            }
            return;
        }
        match name {
            "br" => {
                self.flush_breaks();
                trim_end_spaces(&mut self.out);
                self.out.push('\n');
                self.space = false;
            }
            "hr" => {
                self.block(2);
                self.write("----");
                self.block(2);
            }
            "img" => {
                if let Some(alt) = alt.filter(|a| !a.trim().is_empty()) {
                    self.text(&alt);
                }
            }
            "a" => {
                self.flush_breaks();
                self.links.push((href, self.out.len()));
            }
            "pre" => {
                self.block(2);
                self.pre += 1;
            }
            "ul" => {
                self.block(if self.lists.is_empty() { 2 } else { 1 });
                self.lists.push(None);
            }
            "ol" => {
                self.block(if self.lists.is_empty() { 2 } else { 1 });
                self.lists.push(Some(1));
            }
            "li" => {
                self.block(1);
                let depth = self.lists.len().saturating_sub(1);
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        *n += 1;
                        format!("{}. ", *n - 1)
                    }
                    _ => "- ".to_owned(),
                };
                self.write(&format!("{}{marker}", "  ".repeat(depth)));
                self.space = false;
            }
            "td" | "th" => self.space = true,
            _ if PARAGRAPHS.contains(&name) => self.block(2),
            _ if LINES.contains(&name) => self.block(1),
            _ => {}
        }
    }

    fn end(&mut self, name: &str) {
        if let Some((hidden_name, depth)) = &mut self.hidden {
            if hidden_name == name {
                *depth -= 1;
                if *depth == 0 {
                    self.hidden = None;
                }
            }
            return;
        }
        match name {
            "a" => {
                let Some((href, start)) = self.links.pop() else {
                    return;
                };
                let Some(href) = href.map(|h| h.trim().to_owned()) else {
                    return;
                };
                let lower = href.to_ascii_lowercase();
                if href.is_empty() || href.starts_with('#') || lower.starts_with("javascript:") {
                    return;
                }
                let label = self.out.get(start..).unwrap_or("").trim().to_owned();
                let shown = lower
                    .strip_prefix("mailto:")
                    .map_or(href.as_str(), |_| &href[7..]);
                if label.is_empty() {
                    self.write(&href);
                } else if label != href && label != shown {
                    self.write(&format!(" ({href})"));
                }
            }
            "pre" => {
                self.pre = self.pre.saturating_sub(1);
                self.block(2);
            }
            "ul" | "ol" => {
                self.lists.pop();
                self.block(if self.lists.is_empty() { 2 } else { 1 });
            }
            _ if PARAGRAPHS.contains(&name) => self.block(2),
            _ if LINES.contains(&name) => self.block(1),
            _ => {}
        }
    }

    fn text(&mut self, s: &str) {
        if self.hidden.is_some() {
            return;
        }
        if self.pre > 0 {
            self.flush_breaks();
            self.out.push_str(&s.replace("\r\n", "\n"));
            return;
        }
        for c in s.chars() {
            if c.is_whitespace() && c != '\u{a0}' {
                self.space = true;
                continue;
            }
            self.flush_breaks();
            if self.space && !self.out.is_empty() && !self.out.ends_with(['\n', ' ']) {
                self.out.push(' ');
            }
            self.space = false;
            self.out.push(if c == '\u{a0}' { ' ' } else { c });
        }
    }

    /// Writes `s` as one word (no whitespace collapsing inside it).
    fn write(&mut self, s: &str) {
        self.flush_breaks();
        if self.space && !self.out.is_empty() && !self.out.ends_with(['\n', ' ']) {
            self.out.push(' ');
        }
        self.space = false;
        self.out.push_str(s);
    }

    fn block(&mut self, breaks: u8) {
        if !self.out.is_empty() {
            self.breaks = self.breaks.max(breaks);
        }
        self.space = false;
    }

    fn flush_breaks(&mut self) {
        if self.breaks == 0 {
            return;
        }
        trim_end_spaces(&mut self.out);
        let have = self.out.chars().rev().take_while(|c| *c == '\n').count() as u8;
        for _ in have..self.breaks {
            self.out.push('\n');
        }
        self.breaks = 0;
        self.space = false;
    }

    fn finish(self) -> String {
        let mut lines: Vec<&str> = self.out.lines().map(str::trim_end).collect();
        while lines.first().is_some_and(|l| l.is_empty()) {
            lines.remove(0);
        }
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let mut out = String::with_capacity(self.out.len() + 1);
        let mut blank = 0;
        for l in lines {
            if l.is_empty() {
                blank += 1;
                // At most one blank line in a row.
                if blank > 1 {
                    continue;
                }
            } else {
                blank = 0;
            }
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

fn trim_end_spaces(s: &mut String) {
    let kept = s.trim_end_matches([' ', '\t']).len();
    s.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newsletter_reads_as_text() {
        let html = r##"<!doctype html><html><head><title>Hidden title</title>
<style>p { color: red } a < b</style></head>
<body><div style="display: none">preheader text</div>
<h1>December at the bakery</h1>
<p>Hi Zoë,<br>our   <b>stollen</b>
is back &amp; so is <a href="https://bakery.example/menu?x=1&amp;y=2">the menu</a>.</p>
<p><img src="logo.png" alt="Ferry Street Bakery"> <img src="spacer.gif" alt=""></p>
<ul><li>Rye</li><li>Spelt<ol><li>light</li><li>dark</li></ol></li></ul>
<p>Mail <a href="mailto:hi@bakery.example">hi@bakery.example</a> or visit
<a href="https://bakery.example/">https://bakery.example/</a>.
<a href="https://t.example/u/123"><img src="btn.png" alt=""></a>
<a href="#top">Top</a> <a href="javascript:void(0)">JS</a></p>
<script>if (a < b) { document.write("<p>no</p>") }</script>
<table><tr><td>Left</td><td>Right</td></tr><tr><td>Next</td></tr></table>
<pre>  keep
    this</pre><hr><p>&nbsp;Bye</p></body></html>"##;
        assert_eq!(
            to_text(html),
            "December at the bakery\n\
             \n\
             Hi Zoë,\n\
             our stollen is back & so is the menu (https://bakery.example/menu?x=1&y=2).\n\
             \n\
             Ferry Street Bakery\n\
             \n\
             - Rye\n\
             - Spelt\n\
             \x20 1. light\n\
             \x20 2. dark\n\
             \n\
             Mail hi@bakery.example or visit https://bakery.example/. https://t.example/u/123 Top JS\n\
             \n\
             Left Right\n\
             Next\n\
             \n\
             \x20 keep\n\
             \x20   this\n\
             \n\
             ----\n\
             \n\
             \x20Bye\n"
        );
    }

    #[test]
    fn nothing_visible_is_empty_and_hidden_elements_nest() {
        assert_eq!(to_text(""), "");
        assert_eq!(to_text("<html><head><style>x</style></head></html>"), "");
        assert_eq!(
            to_text("<div hidden><div>a</div>b</div>c<span style='DISPLAY:NONE'>d<br>e</span>f"),
            "cf\n"
        );
    }

    #[test]
    fn hostile_markup_does_not_panic() {
        for html in [
            "<a href=x>unclosed",
            "</a></ul></li></pre></p>",
            "<ol><li><ol><li><ol><li>deep",
            "<<<>>>&&&;&#0;&#xD800;",
            "<pre>\r\n</pre><br/><br/><br/>",
            "<img alt='&lt;script&gt;'>",
        ] {
            let _ = to_text(html);
        }
        assert_eq!(to_text("<img alt='&lt;b&gt;'>"), "<b>\n");
    }
}
