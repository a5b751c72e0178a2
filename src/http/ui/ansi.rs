//! Ansible's coloured output as HTML: SGR escape sequences (`ESC [ … m`)
//! become spans with classes, every other byte is escaped text. The page's
//! script does the same for output that arrives live (`assets/app.js`).

/// The classes of the current style: a foreground colour and bold.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    colour: Option<u8>,
    bold: bool,
}

impl Style {
    /// Applies one SGR parameter list (`1;32`).
    fn apply(&mut self, params: &str) {
        for param in params.split(';') {
            match param.parse::<u8>().unwrap_or(0) {
                0 => *self = Style::default(),
                1 => self.bold = true,
                22 => self.bold = false,
                39 => self.colour = None,
                code @ (30..=37 | 90..=97) => self.colour = Some(code),
                _ => {}
            }
        }
    }

    fn classes(self) -> String {
        let mut classes = Vec::new();
        if let Some(code) = self.colour {
            classes.push(format!("ansi-{code}"));
        }
        if self.bold {
            classes.push("ansi-bold".to_owned());
        }
        classes.join(" ")
    }
}

fn escape_into(html: &mut String, text: &str) {
    for ch in text.chars() {
        match ch {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            other => html.push(other),
        }
    }
}

/// `output` as escaped HTML with its colours as spans; other escape
/// sequences are dropped.
pub fn to_html(output: &str) -> String {
    let mut html = String::with_capacity(output.len() + output.len() / 8);
    let mut style = Style::default();
    let mut rest = output;
    while let Some(at) = rest.find('\u{1b}') {
        push_styled(&mut html, style, &rest[..at]);
        let sequence = &rest[at + 1..];
        let Some(body) = sequence.strip_prefix('[') else {
            rest = sequence;
            continue;
        };
        // Parameters, then one final byte in @..~ ends the sequence.
        let end = body
            .find(|ch: char| ('@'..='~').contains(&ch))
            .unwrap_or(body.len());
        if body[end..].starts_with('m') {
            style.apply(&body[..end]);
        }
        rest = body.get(end + 1..).unwrap_or_default();
    }
    push_styled(&mut html, style, rest);
    html
}

fn push_styled(html: &mut String, style: Style, text: &str) {
    if text.is_empty() {
        return;
    }
    if style == Style::default() {
        escape_into(html, text);
        return;
    }
    html.push_str("<span class=\"");
    html.push_str(&style.classes());
    html.push_str("\">");
    escape_into(html, text);
    html.push_str("</span>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_spans_and_text_is_escaped() {
        let output = "ok: \u{1b}[0;32mchanged <b>\u{1b}[0m & \u{1b}[1;31mfailed\u{1b}[0m\n";
        assert_eq!(
            to_html(output),
            "ok: <span class=\"ansi-32\">changed &lt;b&gt;</span> &amp; \
             <span class=\"ansi-31 ansi-bold\">failed</span>\n"
        );
    }

    #[test]
    fn other_sequences_are_dropped_and_a_cut_one_ends_the_text() {
        assert_eq!(to_html("a\u{1b}[2Kb\u{1b}]c"), "ab]c");
        assert_eq!(to_html("tail\u{1b}[3"), "tail");
    }
}
