//! Renders a type as people write it (`AppCtx<'_>`), for the catalog.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// `tokens` as source text with conventional spacing: `&'a mut Vec<(u8, String)>`.
pub(crate) fn type_name(tokens: TokenStream) -> String {
    let mut out = String::new();
    write_tokens(&mut out, tokens);
    out
}

fn write_tokens(out: &mut String, tokens: TokenStream) {
    // Whether the previous token ends in a word, so that another word needs a space.
    let mut after_word = false;
    for token in tokens {
        match token {
            TokenTree::Ident(ident) => {
                push_word(out, &ident.to_string(), after_word);
                after_word = true;
            }
            TokenTree::Literal(literal) => {
                push_word(out, &literal.to_string(), after_word);
                after_word = true;
            }
            TokenTree::Punct(punct) => {
                let ch = punct.as_char();
                match ch {
                    ',' | ';' => out.push_str(&format!("{ch} ")),
                    '=' | '+' if punct.spacing() == Spacing::Alone => {
                        out.push_str(&format!(" {ch} "))
                    }
                    '-' => out.push_str(" -"),
                    '>' if out.ends_with(" -") => out.push_str("> "),
                    _ => out.push(ch),
                }
                // A lifetime's quote sticks to its name; `dyn Trait + 'a` too.
                after_word = false;
            }
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::None => ("", ""),
                };
                if after_word && group.delimiter() == Delimiter::None {
                    out.push(' ');
                }
                out.push_str(open);
                write_tokens(out, group.stream());
                out.push_str(close);
                after_word = group.delimiter() == Delimiter::None;
            }
        }
    }
}

fn push_word(out: &mut String, word: &str, after_word: bool) {
    if after_word {
        out.push(' ');
    }
    out.push_str(word);
}

#[cfg(test)]
mod tests {
    use super::type_name;
    use quote::quote;

    #[test]
    fn renders_types_as_written() {
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
        ];
        for (tokens, expected) in cases {
            assert_eq!(type_name(tokens), expected);
        }
    }
}
