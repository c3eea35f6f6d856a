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

/// The phases that may be written as `async fn`.
const ASYNC_PHASES: &[&str] = &["preread", "rewrite", "access"];

/// Put on `impl Plugin for T { … }`: adds `const PHASES` listing the phase
/// methods the block defines, so the Lua side registers exactly those (a
/// `response` handler switches Kong to buffered proxying, so registering
/// phases a plugin does not implement is not harmless).
///
/// `async fn rewrite`/`access`/`preread` become `rewrite_async`/... and
/// are listed in `const ASYNC_PHASES`: the bridge runs them as tasks whose
/// I/O nginx performs. Another phase written `async` is a compile error.
///
/// It reads the method names written in the block, so it cannot see
/// methods another macro would write there: a macro invocation in the
/// block is a compile error rather than a phase silently not registered.
/// `#[kong_rs::plugin(crate = path::to::kong_rs)]` names the crate when it
/// is not `::kong_rs` (renamed, or re-exported).
///
/// # Panics
/// Never at run time; misuse (not an `impl` block, a hand-written
/// `PHASES`, a macro in the block) is a compile error.
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    let krate = match crate_path(attr) {
        Ok(path) => path,
        Err(message) => return compile_error(message),
    };
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
    let mut found_async = Vec::new();
    let mut previous_was_fn = false;
    let mut previous_was_async = false;
    let mut fn_was_async = false;
    let mut previous_was_const = false;
    let mut previous_was_ident = false;
    // The block, with each `async fn <phase>` renamed `<phase>_async`.
    let mut rewritten: Vec<TokenTree> = Vec::new();
    for mut token in body.stream() {
        if matches!(&token, TokenTree::Punct(p) if p.as_char() == '!') && previous_was_ident {
            return compile_error(
                "#[kong_rs::plugin] reads the phase methods written in the block and cannot \
                 see those a macro writes: write the phase methods out in the block",
            );
        }
        previous_was_ident = matches!(token, TokenTree::Ident(_));
        if let TokenTree::Ident(ident) = &token {
            let name = ident.to_string();
            if previous_was_const && (name == "PHASES" || name == "ASYNC_PHASES") {
                return compile_error(
                    "#[kong_rs::plugin] derives `PHASES` from the methods; do not write it by hand",
                );
            }
            if previous_was_fn
                && let Some((_, variant)) = PHASES.iter().find(|(method, _)| *method == name)
            {
                found.push(*variant);
                if fn_was_async {
                    if !ASYNC_PHASES.contains(&name.as_str()) {
                        return compile_error(&format!(
                            "`{name}` cannot be async: only rewrite, access and preread may \
                             await nginx I/O (Kong gives no cosockets to the other phases; a \
                             log shipper queues its entries and sends them from a timer)"
                        ));
                    }
                    found_async.push(*variant);
                    token = TokenTree::Ident(proc_macro::Ident::new(
                        &format!("{name}_async"),
                        ident.span(),
                    ));
                }
            }
            fn_was_async = name == "fn" && previous_was_async;
            previous_was_fn = name == "fn";
            previous_was_async = name == "async";
            previous_was_const = name == "const";
        } else {
            previous_was_fn = false;
            previous_was_async = false;
            previous_was_const = false;
        }
        rewritten.push(token);
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
        .map(|(_, variant)| format!("{krate}::Phase::{variant}"))
        .collect();
    let ordered_async: Vec<String> = PHASES
        .iter()
        .filter(|(_, variant)| found_async.contains(variant))
        .map(|(_, variant)| format!("{krate}::Phase::{variant}"))
        .collect();
    let constant: TokenStream = format!(
        "const PHASES: &'static [{krate}::Phase] = &[{}]; \
         const ASYNC_PHASES: &'static [{krate}::Phase] = &[{}];",
        ordered.join(", "),
        ordered_async.join(", ")
    )
    .parse()
    .expect("generated constant is valid Rust");

    let mut stream: TokenStream = rewritten.into_iter().collect();
    stream.extend(constant);
    let mut new_body = Group::new(Delimiter::Brace, stream);
    new_body.set_span(body.span());
    tokens[body_at] = TokenTree::Group(new_body);
    let self_type = self_type(&tokens[..body_at]);
    let mut output: TokenStream = tokens.into_iter().collect();
    if let Some((path, name)) = self_type {
        output.extend(rules_test(&krate, &path, &name));
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
fn rules_test(krate: &str, type_path: &str, type_name: &str) -> TokenStream {
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
             if let ::core::result::Result::Err(error) = {krate}::describe::<{type_path}>() {{ \
                 ::core::panic!(\"{type_name} breaks a rule Kong checks when it loads plugins: {{}}\", error); \
             }} \
         }}"
    )
    .parse()
    .expect("generated test is valid Rust")
}

/// The crate's path from `crate = path`, `::kong_rs` without arguments.
fn crate_path(attr: TokenStream) -> Result<String, &'static str> {
    let tokens: Vec<TokenTree> = attr.into_iter().collect();
    if tokens.is_empty() {
        return Ok("::kong_rs".to_string());
    }
    let usage = "#[kong_rs::plugin] takes no arguments, or `crate = path::to::kong_rs`";
    match tokens.as_slice() {
        [TokenTree::Ident(key), TokenTree::Punct(eq), path @ ..]
            if key.to_string() == "crate" && eq.as_char() == '=' && !path.is_empty() =>
        {
            let path: TokenStream = path.iter().cloned().collect();
            Ok(path.to_string().replace(' ', ""))
        }
        _ => Err(usage),
    }
}

fn compile_error(message: &str) -> TokenStream {
    format!("::core::compile_error!({message:?});")
        .parse()
        .expect("compile_error! invocation is valid Rust")
}
