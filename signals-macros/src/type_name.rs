//! Renders types and short expressions as people write them (`AppCtx<'_>`,
//! `|o: &Order| o.total % 2 == 1`), for the catalog.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// `tokens` as they are written in the source, on one line: the text of each token with the
/// spacing between them kept, line breaks (and the indentation after them) becoming one space.
/// `None` if a token has no source text (it came from another macro).
pub(crate) fn source_text(tokens: TokenStream) -> Option<String> {
    let mut text = String::new();
    let mut previous_end: Option<proc_macro2::LineColumn> = None;
    for token in tokens {
        let span = token.span();
        let written = span.source_text()?;
        let (start, end) = (span.start(), span.end());
        match previous_end {
            Some(end) if start.line == end.line => {
                let gap = start.column.saturating_sub(end.column);
                text.extend(std::iter::repeat_n(' ', gap));
            }
            Some(_) => text.push(' '),
            None => {}
        }
        text.push_str(&written);
        previous_end = Some(end);
    }
    Some(one_line(&text))
}

/// `text` with every line break, and the whitespace around it, turned into one space.
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    lines.fold(first, |joined, line| joined + " " + line)
}

/// `tokens` as source text with conventional spacing.
pub(crate) fn type_name(tokens: TokenStream) -> String {
    let mut out = Writer::default();
    out.tokens(tokens);
    out.text
}

#[derive(Default)]
struct Writer {
    text: String,
    /// Whether the last thing written ends a value (a word, a literal, a closing group), so
    /// that a following word needs a space and a following `&`, `-` or `*` is binary.
    after_value: bool,
    /// Inside the `|...|` parameters of a closure.
    in_closure_params: bool,
}

impl Writer {
    fn tokens(&mut self, tokens: TokenStream) {
        let mut operator = String::new();
        for token in tokens {
            match token {
                TokenTree::Punct(punct) => {
                    operator.push(punct.as_char());
                    if punct.spacing() == Spacing::Alone || punct.as_char() == '\'' {
                        self.operator(&std::mem::take(&mut operator));
                    }
                }
                TokenTree::Ident(ident) => self.word(&ident.to_string()),
                TokenTree::Literal(literal) => self.word(&literal.to_string()),
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Brace => ("{ ", " }"),
                        Delimiter::None => ("", ""),
                    };
                    if self.after_value && group.delimiter() == Delimiter::None {
                        self.text.push(' ');
                    }
                    self.text.push_str(open);
                    self.after_value = false;
                    self.tokens(group.stream());
                    self.text.push_str(close);
                    self.after_value = true;
                }
            }
        }
        if !operator.is_empty() {
            self.operator(&operator);
        }
    }

    fn word(&mut self, word: &str) {
        if self.after_value {
            self.text.push(' ');
        }
        self.text.push_str(word);
        self.after_value = true;
    }

    fn operator(&mut self, op: &str) {
        let binary = self.after_value;
        match op {
            "::" | "." | "'" | "#" | "?" | "<" | ">" | ".." | "..=" => self.text.push_str(op),
            "," | ";" => self.text.push_str(&format!("{op} ")),
            ":" => self.text.push_str(": "),
            "|" if !binary || self.in_closure_params => {
                if self.in_closure_params {
                    self.text.push_str("| ");
                } else {
                    self.text.push('|');
                }
                self.in_closure_params = !self.in_closure_params;
            }
            "&" | "-" | "*" | "!" | "&&" if !binary => self.text.push_str(op),
            _ => self.text.push_str(&format!(" {op} ")),
        }
        // A lifetime's quote sticks to its name; after any other operator a word needs no space.
        self.after_value = false;
    }
}

#[cfg(test)]
mod tests {
    use super::type_name;
    use quote::quote;

    #[test]
    fn renders_types_and_expressions_as_written() {
        let cases = [
            (quote!(AppCtx<'_>), "AppCtx<'_>"),
            (
                quote!(&'a mut Vec<(u8, String)>),
                "&'a mut Vec<(u8, String)>",
            ),
            (quote!(crate::db::Tx<'_, '_>), "crate::db::Tx<'_, '_>"),
            (quote!([u8; 4]), "[u8; 4]"),
            (
                quote!(Box<dyn Fn(&str) -> u8 + Send>),
                "Box<dyn Fn(&str) -> u8 + Send>",
            ),
            (quote!(dyn Iterator<Item = u8>), "dyn Iterator<Item = u8>"),
            (quote!(()), "()"),
            (quote!(is_large_order), "is_large_order"),
            (quote!(filters::is_vip), "filters::is_vip"),
            (
                quote!(|sig: &OrderCreated| sig.total % 2 == 1),
                "|sig: &OrderCreated| sig.total % 2 == 1",
            ),
            (
                quote!(|o: &Order| !o.paid && o.total >= -5),
                "|o: &Order| !o.paid && o.total >= -5",
            ),
        ];
        for (tokens, expected) in cases {
            assert_eq!(type_name(tokens), expected);
        }
    }
}
