//! Procedural macros for `kong-rs`. Use them through the `kong_rs` re-exports.
//!
//! Written on `proc_macro` alone (no `syn`): the one macro only needs the
//! names of the functions at the top level of an `impl` block.

use proc_macro::{Delimiter, Group, TokenStream, TokenTree};

/// Phase method names and the `kong_rs::Phase` variants they map to, in Kong's order.
const PHASES: &[(&str, &str)] = &[
    ("certificate", "Certificate"),
    ("preread", "Preread"),
    ("rewrite", "Rewrite"),
    ("access", "Access"),
    ("header_filter", "HeaderFilter"),
    ("body_filter", "BodyFilter"),
    ("response", "Response"),
    ("log", "Log"),
];

/// Put on `impl Plugin for T { … }`: adds `const PHASES` listing the phase
/// methods the block defines, so the Lua side registers exactly those (a
/// `response` handler switches Kong to buffered proxying, so registering
/// phases a plugin does not implement is not harmless).
///
/// # Panics
/// Never at run time; misuse (not an `impl` block, or a hand-written
/// `PHASES`) is a compile error.
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return compile_error("#[kong_rs::plugin] takes no arguments");
    }
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let body_at = tokens
        .iter()
        .rposition(|t| matches!(t, TokenTree::Group(g) if g.delimiter() == Delimiter::Brace));
    let is_impl = tokens
        .iter()
        .any(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "impl"));
    let Some(body_at) = body_at.filter(|_| is_impl) else {
        return compile_error("#[kong_rs::plugin] goes on an `impl Plugin for T { ... }` block");
    };
    let TokenTree::Group(body) = &tokens[body_at] else {
        unreachable!("position found by matching a group")
    };

    let mut found = Vec::new();
    let mut previous_was_fn = false;
    let mut previous_was_const = false;
    for token in body.stream() {
        if let TokenTree::Ident(ident) = &token {
            let name = ident.to_string();
            if previous_was_const && name == "PHASES" {
                return compile_error(
                    "#[kong_rs::plugin] derives `PHASES` from the methods; do not write it by hand",
                );
            }
            if previous_was_fn
                && let Some((_, variant)) = PHASES.iter().find(|(method, _)| *method == name)
            {
                found.push(*variant);
            }
            previous_was_fn = name == "fn";
            previous_was_const = name == "const";
        } else {
            previous_was_fn = false;
            previous_was_const = false;
        }
    }
    // Kong refuses to load such a plugin (kong/db/dao/plugins.lua): a
    // buffered `response` replaces the filters. Said here, where the author is.
    if found.contains(&"Response")
        && (found.contains(&"HeaderFilter") || found.contains(&"BodyFilter"))
    {
        return compile_error(
            "Kong refuses to load a plugin that implements both `response` and \
             `header_filter` or `body_filter` (kong/db/dao/plugins.lua: \"can't be loaded \
             because it implements both `response` and `header_filter` or `body_filter` \
             methods\"): split it into two plugins",
        );
    }
    // Keep Kong's phase order whatever the order of the methods.
    let ordered: Vec<String> = PHASES
        .iter()
        .filter(|(_, variant)| found.contains(variant))
        .map(|(_, variant)| format!("::kong_rs::Phase::{variant}"))
        .collect();
    let constant: TokenStream = format!(
        "const PHASES: &'static [::kong_rs::Phase] = &[{}];",
        ordered.join(", ")
    )
    .parse()
    .expect("generated constant is valid Rust");

    let mut stream = body.stream();
    stream.extend(constant);
    let mut new_body = Group::new(Delimiter::Brace, stream);
    new_body.set_span(body.span());
    tokens[body_at] = TokenTree::Group(new_body);
    let self_type = self_type(&tokens[..body_at]);
    let mut output: TokenStream = tokens.into_iter().collect();
    if let Some((path, name)) = self_type {
        output.extend(rules_test(&path, &name));
    }
    output
}

/// The type after `for` and its last identifier (`crate::Hello`, `Hello`),
/// or `None` for a generic impl, whose type the test below could not name.
fn self_type(head: &[TokenTree]) -> Option<(String, String)> {
    let generic = head
        .iter()
        .any(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == '<'));
    let after_for = head
        .iter()
        .position(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "for"))?;
    if generic {
        return None;
    }
    let path: TokenStream = head[after_for + 1..].iter().cloned().collect();
    let name = head[after_for + 1..].iter().rev().find_map(|t| match t {
        TokenTree::Ident(i) => Some(i.to_string()),
        _ => None,
    })?;
    Some((path.to_string(), name))
}

/// A `cargo test` test that checks the plugin against Kong's load-time rules
/// (`kong_rs::describe`: the metaschema, reserved config keys, phase
/// combinations), so an author learns of a schema Kong would refuse from
/// `cargo test`, not from a Kong that will not start.
fn rules_test(type_path: &str, type_name: &str) -> TokenStream {
    let mut snake = String::new();
    for (i, c) in type_name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.extend(c.to_lowercase());
    }
    format!(
        "#[cfg(test)] #[test] #[allow(non_snake_case)] \
         fn kong_rs_load_rules_{snake}() {{ \
             if let ::core::result::Result::Err(error) = ::kong_rs::describe::<{type_path}>() {{ \
                 ::core::panic!(\"{type_name} breaks a rule Kong checks when it loads plugins: {{}}\", error); \
             }} \
         }}"
    )
    .parse()
    .expect("generated test is valid Rust")
}

fn compile_error(message: &str) -> TokenStream {
    format!("::core::compile_error!({message:?});")
        .parse()
        .expect("compile_error! invocation is valid Rust")
}
